//! Throttles on failed authentication (ARCHITECTURE section 7).
//!
//! Failures are rows in `auth_events` (rolling windows read the service clock) and a per-key
//! consecutive count in `throttle_state`. The keys:
//! - `account:<user id>` for an account tried from unrecognised devices, or `login:<hash>` for a
//!   login that matches no account, so that a throttle never reveals whether an account exists;
//! - `device:<device token id>` for a recognised device, which keeps its own count: failures from
//!   elsewhere never delay or block it, so an attacker cannot lock the owner out;
//! - the client address (10 failures in 10 minutes) and its /24 or /48 subnet (50 in 10 minutes),
//!   which apply to unrecognised devices;
//! - `operator:<id>` (or `operator-login:<hash>` for an unknown operator e-mail) for the console,
//!   whose address and subnet failures are counted apart from shoppers' (`op_fail_ip`,
//!   `op_fail_net`): failing shopper logins from an address never locks operators out of it, and
//!   the reverse;
//! - `merchant:<id>` (or `merchant-login:<hash>`) for merchant staff, likewise counted apart
//!   (`mu_fail_ip`, `mu_fail_net`): a shop's own network, which its shoppers may share, never
//!   locks its staff out of the dashboard, nor a flood on the dashboard its shoppers out.
//!
//! After 5 consecutive failures each further failure doubles a delay (1, 2, 4, 8, 16 s); the
//! tenth blocks the key for 30 minutes; and an account takes at most 100 failures from
//! unrecognised devices in 24 hours.
//!
//! A password check takes tens of milliseconds, so an attempt is counted as a failure *before*
//! the password is checked ([`begin`], under a lock on its keys) and uncounted if it turns out
//! right ([`Pending::succeeded`]). A thousand concurrent guesses therefore meet the limit as
//! surely as a thousand sequential ones.

use sqlx::Row;

use super::{RiskError, Verdict};
use crate::store::{Conn, Tx};

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

impl Limits {
    pub fn from_config(config: &crate::config::Config) -> Limits {
        Limits {
            per_address: config.throttle_address_failures as i64,
            per_subnet: config.throttle_subnet_failures as i64,
        }
    }
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
    /// A cap on the key's delay. Operators' keys never block for 30 minutes: anyone who knows an
    /// operator's address could otherwise keep them out of the console during an incident; their
    /// logins are limited by address and subnet instead.
    pub max_delay_ms: Option<i64>,
}

/// What failed, for the alert counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Password,
    Code,
}

impl Failure {
    fn counter(self) -> &'static str {
        match self {
            Failure::Password => "fail_login",
            Failure::Code => "fail_code",
        }
    }
}

impl Attempt<'_> {
    /// The address and subnet scopes the attempt counts against: an operator's own, merchant
    /// staff's own, or shoppers'.
    fn network_scopes(&self) -> (&'static str, &'static str) {
        let key = self.key;
        if key.starts_with("operator:") || key.starts_with("operator-login:") {
            ("op_fail_ip", "op_fail_net")
        } else if key.starts_with("merchant:") || key.starts_with("merchant-login:") {
            ("mu_fail_ip", "mu_fail_net")
        } else {
            ("fail_ip", "fail_net")
        }
    }
}

/// `429 too_many_attempts`, to be retried after `retry_after_ms`.
pub fn too_many(retry_after_ms: i64) -> RiskError {
    RiskError::TooManyAttempts { retry_after_ms }
}

