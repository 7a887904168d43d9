//! Idempotency at the HTTP edge (API.md, "Rules that hold for every route"): the `Idempotency-Key`
//! header, the answers a route stores, and [`run`], which claims the key, runs the work in one
//! transaction that also stores its answer, and answers repeats from what was stored. The claims
//! and stored answers themselves are `crate::idempotency`'s.

use std::future::Future;
use std::pin::Pin;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::{ApiError, PROBLEM_JSON};
use crate::idempotency::{self, Begin, Claim, HEADER, MAX_KEY_LEN, Stored};
use crate::store::{self, Clock, Conn, Db};

/// A validated `Idempotency-Key` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let value = headers.get(HEADER).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "this route moves money: send an Idempotency-Key header (a unique string of at most 255 characters)",
            )
        })?;
        let key = value.to_str().unwrap_or("");
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "the Idempotency-Key must be 1 to 255 printable ASCII characters",
            ));
        }
        Ok(IdempotencyKey(key.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The header as a route declares it: `params(IdempotencyKey)`.
impl utoipa::IntoParams for IdempotencyKey {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Required, Type};
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_KEY_LEN))
            .pattern(Some("^[ -~]+$"))
            .examples([serde_json::json!("0c7e5c3a-6f1e-4f55-9d1b-2f3c8a9b7d10")]);
        let parameter = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(
                "A unique key per operation, 1 to 255 printable ASCII characters. The first final answer is \
                 stored for this caller for at least 24 hours: a repeat with the same body gets it again, \
                 another body `409 idempotency_conflict`, a repeat while the first runs `409 \
                 idempotency_in_progress`.",
            ))
            .schema(Some(schema))
            .build();
        vec![parameter]
    }
}

/// The fingerprint of a request: its route and its parsed JSON body.
pub fn fingerprint(route: &str, body: &Value) -> String {
    idempotency::fingerprint(route, &body.to_string())
}

/// A successful answer to store and send.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: StatusCode,
    pub body: Value,
    pub content_type: &'static str,
}

impl Outcome {
    /// A business decline that must commit with the work (a risk decline opens a review case).
    pub fn problem(e: &ApiError) -> Self {
        Outcome { status: e.status, body: e.body(), content_type: PROBLEM_JSON }
    }

    pub fn created(body: Value) -> Self {
        Outcome { status: StatusCode::CREATED, body, content_type: "application/json" }
    }

    pub fn ok(body: Value) -> Self {
        Outcome { status: StatusCode::OK, body, content_type: "application/json" }
    }
}

/// The work of an idempotent request. It runs inside a transaction and may be run again if the
/// database asks for a retry, so it must do nothing outside that transaction.
pub type Work<'c> = Pin<Box<dyn Future<Output = Result<Outcome, ApiError>> + Send + 'c>>;

impl Outcome {
    /// The answer as it is stored for repeats.
    pub fn stored(&self) -> Stored {
        Stored {
            status: self.status.as_u16(),
            content_type: self.content_type.to_string(),
            body: self.body.to_string(),
        }
    }
}

/// A decline as it is stored for repeats.
pub fn stored_problem(e: &ApiError) -> Stored {
    Stored { status: e.status.as_u16(), content_type: PROBLEM_JSON.to_string(), body: e.body().to_string() }
}

/// A stored answer sent again, marked as a replay.
pub fn replay(stored: Stored) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&stored.content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Stores a decline for a claimed key on its own (the work that found it rolled back).
pub async fn store_decline(db: &Db, claim: &Claim, decline: &ApiError) -> Result<(), ApiError> {
    let answer = stored_problem(decline);
    store::retry(|| async {
        let mut tx = db.begin().await?;
        idempotency::complete(&mut tx, claim, &answer).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    })
    .await
}

/// Claims `(caller, key)`: a fresh claim, or the stored answer of an earlier request.
pub async fn begin(db: &Db, clock: &Clock, caller: &str, key: &str, fingerprint: &str) -> Result<Begin, ApiError> {
    Ok(idempotency::begin(db, clock, caller, key, fingerprint).await?)
}

