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

/// The owner's id (the passkey's user handle) and the column that names it.
fn owner_column(kind: Kind, key: &Authenticator) -> (&'static str, String) {
    let column = match kind {
        Kind::Shopper => "user_id",
        Kind::Operator => "operator_id",
        Kind::Merchant => "merchant_user_id",
    };
    (column, String::from_utf8(key.user_handle.clone()).unwrap())
}

async fn registrations_of(app: &TestApp, kind: Kind, key: &Authenticator) -> i64 {
    let (column, id) = owner_column(kind, key);
    let sql = format!("SELECT COUNT(*) FROM passkey_registrations WHERE {column} = $1");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(id).fetch_one(app.db().pool()).await.unwrap()
}

/// A step-up of the holder's session by their passkey.
async fn step_up(app: &TestApp, h: &mut Holder, step: &str) {
    let send = format!("/v1/challenges/{step}/send");
    let sent = app.authed(reqwest::Method::POST, &send, &h.session, Some(&passkey_send()), &h.ip).await;
    assert_eq!(sent.status, 200, "{sent:?}");
    let r = verify_passkey(app, step, &h.key.get(&sent.body["options"], &Tweak::default()), &h.ip).await;
    assert_eq!(r.body["step_up"], true, "{r:?}");
}

/// Begins a registration with the holder's session: its id and options.
async fn begin_registration(app: &TestApp, kind: Kind, h: &Holder) -> Reply {
    app.authed(reqwest::Method::POST, passkeys_path(kind), &h.session, None, &h.ip).await
}

/// Finishes a begun registration with a new authenticator, with what the tweak changes.
async fn finish_registration(app: &TestApp, kind: Kind, h: &Holder, started: &Reply, tweak: &Tweak) -> Reply {
    let id = started.body["registration_id"].as_str().unwrap();
    let credential = Authenticator::new(app).create(&started.body["options"], tweak);
    let path = format!("{}/{id}/finish", passkeys_path(kind));
    app.authed(reqwest::Method::POST, &path, &h.session, Some(&json!({"credential": credential})), &h.ip).await
}

/// Finding 3: an owner of any kind has at most 10 passkeys. The 11th is refused when its ceremony
/// begins, and a ceremony begun at 9 that finishes after another reached 10 is refused at its
/// finish: `409 too_many_passkeys`. Removing one makes room. A new ceremony deletes the owner's
/// expired ones, and the janitor's purge deletes everyone's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_ten_passkeys_per_owner_and_old_ceremonies_are_purged() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn(backend).await else { continue };
        for kind in KINDS {
            let mut h = holder(&app, kind).await;
            for i in 2..=9 {
                register(&app, passkeys_path(kind), &h.session, &format!("Key {i}"), &h.ip).await;
            }
            let (a, b) = (begin_registration(&app, kind, &h).await, begin_registration(&app, kind, &h).await);
            assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200), "{kind:?}: {a:?} {b:?}");
            assert_eq!(
                finish_registration(&app, kind, &h, &a, &Tweak::default()).await.status,
                201,
                "{kind:?}: the tenth"
            );
            finish_registration(&app, kind, &h, &b, &Tweak::default()).await.assert_problem(409, "too_many_passkeys");
            begin_registration(&app, kind, &h).await.assert_problem(409, "too_many_passkeys");
            let listed = app.authed(reqwest::Method::GET, passkeys_path(kind), &h.session, None, &h.ip).await;
            let items = listed.body["items"].as_array().unwrap().clone();
            assert_eq!(items.len(), 10, "{kind:?}: {listed:?}");
            assert_eq!(registrations_of(&app, kind, &h.key).await, 11, "{kind:?}");

            // Later: one removed (after a step-up), a new ceremony begins and the old ones are gone.
            app.advance_clock(6 * 60).await;
            let path = format!("{}/{}", passkeys_path(kind), items[9]["passkey_id"].as_str().unwrap());
            let r = app.authed(reqwest::Method::DELETE, &path, &h.session, None, &h.ip).await;
            r.assert_problem(403, "step_up_required");
            step_up(&app, &mut h, r.body["challenge_id"].as_str().unwrap()).await;
            let r = app.authed(reqwest::Method::DELETE, &path, &h.session, None, &h.ip).await;
            assert_eq!(r.status, 204, "{kind:?}: {r:?}");
            assert_eq!(begin_registration(&app, kind, &h).await.status, 200, "{kind:?}");
            assert_eq!(registrations_of(&app, kind, &h.key).await, 1, "{kind:?}: the expired ceremonies stayed");
        }
        // The janitor's purge, once every ceremony has expired.
        let later = app.state.clock.now_ms() + 6 * 60 * 1000;
        let mut conn = app.db().pool().acquire().await.unwrap();
        let purged = omamori::identity::passkey::purge_registrations(&mut conn, None, later).await.unwrap();
        assert_eq!(purged, 3, "one open ceremony per owner was left");
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM passkey_registrations").fetch_one(app.db().pool()).await.unwrap();
        assert_eq!(left, 0);
    }
}

