//! Alerts: rolling counters over the last minute that raise a stored alert when a flood starts.
//!
//! The counters are the `auth_events` rows the throttles write (failed logins, failed codes,
//! throttled addresses), read on the service clock. They are evaluated right after each failure is
//! recorded, so an alert is raised within the same request that crosses the threshold (well
//! inside the 60 seconds the design asks for). One alert of a kind is raised per 10 minutes.

use crate::ids::AlertId;
use crate::ids::UserId;
use serde::Serialize;
use sqlx::Row;

use crate::store::{Conn, Db, clock};

pub const WINDOW_MS: i64 = 60 * 1000;
pub const QUIET_MS: i64 = 10 * 60 * 1000;

/// Per-minute thresholds and the containment policy (configurable).
#[derive(Debug, Clone)]
pub struct Thresholds {
    pub failed_logins: i64,
    pub failed_codes: i64,
    pub throttled_addresses: i64,
    /// Failed card checks in a minute (a card-testing flood).
    pub card_declines: i64,
    /// Risk-rule holds and declines in a minute (a wave of fraud attempts).
    pub risk_declines: i64,
    /// Whether the policy may act at all.
    pub contain: bool,
    /// Which detector engages which switch, everywhere, when its alert is raised.
    pub policy: Vec<(String, crate::ids::SwitchName)>,
}

impl Thresholds {
    pub fn from_config(config: &crate::config::Config) -> Thresholds {
        Thresholds {
            failed_logins: config.alert_failed_logins_per_minute as i64,
            failed_codes: config.alert_failed_codes_per_minute as i64,
            throttled_addresses: config.alert_throttled_addresses_per_minute as i64,
            card_declines: config.alert_card_declines_per_minute as i64,
            risk_declines: config.alert_risk_declines_per_minute as i64,
            contain: config.containment,
            policy: config.containment_policy.clone(),
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            failed_logins: 30,
            failed_codes: 20,
            throttled_addresses: 3,
            card_declines: 20,
            risk_declines: 10,
            contain: true,
            policy: vec![("card_declines".into(), crate::ids::SwitchName::CardLinking)],
        }
    }
}

/// Raises whichever alerts the last minute's counters call for, and applies the containment
/// policy to them.
pub async fn evaluate(conn: &mut Conn, t: &Thresholds, now: i64) -> Result<(), sqlx::Error> {
    let since = now - WINDOW_MS;
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).bind(since);
    let failed_logins =
        count("SELECT COUNT(*) FROM auth_events WHERE scope = 'fail_login' AND at > $1").fetch_one(&mut *conn).await?;
    if failed_logins >= t.failed_logins {
        let detail = format!(
            "{failed_logins} failed logins in the last minute (threshold {}): credential stuffing?",
            t.failed_logins
        );
        trip(conn, t, "failed_logins", "high", detail, now).await?;
    }
    let failed_codes =
        count("SELECT COUNT(*) FROM auth_events WHERE scope = 'fail_code' AND at > $1").fetch_one(&mut *conn).await?;
    if failed_codes >= t.failed_codes {
        let detail = format!(
            "{failed_codes} wrong one-time codes in the last minute (threshold {}): code guessing?",
            t.failed_codes
        );
        trip(conn, t, "failed_codes", "high", detail, now).await?;
    }
    let throttled = count("SELECT COUNT(DISTINCT key) FROM auth_events WHERE scope = 'throttled' AND at > $1")
        .fetch_one(&mut *conn)
        .await?;
    if throttled >= t.throttled_addresses {
        let detail =
            format!("{throttled} client addresses throttled in the last minute (threshold {})", t.throttled_addresses);
        trip(conn, t, "throttled_addresses", "medium", detail, now).await?;
    }
    let card_declines = count("SELECT COUNT(*) FROM auth_events WHERE scope = 'card_fail_wallet' AND at > $1")
        .fetch_one(&mut *conn)
        .await?;
    if card_declines >= t.card_declines {
        let detail = format!(
            "{card_declines} failed card checks in the last minute (threshold {}): card testing?",
            t.card_declines
        );
        trip(conn, t, "card_declines", "high", detail, now).await?;
    }
    // Users, not events: one account hitting a rule over and over must not stop everyone's top-ups.
    let risk_declines = count("SELECT COUNT(DISTINCT key) FROM auth_events WHERE scope = 'risk_decline' AND at > $1")
        .fetch_one(&mut *conn)
        .await?;
    if risk_declines >= t.risk_declines {
        let detail = format!(
            "{risk_declines} users held or declined by risk rules in the last minute (threshold {}): a fraud wave?",
            t.risk_declines
        );
        trip(conn, t, "risk_declines", "high", detail, now).await?;
    }
    Ok(())
}

/// A detector crossed its threshold: engage what the policy names for it, then raise the alert
/// (once per quiet period), saying what was stopped.
async fn trip(
    conn: &mut Conn,
    t: &Thresholds,
    detector: &str,
    severity: &str,
    mut detail: String,
    now: i64,
) -> Result<(), sqlx::Error> {
    if t.contain {
        for (_, switch) in t.policy.iter().filter(|(d, _)| d == detector) {
            let reason = format!("automatic containment: {detail}");
            if crate::risk::switches::contain(conn, *switch, &reason, now).await? {
                detail.push_str(&format!(" Stopped everywhere by switch {switch} (automatic containment)."));
            }
        }
    }
    raise(conn, detector, severity, &detail, now).await?;
    Ok(())
}

/// Counts a risk-rule hold or decline for the `risk_declines` detector (evaluated by the
/// periodic detector pass, within seconds).
pub async fn record_risk_decline(conn: &mut Conn, user_id: &UserId, now: i64) -> Result<(), sqlx::Error> {
    crate::risk::throttle::record(conn, "risk_decline", user_id.as_str(), now).await.map(|_| ())
}

/// How often every instance runs the detectors on its own, so that an alert is raised within
/// seconds even when the events that cross a threshold are recorded where no detector runs.
pub const DETECTOR_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Stores an alert unless one of the same kind was raised in the last [`QUIET_MS`].
pub async fn raise(conn: &mut Conn, kind: &str, severity: &str, detail: &str, now: i64) -> Result<bool, sqlx::Error> {
    // Two instances crossing the same threshold at once raise one alert.
    crate::store::lock_conn(conn, "alert", kind).await?;
    let recent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM alerts WHERE kind = $1 AND created_at > $2")
        .bind(kind)
        .bind(now - QUIET_MS)
        .fetch_one(&mut *conn)
        .await?;
    if recent > 0 {
        return Ok(false);
    }
    raise_each(conn, kind, severity, detail, now).await?;
    Ok(true)
}

/// Stores an alert and tells every operator, however recently one of its kind was raised: for
/// events each of which an operator must see (a merchant's new bank account).
pub async fn raise_each(
    conn: &mut Conn,
    kind: &str,
    severity: &str,
    detail: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let id = AlertId::generate();
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
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: AlertId,
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
