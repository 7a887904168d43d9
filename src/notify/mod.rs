//! Notifications: the outbox (ARCHITECTURE section 9).
//!
//! A notice is written to the `outbox` table in the same transaction as the event that causes it,
//! so it exists exactly when the event committed, and delivery can never block or undo the event.
//! The [`dispatch`]er delivers it through the real channels (SMTP e-mail, the SMS gateway, the
//! on-call webhook, signed merchant [`webhooks`]); in sandbox mode a channel that is not configured
//! keeps its messages, which `GET /v1/sandbox/messages` lists.

pub mod dispatch;
pub mod webhooks;

use crate::ids::EventId;
use serde::Serialize;
use sqlx::Row;

use crate::store::{Conn, Db, clock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

/// A message to be delivered.
#[derive(Debug, Clone)]
pub struct Message {
    pub channel: Channel,
    /// E.164 phone, e-mail address or webhook endpoint id.
    pub to: String,
    /// What happened (`signup_code`, `login_new_device`, ...), for routing and for the sandbox.
    pub kind: String,
    pub subject: Option<String>,
    pub body: String,
    /// The one-time code the message carries, if any (shown by the sandbox list).
    pub code: Option<String>,
}

/// Writes `message` to the outbox inside the caller's transaction.
pub async fn enqueue(conn: &mut Conn, message: &Message, now_ms: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO outbox (channel, recipient, kind, subject, body, code, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) RETURNING id",
    )
    .bind(message.channel.as_str())
    .bind(&message.to)
    .bind(&message.kind)
    .bind(&message.subject)
    .bind(&message.body)
    .bind(&message.code)
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await
}

/// A message as the sandbox shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SandboxMessage {
    pub to: String,
    pub channel: Channel,
    pub kind: String,
    pub subject: Option<String>,
    pub body: String,
    pub code: Option<String>,
    pub created_at: String,
}

/// The SMS and e-mail messages sent to `to`, newest first (at most `limit`).
pub async fn messages_to(db: &Db, to: &str, limit: i64) -> Result<Vec<SandboxMessage>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT channel, recipient, kind, subject, body, code, created_at FROM outbox \
         WHERE recipient = $1 AND channel IN ('sms', 'email') ORDER BY id DESC LIMIT $2",
    )
    .bind(to)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let channel: String = r.try_get("channel")?;
            Ok(SandboxMessage {
                to: r.try_get("recipient")?,
                channel: if channel == "sms" { Channel::Sms } else { Channel::Email },
                kind: r.try_get("kind")?,
                subject: r.try_get("subject")?,
                body: r.try_get("body")?,
                code: r.try_get("code")?,
                created_at: clock::rfc3339_ms(r.try_get("created_at")?),
            })
        })
        .collect()
}

/// A message as operators see it: where it stands, never what it says.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    /// `sms`, `email` or `webhook`.
    pub channel: String,
    /// Masked for SMS and e-mail.
    pub recipient: String,
    pub kind: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// The channel that took it (or `sandbox`).
    pub delivered_via: Option<String>,
    /// The webhook event it carries, for merchant webhooks.
    pub event_id: Option<EventId>,
    pub created_at: String,
    /// When the next attempt is due (pending messages only).
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
}

/// Messages for operators, newest first: where they stand, never what they say (a pending message
/// may still carry a code). Phones and e-mail addresses are masked.
pub async fn for_operators(db: &Db, status: &str, limit: i64) -> Result<Vec<Delivery>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, channel, recipient, kind, status, attempts, last_error, delivered_via, event_id, created_at, \
         next_attempt_at, delivered_at FROM outbox WHERE status = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(status)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let channel: String = r.try_get("channel")?;
            let recipient: String = r.try_get("recipient")?;
            let recipient = match channel.as_str() {
                "sms" => crate::secret::mask_phone(&recipient),
                "email" => crate::secret::mask_email(&recipient),
                _ => recipient,
            };
            let status: String = r.try_get("status")?;
            let next_attempt_at = (status == "pending")
                .then(|| r.try_get::<i64, _>("next_attempt_at").map(clock::rfc3339_ms))
                .transpose()?;
            Ok(Delivery {
                id: r.try_get("id")?,
                channel,
                recipient,
                kind: r.try_get("kind")?,
                status,
                attempts: r.try_get("attempts")?,
                last_error: r.try_get("last_error")?,
                delivered_via: r.try_get("delivered_via")?,
                event_id: r.try_get("event_id")?,
                created_at: clock::rfc3339_ms(r.try_get("created_at")?),
                next_attempt_at,
                delivered_at: r.try_get::<Option<i64>, _>("delivered_at")?.map(clock::rfc3339_ms),
            })
        })
        .collect()
}
