//! Real notification channels: SMTP e-mail, the HTTP SMS gateway, the on-call webhook and signed
//! merchant webhooks, each delivered to a real local receiver that the test starts, with failures
//! retried and never in the way of the money movement.

use std::time::Duration;

use hmac::{Hmac, Mac};
use omamori::config::Config;
use omamori::secret::Secret;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::*;
use crate::receivers::{Captured, HttpReceiver, SmtpReceiver};

/// The dispatcher polls and retries quickly in these tests.
fn quick(c: &mut Config) {
    c.notify.poll_ms = 50;
    c.notify.retry_base_ms = 100;
}

/// The first run of six digits in `text`.
fn six_digits(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .into()
}

/// Waits (up to 10 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn outbox_row(app: &TestApp, recipient: &str, kind: &str) -> (String, i64, Option<String>) {
    let row: (String, i64, Option<String>) = sqlx::query_as(
        "SELECT status, attempts, delivered_via FROM outbox WHERE recipient = $1 AND kind = $2 ORDER BY id DESC LIMIT 1",
    )
    .bind(recipient)
    .bind(kind)
    .fetch_one(app.db().pool())
    .await
    .unwrap();
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_codes_travel_by_smtp_and_the_sms_gateway_are_retried_and_not_kept() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        // The mail server turns the first message away for now; the gateway is briefly down.
        let smtp = SmtpReceiver::start(1).await;
        let gateway = HttpReceiver::start().await;
        // A token the gateway does not accept (401) is the channel's configuration, retried.
        gateway.answer(&[401]);
        let (smtp_url, gateway_url) = (smtp.url(), gateway.url("/sms"));
        let Some(app) = TestApp::spawn_with(backend, |c| {
            quick(c);
            c.notify.smtp_url = Some(Secret::new(smtp_url));
            c.notify.sms_gateway_url = Some(gateway_url);
            c.notify.sms_gateway_token = Some(Secret::new("gateway-token-123".into()));
        })
        .await
        else {
            continue;
        };
        let (phone, email, password, ip) = (new_phone(), "hanako@example.jp".to_string(), strong_password(), jp_ip(7));
        let r = app.signup(&phone, &email, &password, &ip).await;
        assert_eq!(r.status, 202, "{r:?}");
        let signup_id = r.body["signup_id"].as_str().unwrap().to_string();

        // The SMS: refused once with 401, then delivered, the same message both times.
        let sms = gateway.wait_for("/sms", 2).await;
        assert_eq!((sms[0].answered, sms[1].answered), (401, 200));
        assert_eq!(sms[0].body, sms[1].body);
        assert_eq!(sms[1].headers["authorization"], "Bearer gateway-token-123");
        let sms_body: Value = serde_json::from_str(&sms[1].body).unwrap();
        assert_eq!(sms_body["to"], phone.as_str());
        let phone_code = six_digits(sms_body["body"].as_str().unwrap());

        // The e-mail: turned away once (451), then accepted.
        let mail = smtp.wait_for(&email, |m| m.body.contains("creating your account")).await;
        assert_eq!(*smtp.refused.lock().unwrap(), 1);
        assert!(mail.from.contains("no-reply@omamori.invalid"), "{mail:?}");
        assert!(mail.headers.to_ascii_lowercase().contains("subject: your omamori code"), "{mail:?}");
        let email_code = six_digits(&mail.body);

        let r = app
            .post_from(
                &format!("/v1/signup/{signup_id}/verify"),
                &json!({"phone_code": phone_code, "email_code": email_code}),
                &ip,
            )
            .await;
        assert_eq!(r.status, 201, "the delivered codes work: {r:?}");

        // Once delivered, the outbox no longer holds the codes.
        eventually("both deliveries are recorded", || async {
            outbox_row(&app, &email, "signup_code").await.0 == "delivered"
                && outbox_row(&app, &phone, "signup_code").await.0 == "delivered"
        })
        .await;
        assert_eq!(outbox_row(&app, &email, "signup_code").await, ("delivered".into(), 2, Some("smtp".into())));
        assert_eq!(outbox_row(&app, &phone, "signup_code").await, ("delivered".into(), 2, Some("sms_gateway".into())));
        for to in [&phone, &email] {
            let kept = app.messages(to).await;
            let m = kept.iter().find(|m| m["kind"] == "signup_code").unwrap();
            assert!(m["code"].is_null(), "{m:?}");
            assert!(!m["body"].as_str().unwrap().contains(&phone_code), "{m:?}");
            assert!(!m["body"].as_str().unwrap().contains(&email_code), "{m:?}");
        }

        // A code that cannot leave while the gateway is down is never sent once it is long expired.
        gateway.answer(&[503; 3]);
        let late_phone = new_phone();
        let r = app.signup(&late_phone, "late@example.jp", &strong_password(), &jp_ip(8)).await;
        assert_eq!(r.status, 202, "{r:?}");
        let before = gateway.received("/sms").len();
        eventually("the first try fails", || async { gateway.received("/sms").len() > before }).await;
        assert_eq!(app.advance_clock(16 * 60).await.status, 200);
        eventually("the late code is given up", || async {
            outbox_row(&app, &late_phone, "signup_code").await.0 == "failed"
        })
        .await;
        let error: String = sqlx::query_scalar("SELECT last_error FROM outbox WHERE recipient = $1")
            .bind(&late_phone)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
        assert!(error.contains("expired"), "{error}");
        let tries = gateway.received("/sms").iter().filter(|c| c.body.contains(&late_phone)).count();
        assert!(tries <= 2, "a stale code is not sent again and again: {tries}");
        // An operator alert reaches every operator by SMTP too (a rogue terminal guessing codes).
        let doc = app.sandbox_doc();
        let terminal = doc["terminal_key"].as_str().unwrap();
        for i in 0..5 {
            let guess = format!("4649{:018}", 987_654_321_000u64 + i);
            let body = json!({"code": guess, "amount": 100});
            app.pos(Method::POST, "/v1/pos/payments", terminal, Some(&body), Some(&format!("g{i}"))).await;
        }
        for op in doc["operators"].as_array().unwrap() {
            let mail = smtp.wait_for(op["email"].as_str().unwrap(), |m| m.body.contains("unknown payment codes")).await;
            assert!(mail.headers.contains("unknown_payment_codes"), "{mail:?}");
        }
    }
}

