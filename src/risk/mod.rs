//! Risk: the client address and its country, throttles on failed authentication, alerts, kill
//! switches and freezes.

pub mod alerts;
pub mod client;
pub mod routes;
pub mod rules;
pub mod switches;
pub mod throttle;
pub mod travel;

use crate::ids::ReviewId;
use crate::ids::SwitchName;

/// What risk refuses, and why. `http` turns each into its status and `code`.
#[derive(Debug, thiserror::Error)]
pub enum RiskError {
    /// `429 too_many_attempts` with `Retry-After`.
    #[error("too many attempts; wait before trying again")]
    TooManyAttempts { retry_after_ms: i64 },
    /// `403 region_blocked`.
    #[error("Omamori is available only in Japan")]
    RegionBlocked,
    /// `403 switch_engaged`: not a final answer (the request may pass once the switch is released).
    #[error("{name} are stopped for now")]
    SwitchEngaged { name: SwitchName, scope: String },
    /// `403 account_frozen`.
    #[error("this account is frozen; contact support")]
    AccountFrozen,
    /// `402 risk_declined`: a final answer, with the review case when one was opened.
    #[error("this payment was declined for your protection")]
    RiskDeclined { review_id: Option<ReviewId> },
    /// `422 invalid_body`: an operator's input that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// `404 not_found`.
    #[error("{0}")]
    NotFound(String),
    /// `409 already_released`.
    #[error("this switch is released already")]
    AlreadyReleased,
    /// `409 second_operator_required`.
    #[error("a release takes a second, different operator")]
    SecondOperatorRequired,
    /// `409 already_decided`.
    #[error("this review was decided already")]
    AlreadyDecided,
    /// `422 limit_exceeded`: approving a held top-up would break one of the shopper's caps now.
    #[error("{0}")]
    LimitExceeded(String),
    /// `409 rule_exists`.
    #[error("a rule with this id exists")]
    RuleExists,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl RiskError {
    pub fn invalid(detail: impl Into<String>) -> RiskError {
        RiskError::Invalid(detail.into())
    }
}

impl crate::store::Retryable for RiskError {
    fn is_retryable(&self) -> bool {
        matches!(self, RiskError::Db(e) if e.is_retryable())
    }
}

/// What a throttle check answers when it ran: go ahead, or wait this long.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Throttled { retry_after_ms: i64 },
}

impl Verdict {
    /// The refusal, for a caller that has nothing to keep before refusing.
    pub fn into_result(self) -> Result<(), RiskError> {
        match self {
            Verdict::Allowed => Ok(()),
            Verdict::Throttled { retry_after_ms } => Err(RiskError::TooManyAttempts { retry_after_ms }),
        }
    }
}
