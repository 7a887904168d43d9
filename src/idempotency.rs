//! Idempotency for routes that move money (API.md, "Rules that hold for every route").
//!
//! The first request with a key claims it by inserting a `running` row (the primary key
//! `(caller, idem_key)` makes the claim atomic: of two concurrent repeats only one inserts). The
//! work then runs in one transaction that also marks the row `done` with the answer, so the money
//! movement and the stored answer commit together or not at all. A repeat with the same body
//! (compared as parsed JSON) gets the stored answer; another body `409 idempotency_conflict`; a
//! repeat while the first still runs `409 idempotency_in_progress`. Only final answers are stored:
//! success and business declines. An error the client may fix (a malformed amount, a refused
//! switch, a busy database) releases the key so that it can be used again.
//!
//! A claim carries a lease: if the process that claimed a key dies before finishing, a repeat after
//! the lease may take it over. The old claimant, should it still be alive, can no longer complete
//! (its update names a claim token that is gone), so its transaction rolls back and the work is
//! done at most once.

use std::future::Future;
use std::pin::Pin;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::http::error::{ApiError, PROBLEM_JSON};
use crate::store::{self, Clock, Conn, Db};

/// How long a first answer is kept (API.md: at least 24 hours).
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// How long a claim holds before a repeat may take over from a claimant that died.
pub const LEASE_MS: i64 = 60 * 1000;
pub const MAX_KEY_LEN: usize = 255;
pub const HEADER: &str = "idempotency-key";

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

/// A fingerprint of what was asked: the route and the parsed body. `serde_json` keeps object keys
/// sorted, so two bodies that differ only in key order or whitespace have the same fingerprint.
pub fn fingerprint(route: &str, body: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(body.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// The fingerprint of a tombstone: a key claimed by a reversal before any charge used it, so that
/// a charge arriving late is answered with the reversal's decline instead of moving money.
pub const TOMBSTONE: &str = "tombstone";

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

/// The claim a first request holds on its key (for flows that cannot run in one transaction,
/// such as a top-up, which charges a card between two).
#[derive(Debug)]
pub struct Claim {
    caller: String,
    key: String,
    token: String,
}

impl Claim {
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Ends a claimed request with `result`, as [`run`] does: a success or a business decline is
/// stored (the success inside the caller's transaction, already committed with it); any other
/// error releases the key.
pub async fn store_decline(db: &Db, claim: &Claim, decline: &ApiError) -> Result<(), ApiError> {
    let body = decline.body().to_string();
    store::retry(|| async {
        let mut tx = db.begin().await?;
        complete(&mut tx, claim, decline.status, PROBLEM_JSON, &body).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(())
    })
    .await
}

pub enum Begin {
    Fresh(Claim),
    Replay(Response),
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
    let claim = match begin(db, clock, caller, key.as_str(), fingerprint).await? {
        Begin::Replay(response) => return Ok(response),
        Begin::Fresh(claim) => claim,
    };
    let result = store::retry(|| async {
        let mut tx = db.begin().await?;
        let outcome = work(&mut tx).await?;
        let body = outcome.body.to_string();
        complete(&mut tx, &claim, outcome.status, outcome.content_type, &body).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(outcome)
    })
    .await;
    match result {
        Ok(outcome) => {
            let mut response = (outcome.status, outcome.body.to_string()).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(outcome.content_type));
            Ok(response)
        }
        Err(decline) if decline.is_final => {
            // The work rolled back; store the decline on its own so that a repeat gets it again.
            store_decline(db, &claim, &decline).await?;
            Ok(decline.into_response())
        }
        Err(error) => {
            release(db, &claim).await;
            Err(error)
        }
    }
}

pub async fn begin(db: &Db, clock: &Clock, caller: &str, key: &str, fingerprint: &str) -> Result<Begin, ApiError> {
    // Each pass either claims the key, answers from it, or clears a stale row and tries again.
    for _ in 0..3 {
        let now = clock.now_ms();
        let token = uuid::Uuid::new_v4().to_string();
        let inserted = store::write_one(db, || {
            sqlx::query(
                "INSERT INTO idempotency_keys (caller, idem_key, fingerprint, claim, state, lease_until, created_at) \
                 VALUES ($1, $2, $3, $4, 'running', $5, $6) ON CONFLICT (caller, idem_key) DO NOTHING",
            )
            .bind(caller)
            .bind(key)
            .bind(fingerprint)
            .bind(&token)
            .bind(now + LEASE_MS)
            .bind(now)
        })
        .await?;
        let claim = Claim { caller: caller.to_string(), key: key.to_string(), token };
        if inserted == 1 {
            return Ok(Begin::Fresh(claim));
        }
        let Some(row) = sqlx::query(
            "SELECT fingerprint, claim, state, status, content_type, body, lease_until, created_at \
             FROM idempotency_keys WHERE caller = $1 AND idem_key = $2",
        )
        .bind(caller)
        .bind(key)
        .fetch_optional(db.pool())
        .await?
        else {
            continue; // released or purged in between: try to claim again
        };
        let created_at: i64 = row.try_get("created_at")?;
        let old_claim: String = row.try_get("claim")?;
        if created_at + RETENTION_MS < now {
            store::write_one(db, || {
                sqlx::query("DELETE FROM idempotency_keys WHERE caller = $1 AND idem_key = $2 AND claim = $3")
                    .bind(caller)
                    .bind(key)
                    .bind(&old_claim)
            })
            .await?;
            continue;
        }
        let stored_fingerprint: String = row.try_get("fingerprint")?;
        // A tombstone (a POS reversal of a charge that never arrived) answers any body.
        let tombstone = stored_fingerprint == TOMBSTONE;
        if !tombstone && !crate::secret::constant_time_eq(stored_fingerprint.as_bytes(), fingerprint.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this Idempotency-Key was already used with a different request",
            ));
        }
        let state: String = row.try_get("state")?;
        if state == "done" {
            let status: i64 = row.try_get("status")?;
            let content_type: String = row.try_get("content_type")?;
            let body: String = row.try_get("body")?;
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/json")),
            );
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(Begin::Replay(response));
        }
        let lease_until: i64 = row.try_get("lease_until")?;
        if lease_until > now {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still being processed; repeat it shortly",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        // The claimant's lease ran out (it died): take the key over.
        let taken = store::write_one(db, || {
            sqlx::query(
                "UPDATE idempotency_keys SET claim = $1, lease_until = $2 \
                 WHERE caller = $3 AND idem_key = $4 AND claim = $5 AND state = 'running'",
            )
            .bind(&claim.token)
            .bind(now + LEASE_MS)
            .bind(caller)
            .bind(key)
            .bind(&old_claim)
        })
        .await?;
        if taken == 1 {
            return Ok(Begin::Fresh(claim));
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "a request with this Idempotency-Key is still being processed; repeat it shortly",
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")))
}

/// Stores the final answer inside the work's transaction; fails if the claim was taken over.
pub async fn complete(
    conn: &mut Conn,
    claim: &Claim,
    status: StatusCode,
    content_type: &str,
    body: &str,
) -> Result<(), ApiError> {
    let n = sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', status = $1, content_type = $2, body = $3 \
         WHERE caller = $4 AND idem_key = $5 AND claim = $6 AND state = 'running'",
    )
    .bind(status.as_u16() as i64)
    .bind(content_type)
    .bind(body)
    .bind(&claim.caller)
    .bind(&claim.key)
    .bind(&claim.token)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_in_progress",
            "this request took too long and was taken over by a repeat; repeat it to get the answer",
        ));
    }
    Ok(())
}

