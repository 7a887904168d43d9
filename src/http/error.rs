//! The one place where failures become `application/problem+json` (RFC 9457).
//!
//! Every error a client can see carries a stable machine `code`; the `detail` helps a person and
//! never contains a database message, a stack trace or a submitted secret. Internal causes are
//! kept in the error for the log line only.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::ledger::LedgerError;
use crate::store::Retryable;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as every error is sent.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct Problem {
    #[schema(example = "urn:omamori:problem:insufficient_funds")]
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    /// A stable machine-readable code.
    #[schema(example = "insufficient_funds")]
    code: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Extra members named by API.md (`retry_after`, `attempts_left`, `switch`, ...).
    pub extra: Map<String, Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// A business decline that is the final answer to an idempotent request (stored and replayed),
    /// as opposed to an error the client may fix and retry under the same key.
    pub is_final: bool,
    retryable: bool,
    /// The internal cause, for the log line; never sent.
    source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
            is_final: false,
            retryable: false,
            source: None,
        }
    }

    /// A business decline: the final answer, stored for idempotent replays.
    pub fn decline(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError { is_final: true, ..ApiError::new(status, code, detail) }
    }

    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(name.to_string(), value.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        ApiError {
            source: Some(source.into()),
            ..ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "something went wrong on our side; try again",
            )
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn invalid_body(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", detail)
    }

    pub fn invalid_amount(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount", detail)
    }

    /// The problem document as JSON (also what idempotency stores for a decline).
    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("urn:omamori:problem:{}", self.code),
            "title": title(self.status),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if let Value::Object(map) = &mut body {
            for (k, v) in &self.extra {
                map.insert(k.clone(), v.clone());
            }
        }
        body
    }
}

fn title(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.source {
                Some(source) => tracing::error!(code = self.code, error = format!("{source:#}"), "request failed"),
                None => tracing::error!(code = self.code, detail = %self.detail, "request failed"),
            }
        }
        let mut response =
            (self.status, [(header::CONTENT_TYPE, PROBLEM_JSON)], self.body().to_string()).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl Retryable for ApiError {
    fn is_retryable(&self) -> bool {
        self.retryable
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        let retryable = e.is_retryable();
        if matches!(e, sqlx::Error::PoolTimedOut) {
            return ApiError {
                source: Some(e.into()),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service is busy; try again shortly",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            };
        }
        ApiError { retryable, ..ApiError::internal(e) }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::InsufficientFunds(_) => ApiError::decline(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_funds",
                "the balance does not cover this amount",
            ),
            LedgerError::Db(db) => db.into(),
            other => ApiError::internal(other),
        }
    }
}

/// A problem for a status that a layer below the handlers produced (an unknown route, a method
/// the route does not take, a body over the limit, a panic).
pub fn problem_for_status(status: StatusCode) -> ApiError {
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "there is nothing at this address"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this route does not take this method"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is larger than 64 KiB"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "send the body as application/json"),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request body took too long to arrive"),
        StatusCode::SERVICE_UNAVAILABLE => {
            ("unavailable", "the service is busy or the request took too long; try again")
        }
        StatusCode::BAD_REQUEST => ("bad_request", "the request could not be understood"),
        StatusCode::UNAUTHORIZED => ("unauthenticated", "a valid token is required"),
        StatusCode::FORBIDDEN => ("forbidden", "this token may not do that"),
        s if s.is_server_error() => ("internal_error", "something went wrong on our side; try again"),
        _ => ("error", "the request failed"),
    };
    ApiError::new(status, code, detail)
}

/// `401 unauthenticated`: no session, or one that is gone.
pub fn unauthenticated() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "a valid session token is required")
        .with_header(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"))
}

pub fn forbidden() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token may not do that")
}

/// `429 too_many_attempts` with `retry_after` and `Retry-After`, in whole seconds (at least 1).
pub fn too_many_attempts(retry_after_ms: i64) -> ApiError {
    let secs = ((retry_after_ms.max(1) + 999) / 1000).max(1);
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "too many attempts; wait before trying again")
        .with("retry_after", secs)
        .with_header(header::RETRY_AFTER, HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header"))
}

