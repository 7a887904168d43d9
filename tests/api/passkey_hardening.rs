//! The passkey review's findings (issue 10), each run as the attack or the mistake it names, for
//! every kind of user a passkey serves (shoppers, operators, merchant staff: one code path). Each
//! test failed before its fix.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::merchant_passkeys::{bad_signature, register};
use crate::merchant_staff::{STAFF_IP, demo_owner, staff_login};
use crate::passkeys::{Authenticator, Tweak, shopper_with_passkey, verify_passkey};

/// Whose passkey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Shopper,
    Operator,
    Merchant,
}

const KINDS: [Kind; 3] = [Kind::Shopper, Kind::Operator, Kind::Merchant];

/// Someone with one passkey and a fresh session (bearer token) from their usual address.
struct Holder {
    key: Authenticator,
    session: String,
    ip: String,
}

async fn holder(app: &TestApp, kind: Kind) -> Holder {
    match kind {
        Kind::Shopper => {
            let (s, key) = shopper_with_passkey(app).await;
            Holder { key, session: s.session.unwrap(), ip: s.ip }
        }
        Kind::Operator => {
            let session = app.operator_session(0).await;
            let key = register(app, "/v1/admin/me/passkeys", &session, "Console key", OPERATOR_IP).await;
            Holder { key, session, ip: OPERATOR_IP.to_string() }
        }
        Kind::Merchant => {
            let session = staff_login(app, &demo_owner(app)).await;
            let key = register(app, "/v1/merchant/me/passkeys", &session, "Shop key", STAFF_IP).await;
            Holder { key, session, ip: STAFF_IP.to_string() }
        }
    }
}

/// Starts a passkey login of `kind` from `ip`: the challenge and the ceremony's options.
async fn begin(app: &TestApp, kind: Kind, ip: &str) -> (String, Value) {
    let (path, body) = match kind {
        Kind::Shopper => ("/v1/login/passkey", json!({"device_id": "browser-1"})),
        Kind::Operator => ("/v1/admin/login/passkey", json!({})),
        Kind::Merchant => ("/v1/merchant/login/passkey", json!({})),
    };
    let r = app.post_from(path, &body, ip).await;
    assert_eq!(r.status, 200, "{kind:?} from {ip}: {r:?}");
    (r.body["challenge_id"].as_str().unwrap().to_string(), r.body["options"].clone())
}

async fn sign_count(app: &TestApp, key: &Authenticator) -> i64 {
    sqlx::query_scalar("SELECT sign_count FROM passkeys WHERE credential_id = $1")
        .bind(B64.encode(&key.credential_id))
        .fetch_one(app.db().pool())
        .await
        .unwrap()
}

/// Finding 1: wrong passkey answers from one address (or from one subnet, each address under its
/// own limit) meet the password login's address and subnet throttles at the verify, before any
/// signature is checked: even the right answer from there is refused (and uses nothing) until
/// the window has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passkey_answers_meets_the_address_and_subnet_throttles() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for by_subnet in [false, true] {
            let Some(app) = TestApp::spawn_with(backend, |c| {
                c.throttle_address_failures = 2;
                c.throttle_subnet_failures = 4;
            })
            .await
            else {
                continue;
            };
            for (n, kind) in KINDS.into_iter().enumerate() {
                let mut h = holder(&app, kind).await;
                // A /48 of its own for each kind (JP documentation addresses no other test uses).
                let ip = |i: u32| format!("2001:db8:7f0{n}::{i}");
                let (flooders, last) = if by_subnet { (vec![ip(1), ip(2)], ip(3)) } else { (vec![ip(1)], ip(1)) };
                // The ceremonies are begun before the flood (a begin meets the throttles too).
                let mut floods = Vec::new();
                for from in &flooders {
                    floods.push((from.clone(), begin(&app, kind, from).await));
                }
                let (right_id, right_options) = begin(&app, kind, &last).await;
                for (from, (id, options)) in &floods {
                    for _ in 0..2 {
                        let forged = bad_signature(h.key.get(options, &Tweak::default()));
                        verify_passkey(&app, id, &forged, from).await.assert_problem(422, "code_invalid");
                    }
                }
                let count = sign_count(&app, &h.key).await;
                let right = h.key.get(&right_options, &Tweak::default());
                let r = verify_passkey(&app, &right_id, &right, &last).await;
                r.assert_problem(429, "too_many_attempts");
                assert!(r.body["retry_after"].as_i64().is_some_and(|s| s > 0), "{kind:?}: {r:?}");
                assert!(r.headers.get("retry-after").is_some(), "{kind:?}: {r:?}");
                assert_eq!(sign_count(&app, &h.key).await, count, "{kind:?}: the refused answer moved the counter");
                // Once the window has passed, the owner gets in from there.
                app.advance_clock(11 * 60).await;
                let (id, options) = begin(&app, kind, &last).await;
                let r = verify_passkey(&app, &id, &h.key.get(&options, &Tweak::default()), &last).await;
                assert_eq!(r.status, 200, "{kind:?} by_subnet={by_subnet}: {r:?}");
            }
        }
    }
}

