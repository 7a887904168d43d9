//! How merchant webhooks are signed and delivered. Each delivery is signed:
//! `Omamori-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed with the
//! endpoint's secret. The endpoints themselves (and their secrets) are the merchants' (see
//! `merchants::webhooks`); the dispatcher asks for them through the [`WebhookTargets`] port.

use crate::ids::EventId;
use crate::ids::WebhookId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Omamori-Signature";
/// The header that carries the event id (the same on every retry).
pub const EVENT_ID_HEADER: &str = "Omamori-Event-Id";
/// How far a receiver should allow the signed timestamp to be from its own clock.
pub const TOLERANCE_SECS: i64 = 300;

/// The `Omamori-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    format!("t={timestamp},v1={}", hex::encode(mac(secret, timestamp, body)))
}

fn mac(secret: &str, timestamp: i64, body: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// What a receiver does with a delivery: true when `header` signs `body` with `secret` and its
/// timestamp is within [`TOLERANCE_SECS`] of `now` (Unix seconds). Compared in constant time.
pub fn verify(secret: &str, header: &str, body: &str, now: i64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = timestamp else { return false };
    if now.abs_diff(t) > TOLERANCE_SECS as u64 {
        return false;
    }
    let expected = mac(secret, t, body);
    signatures.iter().any(|s| crate::secret::constant_time_eq(s, &expected))
}

/// A resolver for merchant endpoints in production: a name that resolves only to loopback, private
/// or link-local addresses is refused at connection time, so a public name cannot be pointed at the
/// internal network after it was registered (DNS rebinding).
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = format!("{}:0", name.as_str());
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host(host).await?.filter(|a| !crate::ports::geo::is_non_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err("the endpoint's name resolves to no public address".into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Where a delivery to an endpoint goes: its URL and signing secret.
pub struct Target {
    pub url: String,
    pub secret: crate::secret::Secret<String>,
}

/// The port through which the dispatcher finds a merchant endpoint (implemented by
/// `merchants::webhooks::Directory`). `None` when the endpoint is disabled, gone, or cannot be signed
/// for.
pub trait WebhookTargets: Send + Sync {
    fn target<'a>(
        &'a self,
        db: &'a crate::store::Db,
        endpoint_id: &'a WebhookId,
    ) -> crate::ports::BoxFuture<'a, Result<Option<Target>, sqlx::Error>>;
}

/// Writes one merchant event for one endpoint to the outbox, inside the caller's transaction. The
/// event id is the same for every endpoint and every retry.
pub async fn enqueue_event(
    conn: &mut crate::store::Conn,
    endpoint_id: &WebhookId,
    event: &Event<'_>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (channel, recipient, kind, subject, body, code, status, attempts, next_attempt_at, \
         created_at, event_id) VALUES ('webhook', $1, $2, NULL, $3, NULL, 'pending', 0, $4, $4, $5)",
    )
    .bind(endpoint_id)
    .bind(event.kind)
    .bind(event.body)
    .bind(now)
    .bind(event.id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A merchant event as the outbox keeps it.
pub struct Event<'a> {
    pub id: &'a EventId,
    pub kind: &'a str,
    pub body: &'a str,
}