const BE: u8 = 0x08;
const BS: u8 = 0x10;

/// A registration of a new authenticator for the holder, with what the tweak changes.
async fn register_with(app: &TestApp, kind: Kind, h: &Holder, tweak: &Tweak) -> Reply {
    let started = begin_registration(app, kind, h).await;
    assert_eq!(started.status, 200, "{kind:?}: {started:?}");
    finish_registration(app, kind, h, &started, tweak).await
}

/// Finding 4: flags that say backed up (BS) but not backup eligible (BE) are refused, at a
/// registration and at a login; an attestation statement is checked or refused, never ignored:
/// `packed` self-attestation must verify with the credential's own key and algorithm, and other
/// formats (or `packed` with a certificate chain, or a `none` that carries a statement) are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_flags_and_unchecked_attestations_are_refused() {
    use crate::passkeys::{AT, Attestation, UP, UV};
    use ciborium::Value as C;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn(backend).await else { continue };
        for kind in KINDS {
            let mut h = holder(&app, kind).await;
            let flags = |f: u8| Tweak { flags: Some(f), ..Tweak::default() };
            let attested = |a: Attestation| Tweak { attestation: Some(a), ..Tweak::default() };
            register_with(&app, kind, &h, &flags(UP | UV | AT | BS)).await.assert_problem(422, "passkey_rejected");
            let packed = |alg: i64, forge: bool| attested(Attestation::PackedSelf { alg, forge });
            let other =
                |fmt: &str, statement: Vec<(String, C)>| attested(Attestation::Other { fmt: fmt.into(), statement });
            for (what, tweak) in [
                ("a forged self-attestation", packed(-7, true)),
                ("a self-attestation naming another algorithm", packed(-257, false)),
                ("packed with a certificate chain", {
                    let sig = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
                    other(
                        "packed",
                        vec![
                            ("alg".into(), C::from(-7)),
                            ("sig".into(), C::Bytes(sig)),
                            ("x5c".into(), C::Array(vec![C::Bytes(vec![0x30, 0x00])])),
                        ],
                    )
                }),
                ("tpm", other("tpm", vec![("ver".into(), C::from("2.0"))])),
                ("fido-u2f", other("fido-u2f", vec![])),
                ("none with a statement", other("none", vec![("sig".into(), C::Bytes(vec![1]))])),
            ] {
                let r = register_with(&app, kind, &h, &tweak).await;
                assert_eq!(r.body["code"], "passkey_rejected", "{kind:?}, {what}: {r:?}");
                assert_eq!(r.status, 422, "{kind:?}, {what}: {r:?}");
            }
            // What real authenticators send: a synced passkey (BE and BS), a true self-attestation.
            let r = register_with(&app, kind, &h, &flags(UP | UV | AT | BE | BS)).await;
            assert_eq!(r.status, 201, "{kind:?}: {r:?}");
            let r = register_with(&app, kind, &h, &packed(-7, false)).await;
            assert_eq!(r.status, 201, "{kind:?}: {r:?}");

            // At a login: refused with the impossible flags, accepted without them.
            let (id, options) = begin(&app, kind, &h.ip).await;
            let r = verify_passkey(&app, &id, &h.key.get(&options, &flags(UP | UV | BS)), &h.ip).await;
            r.assert_problem(422, "code_invalid");
            let r = verify_passkey(&app, &id, &h.key.get(&options, &Tweak::default()), &h.ip).await;
            assert_eq!(r.status, 200, "{kind:?}: {r:?}");
        }
    }
}

