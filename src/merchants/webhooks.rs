//! Merchant webhook endpoints: the registry operators manage, and the events written for them.
//!
//! An event (`payment.succeeded`, `payment.refunded`, `payment.reversed`) is written to the outbox
//! once per endpoint of the merchant, in the transaction of the money movement, with an event id
//! that stays the same on every retry so that a receiver can deduplicate on it. The signing secret
//! is not stored: it is derived from the configured `webhook_signing_key` and the endpoint's random
//! salt, and shown once, when the endpoint is made. Delivery and signatures are `notify::webhooks`.

use crate::ids::EventId;
use crate::ids::MerchantId;
use crate::ids::WebhookId;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;
use sqlx::Row;

use super::MerchantError;
use crate::config::{Key, KeyRing};
use crate::notify::{self, webhooks::Event, webhooks::Target, webhooks::WebhookTargets};
use crate::ports::BoxFuture;
use crate::secret::Secret;
use crate::store::{self, Conn, Db, clock};

/// The signing secret of an endpoint: `whsec_` and 32 bytes derived from the key and the salt.
pub fn secret(key: &Key, endpoint_id: &WebhookId, salt: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.bytes.expose()).expect("HMAC takes any key length");
    mac.update(b"omamori-webhook-secret\0");
    mac.update(endpoint_id.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(salt.as_bytes());
    format!("whsec_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// The events a merchant's endpoints receive.
pub const EVENTS: &[&str] = &["payment.succeeded", "payment.refunded", "payment.reversed"];

/// Writes `event_type` for every active endpoint of `merchant_id` to the outbox, inside the
/// caller's transaction. Returns the event id, if any endpoint will receive it.
pub async fn emit(
    conn: &mut Conn,
    merchant_id: &MerchantId,
    event_type: &str,
    data: &impl Serialize,
    now: i64,
) -> Result<Option<EventId>, sqlx::Error> {
    let endpoints = active_endpoints(conn, merchant_id).await?;
    emit_to(conn, &endpoints, event_type, data, now).await
}

/// [`emit`], with the merchant's endpoints from memory (`store::cache`, group `merchants`: an
/// endpoint added or disabled applies at once where it was changed, within a second elsewhere).
pub async fn emit_cached(
    db: &Db,
    conn: &mut Conn,
    merchant_id: &MerchantId,
    event_type: &str,
    data: &impl Serialize,
    now: i64,
) -> Result<Option<EventId>, sqlx::Error> {
    use crate::store::cache::{Group, cached};
    let key = format!("endpoints:{merchant_id}");
    let endpoints = cached(db, conn, Group::Merchants, &key, |conn| {
        let merchant_id = merchant_id.clone();
        Box::pin(async move { active_endpoints(conn, &merchant_id).await })
    })
    .await?;
    emit_to(conn, &endpoints, event_type, data, now).await
}

async fn active_endpoints(conn: &mut Conn, merchant_id: &MerchantId) -> Result<Vec<WebhookId>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM webhook_endpoints WHERE merchant_id = $1 AND disabled_at IS NULL ORDER BY id")
        .bind(merchant_id)
        .fetch_all(&mut *conn)
        .await
}

async fn emit_to(
    conn: &mut Conn,
    endpoints: &[WebhookId],
    event_type: &str,
    data: &impl Serialize,
    now: i64,
) -> Result<Option<EventId>, sqlx::Error> {
    debug_assert!(EVENTS.contains(&event_type));
    if endpoints.is_empty() {
        return Ok(None);
    }
    let event_id = EventId::generate();
    let body =
        serde_json::to_string(&EventBody { id: &event_id, kind: event_type, created_at: clock::rfc3339_ms(now), data })
            .expect("an event serialises");
    let event = Event { id: &event_id, kind: event_type, body: &body };
    for endpoint in endpoints {
        notify::webhooks::enqueue_event(conn, endpoint, &event, now).await?;
    }
    Ok(Some(event_id))
}

/// A merchant event as its receiver gets it.
#[derive(Serialize)]
struct EventBody<'a, T: Serialize> {
    id: &'a EventId,
    #[serde(rename = "type")]
    kind: &'a str,
    created_at: String,
    data: &'a T,
}

