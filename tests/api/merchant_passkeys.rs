//! Merchant staff's passkeys (API.md "Passkeys (WebAuthn)"): an owner or staff member registers
//! passkeys on `/v1/merchant/me/passkeys` and may then log in with one alone
//! (`POST /v1/merchant/login/passkey`, then the challenge's verify), into the same dashboard
//! session, through the same throttle and audit as the password login. A shopper's or an
//! operator's passkey is no way into the dashboard, nor a merchant user's into theirs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::merchant_staff::{STAFF_IP, demo_owner, staff_login};
use crate::passkeys::{Authenticator, Tweak, shopper_with_passkey, verify_passkey};

/// Registers a passkey on `base` (`/v1/merchant/me/passkeys` or `/v1/admin/me/passkeys`) with a
/// fresh session's token.
pub(crate) async fn register(app: &TestApp, base: &str, token: &str, name: &str, ip: &str) -> Authenticator {
    let r = app.authed(Method::POST, base, token, None, ip).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.body["registration_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("pkr_"), "{r:?}");
    let mut authenticator = Authenticator::new(app);
    let credential = authenticator.create(&r.body["options"], &Tweak::default());
    let body = json!({"credential": credential, "name": name});
    let r = app.authed(Method::POST, &format!("{base}/{id}/finish"), token, Some(&body), ip).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["name"], name, "{r:?}");
    authenticator
}

/// `POST /v1/merchant/login/passkey`: the challenge and the ceremony's options (no credentials
/// named: the browser offers its own).
async fn begin_login(app: &TestApp) -> (String, Value) {
    let r = app.post_from("/v1/merchant/login/passkey", &json!({}), STAFF_IP).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["options"]["allowCredentials"], json!([]), "{r:?}");
    (r.body["challenge_id"].as_str().unwrap().to_string(), r.body["options"].clone())
}

/// A whole passkey login: the dashboard session's token.
async fn passkey_login(app: &TestApp, authenticator: &mut Authenticator) -> String {
    let (id, options) = begin_login(app).await;
    let r = verify_passkey(app, &id, &authenticator.get(&options, &Tweak::default()), STAFF_IP).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["expires_at"].is_string() && r.body.get("role").is_none(), "{r:?}");
    r.body["session_token"].as_str().unwrap().to_string()
}

/// The assertion with one byte of its signature changed.
pub(crate) fn bad_signature(mut credential: Value) -> Value {
    let mut signature = B64.decode(credential["response"]["signature"].as_str().unwrap()).unwrap();
    let last = signature.len() - 1;
    signature[last] ^= 0x01;
    credential["response"]["signature"] = json!(B64.encode(signature));
    credential
}

pub(crate) async fn audit(app: &TestApp, action: &str) -> Vec<(String, String, Value)> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, subject, detail FROM audit_log WHERE action = $1 ORDER BY id")
            .bind(action)
            .fetch_all(app.db().pool())
            .await
            .unwrap();
    rows.into_iter().map(|(a, s, d)| (a, s, serde_json::from_str(&d).unwrap())).collect()
}