/// Runs `work` at most once per `(caller, key)`, answering repeats as the module describes.
pub async fn run<F>(db: &Db, clock: &Clock, caller: &str, key: &IdempotencyKey, fingerprint: &str, work: F) -> Response
where
    F: for<'c> Fn(&'c mut Conn) -> Work<'c> + Send + Sync,
{
    match run_inner(db, clock, caller, key, fingerprint, work).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn run_inner<F>(
    db: &Db,
    clock: &Clock,
    caller: &str,
    key: &IdempotencyKey,
    fingerprint: &str,
    work: F,
) -> Result<Response, ApiError>
where
    F: for<'c> Fn(&'c mut Conn) -> Work<'c> + Send + Sync,
{
    // The usual case: the key is new, and is claimed in the work's own transaction.
    let first = store::retry(|| async {
        let mut tx = db.begin().await?;
        let now = clock.now_ms();
        let Some(claim) = idempotency::claim_in(&mut tx, caller, key.as_str(), fingerprint, now).await? else {
            tx.rollback().await?;
            return Ok::<_, Failed>(None);
        };
        let outcome = match work(&mut tx).await {
            Ok(outcome) => outcome,
            Err(error) => return Err(Failed { error, claim: Some(claim) }),
        };
        idempotency::complete(&mut tx, &claim, &outcome.stored()).await.map_err(ApiError::from)?;
        tx.commit().await?;
        Ok(Some(outcome))
    })
    .await;
    match first {
        Ok(Some(outcome)) => return Ok(respond(outcome)),
        // Taken: a repeat, a conflict, or a claim still running (the slow path below says which).
        Ok(None) => {}
        Err(Failed { error: decline, claim: Some(claim) }) if decline.is_final => {
            // The work and its claim rolled back: the decline is stored on its own. Should another
            // request have taken the key in between, its answer is the one this request gets too.
            let now = clock.now_ms();
            if idempotency::store_answer(db, &claim, fingerprint, &stored_problem(&decline), now).await? {
                return Ok(decline.into_response());
            }
        }
        // Not final (the client may fix it, or the database was busy): the claim rolled back with it.
        Err(Failed { error, .. }) => return Err(error),
    }
    let claim = match begin(db, clock, caller, key.as_str(), fingerprint).await? {
        Begin::Replay(stored) => return Ok(replay(stored)),
        Begin::Fresh(claim) => claim,
    };
    let result = store::retry(|| async {
        let mut tx = db.begin().await?;
        let outcome = work(&mut tx).await?;
        idempotency::complete(&mut tx, &claim, &outcome.stored()).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(outcome)
    })
    .await;
    match result {
        Ok(outcome) => Ok(respond(outcome)),
        Err(decline) if decline.is_final => {
            // The work rolled back; store the decline on its own so that a repeat gets it again.
            store_decline(db, &claim, &decline).await?;
            Ok(decline.into_response())
        }
        Err(error) => {
            idempotency::release(db, &claim).await;
            Err(error)
        }
    }
}

/// Why the in-transaction attempt ended without an answer: the error, and the claim it held
/// (rolled back with it) when the work itself failed.
struct Failed {
    error: ApiError,
    claim: Option<Claim>,
}

impl From<ApiError> for Failed {
    fn from(error: ApiError) -> Self {
        Failed { error, claim: None }
    }
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed { error: e.into(), claim: None }
    }
}

impl store::Retryable for Failed {
    fn is_retryable(&self) -> bool {
        self.error.is_retryable()
    }
}

fn respond(outcome: Outcome) -> Response {
    let mut response = (outcome.status, outcome.body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(outcome.content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprints_compare_parsed_json() {
        let a: Value = serde_json::from_str(r#"{"amount": 100, "to": 2}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{ "to":2,"amount":100 }"#).unwrap();
        assert_eq!(fingerprint("POST /x", &a), fingerprint("POST /x", &b));
        assert_ne!(fingerprint("POST /x", &a), fingerprint("POST /x", &json!({"amount": 101, "to": 2})));
        assert_ne!(fingerprint("POST /x", &a), fingerprint("POST /y", &a));
    }

    #[test]
    fn keys_are_required_and_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&h).unwrap_err().code, "idempotency_key_required");
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(IdempotencyKey::from_headers(&h).unwrap().as_str(), "abc-123");
        h.insert(HEADER, HeaderValue::from_str(&"k".repeat(255)).unwrap());
        assert!(IdempotencyKey::from_headers(&h).is_ok());
        h.insert(HEADER, HeaderValue::from_str(&"k".repeat(256)).unwrap());
        assert_eq!(IdempotencyKey::from_headers(&h).unwrap_err().code, "invalid_idempotency_key");
        h.insert(HEADER, HeaderValue::from_static(""));
        assert_eq!(IdempotencyKey::from_headers(&h).unwrap_err().code, "invalid_idempotency_key");
    }
}