/// An endpoint as operators see it (never with its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub webhook_id: WebhookId,
    pub merchant_id: MerchantId,
    pub url: String,
    pub created_at: String,
    pub disabled: bool,
}

/// Checks an endpoint URL: https, or http outside production (for local receivers).
pub fn check_url(url: &str, production: bool) -> Result<String, MerchantError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| MerchantError::Invalid("url is not a URL".into()))?;
    let scheme_ok = parsed.scheme() == "https" || (!production && parsed.scheme() == "http");
    if !scheme_ok || parsed.host_str().is_none() || url.len() > 2048 {
        let detail = if production { "url must be an https:// URL" } else { "url must be an http:// or https:// URL" };
        return Err(MerchantError::Invalid(detail.into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(MerchantError::Invalid("url must not carry credentials".into()));
    }
    // In production a merchant endpoint is on the internet: not this host, not the private network
    // (names are checked again when they resolve, at every delivery; see `PublicOnly`).
    if production {
        let host = parsed.host_str().unwrap_or_default();
        let internal = match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
            Ok(ip) => crate::ports::geo::is_non_public(ip),
            Err(_) => host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost"),
        };
        if internal {
            return Err(MerchantError::Invalid("url must name a public host".into()));
        }
    }
    Ok(parsed.to_string())
}

/// Registers an endpoint for a merchant; returns it with its secret (shown this once).
pub async fn create(
    db: &Db,
    key: &Key,
    merchant_id: &MerchantId,
    url: &str,
    actor: &str,
    now: i64,
) -> Result<(Endpoint, String), MerchantError> {
    let id = WebhookId::generate();
    let salt = crate::secret::new_token();
    store::retry(|| async {
        let mut tx = db.begin().await?;
        super::require_merchant(&mut tx, merchant_id).await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, salt, key_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(merchant_id)
        .bind(url)
        .bind(&salt)
        .bind(&key.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        crate::audit::append(
            &mut tx,
            actor,
            "webhook.create",
            &id,
            &json!({"merchant_id": merchant_id, "url": url}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok::<_, MerchantError>(())
    })
    .await?;
    let endpoint = Endpoint {
        webhook_id: id.clone(),
        merchant_id: merchant_id.clone(),
        url: url.to_string(),
        created_at: clock::rfc3339_ms(now),
        disabled: false,
    };
    Ok((endpoint, secret(key, &id, &salt)))
}

/// The endpoints of a merchant, oldest first.
pub async fn list(db: &Db, merchant_id: &MerchantId) -> Result<Vec<Endpoint>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, merchant_id, url, created_at, disabled_at FROM webhook_endpoints WHERE merchant_id = $1 \
         ORDER BY created_at, id",
    )
    .bind(merchant_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Endpoint {
                webhook_id: r.try_get("id")?,
                merchant_id: r.try_get("merchant_id")?,
                url: r.try_get("url")?,
                created_at: clock::rfc3339_ms(r.try_get("created_at")?),
                disabled: r.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
            })
        })
        .collect()
}

/// Disables an endpoint: nothing more is sent to it, including retries still due.
pub async fn disable(db: &Db, id: &WebhookId, actor: &str, now: i64) -> Result<bool, MerchantError> {
    let n = store::retry(|| async {
        let mut tx = db.begin().await?;
        let n = sqlx::query("UPDATE webhook_endpoints SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            crate::audit::append(&mut tx, actor, "webhook.disable", id, &json!({}), now).await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(n)
    })
    .await?;
    Ok(n == 1)
}

/// The endpoints as the dispatcher finds them, signed with the configured `webhook_signing_key`.
pub struct Directory {
    pub key: Option<KeyRing>,
}

impl WebhookTargets for Directory {
    fn target<'a>(
        &'a self,
        db: &'a Db,
        endpoint_id: &'a WebhookId,
    ) -> BoxFuture<'a, Result<Option<Target>, sqlx::Error>> {
        Box::pin(async move {
            let Some(key) = &self.key else {
                tracing::warn!(endpoint = %endpoint_id, "no webhook signing key is configured");
                return Ok(None);
            };
            target(db, key, endpoint_id).await
        })
    }
}

