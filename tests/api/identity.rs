//! Identity as a shopper and an operator use it: sign-up, two-step login, recognised devices,
//! sessions, step-up, TOTP and recovery codes, password change, operators.

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn sign_up_then_log_in_in_two_steps(app: TestApp) {
        let mut s = app.register().await;
        // The password alone gives a challenge, never a session.
        let r = app.login(&s.phone, &s.password, &s.device_id, None, &s.ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["methods"], json!(["sms"]));
        assert!(r.body.get("session_token").is_none());
        app.log_in(&mut s).await;
        let token = s.session.clone().unwrap();
        let me = app.me(&token, &s.ip).await;
        assert_eq!(me.status, 200, "{me:?}");
        assert_eq!(me.body["user_id"], s.user_id.as_str());
        assert_eq!(me.body["email"], s.email.as_str());
        let masked = me.body["phone"].as_str().unwrap();
        assert!(masked.ends_with(&s.phone[s.phone.len() - 4..]) && !masked.contains(&s.phone[3..8]), "{masked}");
        // Signing in from a new device told the owner on every channel.
        assert!(app.messages(&s.phone).await.iter().any(|m| m["kind"] == "login_new_device"));
        assert!(app.messages(&s.email).await.iter().any(|m| m["kind"] == "login_new_device"));
        // By e-mail too, and the recognised device then needs no code.
        let r = app.login(&s.email.to_uppercase(), &s.password, &s.device_id, s.device_token.as_deref(), &s.ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body["session_token"].is_string(), "{r:?}");
        // A device token is bound to its device: on another device id it is ignored.
        let r = app.login(&s.phone, &s.password, "another-phone", s.device_token.as_deref(), &s.ip).await;
        assert!(r.body["challenge_id"].is_string() && r.body.get("session_token").is_none(), "{r:?}");
        // ...and never an error, even when it is garbage.
        let r = app.login(&s.phone, &s.password, &s.device_id, Some("not-a-token"), &s.ip).await;
        assert!(r.body["challenge_id"].is_string(), "{r:?}");
        // The recognised device is trusted for 30 days after its last two-step login.
        app.advance_clock(31 * 24 * 3600).await;
        let r = app.login(&s.phone, &s.password, &s.device_id, s.device_token.as_deref(), &s.ip).await;
        assert!(r.body["challenge_id"].is_string(), "{r:?}");
    }

    async fn weak_passwords_are_refused_with_a_reason(app: TestApp) {
        let phone = new_phone();
        let ip = jp_ip(1);
        let common = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/common-passwords.txt"))
            .unwrap()
            .lines()
            .find(|l| l.chars().count() >= 14 && l.chars().all(|c| c.is_ascii_alphanumeric()))
            .unwrap()
            .to_string();
        for (password, reason) in [
            ("short-one", "too_short"),
            (&"x".repeat(129)[..], "too_long"),
            (&common.to_uppercase()[..], "common"),
            (&format!("My{}number!", &phone[phone.len() - 8..])[..], "personal"),
            ("hanako.yamada-secret", "personal"),
            ("starwarsstarwars", "guessable"),
        ] {
            let r = app.signup(&phone, "hanako.yamada@example.jp", password, &ip).await;
            r.assert_problem(422, "weak_password");
            assert_eq!(r.body["reason"], reason, "{password}: {r:?}");
            assert!(!r.text.contains(password), "the error echoed the password");
        }
        app.signup("09012345678", "a@example.jp", &strong_password(), &ip).await.assert_problem(422, "invalid_phone");
        app.signup(&phone, "not-an-email", &strong_password(), &ip).await.assert_problem(422, "invalid_email");
        // Addresses the mailer would refuse at send time (the code would never arrive).
        for refused in ["a..b@example.jp", "a(b)@example.jp", ".a@example.jp", "a.@example.jp"] {
            app.signup(&phone, refused, &strong_password(), &ip).await.assert_problem(422, "invalid_email");
        }
        // No code was sent for any of them.
        assert!(app.messages(&phone).await.is_empty());
    }

    async fn a_registered_phone_gets_the_same_answer_and_its_owner_is_told(app: TestApp) {
        let s = app.register().await;
        let stranger_email = "stranger@example.jp";
        let r = app.signup(&s.phone, stranger_email, &strong_password(), &jp_ip(9)).await;
        assert_eq!(r.status, 202, "{r:?}");
        assert!(r.body["signup_id"].is_string());
        // The owner is told; no code is sent to the phone.
        let to_owner = app.messages(&s.phone).await;
        assert_eq!(to_owner[0]["kind"], "signup_existing");
        assert!(to_owner[0]["code"].is_null());
        // The sign-up can never complete, whatever is guessed.
        let email_code = app.code_for(stranger_email, "signup_code").await;
        let r = app.post_from(&format!("/v1/signup/{}/verify", r.body["signup_id"].as_str().unwrap()),
            &json!({"phone_code": "000000", "email_code": email_code}), &jp_ip(9)).await;
        r.assert_problem(422, "code_invalid");
    }

    async fn sessions_end_at_logout_revocation_and_idle_timeout(app: TestApp) {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let first = s.session.clone().unwrap();
        app.log_in(&mut s).await;
        let second = s.session.clone().unwrap();
        let list = app.authed(Method::GET, "/v1/sessions", &second, None, &s.ip).await;
        let items = list.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{list:?}");
        assert_eq!(items.iter().filter(|i| i["current"] == true).count(), 1);
        let first_id = items.iter().find(|i| i["current"] == false).unwrap()["id"].as_str().unwrap().to_string();
        // Revoked from the other session.
        let r = app.authed(Method::DELETE, &format!("/v1/sessions/{first_id}"), &second, None, &s.ip).await;
        assert_eq!(r.status, 204, "{r:?}");
        app.me(&first, &s.ip).await.assert_problem(401, "unauthenticated");
        // Logged out.
        assert_eq!(app.authed(Method::POST, "/v1/logout", &second, None, &s.ip).await.status, 204);
        app.me(&second, &s.ip).await.assert_problem(401, "unauthenticated");
        // Idle for 15 minutes.
        app.log_in(&mut s).await;
        let third = s.session.clone().unwrap();
        app.advance_clock(14 * 60).await;
        assert_eq!(app.me(&third, &s.ip).await.status, 200);
        app.advance_clock(14 * 60).await;
        assert_eq!(app.me(&third, &s.ip).await.status, 200, "activity keeps a session alive");
        app.advance_clock(15 * 60 + 1).await;
        app.me(&third, &s.ip).await.assert_problem(401, "unauthenticated");
        // No token, a garbage token, and a session used from another device id.
        app.get("/v1/me").await.assert_problem(401, "unauthenticated");
        app.me("garbage", &s.ip).await.assert_problem(401, "unauthenticated");
        app.log_in(&mut s).await;
        let fourth = s.session.clone().unwrap();
        let r = Reply::from(app.from(Method::GET, "/v1/me", &s.ip).bearer_auth(&fourth).header("X-Device-Id", "thief").send().await.unwrap()).await;
        r.assert_problem(401, "unauthenticated");
        app.me(&fourth, &s.ip).await.assert_problem(401, "unauthenticated");
    }

    async fn step_up_totp_and_recovery_codes(app: TestApp) {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let token = s.session.clone().unwrap();
        // The login itself counts as a step-up for 5 minutes.
        let r = app.authed(Method::POST, "/v1/me/totp", &token, None, &s.ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        let seed = omamori::identity::totp::base32_decode(r.body["secret"].as_str().unwrap()).unwrap();
        assert!(r.body["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/Omamori:"));
        let step = omamori::identity::totp::current_step();
        app.authed(Method::POST, "/v1/me/totp/confirm", &token, Some(&json!({"code": "000000"})), &s.ip).await
            .assert_problem(422, "code_invalid");
        let code = omamori::identity::totp::code_at_step(&seed, step);
        let r = app.authed(Method::POST, "/v1/me/totp/confirm", &token, Some(&json!({"code": code})), &s.ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        let recovery: Vec<String> = r.body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        assert_eq!(recovery.len(), 10);
        assert!(app.messages(&s.email).await.iter().any(|m| m["kind"] == "factor_added"));
        // After 5 minutes a sensitive action asks for a step-up challenge.
        app.advance_clock(6 * 60).await;
        let r = app.authed(Method::POST, "/v1/me/totp", &token, None, &s.ip).await;
        r.assert_problem(403, "step_up_required");
        let challenge = r.body["challenge_id"].as_str().unwrap().to_string();
        assert_eq!(r.body["methods"], json!(["sms", "totp", "recovery_code"]));
        // The TOTP code used to confirm is never accepted again; the next step's is.
        app.verify(&challenge, "totp", &code, &s.ip).await.assert_problem(422, "code_invalid");
        let next = omamori::identity::totp::code_at_step(&seed, step + 1);
        let r = app.verify(&challenge, "totp", &next, &s.ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["step_up"], true);
        assert_eq!(app.authed(Method::POST, "/v1/me/totp", &token, None, &s.ip).await.status, 200);
        // A recovery code works once as a login second factor.
        let r = app.login(&s.phone, &s.password, "new-phone", None, &s.ip).await;
        let ch = r.body["challenge_id"].as_str().unwrap().to_string();
        let r = app.verify(&ch, "recovery_code", &recovery[0].to_lowercase(), &s.ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = app.login(&s.phone, &s.password, "new-phone-2", None, &s.ip).await;
        let ch = r.body["challenge_id"].as_str().unwrap().to_string();
        app.verify(&ch, "recovery_code", &recovery[0], &s.ip).await.assert_problem(422, "code_invalid");
    }

    async fn rotating_the_totp_key_keeps_authenticators_working(app: TestApp) {
        use omamori::config::{Key, KeyRing};
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let token = s.session.clone().unwrap();
        let r = app.authed(Method::POST, "/v1/me/totp", &token, None, &s.ip).await;
        let seed = omamori::identity::totp::base32_decode(r.body["secret"].as_str().unwrap()).unwrap();
        let step = omamori::identity::totp::current_step();
        let code = omamori::identity::totp::code_at_step(&seed, step);
        let r = app.authed(Method::POST, "/v1/me/totp/confirm", &token, Some(&json!({"code": code})), &s.ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        let old = app.state.config.keys.totp_encryption.clone().unwrap();
        // The deployment rotates: a new key writes, the old one is still listed for reading.
        let rotated = app
            .another_instance_with(|c| c.keys.totp_encryption = Some(KeyRing::new(Key::generate("k2"), vec![old.current().clone()])))
            .await;
        let r = rotated.login(&s.phone, &s.password, "phone-after-rotation", None, &s.ip).await;
        let ch = r.body["challenge_id"].as_str().unwrap().to_string();
        let next = omamori::identity::totp::code_at_step(&seed, step + 1);
        let r = rotated.verify(&ch, "totp", &next, &s.ip).await;
        assert_eq!(r.status, 200, "an authenticator set up under the old key must still log in: {r:?}");
        // What is sealed from now on is sealed under the new key (the sandbox operators were
        // given new seeds by the rotated instance's start).
        let sealed: Vec<String> = sqlx::query_scalar("SELECT totp_secret FROM operators")
            .fetch_all(rotated.db().pool()).await.unwrap();
        assert!(!sealed.is_empty() && sealed.iter().all(|s| s.starts_with("k2:")), "{sealed:?}");
        // Without the old key, the seed cannot be opened: the login fails, it does not pass.
        let dropped = app.another_instance_with(|c| c.keys.totp_encryption = Some(Key::generate("k3").into())).await;
        let r = dropped.login(&s.phone, &s.password, "phone-without-old-key", None, &s.ip).await;
        let ch = r.body["challenge_id"].as_str().unwrap().to_string();
        let r = dropped.verify(&ch, "totp", &omamori::identity::totp::code_at_step(&seed, step + 2), &s.ip).await;
        assert_ne!(r.status, 200, "{r:?}");
    }

    async fn a_password_change_needs_step_up_and_signs_out_the_rest(app: TestApp) {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let other = s.session.clone().unwrap();
        let other_device = s.device_token.clone().unwrap();
        app.log_in(&mut s).await;
        let token = s.session.clone().unwrap();
        let new_password = strong_password();
        let body = json!({"current_password": "wrong-password-123", "new_password": new_password});
        app.authed(Method::POST, "/v1/me/password", &token, Some(&body), &s.ip).await.assert_problem(422, "invalid_credentials");
        let body = json!({"current_password": s.password, "new_password": "starwarsstarwars"});
        let r = app.authed(Method::POST, "/v1/me/password", &token, Some(&body), &s.ip).await;
        r.assert_problem(422, "weak_password");
        assert_eq!(r.body["reason"], "guessable");
        let body = json!({"current_password": s.password, "new_password": new_password});
        assert_eq!(app.authed(Method::POST, "/v1/me/password", &token, Some(&body), &s.ip).await.status, 204);
        assert_eq!(app.me(&token, &s.ip).await.status, 200, "the session that changed it stays");
        app.me(&other, &s.ip).await.assert_problem(401, "unauthenticated");
        assert!(app.messages(&s.phone).await.iter().any(|m| m["kind"] == "password_changed"));
        assert!(app.me(&token, &s.ip).await.body["cooling_off_until"].is_string());
        // Every device token is void: the old password fails and the new one needs a code again.
        let r = app.login(&s.phone, &s.password, &s.device_id, Some(&other_device), &s.ip).await;
        r.assert_problem(401, "invalid_credentials");
        let r = app.login(&s.phone, &new_password, &s.device_id, Some(&other_device), &s.ip).await;
        assert!(r.body["challenge_id"].is_string(), "{r:?}");
        // Without a recent step-up the change asks for one.
        app.advance_clock(6 * 60).await;
        let body = json!({"current_password": new_password, "new_password": strong_password()});
        app.authed(Method::POST, "/v1/me/password", &token, Some(&body), &s.ip).await.assert_problem(403, "step_up_required");
    }

    async fn operators_log_in_with_totp_and_keep_to_their_routes(app: TestApp) {
        let op = app.operator_session(1).await;
        let r = app.authed(Method::GET, "/v1/admin/alerts", &op, None, OPERATOR_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body["items"].is_array());
        // A shopper cannot reach an admin route, nor an operator a shopper route.
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        app.authed(Method::GET, "/v1/admin/alerts", s.session.as_ref().unwrap(), None, &s.ip).await.assert_problem(403, "forbidden");
        app.get("/v1/admin/alerts").await.assert_problem(401, "unauthenticated");
        app.me(&op, OPERATOR_IP).await.assert_problem(403, "forbidden");
        // A wrong password or an unknown operator: the same answer.
        let a = app.post_from("/v1/admin/login", &json!({"email": "operator1@sandbox.omamori.test", "password": "wrong"}), "192.0.2.201").await;
        let b = app.post_from("/v1/admin/login", &json!({"email": "nobody@sandbox.omamori.test", "password": "wrong"}), "192.0.2.201").await;
        a.assert_problem(401, "invalid_credentials");
        assert_eq!(a.body, b.body);
    }

    async fn an_operator_logs_out_and_the_token_stops_working(app: TestApp) {
        let op = app.operator_session(0).await;
        let other = app.operator_session(1).await;
        let r = app.authed(Method::POST, "/v1/admin/logout", &op, None, OPERATOR_IP).await;
        assert_eq!(r.status, 204, "{r:?}");
        // The very next request with that token is refused; the other operator is still in.
        app.authed(Method::GET, "/v1/admin/alerts", &op, None, OPERATOR_IP).await.assert_problem(401, "unauthenticated");
        app.authed(Method::POST, "/v1/admin/logout", &op, None, OPERATOR_IP).await.assert_problem(401, "unauthenticated");
        let r = app.authed(Method::GET, "/v1/admin/audit", &other, None, OPERATOR_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body["items"].as_array().unwrap().iter().any(|e| e["action"] == "operator.logout"), "{r:?}");
        // A shopper's token cannot end anything here.
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let token = s.session.clone().unwrap();
        app.authed(Method::POST, "/v1/admin/logout", &token, None, &s.ip).await.assert_problem(403, "forbidden");
        assert_eq!(app.me(&token, &s.ip).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_created_on_the_command_line_logs_in() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omamori"))
        .args(["admin", "operator", "create", "--email", "Kenji@Omamori.example", "--role", "viewer"])
        .env_clear()
        .env("OMAMORI_DATABASE_URL", &app.database_url)
        .env("OMAMORI_DATA_DIR", &app.data_dir.0)
        .env("OMAMORI_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let password = stdout.lines().find_map(|l| l.strip_prefix("password: ")).unwrap().to_string();
    let secret = stdout.lines().find_map(|l| l.split("it is not shown again): ").nth(1)).unwrap().to_string();
    let r = app
        .post_from("/v1/admin/login", &json!({"email": "kenji@omamori.example", "password": password}), "192.0.2.9")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seed = omamori::identity::totp::base32_decode(&secret).unwrap();
    let code = omamori::identity::totp::code_at_step(&seed, omamori::identity::totp::current_step());
    let r = app.verify(r.body["challenge_id"].as_str().unwrap(), "totp", &code, "192.0.2.9").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["role"], "viewer");
    // The same e-mail cannot be created twice.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omamori"))
        .args(["admin", "operator", "create", "--email", "kenji@omamori.example", "--role", "admin"])
        .env_clear()
        .env("OMAMORI_DATABASE_URL", &app.database_url)
        .env("OMAMORI_DATA_DIR", &app.data_dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