/// The HMAC a receiver computes with the secret it was given.
fn signature_holds(secret: &str, c: &Captured) -> bool {
    let header = c.headers["omamori-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", c.body).as_bytes());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    v1.strip_prefix("v1=").unwrap() == hex::encode(mac.finalize().into_bytes()) && (now - t).abs() < 300
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_webhooks_are_signed_retried_with_one_event_id_and_never_hold_up_a_payment() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let hooks = HttpReceiver::start().await;
        // The merchant's server fails twice before it takes the event.
        hooks.answer(&[500, 502]);
        // A second endpoint where nothing listens.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/gone", l.local_addr().unwrap())
        };
        let Some(app) = TestApp::spawn_with(backend, |c| {
            quick(c);
            c.notify.max_attempts = 3;
        })
        .await
        else {
            continue;
        };
        let doc = app.sandbox_doc();
        let (merchant, terminal) = (doc["merchant_id"].as_str().unwrap(), doc["terminal_key"].as_str().unwrap());
        let op = app.operator_session(0).await;
        let path = format!("/v1/admin/merchants/{merchant}/webhooks");
        let r = app.authed(Method::POST, &path, &op, Some(&json!({"url": hooks.url("/omamori")})), OPERATOR_IP).await;
        assert_eq!(r.status, 201, "{r:?}");
        let secret = r.body["secret"].as_str().unwrap().to_string();
        let webhook_id = r.body["webhook_id"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_"));
        let r = app.authed(Method::POST, &path, &op, Some(&json!({"url": closed})), OPERATOR_IP).await;
        assert_eq!(r.status, 201, "{r:?}");
        let dead_id = r.body["webhook_id"].as_str().unwrap().to_string();
        let r = app.authed(Method::POST, &path, &op, Some(&json!({"url": "ftp://x.example/"})), OPERATOR_IP).await;
        r.assert_problem(422, "invalid_body");
        // The list never shows a secret again.
        let r = app.authed(Method::GET, &path, &op, None, OPERATOR_IP).await;
        assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "{r:?}");
        assert!(!r.text.contains(&secret) && !r.text.contains("secret"), "{r:?}");

        // The payment is answered at once, whatever the endpoints do.
        let (s, _) = app.funded_shopper(5_000).await;
        let code = app.payment_code(&s).await;
        let r = app
            .pos(Method::POST, "/v1/pos/payments", terminal, Some(&json!({"code": code, "amount": 1_200})), Some("w1"))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let payment_id = r.body["payment_id"].as_str().unwrap().to_string();
        assert_eq!(app.wallet(&s).await["balance"], 3_800);

        // Three tries of one event: 500, 502, then taken; same id and body, each signed anew.
        let got = hooks.wait_for("/omamori", 3).await;
        assert_eq!(got.iter().map(|c| c.answered).collect::<Vec<_>>(), [500, 502, 200]);
        let event_id = got[0].headers["omamori-event-id"].to_str().unwrap().to_string();
        assert!(event_id.starts_with("evt_"));
        for c in &got {
            assert_eq!(c.headers["omamori-event-id"], event_id.as_str(), "receivers deduplicate on the event id");
            assert_eq!(c.body, got[0].body);
            assert!(signature_holds(&secret, c), "the signature verifies: {c:?}");
            assert!(!signature_holds("whsec_someone-else", c));
        }
        let event: Value = serde_json::from_str(&got[0].body).unwrap();
        assert_eq!(event["id"], event_id.as_str());
        assert_eq!(event["type"], "payment.succeeded");
        assert_eq!(event["data"]["payment_id"], payment_id.as_str());
        assert_eq!(event["data"]["amount"], 1_200);
        assert_eq!(event["data"]["currency"], "JPY");

        // A refund is its own event.
        let r = app
            .pos(
                Method::POST,
                &format!("/v1/pos/payments/{payment_id}/refunds"),
                terminal,
                Some(&json!({"amount": 200})),
                Some("rf1"),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let got = hooks.wait_for("/omamori", 4).await;
        let refund: Value = serde_json::from_str(&got[3].body).unwrap();
        assert_eq!(refund["type"], "payment.refunded");
        assert_eq!(refund["data"]["amount"], 200);
        assert_ne!(got[3].headers["omamori-event-id"], event_id.as_str());
        assert!(signature_holds(&secret, &got[3]));

        // The dead endpoint is given up after its attempts; the books are untouched by it.
        eventually("the dead endpoint's deliveries have failed", || async {
            let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM outbox WHERE recipient = $1")
                .bind(&dead_id)
                .fetch_all(app.db().pool())
                .await
                .unwrap();
            statuses.len() == 2 && statuses.iter().all(|s| s == "failed")
        })
        .await;
        assert_eq!(outbox_row(&app, &dead_id, "payment.succeeded").await.1, 3);
        // Operators see the failures, with the reason and never the text.
        let r = app.authed(Method::GET, "/v1/admin/notifications?status=failed", &op, None, OPERATOR_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        let failed: Vec<&Value> =
            r.body["items"].as_array().unwrap().iter().filter(|m| m["recipient"] == dead_id.as_str()).collect();
        assert_eq!(failed.len(), 2, "{r:?}");
        assert!(
            failed.iter().all(|m| m["attempts"] == 3 && m["last_error"].is_string() && m.get("body").is_none()),
            "{failed:?}"
        );
        app.authed(Method::GET, "/v1/admin/notifications?status=lost", &op, None, OPERATOR_IP)
            .await
            .assert_problem(400, "invalid_query");
        let out = app.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

        // A disabled endpoint receives nothing more.
        let r = app.authed(Method::DELETE, &format!("/v1/admin/webhooks/{webhook_id}"), &op, None, OPERATOR_IP).await;
        assert_eq!(r.status, 204, "{r:?}");
        let code = app.payment_code(&s).await;
        let r = app
            .pos(Method::POST, "/v1/pos/payments", terminal, Some(&json!({"code": code, "amount": 100})), Some("w2"))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(hooks.received("/omamori").len(), 4);
        // Shoppers and terminals cannot manage endpoints.
        let r = app.authed(Method::GET, &path, s.session.as_ref().unwrap(), None, &s.ip).await;
        assert!(r.status == 401 || r.status == 403, "{r:?}");
        let r = app.pos(Method::GET, &path, terminal, None, None).await;
        assert!(r.status == 401 || r.status == 403, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_pages_the_on_call_tool() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let oncall = HttpReceiver::start().await;
        oncall.answer(&[503]);
        let url = oncall.url("/page");
        let Some(app) = TestApp::spawn_with(backend, |c| {
            quick(c);
            c.notify.oncall_webhook_url = Some(url);
            c.notify.oncall_webhook_token = Some(Secret::new("pager-token".into()));
        })
        .await
        else {
            continue;
        };
        let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        for i in 0..5 {
            let guess = format!("4649{:018}", 111_222_333_000u64 + i);
            let body = json!({"code": guess, "amount": 100});
            app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&body), Some(&format!("g{i}"))).await;
        }
        // Down once, then paged. (The janitor's first audit anchor may come before or between.)
        let mut seen = 2;
        let (page, headers) = loop {
            let pages = oncall.wait_for("/page", seen).await;
            assert_eq!(pages[0].answered, 503, "the first page met the outage");
            let delivered = pages.iter().find_map(|p| {
                let body: Value = serde_json::from_str(&p.body).ok()?;
                (p.answered == 200 && body["kind"] == "unknown_payment_codes").then(|| (body, p.headers.clone()))
            });
            match delivered {
                Some(found) => break found,
                None => seen = pages.len() + 1,
            }
        };
        assert_eq!(headers["authorization"], "Bearer pager-token");
        assert_eq!(page["kind"], "unknown_payment_codes");
        assert_eq!(page["severity"], "high");
        let alerts = app.alerts().await;
        assert_eq!(page["alert_id"], alerts[0]["id"], "{alerts:?}");
        // The audit chain's head goes to the on-call tool too (hourly; the janitor's first pass may
        // have sent one already), so that removing the newest entries can be proven later.
        assert_eq!(app.advance_clock(3_601).await.status, 200);
        let now = app.state.clock.now_ms();
        assert!(omamori::audit::publish_anchor(app.db(), now).await.unwrap());
        assert!(!omamori::audit::publish_anchor(app.db(), now + 1).await.unwrap(), "once an hour");
        let (id, hash, _) = omamori::audit::head(app.db()).await.unwrap().unwrap();
        let mut anchored = None;
        for _ in 0..200 {
            anchored = oncall.received("/page").iter().rev().find_map(|c| {
                let v: Value = serde_json::from_str(&c.body).ok()?;
                (v["kind"] == "audit_anchor" && c.answered == 200).then(|| v["anchor"].as_str().unwrap().to_string())
            });
            if anchored.as_deref() == Some(format!("{id}:{hash}").as_str()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(anchored, Some(format!("{id}:{hash}")));
        let out = app.omamori(&["admin", "audit", "verify", "--anchor", &format!("{id}:{hash}")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
}