impl From<crate::risk::RiskError> for ApiError {
    fn from(e: crate::risk::RiskError) -> Self {
        use crate::risk::RiskError as E;
        let detail = e.to_string();
        match e {
            E::TooManyAttempts { retry_after_ms } => too_many_attempts(retry_after_ms),
            E::RegionBlocked => ApiError::new(StatusCode::FORBIDDEN, "region_blocked", detail),
            E::SwitchEngaged { name, scope } => ApiError::new(StatusCode::FORBIDDEN, "switch_engaged", detail)
                .with("switch", name.as_str())
                .with("scope", scope),
            E::AccountFrozen => ApiError::new(StatusCode::FORBIDDEN, "account_frozen", detail),
            E::RiskDeclined { review_id } => {
                let e = ApiError::decline(StatusCode::PAYMENT_REQUIRED, "risk_declined", detail);
                match review_id {
                    Some(id) => e.with("review_id", id),
                    None => e,
                }
            }
            E::Invalid(_) => ApiError::invalid_body(detail),
            E::NotFound(_) => ApiError::not_found(detail),
            E::AlreadyReleased => ApiError::new(StatusCode::CONFLICT, "already_released", detail),
            E::SecondOperatorRequired => ApiError::new(StatusCode::CONFLICT, "second_operator_required", detail),
            E::AlreadyDecided => ApiError::new(StatusCode::CONFLICT, "already_decided", detail),
            E::RuleExists => ApiError::new(StatusCode::CONFLICT, "rule_exists", detail),
            E::Db(db) => db.into(),
        }
    }
}

impl From<crate::merchants::MerchantError> for ApiError {
    fn from(e: crate::merchants::MerchantError) -> Self {
        use crate::merchants::MerchantError as E;
        let detail = e.to_string();
        match e {
            E::InvalidCategory => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_category", detail),
            E::Invalid(_) => ApiError::invalid_body(detail),
            E::NotFound(_) => ApiError::not_found(detail),
            E::Db(db) => db.into(),
            E::Internal(e) => ApiError::internal(e),
        }
    }
}

impl From<crate::payments::PaymentsError> for ApiError {
    fn from(e: crate::payments::PaymentsError) -> Self {
        use crate::payments::PaymentsError as E;
        let detail = e.to_string();
        match e {
            E::InsufficientFunds => ApiError::decline(StatusCode::PAYMENT_REQUIRED, "insufficient_funds", detail),
            E::LimitExceeded { which, .. } => {
                ApiError::decline(StatusCode::PAYMENT_REQUIRED, "limit_exceeded", detail).with("limit", which)
            }
            E::LimitOutOfRange { .. } => ApiError::invalid_amount(detail),
            E::CodeInvalid => ApiError::decline(StatusCode::UNPROCESSABLE_ENTITY, "code_invalid", detail),
            E::CodeExpired => ApiError::decline(StatusCode::GONE, "code_expired", detail),
            E::RefundExceedsPayment { .. } => {
                ApiError::decline(StatusCode::UNPROCESSABLE_ENTITY, "refund_exceeds_payment", detail)
            }
            E::NotReversible(_) => ApiError::new(StatusCode::CONFLICT, "not_reversible", detail),
            E::AlreadyChargedBack => ApiError::new(StatusCode::CONFLICT, "already_charged_back", detail),
            E::AlreadyApplied => ApiError::new(StatusCode::CONFLICT, "already_applied", detail),
            E::SecondOperatorRequired => ApiError::new(StatusCode::CONFLICT, "second_operator_required", detail),
            E::StepUpRequired => ApiError::new(StatusCode::FORBIDDEN, "step_up_required", detail),
            E::Qr(qr) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, qr.code(), detail),
            E::UnknownStore => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_store", detail),
            E::QrMismatch => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "qr_mismatch", detail),
            E::Invalid(_) => ApiError::invalid_body(detail),
            E::NotFound(_) => ApiError::not_found(detail),
            E::CardDeclined => ApiError::new(StatusCode::PAYMENT_REQUIRED, "card_declined", detail),
            E::ChargeDeclined(_) => ApiError::decline(StatusCode::PAYMENT_REQUIRED, "card_declined", detail),
            E::InvalidCard => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_card", detail),
            E::CardNotAllowed => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "card_not_allowed", detail),
            E::CardAlreadyLinked => ApiError::new(StatusCode::CONFLICT, "card_already_linked", detail),
            E::CardLimitReached(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "card_limit_reached", detail),
            E::CardRiskDeclined => ApiError::new(StatusCode::PAYMENT_REQUIRED, "risk_declined", detail),
            E::CardNotFound => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "card_not_found", detail),
            E::TopupLimit(_) => ApiError::decline(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", detail),
            E::InvalidAmount(_) => ApiError::invalid_amount(detail),
            E::Unavailable(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail),
            E::Identity(e) => e.into(),
            E::Idempotency(e) => e.into(),
            E::Risk(e) => e.into(),
            E::Merchant(e) => e.into(),
            E::Db(db) => db.into(),
            E::Internal(e) => ApiError::internal(e),
        }
    }
}