/// Where and with which secret a delivery to `endpoint_id` goes; `None` when the endpoint is gone
/// or disabled.
/// The secret comes from the key the endpoint was made under (its receiver knows that secret), so
/// an older key of the ring keeps signing for its endpoints; new endpoints get the newest.
async fn target(db: &Db, keys: &KeyRing, endpoint_id: &WebhookId) -> Result<Option<Target>, sqlx::Error> {
    let row = sqlx::query("SELECT url, salt, key_id FROM webhook_endpoints WHERE id = $1 AND disabled_at IS NULL")
        .bind(endpoint_id)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let key_id: String = row.try_get("key_id")?;
    let Some(key) = keys.get(&key_id) else {
        // The endpoint's secret came from a key that is no longer configured; its receiver could not
        // verify a signature made with another one.
        tracing::warn!(endpoint = %endpoint_id, key_id, "webhook endpoint was made under a key no longer configured");
        return Ok(None);
    };
    let salt: String = row.try_get("salt")?;
    Ok(Some(Target { url: row.try_get("url")?, secret: Secret::new(secret(key, endpoint_id, &salt)) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::webhooks::{TOLERANCE_SECS, sign, verify};

    #[test]
    fn production_endpoints_must_be_public_however_the_address_is_written() {
        for internal in [
            "https://127.0.0.1/hook",
            "https://[::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://[::ffff:7f00:1]/hook",
            "https://[::ffff:10.0.0.1]/hook",
            "https://[::ffff:192.168.1.1]/hook",
            "https://[::ffff:169.254.169.254]/latest/meta-data",
            "https://localhost/hook",
        ] {
            assert!(check_url(internal, true).is_err(), "{internal} was accepted");
        }
        for public in ["https://[::ffff:8.8.8.8]/hook", "https://203.0.113.7/hook", "https://shop.example/hook"] {
            assert!(check_url(public, true).is_ok(), "{public} was refused");
        }
        // Outside production a developer may point an endpoint at this host.
        assert!(check_url("http://127.0.0.1:9000/hook", false).is_ok());
    }

    #[test]
    fn a_signature_verifies_only_for_its_body_secret_and_time() {
        let key = Key::generate("k1");
        let s = secret(&key, &WebhookId::from_raw("whk_1"), "salt");
        assert!(s.starts_with("whsec_"));
        assert_ne!(s, secret(&key, &WebhookId::from_raw("whk_2"), "salt"), "each endpoint has its own secret");
        assert_ne!(s, secret(&key, &WebhookId::from_raw("whk_1"), "salt2"), "a new salt rotates the secret");
        let header = sign(&s, 1_700_000_000, r#"{"id":"evt_1"}"#);
        assert!(verify(&s, &header, r#"{"id":"evt_1"}"#, 1_700_000_010));
        assert!(!verify(&s, &header, r#"{"id":"evt_2"}"#, 1_700_000_010), "another body");
        assert!(!verify(
            &secret(&key, &WebhookId::from_raw("whk_2"), "salt"),
            &header,
            r#"{"id":"evt_1"}"#,
            1_700_000_010
        ));
        assert!(!verify(&s, &header, r#"{"id":"evt_1"}"#, 1_700_000_000 + TOLERANCE_SECS + 1), "too old");
        assert!(!verify(&s, "t=1700000000", r#"{"id":"evt_1"}"#, 1_700_000_000), "no signature");
        assert!(!verify(&s, "garbage", "", 0));
        // A timestamp at the end of the range neither overflows nor passes.
        assert!(!verify(&s, &sign(&s, i64::MIN, "x"), "x", 1_700_000_000));
        assert!(!verify(&s, &sign(&s, i64::MAX, "x"), "x", -1));
    }

    #[test]
    fn endpoint_urls_are_checked() {
        assert!(check_url("https://pos.example.jp/hooks", true).is_ok());
        assert!(check_url("http://127.0.0.1:9000/hooks", true).is_err(), "production wants https");
        assert!(check_url("http://127.0.0.1:9000/hooks", false).is_ok());
        assert!(check_url("https://user:pw@pos.example.jp/", false).is_err());
        assert!(check_url("ftp://pos.example.jp/", false).is_err());
        assert!(check_url("not a url", false).is_err());
        for internal in [
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://169.254.169.254/",
            "https://[::1]/",
            "https://localhost/",
        ] {
            assert!(check_url(internal, true).is_err(), "{internal}");
        }
    }
}