/// Finding 5: `OMAMORI_PUBLIC_URL` written with its scheme's default port is the origin browsers
/// send, which never carries it: a passkey registers and logs in from `https://pay.example` when
/// the setting says `https://pay.example:443`, and from `http://localhost` for
/// `http://localhost:80`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_url_with_its_default_port_is_the_origin_browsers_send() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for (setting, origin, rp_id) in [
            ("https://pay.example:443", "https://pay.example", "pay.example"),
            ("http://localhost:80", "http://localhost", "localhost"),
        ] {
            let env = vec![("OMAMORI_PUBLIC_URL".to_string(), setting.to_string())];
            let public_url = omamori::config::Config::load_from(None, env).unwrap().public_url;
            let Some(app) = TestApp::spawn_with(backend, move |c| c.public_url = public_url).await else { continue };
            assert_eq!(app.state.config.public_url.as_deref(), Some(origin));
            let mut s = app.register().await;
            app.log_in(&mut s).await;
            let mut key = Authenticator::at(origin, rp_id);
            let r = crate::passkeys::add_passkey(&app, &s, &mut key, None, &Tweak::default()).await;
            assert_eq!(r.status, 201, "{setting}: {r:?}");
            let (id, options) = crate::passkeys::start_passkey_login(&app, "browser-1", &s.ip).await;
            let r = verify_passkey(&app, &id, &key.get(&options, &Tweak::default()), &s.ip).await;
            assert_eq!(r.status, 200, "{setting}: {r:?}");
        }
    }
}

/// Finding 6: the operator's login audit names its way in, as the merchant staff's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_login_audit_names_the_method() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn(backend).await else { continue };
        let mut h = holder(&app, Kind::Operator).await;
        let (id, options) = begin(&app, Kind::Operator, &h.ip).await;
        let r = verify_passkey(&app, &id, &h.key.get(&options, &Tweak::default()), &h.ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        let logins = crate::merchant_passkeys::audit(&app, "operator.login").await;
        let methods: Vec<&str> = logins.iter().map(|(_, _, d)| d["method"].as_str().unwrap_or("none")).collect();
        assert_eq!(methods, ["password", "passkey"], "{logins:?}");
        assert!(logins.iter().all(|(_, _, d)| d["ip"] == OPERATOR_IP && d["session_id"].is_string()), "{logins:?}");
    }
}

/// Finding 7: a copied passkey. An answer with a valid signature whose counter did not go up
/// (the stored one is not zero) is refused, raises an operator alert, and disables the passkey:
/// neither copy gets in with it any more, not even with a higher counter, and no ceremony offers
/// it; its owner is told and sees it disabled, removes it and adds a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_passkey_is_refused_disabled_and_raises_an_alert() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn(backend).await else { continue };
        // The second sandbox operator reads the alerts (the first has a passkey below).
        let watcher = app.operator_session(1).await;
        for kind in KINDS {
            let mut h = holder(&app, kind).await;
            let (id, options) = begin(&app, kind, &h.ip).await;
            let r = verify_passkey(&app, &id, &h.key.get(&options, &Tweak::default()), &h.ip).await;
            assert_eq!(r.status, 200, "{kind:?}: {r:?}");
            assert_eq!(sign_count(&app, &h.key).await, 1);
            // The copy answers with the counter the original already used.
            let (id, options) = begin(&app, kind, &h.ip).await;
            let copied = h.key.get(&options, &Tweak { count: Some(1), ..Tweak::default() });
            verify_passkey(&app, &id, &copied, &h.ip).await.assert_problem(422, "code_invalid");
            let (_, owner_id) = owner_column(kind, &h.key);
            let r = app.authed(reqwest::Method::GET, "/v1/admin/alerts", &watcher, None, OPERATOR_IP).await;
            let alerts = r.body["items"].as_array().unwrap().clone();
            let alert = alerts
                .iter()
                .find(|a| a["kind"] == "passkey_cloned" && a["detail"].as_str().unwrap().contains(&owner_id))
                .unwrap_or_else(|| panic!("{kind:?}: no passkey_cloned alert naming {owner_id}: {alerts:?}"));
            assert_eq!(alert["severity"], "high", "{alert:?}");
            // Disabled: whichever copy, whatever the counter.
            let higher = h.key.get(&options, &Tweak { count: Some(50), ..Tweak::default() });
            verify_passkey(&app, &id, &higher, &h.ip).await.assert_problem(422, "code_invalid");
            let listed = app.authed(reqwest::Method::GET, passkeys_path(kind), &h.session, None, &h.ip).await;
            assert!(listed.body["items"][0]["disabled_at"].is_string(), "{kind:?}: {listed:?}");
            // A step-up no longer offers it.
            app.advance_clock(6 * 60).await;
            let r = begin_registration(&app, kind, &h).await;
            r.assert_problem(403, "step_up_required");
            assert!(!r.body["methods"].as_array().unwrap().contains(&json!("passkey")), "{kind:?}: {r:?}");
        }
    }
}