impl From<crate::idempotency::IdempotencyError> for ApiError {
    fn from(e: crate::idempotency::IdempotencyError) -> Self {
        use crate::idempotency::IdempotencyError as E;
        let detail = e.to_string();
        match e {
            E::Conflict => ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", detail),
            E::InProgress => ApiError::new(StatusCode::CONFLICT, "idempotency_in_progress", detail)
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            E::TakenOver => ApiError::new(StatusCode::CONFLICT, "idempotency_in_progress", detail),
            E::Db(db) => db.into(),
        }
    }
}

impl From<crate::identity::IdentityError> for ApiError {
    fn from(e: crate::identity::IdentityError) -> Self {
        use crate::identity::IdentityError as E;
        let detail = e.to_string();
        match e {
            E::InvalidPhone => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_phone", detail),
            E::InvalidEmail => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_email", detail),
            E::InvalidDeviceId => ApiError::invalid_body(detail),
            E::WeakPassword(reason) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", detail).with("reason", reason.as_str())
            }
            E::InvalidCredentials => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", detail),
            E::WrongCurrentPassword => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_credentials", detail),
            // As `http::auth::unauthenticated` answers it (built here: auth depends on this module).
            E::Unauthenticated => ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
                .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
            E::ChallengeNotFound | E::SignupNotFound | E::ResetNotFound | E::UserNotFound | E::CardNotWaiting => {
                ApiError::not_found(detail)
            }
            E::ChallengeExpired => ApiError::new(StatusCode::GONE, "challenge_expired", detail),
            E::OnlySmsIsSent | E::NoSmsMethod | E::MethodNotAccepted { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_method", detail)
            }
            E::CodeInvalid { attempts_left }
            | E::SignupCodesInvalid { attempts_left }
            | E::ResetProofsInvalid { attempts_left } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "code_invalid", detail)
                    .with("attempts_left", attempts_left)
            }
            E::TotpCodeInvalid => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "code_invalid", detail),
            E::TotpNotStarted => ApiError::new(StatusCode::CONFLICT, "totp_not_started", detail),
            E::StepUpRequired { challenge_id, methods } => {
                ApiError::new(StatusCode::FORBIDDEN, "step_up_required", detail)
                    .with("challenge_id", challenge_id)
                    .with("methods", methods)
            }
            E::CoolingOff { retry_after_secs } => {
                ApiError::new(StatusCode::FORBIDDEN, "cooling_off", detail).with("retry_after", retry_after_secs)
            }
            E::LoginDeclined => ApiError::new(StatusCode::FORBIDDEN, "risk_declined", detail),
            E::Risk(risk) => risk.into(),
            E::Db(db) => db.into(),
            E::Internal(cause) => ApiError::internal(cause),
        }
    }
}
