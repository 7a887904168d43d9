//! The one place where failures become `application/problem+json` (RFC 9457).
//!
//! Every error a client can see carries a stable machine `code`; the `detail` helps a person and
//! never contains a database message, a stack trace or a submitted secret. Internal causes are
//! kept in the error for the log line only.

use crate::ids::ChallengeId;
use crate::ids::ReviewId;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::ledger::LedgerError;
use crate::store::Retryable;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document, as every error is sent (the schema; [`ApiError::body`] writes it).
/// Members after `code` appear only with the codes their descriptions name.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[allow(dead_code)]
pub struct Problem {
    /// `urn:omamori:problem:` and the `code`.
    #[schema(example = "urn:omamori:problem:insufficient_funds")]
    r#type: String,
    /// The reason phrase of `status`.
    #[schema(example = "Payment Required")]
    title: String,
    #[schema(minimum = 400, maximum = 599, example = 402)]
    status: u16,
    /// For a person; never a submitted secret or an internal cause.
    #[schema(example = "the balance does not cover this amount")]
    detail: String,
    #[schema(schema_with = problem_code)]
    code: String,
    /// With `too_many_attempts` (the `Retry-After` header says the same) and `cooling_off`: whole
    /// seconds to wait.
    #[schema(minimum = 1, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<i64>,
    /// With `code_invalid`: wrong codes left before the challenge or reset dies.
    #[schema(minimum = 0, maximum = 4, nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts_left: Option<i64>,
    /// With `switch_engaged`: the switch that refused the request.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    switch: Option<crate::ids::SwitchName>,
    /// With `switch_engaged`: the kind of that switch's scope.
    #[schema(schema_with = switch_scope)]
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// With `risk_declined`, when a review case was opened.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    review_id: Option<ReviewId>,
    /// With `step_up_required`: the challenge to verify before repeating the request.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    challenge_id: Option<ChallengeId>,
    /// With `step_up_required`: the methods that challenge accepts.
    #[schema(schema_with = challenge_methods)]
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<Vec<String>>,
    /// With `weak_password`: why the password was refused.
    #[schema(schema_with = weak_password_reason)]
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// With `limit_exceeded` (a payment): which of the wallet's limits it is over.
    #[schema(schema_with = wallet_limit)]
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<String>,
}

/// Every `code` the server sends: the stable vocabulary of API.md (a test in `tests/api/openapi.rs`
/// keeps this list and the codes written under `src/` the same).
pub const PROBLEM_CODES: &[&str] = &[
    // Merchant staff: an e-mail that is a dashboard user's already; a staff member without a store.
    "email_taken",
    "store_ids_required",
    // The card processor did not answer, or asks for the shopper's authentication.
    "processor_unavailable",
    "authentication_required",
    // Requests the server cannot read, or that match no route.
    "bad_request",
    "error",
    "invalid_idempotency_key",
    "idempotency_key_required",
    "invalid_cursor",
    "invalid_query",
    "malformed_body",
    "malformed_json",
    "method_not_allowed",
    "not_found",
    "payload_too_large",
    "request_timeout",
    "uri_too_long",
    "headers_too_large",
    "unsupported_media_type",
    // Who is calling.
    "account_frozen",
    "challenge_expired",
    "code_expired",
    "code_invalid",
    "cooling_off",
    "csrf_rejected",
    "forbidden",
    "invalid_credentials",
    "invalid_method",
    "invalid_signature",
    "region_blocked",
    "step_up_required",
    "switch_engaged",
    "too_many_attempts",
    "totp_not_started",
    "unauthenticated",
    "weak_password",
    // Fields.
    "clock_limit",
    "invalid_amount",
    "invalid_body",
    "invalid_card",
    "invalid_category",
    "holder_kana_not_writable",
    "invalid_email",
    "invalid_date",
    "invalid_range",
    "invalid_group_by",
    "invalid_phone",
    "qr_bad_crc",
    "qr_invalid_field",
    "qr_malformed",
    "qr_mismatch",
    "qr_not_omamori",
    "unknown_account",
    "unknown_store",
    // Business rules and declines.
    "already_applied",
    "already_charged_back",
    "already_decided",
    "already_released",
    "day_not_ended",
    "day_not_settled",
    "card_already_linked",
    "card_declined",
    "card_limit_reached",
    "card_not_allowed",
    "card_not_found",
    "idempotency_conflict",
    "idempotency_in_progress",
    "insufficient_funds",
    "limit_exceeded",
    "not_reversible",
    "passkey_rejected",
    "too_many_passkeys",
    "payment_reversed",
    "refund_exceeds_payment",
    "invalid_items",
    "items_mismatch",
    "reversal_window_closed",
    "risk_declined",
    "rule_exists",
    "second_operator_required",
    // The server.
    "internal_error",
    "unavailable",
];

