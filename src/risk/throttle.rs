//! Throttles on failed authentication (ARCHITECTURE section 7).
//!
//! Failures are rows in `auth_events` (rolling windows read the service clock) and a per-key
//! consecutive count in `throttle_state`. The keys:
//! - `account:<user id>` for an account tried from unrecognised devices, or `login:<hash>` for a
//!   login that matches no account, so that a throttle never reveals whether an account exists;
//! - `device:<device token id>` for a recognised device, which keeps its own count: failures from
//!   elsewhere never delay or block it, so an attacker cannot lock the owner out;
//! - the client address (10 failures in 10 minutes) and its /24 or /48 subnet (50 in 10 minutes),
//!   which apply to unrecognised devices.
//!
//! After 5 consecutive failures each further failure doubles a delay (1, 2, 4, 8, 16 s); the
//! tenth blocks the key for 30 minutes; and an account takes at most 100 failures from
//! unrecognised devices in 24 hours.

use axum::http::{HeaderValue, StatusCode, header};
use sqlx::Row;

use crate::http::error::ApiError;
use crate::store::Conn;

pub const WINDOW_MS: i64 = 10 * 60 * 1000;
pub const DAY_MS: i64 = 24 * 3600 * 1000;
pub const FREE_FAILURES: i64 = 5;
pub const BLOCK_AFTER: i64 = 10;
pub const BLOCK_MS: i64 = 30 * 60 * 1000;
pub const DAILY_ACCOUNT_FAILURES: i64 = 100;

/// Thresholds per address and per subnet (configurable; defaults from section 7).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_address: i64,
    pub per_subnet: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { per_address: 10, per_subnet: 50 }
    }
}

/// Who is trying: the address and subnet, and the account or device key.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub ip: &'a str,
    pub subnet: &'a str,
    pub key: &'a str,
    /// A recognised device is exempt from the address, subnet and daily account limits.
    pub recognised: bool,
}

/// `429 too_many_attempts` with `Retry-After`.
pub fn too_many(retry_after_ms: i64) -> ApiError {
    let secs = ((retry_after_ms.max(1) + 999) / 1000).max(1);
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "too many attempts; wait before trying again")
        .with("retry_after", secs)
        .with_header(header::RETRY_AFTER, HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header"))
}

async fn window(conn: &mut Conn, scope: &str, key: &str, since: i64) -> Result<(i64, Option<i64>), sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM auth_events WHERE scope = $1 AND key = $2 AND at > $3",
    )
    .bind(scope)
    .bind(key)
    .bind(since)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

/// Refuses the attempt before any password or code is checked when a throttle is engaged.
pub async fn check(
    conn: &mut Conn,
    limits: Limits,
    a: &Attempt<'_>,
    now: i64,
) -> Result<Result<(), ApiError>, sqlx::Error> {
    let locked_until: Option<i64> = sqlx::query_scalar("SELECT locked_until FROM throttle_state WHERE key = $1")
        .bind(a.key)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(until) = locked_until.filter(|u| *u > now) {
        // The alert counts addresses refused by any throttle.
        record(conn, "throttled", a.ip, now).await?;
        return Ok(Err(too_many(until - now)));
    }
    if a.recognised {
        return Ok(Ok(()));
    }
    for (scope, key, limit, span) in [
        ("fail_ip", a.ip, limits.per_address, WINDOW_MS),
        ("fail_net", a.subnet, limits.per_subnet, WINDOW_MS),
        ("fail_account", a.key, DAILY_ACCOUNT_FAILURES, DAY_MS),
    ] {
        let (n, oldest) = window(conn, scope, key, now - span).await?;
        if n >= limit {
            if scope != "fail_account" {
                record(conn, "throttled", a.ip, now).await?;
            }
            return Ok(Err(too_many(oldest.unwrap_or(now) + span - now)));
        }
    }
    Ok(Ok(()))
}

pub async fn record(conn: &mut Conn, scope: &str, key: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO auth_events (scope, key, at) VALUES ($1, $2, $3)")
        .bind(scope)
        .bind(key)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// What failed, for the alert counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Password,
    Code,
}

/// Counts a failure (of a password or of a code) against every key of the attempt.
pub async fn record_failure(conn: &mut Conn, a: &Attempt<'_>, what: Failure, now: i64) -> Result<(), sqlx::Error> {
    let counter = match what {
        Failure::Password => "fail_login",
        Failure::Code => "fail_code",
    };
    record(conn, counter, a.ip, now).await?;
    if !a.recognised {
        record(conn, "fail_ip", a.ip, now).await?;
        record(conn, "fail_net", a.subnet, now).await?;
        record(conn, "fail_account", a.key, now).await?;
    }
    let consecutive: i64 = sqlx::query_scalar(
        "INSERT INTO throttle_state (key, consecutive, locked_until, updated_at) VALUES ($1, 1, 0, $2) \
         ON CONFLICT (key) DO UPDATE SET consecutive = throttle_state.consecutive + 1, updated_at = $2 \
         RETURNING consecutive",
    )
    .bind(a.key)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    if consecutive >= FREE_FAILURES {
        let delay = if consecutive >= BLOCK_AFTER { BLOCK_MS } else { 1000 << (consecutive - FREE_FAILURES) };
        sqlx::query("UPDATE throttle_state SET locked_until = $1 WHERE key = $2")
            .bind(now + delay)
            .bind(a.key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A success ends the run of consecutive failures for that key.
pub async fn record_success(conn: &mut Conn, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE throttle_state SET consecutive = 0, locked_until = 0 WHERE key = $1")
        .bind(key)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Deletes events older than the longest window.
pub async fn purge(conn: &mut Conn, now: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM auth_events WHERE at < $1")
        .bind(now - DAY_MS - WINDOW_MS)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}