async fn consecutive_failures(app: &TestApp, key: &str) -> i64 {
    sqlx::query_scalar("SELECT consecutive FROM throttle_state WHERE key = $1")
        .bind(key)
        .fetch_optional(app.db().pool())
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn me(app: &TestApp, token: &str) -> Reply {
    app.authed(Method::GET, "/v1/merchant/me", token, None, STAFF_IP).await
}

both_backends! {
    async fn the_owner_registers_a_passkey_and_logs_in_with_it_alone(app: TestApp) {
        let owner = demo_owner(&app);
        let token = staff_login(&app, &owner).await;
        let user_id = me(&app, &token).await.body["user_id"].as_str().unwrap().to_string();
        let mut authenticator = register(&app, "/v1/merchant/me/passkeys", &token, "Shop key", STAFF_IP).await;
        let listed = app.authed(Method::GET, "/v1/merchant/me/passkeys", &token, None, STAFF_IP).await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{listed:?}");
        assert_eq!(listed.body["items"][0]["name"], "Shop key");
        assert_eq!(listed.body["items"][0]["last_used_at"], Value::Null);
        let added = audit(&app, "passkey_added").await;
        assert_eq!(added, [(format!("merchant_user:{user_id}"), user_id.clone(), json!({}))]);

        // No e-mail, no password, no code: the passkey alone opens the dashboard.
        let (challenge_id, options) = begin_login(&app).await;
        let credential = authenticator.get(&options, &Tweak::default());
        let r = verify_passkey(&app, &challenge_id, &credential, STAFF_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        let session = r.body["session_token"].as_str().unwrap().to_string();
        let who = me(&app, &session).await;
        assert_eq!(who.status, 200, "{who:?}");
        assert_eq!((who.body["email"].as_str(), who.body["role"].as_str()), (Some(owner.email.as_str()), Some("owner")));
        // A dashboard session, no other kind's.
        app.authed(Method::GET, "/v1/admin/alerts", &session, None, OPERATOR_IP).await.assert_problem(403, "forbidden");
        // The challenge is used up.
        verify_passkey(&app, &challenge_id, &credential, STAFF_IP).await.assert_problem(410, "challenge_expired");
        let listed = app.authed(Method::GET, "/v1/merchant/me/passkeys", &session, None, STAFF_IP).await;
        assert!(listed.body["items"][0]["last_used_at"].is_string(), "{listed:?}");

        // Audited as the password login is, with its way in.
        let logins = audit(&app, "merchant_user.login").await;
        assert_eq!(logins.len(), 2, "{logins:?}");
        assert_eq!(logins[0].2["method"], "password");
        let (actor, subject, detail) = &logins[1];
        assert_eq!((actor.as_str(), subject.as_str()), (format!("merchant_user:{user_id}").as_str(), user_id.as_str()));
        assert_eq!(detail["method"], "passkey");
        assert_eq!(detail["ip"], STAFF_IP);
        assert!(detail["session_id"].is_string(), "{detail}");
    }

    async fn a_page_gets_the_passkey_login_in_the_dashboards_cookie(app: TestApp) {
        let owner = demo_owner(&app);
        let token = staff_login(&app, &owner).await;
        let mut authenticator = register(&app, "/v1/merchant/me/passkeys", &token, "Key", STAFF_IP).await;
        let (challenge_id, options) = begin_login(&app).await;
        let body = json!({"method": "passkey", "credential": authenticator.get(&options, &Tweak::default())});
        let resp = app
            .from(Method::POST, &format!("/v1/challenges/{challenge_id}/verify"), STAFF_IP)
            .header("Omamori-Session", "cookie")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let set_cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
        assert!(set_cookie.starts_with("omamori_merchant="), "{set_cookie}");
        for part in ["Path=/v1/merchant", "HttpOnly", "SameSite=Strict"] {
            assert!(set_cookie.contains(part), "{set_cookie}");
        }
        let reply = Reply::from(resp).await;
        assert_eq!(reply.body["session"], "cookie", "{reply:?}");
        assert!(reply.body.get("session_token").is_none(), "{reply:?}");
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let r = app.from(Method::GET, "/v1/merchant/me", STAFF_IP).header("Cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }

    async fn other_kinds_passkeys_do_not_open_the_dashboard_nor_the_reverse(app: TestApp) {
        let owner = demo_owner(&app);
        let token = staff_login(&app, &owner).await;
        let mut merchant_key = register(&app, "/v1/merchant/me/passkeys", &token, "Shop key", STAFF_IP).await;
        let (_, mut shopper_key) = shopper_with_passkey(&app).await;
        let op = app.operator_session(0).await;
        let mut operator_key = register(&app, "/v1/admin/me/passkeys", &op, "Console key", OPERATOR_IP).await;

        // A shopper's or an operator's passkey is no merchant user's.
        for key in [&mut shopper_key, &mut operator_key] {
            let (id, options) = begin_login(&app).await;
            verify_passkey(&app, &id, &key.get(&options, &Tweak::default()), STAFF_IP)
                .await
                .assert_problem(422, "code_invalid");
        }
        // A merchant user's passkey logs in neither a shopper nor an operator.
        let ip = jp_ip(7);
        let r = app.post_from("/v1/login/passkey", &json!({"device_id": "d"}), &ip).await;
        let id = r.body["challenge_id"].as_str().unwrap().to_string();
        verify_passkey(&app, &id, &merchant_key.get(&r.body["options"], &Tweak::default()), &ip)
            .await
            .assert_problem(422, "code_invalid");
        let r = app.post_from("/v1/admin/login/passkey", &json!({}), OPERATOR_IP).await;
        let id = r.body["challenge_id"].as_str().unwrap().to_string();
        verify_passkey(&app, &id, &merchant_key.get(&r.body["options"], &Tweak::default()), OPERATOR_IP)
            .await
            .assert_problem(422, "code_invalid");
        // Nor do a shopper's or an operator's session reach the merchant's passkeys.
        app.authed(Method::GET, "/v1/merchant/me/passkeys", &op, None, STAFF_IP).await.assert_problem(403, "forbidden");
        app.authed(Method::POST, "/v1/admin/me/passkeys", &token, None, OPERATOR_IP).await.assert_problem(403, "forbidden");
        // Each still opens its own door.
        let session = passkey_login(&app, &mut merchant_key).await;
        assert_eq!(me(&app, &session).await.status, 200);
    }

    async fn adding_or_removing_a_passkey_minutes_after_the_login_needs_a_second_factor(app: TestApp) {
        let owner = demo_owner(&app);
        let token = staff_login(&app, &owner).await;
        let mut authenticator = register(&app, "/v1/merchant/me/passkeys", &token, "Shop key", STAFF_IP).await;
        let listed = app.authed(Method::GET, "/v1/merchant/me/passkeys", &token, None, STAFF_IP).await;
        let passkey_id = listed.body["items"][0]["passkey_id"].as_str().unwrap().to_string();
        let path = format!("/v1/merchant/me/passkeys/{passkey_id}");

        app.advance_clock(6 * 60).await;
        let r = app.authed(Method::POST, "/v1/merchant/me/passkeys", &token, None, STAFF_IP).await;
        r.assert_problem(403, "step_up_required");
        assert_eq!(r.body["methods"], json!(["totp", "passkey"]), "{r:?}");
        app.authed(Method::DELETE, &path, &token, None, STAFF_IP).await.assert_problem(403, "step_up_required");
        // Listing needs none.
        assert_eq!(app.authed(Method::GET, "/v1/merchant/me/passkeys", &token, None, STAFF_IP).await.status, 200);

        // The passkey steps up: its ceremony names the user's own passkeys.
        let step = r.body["challenge_id"].as_str().unwrap().to_string();
        let send = format!("/v1/challenges/{step}/send");
        let sent = app.authed(Method::POST, &send, &token, Some(&json!({"method": "passkey"})), STAFF_IP).await;
        assert_eq!(sent.status, 200, "{sent:?}");
        assert_eq!(sent.body["options"]["allowCredentials"].as_array().unwrap().len(), 1, "{sent:?}");
        let r = verify_passkey(&app, &step, &authenticator.get(&sent.body["options"], &Tweak::default()), STAFF_IP).await;
        assert_eq!(r.body["step_up"], true, "{r:?}");
        let r = app.authed(Method::POST, "/v1/merchant/me/passkeys", &token, None, STAFF_IP).await;
        assert_eq!(r.status, 200, "after the step-up: {r:?}");

        // Later again, the authenticator app's code steps up (the login used the current step's).
        app.advance_clock(6 * 60).await;
        let r = app.authed(Method::DELETE, &path, &token, None, STAFF_IP).await;
        r.assert_problem(403, "step_up_required");
        let step = r.body["challenge_id"].as_str().unwrap().to_string();
        let now = omamori::identity::totp::current_step();
        let mut granted = None;
        for s in [now, now + 1] {
            let r = app.verify(&step, "totp", &owner.code(s), STAFF_IP).await;
            if r.status == 200 {
                granted = Some(r);
                break;
            }
            r.assert_problem(422, "code_invalid");
        }
        assert_eq!(granted.expect("no code stepped up").body["step_up"], true);
        let r = app.authed(Method::DELETE, &path, &token, None, STAFF_IP).await;
        assert_eq!(r.status, 204, "{r:?}");
        app.authed(Method::DELETE, &path, &token, None, STAFF_IP).await.assert_problem(404, "not_found");
        let listed = app.authed(Method::GET, "/v1/merchant/me/passkeys", &token, None, STAFF_IP).await;
        assert_eq!(listed.body["items"], json!([]), "{listed:?}");
        assert_eq!(audit(&app, "passkey_removed").await.len(), 1);
        // A removed passkey logs no one in.
        let (id, options) = begin_login(&app).await;
        verify_passkey(&app, &id, &authenticator.get(&options, &Tweak::default()), STAFF_IP)
            .await
            .assert_problem(422, "code_invalid");
    }

    async fn a_wrong_signature_is_refused_and_never_locks_the_account_it_names(app: TestApp) {
        let owner = demo_owner(&app);
        let token = staff_login(&app, &owner).await;
        let user_id = me(&app, &token).await.body["user_id"].as_str().unwrap().to_string();
        let mut authenticator = register(&app, "/v1/merchant/me/passkeys", &token, "Shop key", STAFF_IP).await;
        let key = format!("merchant:{user_id}");
        assert_eq!(consecutive_failures(&app, &key).await, 0, "the right login left no failure counted");

        // Five forged answers naming the owner's credential: each refused, the challenge dies, and
        // none counts on the owner's account (anyone may name a credential id).
        let (id, options) = begin_login(&app).await;
        for left in [4, 3, 2, 1, 0] {
            let forged = bad_signature(authenticator.get(&options, &Tweak::default()));
            let r = verify_passkey(&app, &id, &forged, STAFF_IP).await;
            r.assert_problem(422, "code_invalid");
            assert_eq!(r.body["attempts_left"], left, "{r:?}");
        }
        assert_eq!(consecutive_failures(&app, &key).await, 0, "a forged answer counted on the account");
        let locked: Option<i64> = sqlx::query_scalar("SELECT locked_until FROM throttle_state WHERE key = $1")
            .bind(&key)
            .fetch_optional(app.db().pool())
            .await
            .unwrap()
            .flatten();
        assert!(locked.unwrap_or(0) == 0, "the account was locked by someone else's forgeries");
        // They counted against the address, as every wrong code does (staff's own address scope).
        let address_failures: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM auth_events WHERE scope = 'mu_fail_ip' AND key = $1")
                .bind(STAFF_IP)
                .fetch_one(app.db().pool())
                .await
                .unwrap();
        assert!(address_failures >= 5, "{address_failures}");
        // No session was made by any of it; the owner's own key still logs in.
        assert_eq!(audit(&app, "merchant_user.login").await.len(), 1);
        passkey_login(&app, &mut authenticator).await;
        assert_eq!(audit(&app, "merchant_user.login").await.len(), 2);
    }
}