fn problem_code() -> utoipa::openapi::Object {
    let mut schema =
        crate::ids::one_of_schema(PROBLEM_CODES, "A stable machine-readable code (API.md names what each means).");
    schema.examples = vec![json!("insufficient_funds")];
    schema
}

fn switch_scope() -> utoipa::openapi::Object {
    crate::ids::one_of_schema(crate::risk::switches::SCOPES, "With `switch_engaged`: the kind of that switch's scope.")
}

fn challenge_methods() -> utoipa::openapi::Array {
    let method = crate::ids::one_of_schema(&["sms", "totp", "recovery_code", "passkey"], "A second factor.");
    utoipa::openapi::ArrayBuilder::new()
        .items(method)
        .description(Some("With `step_up_required`: the methods that challenge accepts."))
        .build()
}

fn weak_password_reason() -> utoipa::openapi::Object {
    crate::ids::one_of_schema(
        &["too_short", "too_long", "common", "guessable", "personal"],
        "With `weak_password`: why the password was refused.",
    )
}

fn wallet_limit() -> utoipa::openapi::Object {
    crate::ids::one_of_schema(
        &["per_payment", "daily", "monthly"],
        "With `limit_exceeded`: which of the wallet's limits it is over.",
    )
}

/// Declares `utoipa::IntoResponses` types of problem answers, so that a route lists its standard
/// errors by name: `responses((status = 200, body = X), AuthErrors, NotFound404)`. Each
/// `status => "description"` becomes a `application/problem+json` response referencing
/// [`Problem`]; a description names the codes that status carries.
macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $description:literal),+ $(,)? })+) => {$(
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                [$(($status.to_string(), problem_response($status, $description).into())),+].into()
            }
        }
    )+};
}

/// One problem response: the [`Problem`] schema, and the headers its status comes with.
pub fn problem_response(status: u16, description: &str) -> utoipa::openapi::response::Response {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, ResponseBuilder, Type};
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let mut response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, content);
    let header = |kind: Type, text: &str| {
        HeaderBuilder::new().schema(ObjectBuilder::new().schema_type(kind)).description(Some(text)).build()
    };
    match status {
        401 => response = response.header("WWW-Authenticate", header(Type::String, "`Bearer`")),
        429 => {
            response =
                response.header("Retry-After", header(Type::Integer, "Whole seconds to wait (as `retry_after`)."))
        }
        _ => {}
    }
    response.build()
}