/// The review of the hardening: a passkey stays a way in when someone has filled the account's
/// daily cap of failures with wrong passwords (knowing an e-mail address is enough for that), for
/// all three kinds of user; the address and subnet limits still apply to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_daily_cap_of_wrong_passwords_does_not_shut_the_passkey_out() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn(backend).await else { continue };
        for kind in KINDS {
            let mut h = holder(&app, kind).await;
            let (_, id) = owner_column(kind, &h.key);
            let key = match kind {
                Kind::Shopper => format!("account:{id}"),
                Kind::Operator => format!("operator:{id}"),
                Kind::Merchant => format!("merchant:{id}"),
            };
            let offset: i64 = sqlx::query_scalar("SELECT offset_ms FROM service_clock WHERE id = 1")
                .fetch_one(app.db().pool())
                .await
                .unwrap();
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + offset;
            for i in 0..100 {
                sqlx::query("INSERT INTO auth_events (scope, key, at) VALUES ('fail_account', $1, $2)")
                    .bind(&key)
                    .bind(now - 60_000 - i)
                    .execute(app.db().pool())
                    .await
                    .unwrap();
            }
            let (challenge, options) = begin(&app, kind, &h.ip).await;
            let r = verify_passkey(&app, &challenge, &h.key.get(&options, &Tweak::default()), &h.ip).await;
            assert_eq!(r.status, 200, "{kind:?}: {r:?}");
        }
    }
}

/// The review of the hardening: a synced passkey (backup eligible) whose counter did not go up is
/// refused and reported (`passkey_counter`, medium), but not disabled: its devices may each keep a
/// counter. The next answer with a higher counter logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_passkey_whose_counter_went_back_is_refused_but_not_disabled() {
    use crate::passkeys::{UP, UV};
    const BE: u8 = 0x08;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn(backend).await else { continue };
        let watcher = app.operator_session(1).await;
        for kind in KINDS {
            let mut h = holder(&app, kind).await;
            let (id, options) = begin(&app, kind, &h.ip).await;
            let r = verify_passkey(&app, &id, &h.key.get(&options, &Tweak::default()), &h.ip).await;
            assert_eq!(r.status, 200, "{kind:?}: {r:?}");
            let (id, options) = begin(&app, kind, &h.ip).await;
            let behind = Tweak { flags: Some(UP | UV | BE), count: Some(1), ..Tweak::default() };
            verify_passkey(&app, &id, &h.key.get(&options, &behind), &h.ip).await.assert_problem(422, "code_invalid");
            let (_, owner_id) = owner_column(kind, &h.key);
            let r = app.authed(reqwest::Method::GET, "/v1/admin/alerts", &watcher, None, OPERATOR_IP).await;
            let alerts = r.body["items"].as_array().unwrap().clone();
            let mine =
                |k: &str| alerts.iter().any(|a| a["kind"] == k && a["detail"].as_str().unwrap().contains(&owner_id));
            assert!(mine("passkey_counter") && !mine("passkey_cloned"), "{kind:?}: {alerts:?}");
            let listed = app.authed(reqwest::Method::GET, passkeys_path(kind), &h.session, None, &h.ip).await;
            assert!(listed.body["items"][0]["disabled_at"].is_null(), "{kind:?}: {listed:?}");
            let ahead = Tweak { flags: Some(UP | UV | BE), count: Some(50), ..Tweak::default() };
            let r = verify_passkey(&app, &id, &h.key.get(&options, &ahead), &h.ip).await;
            assert_eq!(r.status, 200, "{kind:?}: {r:?}");
        }
    }
}