/// How many `scope` events `key` had since `since`, and when the oldest of them was.
pub async fn window(conn: &mut Conn, scope: &str, key: &str, since: i64) -> Result<(i64, Option<i64>), sqlx::Error> {
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

/// Refuses the attempt when a throttle is engaged (records the refused address for the alerts).
pub async fn check(conn: &mut Conn, limits: Limits, a: &Attempt<'_>, now: i64) -> Result<Verdict, sqlx::Error> {
    let locked_until: Option<i64> = sqlx::query_scalar("SELECT locked_until FROM throttle_state WHERE key = $1")
        .bind(a.key)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(until) = locked_until.filter(|u| *u > now) {
        record(conn, "throttled", a.ip, now).await?;
        return Ok(Verdict::Throttled { retry_after_ms: until - now });
    }
    if a.recognised {
        return Ok(Verdict::Allowed);
    }
    let (ip_scope, net_scope) = a.network_scopes();
    for (scope, key, limit, span) in [
        (ip_scope, a.ip, limits.per_address, WINDOW_MS),
        (net_scope, a.subnet, limits.per_subnet, WINDOW_MS),
        ("fail_account", a.key, DAILY_ACCOUNT_FAILURES, DAY_MS),
    ] {
        let (n, oldest) = window(conn, scope, key, now - span).await?;
        if n >= limit {
            record(conn, "throttled", a.ip, now).await?;
            return Ok(Verdict::Throttled { retry_after_ms: oldest.unwrap_or(now) + span - now });
        }
    }
    Ok(Verdict::Allowed)
}

/// Checks the address/subnet/key limits only, without counting (for flows whose failures are
/// counted elsewhere, such as completing a reset).
pub async fn check_network(
    conn: &mut Conn,
    limits: Limits,
    ip: &str,
    subnet: &str,
    now: i64,
) -> Result<Verdict, sqlx::Error> {
    for (scope, key, limit) in [("fail_ip", ip, limits.per_address), ("fail_net", subnet, limits.per_subnet)] {
        let (n, oldest) = window(conn, scope, key, now - WINDOW_MS).await?;
        if n >= limit {
            record(conn, "throttled", ip, now).await?;
            return Ok(Verdict::Throttled { retry_after_ms: oldest.unwrap_or(now) + WINDOW_MS - now });
        }
    }
    Ok(Verdict::Allowed)
}

/// Records one event; answers its id.
pub async fn record(conn: &mut Conn, scope: &str, key: &str, now: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO auth_events (scope, key, at) VALUES ($1, $2, $3) RETURNING id")
        .bind(scope)
        .bind(key)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
}

/// Takes back events recorded provisionally (an attempt that turned out not to be a failure).
pub async fn unrecord(conn: &mut Conn, ids: &[i64]) -> Result<(), sqlx::Error> {
    for id in ids {
        sqlx::query("DELETE FROM auth_events WHERE id = $1").bind(id).execute(&mut *conn).await?;
    }
    Ok(())
}

fn delay_for(consecutive: i64, cap: Option<i64>) -> i64 {
    let delay = if consecutive < FREE_FAILURES {
        0
    } else if consecutive >= BLOCK_AFTER {
        BLOCK_MS
    } else {
        1000 << (consecutive - FREE_FAILURES)
    };
    cap.map_or(delay, |c| delay.min(c))
}

/// An attempt counted as a failure until it is known to have succeeded.
#[derive(Debug)]
pub struct Pending {
    key: String,
    events: Vec<i64>,
    previous_lock: i64,
    provisional_lock: i64,
}

/// Counts a failure against every key of the attempt; answers what undoes it.
async fn count(conn: &mut Conn, a: &Attempt<'_>, what: Failure, now: i64) -> Result<Pending, sqlx::Error> {
    let mut events = vec![record(conn, what.counter(), a.ip, now).await?];
    if !a.recognised {
        let (ip_scope, net_scope) = a.network_scopes();
        events.push(record(conn, ip_scope, a.ip, now).await?);
        events.push(record(conn, net_scope, a.subnet, now).await?);
        events.push(record(conn, "fail_account", a.key, now).await?);
    }
    let row = sqlx::query(
        "INSERT INTO throttle_state (key, consecutive, locked_until, updated_at) VALUES ($1, 1, 0, $2) \
         ON CONFLICT (key) DO UPDATE SET consecutive = throttle_state.consecutive + 1, updated_at = $2 \
         RETURNING consecutive, locked_until",
    )
    .bind(a.key)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let (consecutive, previous_lock): (i64, i64) = (row.try_get("consecutive")?, row.try_get("locked_until")?);
    let delay = delay_for(consecutive, a.max_delay_ms);
    let provisional_lock = if delay > 0 { now + delay } else { previous_lock };
    if provisional_lock != previous_lock {
        sqlx::query("UPDATE throttle_state SET locked_until = $1 WHERE key = $2")
            .bind(provisional_lock)
            .bind(a.key)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Pending { key: a.key.to_string(), events, previous_lock, provisional_lock })
}

/// Checks the throttles for a password attempt and, when it may go ahead, counts it as a failure
/// at once, all under a lock on its address and key. Call [`Pending::succeeded`] if the password
/// was right.
pub async fn begin(
    tx: &mut Tx,
    limits: Limits,
    a: &Attempt<'_>,
    what: Failure,
    now: i64,
) -> Result<Started, sqlx::Error> {
    if let Verdict::Throttled { retry_after_ms } = check_locked(tx, limits, a, now).await? {
        return Ok(Started::Throttled { retry_after_ms });
    }
    Ok(Started::Counted(count(tx, a, what, now).await?))
}

/// [`check`] under the locks of [`begin`], counting nothing: for a second step (a passkey's
/// answer) whose failure is counted once it is known, so that parallel answers from one network
/// meet its limits as parallel passwords do.
pub async fn check_locked(tx: &mut Tx, limits: Limits, a: &Attempt<'_>, now: i64) -> Result<Verdict, sqlx::Error> {
    // Always in this order (address, subnet, key), so that two attempts cannot deadlock.
    if !a.recognised {
        let (ip_scope, net_scope) = a.network_scopes();
        tx.lock(ip_scope, a.ip).await?;
        tx.lock(net_scope, a.subnet).await?;
    }
    tx.lock("throttle", a.key).await?;
    check(tx, limits, a, now).await
}

/// The address and subnet limits of [`check`], under the locks of [`begin`], counting nothing: for a
/// passkey's answer (its failure is counted once known), so that parallel answers from one network
/// meet the limits as parallel passwords do. The account's daily cap is not applied: whoever knows
/// an e-mail address can fill it with wrong passwords, and a passkey must stay a way in then (the
/// account's own lock still applies, before this).
pub async fn check_network_locked(
    tx: &mut Tx,
    limits: Limits,
    a: &Attempt<'_>,
    now: i64,
) -> Result<Verdict, sqlx::Error> {
    let (ip_scope, net_scope) = a.network_scopes();
    // In the order of `check_locked` (address, subnet, key), so that two attempts cannot deadlock.
    tx.lock(ip_scope, a.ip).await?;
    tx.lock(net_scope, a.subnet).await?;
    tx.lock("throttle", a.key).await?;
    for (scope, key, limit) in [(ip_scope, a.ip, limits.per_address), (net_scope, a.subnet, limits.per_subnet)] {
        let (n, oldest) = window(tx, scope, key, now - WINDOW_MS).await?;
        if n >= limit {
            record(tx, "throttled", a.ip, now).await?;
            return Ok(Verdict::Throttled { retry_after_ms: oldest.unwrap_or(now) + WINDOW_MS - now });
        }
    }
    Ok(Verdict::Allowed)
}

/// How a password attempt began: counted as a failure until proven right, or throttled.
#[must_use]
pub enum Started {
    Counted(Pending),
    Throttled { retry_after_ms: i64 },
}

impl Started {
    pub fn into_result(self) -> Result<Pending, RiskError> {
        match self {
            Started::Counted(pending) => Ok(pending),
            Started::Throttled { retry_after_ms } => Err(too_many(retry_after_ms)),
        }
    }
}

impl Pending {
    /// Uncounts the attempt: it was not a failure. The account's run of failures is not reset
    /// here (a right password is only half a login); the second step resets it.
    pub async fn succeeded(&self, conn: &mut Conn) -> Result<(), sqlx::Error> {
        for id in &self.events {
            sqlx::query("DELETE FROM auth_events WHERE id = $1").bind(id).execute(&mut *conn).await?;
        }
        sqlx::query(
            "UPDATE throttle_state SET consecutive = CASE WHEN consecutive > 0 THEN consecutive - 1 ELSE 0 END, \
             locked_until = CASE WHEN locked_until = $1 THEN $2 ELSE locked_until END WHERE key = $3",
        )
        .bind(self.provisional_lock)
        .bind(self.previous_lock)
        .bind(&self.key)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Counts a failure that is already known (a wrong code), in the caller's locked transaction.
pub async fn record_failure(conn: &mut Conn, a: &Attempt<'_>, what: Failure, now: i64) -> Result<(), sqlx::Error> {
    count(conn, a, what, now).await.map(|_| ())
}

/// A completed login ends the run of consecutive failures for that key.
pub async fn record_success(conn: &mut Conn, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE throttle_state SET consecutive = 0, locked_until = 0 WHERE key = $1")
        .bind(key)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Whether `key` is blocked now (for a second step, which must not outrun the first's throttle).
pub async fn locked(conn: &mut Conn, key: &str, now: i64) -> Result<Option<i64>, sqlx::Error> {
    let until: Option<i64> = sqlx::query_scalar("SELECT locked_until FROM throttle_state WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(until.filter(|u| *u > now))
}

/// Deletes events older than the longest window.
pub async fn purge(conn: &mut Conn, now: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM auth_events WHERE at < $1")
        .bind(now - DAY_MS - WINDOW_MS)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

pub const SMS_PER_NUMBER_HOUR: i64 = 20;
pub const SMS_PER_ADDRESS_HOUR: i64 = 50;
/// Per /24 or /48: rotating addresses inside one network do not multiply the budget.
pub const SMS_PER_SUBNET_HOUR: i64 = 200;

/// Who caused an SMS: an authenticated second step, or an unauthenticated request (sign-up,
/// reset). They have separate budgets per number, so that strangers flooding sign-ups or resets
/// with a victim's number cannot use up the codes the victim needs to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsCause {
    SecondFactor,
    Unauthenticated,
}

/// Counts an SMS against the per-number, per-address and per-subnet budgets of the last hour.
/// Answers `Err(retry_after_ms)` without counting when a budget is spent.
pub async fn sms_budget(
    conn: &mut Conn,
    cause: SmsCause,
    phone: &str,
    client: &crate::risk::client::ClientInfo,
    now: i64,
) -> Result<Verdict, sqlx::Error> {
    const HOUR_MS: i64 = 3600 * 1000;
    let number_scope = match cause {
        SmsCause::SecondFactor => "sms_number",
        SmsCause::Unauthenticated => "sms_unauth_number",
    };
    let budgets = [
        (number_scope, phone, SMS_PER_NUMBER_HOUR),
        ("sms_ip", client.ip_text.as_str(), SMS_PER_ADDRESS_HOUR),
        ("sms_net", client.subnet.as_str(), SMS_PER_SUBNET_HOUR),
    ];
    for (scope, key, limit) in budgets {
        let (n, oldest) = window(conn, scope, key, now - HOUR_MS).await?;
        if n >= limit {
            return Ok(Verdict::Throttled { retry_after_ms: oldest.unwrap_or(now) + HOUR_MS - now });
        }
    }
    for (scope, key, _) in budgets {
        record(conn, scope, key, now).await?;
    }
    Ok(Verdict::Allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_block() {
        let d: Vec<i64> = (1..=11).map(|c| delay_for(c, None)).collect();
        assert_eq!(d, vec![0, 0, 0, 0, 1000, 2000, 4000, 8000, 16000, BLOCK_MS, BLOCK_MS]);
        assert_eq!(delay_for(12, Some(60_000)), 60_000);
        assert_eq!(delay_for(6, Some(60_000)), 2000);
    }
}
