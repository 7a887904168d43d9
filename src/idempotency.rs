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

use sqlx::Row;

use crate::store::{self, Clock, Conn, Db};

/// How long a first answer is kept (API.md: at least 24 hours).
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// How long a claim holds before a repeat may take over from a claimant that died.
pub const LEASE_MS: i64 = 60 * 1000;
pub const MAX_KEY_LEN: usize = 255;
pub const HEADER: &str = "idempotency-key";

/// A fingerprint of what was asked: the route and the request body in a canonical form (the
/// caller serialises the parsed JSON, whose object keys are sorted, so two bodies that differ only
/// in key order or whitespace have the same fingerprint).
pub fn fingerprint(route: &str, canonical_body: &str) -> String {
    // SHA-256 of the route, a NUL and the body: the digest a stored secret has, and the one stored
    // fingerprints have always been.
    crate::secret::secret_hash(route, canonical_body)
}

/// The fingerprint of a tombstone: a key claimed by a reversal before any charge used it, so that
/// a charge arriving late is answered with the reversal's decline instead of moving money.
pub const TOMBSTONE: &str = "tombstone";

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

/// An answer stored under a key: what the first request was answered, to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

pub enum Begin {
    Fresh(Claim),
    Replay(Stored),
}

/// Why a key cannot be used now.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// `409 idempotency_conflict`.
    #[error("this Idempotency-Key was already used with a different request")]
    Conflict,
    /// `409 idempotency_in_progress` with `Retry-After`.
    #[error("a request with this Idempotency-Key is still being processed; repeat it shortly")]
    InProgress,
    /// `409 idempotency_in_progress`: this request's claim was taken over by a repeat.
    #[error("this request took too long and was taken over by a repeat; repeat it to get the answer")]
    TakenOver,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl store::Retryable for IdempotencyError {
    fn is_retryable(&self) -> bool {
        matches!(self, IdempotencyError::Db(e) if e.is_retryable())
    }
}