/// The route that adds a passkey to `kind`'s own account.
fn passkeys_path(kind: Kind) -> &'static str {
    match kind {
        Kind::Shopper => "/v1/me/passkeys",
        Kind::Operator => "/v1/admin/me/passkeys",
        Kind::Merchant => "/v1/merchant/me/passkeys",
    }
}

fn passkey_send() -> Value {
    json!({"method": "passkey"})
}

/// Finding 2: someone who learnt the id of another user's step-up challenge, without a session or
/// with a session of their own, cannot start its passkey ceremony (it is `404` to them) and so
/// cannot replace the WebAuthn challenge the owner's browser is answering; and a send on a
/// passkey login in progress, by anyone, gives the same ceremony again instead of a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_else_replaces_the_passkey_ceremony_of_a_challenge() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn(backend).await else { continue };
        let mut stranger = app.register().await;
        app.log_in(&mut stranger).await;
        let stranger_token = stranger.session.clone().unwrap();
        for kind in KINDS {
            let mut h = holder(&app, kind).await;
            app.advance_clock(6 * 60).await;
            let r = app.authed(reqwest::Method::POST, passkeys_path(kind), &h.session, None, &h.ip).await;
            r.assert_problem(403, "step_up_required");
            let step = r.body["challenge_id"].as_str().unwrap().to_string();
            let send = format!("/v1/challenges/{step}/send");
            let sent = app.authed(reqwest::Method::POST, &send, &h.session, Some(&passkey_send()), &h.ip).await;
            assert_eq!(sent.status, 200, "{kind:?}: {sent:?}");
            // The attacker, with no session and with one of their own.
            app.post_from(&send, &passkey_send(), &jp_ip(77)).await.assert_problem(404, "not_found");
            let r =
                app.authed(reqwest::Method::POST, &send, &stranger_token, Some(&passkey_send()), &stranger.ip).await;
            r.assert_problem(404, "not_found");
            // The owner asks again (the browser's dialog was dismissed, say): the same ceremony.
            let again = app.authed(reqwest::Method::POST, &send, &h.session, Some(&passkey_send()), &h.ip).await;
            assert_eq!(again.body["options"]["challenge"], sent.body["options"]["challenge"], "{kind:?}");
            // The owner's browser answers what it was first given.
            let r = verify_passkey(&app, &step, &h.key.get(&sent.body["options"], &Tweak::default()), &h.ip).await;
            assert_eq!(r.body["step_up"], true, "{kind:?}: {r:?}");

            // A passkey login in progress: a send from elsewhere does not change its ceremony.
            let (id, options) = begin(&app, kind, &h.ip).await;
            let r = app.post_from(&format!("/v1/challenges/{id}/send"), &passkey_send(), &jp_ip(78)).await;
            assert_eq!(r.status, 200, "{kind:?}: {r:?}");
            assert_eq!(r.body["options"]["challenge"], options["challenge"], "{kind:?}: {r:?}");
            let r = verify_passkey(&app, &id, &h.key.get(&options, &Tweak::default()), &h.ip).await;
            assert_eq!(r.status, 200, "{kind:?}: {r:?}");
        }
    }
}