/// Lets the key be used again after an answer that is not final.
pub async fn release(db: &Db, claim: &Claim) {
    let result = store::write_one(db, || {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE caller = $1 AND idem_key = $2 AND claim = $3 AND state = 'running'",
        )
        .bind(&claim.caller)
        .bind(&claim.key)
        .bind(&claim.token)
    })
    .await;
    if let Err(e) = result {
        // The lease still frees the key later.
        tracing::warn!(error = %e, "could not release an idempotency key");
    }
}

/// Whether a key is held by a request still running (its lease not yet run out).
pub async fn running(db: &Db, caller: &str, key: &str, now: i64) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM idempotency_keys WHERE caller = $1 AND idem_key = $2 AND state = 'running' AND lease_until > $3",
    )
    .bind(caller)
    .bind(key)
    .bind(now)
    .fetch_one(db.pool())
    .await?;
    Ok(n > 0)
}

/// Turns a key whose claimant died (lease run out) into a tombstone with `answer`, so that no
/// later repeat can take the key over and do the work after all.
pub async fn entomb(db: &Db, caller: &str, key: &str, answer: &ApiError, now: i64) -> Result<(), sqlx::Error> {
    let body = answer.body().to_string();
    store::write_one(db, || {
        sqlx::query(
            "UPDATE idempotency_keys SET fingerprint = $1, state = 'done', status = $2, content_type = $3, body = $4 \
             WHERE caller = $5 AND idem_key = $6 AND state = 'running' AND lease_until <= $7",
        )
        .bind(TOMBSTONE)
        .bind(answer.status.as_u16() as i64)
        .bind(PROBLEM_JSON)
        .bind(&body)
        .bind(caller)
        .bind(key)
        .bind(now)
    })
    .await
    .map(|_| ())
}

/// Deletes answers older than the retention period; returns how many.
pub async fn purge_expired(db: &Db, now_ms: i64) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let n = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1 AND (state = 'done' OR lease_until < $2)")
        .bind(now_ms - RETENTION_MS)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
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