pub async fn begin(
    db: &Db,
    clock: &Clock,
    caller: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Begin, IdempotencyError> {
    // Each pass either claims the key, answers from it, or clears a stale row and tries again.
    for _ in 0..3 {
        let now = clock.now_ms();
        let token = uuid::Uuid::new_v4().to_string();
        let claim = Claim { caller: caller.to_string(), key: key.to_string(), token };
        if claim_new(db, &claim, fingerprint, now).await? {
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
        if let Some(stored) = answer_of(&row, fingerprint, now)? {
            return Ok(Begin::Replay(stored));
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
    Err(IdempotencyError::InProgress)
}

/// Claims a key no request used yet inside the caller's transaction, so that the claim, the work
/// and the stored answer commit together (one durable commit). A concurrent request with the same
/// key waits on the key's row until this transaction ends (PostgreSQL's unique index; SQLite's
/// single writer), then finds the answer. `None`: the key is taken (or was, by a transaction that
/// committed first): roll back and ask [`begin`].
pub async fn claim_in(
    conn: &mut Conn,
    caller: &str,
    key: &str,
    fingerprint: &str,
    now: i64,
) -> Result<Option<Claim>, sqlx::Error> {
    let claim = Claim { caller: caller.to_string(), key: key.to_string(), token: uuid::Uuid::new_v4().to_string() };
    let inserted = claim_statement(&claim, fingerprint, now).execute(&mut *conn).await?.rows_affected();
    Ok((inserted == 1).then_some(claim))
}

/// Stores a final decline under a key whose in-transaction claim rolled back with the work that
/// found the decline; answers whether it was stored (`false`: another request holds the key now).
pub async fn store_answer(
    db: &Db,
    claim: &Claim,
    fingerprint: &str,
    answer: &Stored,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = store::write_one(db, || {
        sqlx::query(
            "INSERT INTO idempotency_keys (caller, idem_key, fingerprint, claim, state, status, content_type, body, \
             lease_until, created_at) VALUES ($1, $2, $3, $4, 'done', $5, $6, $7, $8, $9) ON CONFLICT (caller, idem_key) DO NOTHING",
        )
        .bind(&claim.caller)
        .bind(&claim.key)
        .bind(fingerprint)
        .bind(&claim.token)
        .bind(i64::from(answer.status))
        .bind(&answer.content_type)
        .bind(&answer.body)
        .bind(now)
        .bind(now)
    })
    .await?;
    Ok(inserted == 1)
}

/// Claims a key no request used yet; answers whether it was free.
async fn claim_new(db: &Db, claim: &Claim, fingerprint: &str, now: i64) -> Result<bool, sqlx::Error> {
    let inserted = store::write_one(db, || claim_statement(claim, fingerprint, now)).await?;
    Ok(inserted == 1)
}

/// The claim of a key no request used yet: a `running` row, or nothing when the key is taken.
fn claim_statement<'q>(
    claim: &'q Claim,
    fingerprint: &'q str,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    sqlx::query(
        "INSERT INTO idempotency_keys (caller, idem_key, fingerprint, claim, state, lease_until, created_at) \
         VALUES ($1, $2, $3, $4, 'running', $5, $6) ON CONFLICT (caller, idem_key) DO NOTHING",
    )
    .bind(&claim.caller)
    .bind(&claim.key)
    .bind(fingerprint)
    .bind(&claim.token)
    .bind(now + LEASE_MS)
    .bind(now)
}

/// What a key held by another request answers a repeat: its stored answer when it is done;
/// `409 idempotency_conflict` for another body, `409 idempotency_in_progress` while its lease
/// runs; `None` when its claimant died (the lease ran out) and the key may be taken over.
fn answer_of(row: &sqlx::any::AnyRow, fingerprint: &str, now: i64) -> Result<Option<Stored>, IdempotencyError> {
    let stored_fingerprint: String = row.try_get("fingerprint")?;
    // A tombstone (a POS reversal of a charge that never arrived) answers any body.
    let tombstone = stored_fingerprint == TOMBSTONE;
    if !tombstone && !crate::secret::constant_time_eq(stored_fingerprint.as_bytes(), fingerprint.as_bytes()) {
        return Err(IdempotencyError::Conflict);
    }
    let state: String = row.try_get("state")?;
    if state == "done" {
        let status: i64 = row.try_get("status")?;
        return Ok(Some(Stored {
            status: u16::try_from(status).unwrap_or(500),
            content_type: row.try_get("content_type")?,
            body: row.try_get("body")?,
        }));
    }
    let lease_until: i64 = row.try_get("lease_until")?;
    if lease_until > now {
        return Err(IdempotencyError::InProgress);
    }
    Ok(None)
}

/// Stores the final answer inside the work's transaction; fails if the claim was taken over.
pub async fn complete(conn: &mut Conn, claim: &Claim, answer: &Stored) -> Result<(), IdempotencyError> {
    let n = sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', status = $1, content_type = $2, body = $3 \
         WHERE caller = $4 AND idem_key = $5 AND claim = $6 AND state = 'running'",
    )
    .bind(i64::from(answer.status))
    .bind(&answer.content_type)
    .bind(&answer.body)
    .bind(&claim.caller)
    .bind(&claim.key)
    .bind(&claim.token)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(IdempotencyError::TakenOver);
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
pub async fn entomb(db: &Db, caller: &str, key: &str, answer: &Stored, now: i64) -> Result<(), sqlx::Error> {
    store::write_one(db, || {
        sqlx::query(
            "UPDATE idempotency_keys SET fingerprint = $1, state = 'done', status = $2, content_type = $3, body = $4 \
             WHERE caller = $5 AND idem_key = $6 AND state = 'running' AND lease_until <= $7",
        )
        .bind(TOMBSTONE)
        .bind(i64::from(answer.status))
        .bind(&answer.content_type)
        .bind(&answer.body)
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

    #[test]
    fn fingerprints_depend_on_route_and_body() {
        assert_eq!(fingerprint("POST /x", r#"{"amount":100}"#), fingerprint("POST /x", r#"{"amount":100}"#));
        assert_ne!(fingerprint("POST /x", r#"{"amount":100}"#), fingerprint("POST /x", r#"{"amount":101}"#));
        assert_ne!(fingerprint("POST /x", r#"{"amount":100}"#), fingerprint("POST /y", r#"{"amount":100}"#));
    }
}