problem_responses! {
    /// `401` for a route that takes a session token or a terminal key.
    Unauthenticated401 {
        401 => "`unauthenticated`: no token, or one that is unknown, expired or revoked",
    }
    /// `403` for a valid token of the wrong kind or role.
    Forbidden403 {
        403 => "`forbidden`: a valid token of the wrong kind (a shopper's, an operator's, a terminal's) or role",
    }
    /// `401` and `403`: what every authenticated route answers first.
    AuthErrors {
        401 => "`unauthenticated`: no token, or one that is unknown, expired or revoked",
        403 => "`forbidden`: a valid token of the wrong kind (a shopper's, an operator's, a terminal's) or role",
    }
    /// `403` of an operator route that needs a fresh second factor.
    OperatorStepUp403 {
        403 => "`forbidden`: not an operator's session; `step_up_required` with `challenge_id` and `methods`: the login was more than 5 minutes ago, so verify that challenge (authenticator code or passkey), then repeat the request",
    }
    /// `403` of a merchant route that needs a fresh second factor.
    MerchantStepUp403 {
        403 => "`forbidden`: not a merchant user's session; `step_up_required` with `challenge_id` and `methods`: the login was more than 5 minutes ago, so verify that challenge (authenticator code or passkey), then repeat the request",
    }
    /// `401` and `403` of a shopper route (a session token, from an allowed country).
    ShopperAuth {
        401 => "`unauthenticated`: no token, or one that is unknown, expired or revoked",
        403 => "`forbidden`: not a shopper's session token; `region_blocked`: the client's country is not served",
    }
    /// `404` for an id that names nothing (an id of the wrong shape included).
    NotFound404 {
        404 => "`not_found`: there is no such thing, or it is not yours",
    }
    /// `422` for a body of the wrong shape.
    Invalid422 {
        422 => "`invalid_body`: a field is missing, unknown, of the wrong type or out of range (`detail` names it, never its value)",
    }
    /// `429` with `Retry-After`.
    TooMany429 {
        429 => "`too_many_attempts`: wait `retry_after` seconds (also the `Retry-After` header)",
    }
    /// `503` when the database or a dependency does not answer.
    Unavailable503 {
        503 => "`unavailable`: the database or a dependency did not answer in time; `processor_unavailable`: the card processor did not answer (with `Retry-After`); try again",
    }
    /// What reading a JSON body (`http::extract::ApiJson`) can answer besides `422`.
    JsonBodyErrors {
        400 => "`malformed_json`: the body is not JSON; `malformed_body`: it could not be read",
        413 => "`payload_too_large`: the body is over 64 KiB",
        415 => "`unsupported_media_type`: a non-empty body not declared as `application/json` (or `+json`)",
    }
    /// What a route that moves money answers for its `Idempotency-Key` and its JSON body, besides `422`.
    IdempotentBodyErrors {
        400 => "`idempotency_key_required`: no `Idempotency-Key`; `invalid_idempotency_key`: not 1 to 255 printable ASCII characters; `malformed_json`: the body is not JSON; `malformed_body`: it could not be read",
        409 => "`idempotency_conflict`: the key was used with another body; `idempotency_in_progress`: the first request with this key is still running",
        413 => "`payload_too_large`: the body is over 64 KiB",
        415 => "`unsupported_media_type`: a non-empty body not declared as `application/json` (or `+json`)",
    }
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
        StatusCode::URI_TOO_LONG => ("uri_too_long", "the request address is too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ("headers_too_large", "the request headers are too large"),
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
            E::LimitExceeded(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", detail),
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

impl From<crate::merchants::settlement::SettleError> for ApiError {
    fn from(e: crate::merchants::settlement::SettleError) -> Self {
        use crate::merchants::settlement::SettleError as E;
        let detail = e.to_string();
        match e {
            E::InvalidDate => ApiError::invalid_body(detail),
            E::NotEnded(_) => ApiError::new(StatusCode::CONFLICT, "day_not_ended", detail),
            E::Ledger(e) => ApiError::internal(anyhow::Error::new(e)),
            E::Db(db) => db.into(),
        }
    }
}

impl From<crate::merchants::payouts::PayoutError> for ApiError {
    fn from(e: crate::merchants::payouts::PayoutError) -> Self {
        use crate::merchants::payouts::PayoutError as E;
        let detail = e.to_string();
        match e {
            E::Invalid(_) => ApiError::invalid_body(detail),
            E::HolderKana(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "holder_kana_not_writable", detail),
            E::NotFound(_) => ApiError::not_found(detail),
            E::NotSettled(_) => ApiError::new(StatusCode::CONFLICT, "day_not_settled", detail),
            E::SecondOperatorRequired => ApiError::new(StatusCode::CONFLICT, "second_operator_required", detail),
            E::WrongCode => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", detail),
            E::Risk(e) => e.into(),
            E::Identity(e) => e.into(),
            E::Db(db) => db.into(),
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
            E::InvalidItems(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_items", detail),
            E::ItemsMismatch(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "items_mismatch", detail),
            E::NotReversible(_) => ApiError::new(StatusCode::CONFLICT, "not_reversible", detail),
            E::ReversalWindowClosed => ApiError::new(StatusCode::CONFLICT, "reversal_window_closed", detail),
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
            E::AuthenticationRequired { topup_id, client_secret } => {
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "authentication_required", detail)
                    .with("topup_id", topup_id.as_str())
                    .with("client_secret", client_secret.expose().as_str())
            }
            E::ProcessorUnavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "processor_unavailable", detail)
                    .with("retry_after", 30)
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("30"))
            }
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
            E::EmailTaken => ApiError::new(StatusCode::CONFLICT, "email_taken", detail),
            E::MerchantNotFound => ApiError::not_found(detail),
            E::UnknownStore => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_store", detail),
            E::StoresRequired => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "store_ids_required", detail),
            E::OwnerHasEveryStore => ApiError::invalid_body(detail),
            E::PasskeysUnavailable => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail),
            E::RegistrationNotFound => ApiError::not_found(detail),
            E::InvalidPasskeyName => ApiError::invalid_body(detail),
            E::PasskeyRejected(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "passkey_rejected", detail),
            E::TooManyPasskeys { .. } => ApiError::new(StatusCode::CONFLICT, "too_many_passkeys", detail),
            E::Risk(risk) => risk.into(),
            E::Db(db) => db.into(),
            E::Internal(cause) => ApiError::internal(cause),
        }
    }
}
