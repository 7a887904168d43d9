//! Alerts: rolling counters over the last minute that raise a stored alert when a flood starts.
//!
//! The counters are the `auth_events` rows the throttles write (failed logins, failed codes,
//! throttled addresses), read on the service clock. They are evaluated right after each failure is
//! recorded, so an alert is raised within the same request that crosses the threshold (well
//! inside the 60 seconds the design asks for). One alert of a kind is raised per 10 minutes.

use serde::Serialize;
use sqlx::Row;

use crate::store::{Conn, Db, clock};

pub const WINDOW_MS: i64 = 60 * 1000;
pub const QUIET_MS: i64 = 10 * 60 * 1000;

/// Per-minute thresholds (configurable).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub failed_logins: i64,
    pub failed_codes: i64,
    pub throttled_addresses: i64,
    /// Failed card checks in a minute that raise an alert and, when `contain` is set, engage the
    /// `card_linking` switch everywhere (a card-testing flood).
    pub card_declines: i64,
    pub contain: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { failed_logins: 30, failed_codes: 20, throttled_addresses: 3, card_declines: 20, contain: true }
    }
}

/// Raises whichever alerts the last minute's counters call for.
pub async fn evaluate(conn: &mut Conn, t: Thresholds, now: i64) -> Result<(), sqlx::Error> {
    let since = now - WINDOW_MS;
    let failed_logins: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM auth_events WHERE scope = 'fail_login' AND at > $1")
            .bind(since)
            .fetch_one(&mut *conn)
            .await?;
    if failed_logins >= t.failed_logins {
        raise(
            conn,
            "failed_logins",
            "high",
            &format!(
                "{failed_logins} failed logins in the last minute (threshold {}): credential stuffing?",
                t.failed_logins
            ),
            now,
        )
        .await?;
    }
    let failed_codes: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM auth_events WHERE scope = 'fail_code' AND at > $1")
            .bind(since)
            .fetch_one(&mut *conn)
            .await?;
    if failed_codes >= t.failed_codes {
        raise(
            conn,
            "failed_codes",
            "high",
            &format!(
                "{failed_codes} wrong one-time codes in the last minute (threshold {}): code guessing?",
                t.failed_codes
            ),
            now,
        )
        .await?;
    }
    let throttled: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT key) FROM auth_events WHERE scope = 'throttled' AND at > $1")
            .bind(since)
            .fetch_one(&mut *conn)
            .await?;
    if throttled >= t.throttled_addresses {
        raise(
            conn,
            "throttled_addresses",
            "medium",
            &format!("{throttled} client addresses throttled in the last minute (threshold {})", t.throttled_addresses),
            now,
        )
        .await?;
    }
    let card_declines: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM auth_events WHERE scope = 'card_fail_wallet' AND at > $1")
            .bind(since)
            .fetch_one(&mut *conn)
            .await?;
    if card_declines >= t.card_declines {
        let contained = t.contain
            && crate::risk::switches::contain(
                conn,
                "card_linking",
                &format!("automatic containment: {card_declines} failed card checks in a minute"),
                now,
            )
            .await?;
        let detail = format!(
            "{card_declines} failed card checks in the last minute (threshold {}): card testing?{}",
            t.card_declines,
            if contained { " Card linking was stopped everywhere (switch card_linking)." } else { "" }
        );
        raise(conn, "card_declines", "high", &detail, now).await?;
    }
    Ok(())
}

/// Stores an alert unless one of the same kind was raised in the last [`QUIET_MS`].
pub async fn raise(conn: &mut Conn, kind: &str, severity: &str, detail: &str, now: i64) -> Result<bool, sqlx::Error> {
    let recent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE kind = $1 AND created_at > $2")
        .bind(kind)
        .bind(now - QUIET_MS)
        .fetch_one(&mut *conn)
        .await?;
    if recent > 0 {
        return Ok(false);
    }
    let id = crate::identity::new_id("alr");
    sqlx::query("INSERT INTO alerts (id, kind, severity, detail, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(kind)
        .bind(severity)
        .bind(detail)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    // Every operator is told, through the outbox (and so by whichever channel delivers e-mail),
    // in the transaction that raised the alert.
    let operators: Vec<String> =
        sqlx::query_scalar("SELECT email FROM operators ORDER BY email").fetch_all(&mut *conn).await?;
    for email in operators {
        let message = crate::notify::Message {
            channel: crate::notify::Channel::Email,
            to: email,
            kind: "operator_alert".into(),
            subject: Some(format!("[Omamori {severity}] {kind}")),
            body: detail.to_string(),
            code: None,
        };
        crate::notify::enqueue(conn, &message, now).await?;
    }
    // And the on-call tool, when one is configured (the dispatcher knows).
    let page = crate::notify::Message {
        channel: crate::notify::Channel::Webhook,
        to: crate::notify::dispatch::ONCALL.into(),
        kind: "operator_alert".into(),
        subject: None,
        body: serde_json::json!({
            "alert_id": id, "kind": kind, "severity": severity, "detail": detail, "created_at": clock::rfc3339_ms(now),
        })
        .to_string(),
        code: None,
    };
    crate::notify::enqueue(conn, &page, now).await?;
    tracing::warn!(kind, severity, detail, "alert raised");
    Ok(true)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: String,
    pub kind: String,
    pub severity: String,
    pub detail: String,
    pub created_at: String,
}

/// The newest alerts first.
pub async fn list(db: &Db, limit: i64) -> Result<Vec<Alert>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, kind, severity, detail, created_at FROM alerts ORDER BY created_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Alert {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                severity: r.try_get("severity")?,
                detail: r.try_get("detail")?,
                created_at: clock::rfc3339_ms(r.try_get("created_at")?),
            })
        })
        .collect()
}
