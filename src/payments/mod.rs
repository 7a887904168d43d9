//! Payments: cards and the processor port, top-ups, payment codes, POS charges, refunds,
//! reversals, store-QR payments, limits and history (ARCHITECTURE sections 5 and 6).

pub mod baskets;
pub mod cards;
pub mod chargeback_routes;
pub mod code;
pub mod corrections;
pub mod listing;
pub mod pos;
pub mod processor;
pub mod processor_events;
pub mod reviews;
pub mod risk_facts;
pub mod routes;
pub mod stripe;
pub mod stripe_routes;
pub mod topups;
pub mod wallet;

use crate::ledger::LedgerError;
use crate::merchants::MerchantError;
use crate::risk::RiskError;

/// What payments refuse, and why. `http` turns each into its status and `code`; the business
/// declines among them are final answers that idempotency stores.
#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    /// `402 insufficient_funds` (a decline).
    #[error("the balance does not cover this amount")]
    InsufficientFunds,
    /// `402 limit_exceeded` with `limit` (a decline): one of the shopper's own limits.
    #[error("this payment is over your {which} limit of ¥{limit}")]
    LimitExceeded { which: &'static str, limit: i64 },
    /// `422 invalid_amount`: a limit outside its ceiling.
    #[error("{name} must be from 1 to the ceiling of ¥{ceiling}")]
    LimitOutOfRange { name: &'static str, ceiling: i64 },
    /// `422 code_invalid` (a decline).
    #[error("there is no such payment code")]
    CodeInvalid,
    /// `410 code_expired` (a decline).
    #[error("this payment code was used, replaced or has expired; ask for a new one")]
    CodeExpired,
    /// `422 refund_exceeds_payment` (a decline).
    #[error("at most ¥{refundable} of this payment can still be refunded")]
    RefundExceedsPayment { refundable: i64 },
    /// `422 invalid_items`: a bad line of a basket or of a refund's items (what is wrong).
    #[error("{0}")]
    InvalidItems(String),
    /// `422 items_mismatch`: the items are not worth the amount.
    #[error("{0}")]
    ItemsMismatch(String),
    /// `409 not_reversible`.
    #[error("{0}")]
    NotReversible(String),
    /// `409 reversal_window_closed`: the charge is older than `pos::REVERSAL_WINDOW_MS`.
    #[error("this charge is more than 24 hours old and can no longer be reversed; refund it instead")]
    ReversalWindowClosed,
    /// `409 already_charged_back`.
    #[error("this top-up was charged back already")]
    AlreadyChargedBack,
    /// `409 already_applied`.
    #[error("this correction was applied already")]
    AlreadyApplied,
    /// `409 second_operator_required`.
    #[error("a correction takes a second, different operator")]
    SecondOperatorRequired,
    /// `403 step_up_required`, without a challenge: the app asks for one and repeats.
    #[error("confirm it is you first: POST /v1/step-up, verify the challenge, then repeat")]
    StepUpRequired,
    /// `422` with the QR error's own code (`qr_malformed`, `qr_bad_crc`, ...).
    #[error("{0}")]
    Qr(crate::merchants::qr::QrError),
    /// `422 unknown_store`.
    #[error("this QR code names no Omamori store")]
    UnknownStore,
    /// `422 qr_mismatch`.
    #[error("this QR code does not match the store it names")]
    QrMismatch,
    /// `422 invalid_body`.
    #[error("{0}")]
    Invalid(String),
    /// `404 not_found`.
    #[error("{0}")]
    NotFound(String),
    /// `402 card_declined`: the processor refused the card while linking it.
    #[error("the card was declined")]
    CardDeclined,
    /// `402 card_declined` (a decline): the processor refused a top-up's charge.
    #[error("{0}")]
    ChargeDeclined(&'static str),
    /// `422 invalid_card`.
    #[error("the card details are not valid")]
    InvalidCard,
    /// `422 card_not_allowed`: the card belongs to another wallet.
    #[error("this card cannot be added to this wallet")]
    CardNotAllowed,
    /// `409 card_already_linked`.
    #[error("this card is already in your wallet")]
    CardAlreadyLinked,
    /// `422 card_limit_reached`.
    #[error("{0}")]
    CardLimitReached(&'static str),
    /// `402 risk_declined` (not final): a risk rule refused to link the card.
    #[error("this card cannot be added for now")]
    CardRiskDeclined,
    /// `422 card_not_found`: a top-up from a card that is not an active card of the wallet.
    #[error("there is no such active card in your wallet")]
    CardNotFound,
    /// `422 limit_exceeded` (a decline): a top-up over one of the operator's ceilings.
    #[error("{0}")]
    TopupLimit(String),
    /// `422 invalid_amount`.
    #[error("{0}")]
    InvalidAmount(String),
    /// `503 unavailable`: no processor is configured.
    #[error("{0}")]
    Unavailable(&'static str),
    /// `402 authentication_required` (not final) with `topup_id` and `client_secret`: the issuer
    /// asks the shopper to authenticate the top-up (3-D Secure); the app completes it with the
    /// processor's SDK and repeats the request with the same `Idempotency-Key`.
    #[error("your card issuer asks you to confirm this top-up; complete it, then repeat the request")]
    AuthenticationRequired { topup_id: crate::ids::TopupId, client_secret: crate::secret::Secret<String> },
    /// `503 processor_unavailable`: the card processor did not answer (or its circuit is open).
    #[error("{0}")]
    ProcessorUnavailable(&'static str),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Idempotency(#[from] crate::idempotency::IdempotencyError),
    #[error(transparent)]
    Risk(#[from] RiskError),
    #[error(transparent)]
    Merchant(#[from] MerchantError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<LedgerError> for PaymentsError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::InsufficientFunds(_) => PaymentsError::InsufficientFunds,
            LedgerError::Db(db) => PaymentsError::Db(db),
            other => PaymentsError::Internal(other.into()),
        }
    }
}

impl crate::store::Retryable for PaymentsError {
    fn is_retryable(&self) -> bool {
        match self {
            PaymentsError::Db(e) => e.is_retryable(),
            PaymentsError::Risk(e) => e.is_retryable(),
            PaymentsError::Merchant(e) => e.is_retryable(),
            PaymentsError::Identity(e) => e.is_retryable(),
            PaymentsError::Idempotency(e) => e.is_retryable(),
            _ => false,
        }
    }
}
