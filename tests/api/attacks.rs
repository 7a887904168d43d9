//! The attacks of ARCHITECTURE section 2 against identity, each run against the real server:
//! the attacker's steps, then what must not have happened and what must have been seen.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn credential_stuffing_from_abroad_and_from_rotating_domestic_addresses(app: TestApp) {
        // Three shoppers who reused their password elsewhere; they use Omamori on their phones.
        let mut victims = Vec::new();
        for _ in 0..3 {
            let mut s = app.register().await;
            app.log_in(&mut s).await;
            victims.push(s);
        }
        // The leaked list: the victims' real passwords among many wrong pairs.
        let mut list: Vec<(String, String)> = victims.iter().map(|v| (v.email.clone(), v.password.clone())).collect();
        for i in 0..90 {
            let login = if i % 3 == 0 { victims[i % 3].phone.clone() } else { format!("user{i}@leaked.example") };
            list.push((login, format!("Leaked-password-{i}")));
        }

        // From abroad: refused before any password is looked at.
        for (login, password) in &list {
            let r = app.login(login, password, "attacker-device", None, US_IP).await;
            r.assert_problem(403, "region_blocked");
        }
        let failures: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auth_events WHERE scope = 'fail_login'")
            .fetch_one(app.db().pool()).await.unwrap();
        assert_eq!(failures, 0, "a password was checked for a blocked country");

        // From rotating domestic addresses in one /24 (a botnet of home routers).
        let mut sessions = 0;
        let mut throttled = 0;
        let mut challenges = Vec::new();
        for (i, (login, password)) in list.iter().enumerate() {
            let ip = format!("192.0.2.{}", 1 + i % 250);
            let r = app.login(login, password, &format!("bot-{i}"), None, &ip).await;
            if r.body.get("session_token").is_some() {
                sessions += 1;
            }
            match r.status.as_u16() {
                200 => challenges.push((r.body["challenge_id"].as_str().unwrap().to_string(), ip)),
                401 => assert_eq!(r.body["code"], "invalid_credentials"),
                429 => {
                    throttled += 1;
                    assert!(r.headers.get("retry-after").is_some(), "{r:?}");
                }
                _ => panic!("unexpected answer {r:?}"),
            }
        }
        assert_eq!(sessions, 0, "a leaked password alone opened a session");
        assert!(throttled > 0, "no throttle engaged");
        // Even with the right password the attacker must guess the SMS code, and cannot.
        for (challenge, ip) in &challenges {
            let r = app.send_code(challenge, ip).await;
            assert!(matches!(r.status.as_u16(), 202 | 429), "{r:?}");
            for guess in ["000000", "123456", "111111", "999999", "654321"] {
                let r = app.verify(challenge, "sms", guess, ip).await;
                assert!(r.body.get("session_token").is_none(), "a guessed code opened a session: {r:?}");
            }
        }
        // The flood is seen within the minute it started.
        let alerts = app.alerts().await;
        let kinds: Vec<&str> = alerts.iter().map(|a| a["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"failed_logins"), "{alerts:?}");
        assert!(kinds.contains(&"throttled_addresses"), "{alerts:?}");
        // The owners still log in from their own devices, at once.
        for v in &victims {
            let r = app.login(&v.phone, &v.password, &v.device_id, v.device_token.as_deref(), &v.ip).await;
            assert_eq!(r.status, 200, "the owner was locked out: {r:?}");
            assert!(r.body["session_token"].is_string(), "{r:?}");
        }
    }

    async fn the_account_throttle_grows_then_blocks_but_never_the_owners_device(app: TestApp) {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let mut statuses = Vec::new();
        // One failure per address, so that only the account's own count can engage.
        for i in 0..12u32 {
            let r = app.login(&s.phone, "not-the-password", "thief", None, &jp_ip(1000 + i)).await;
            statuses.push(r.status.as_u16());
            if r.status == 429 {
                let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(retry >= 1, "{r:?}");
            }
        }
        assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
        assert_eq!(statuses[5], 429, "{statuses:?}");
        // After the growing delays, ten failures block the account's password login for 30 minutes.
        for _ in 0..5 {
            app.advance_clock(20).await;
            app.login(&s.phone, "not-the-password", "thief", None, &jp_ip(2000)).await;
        }
        let r = app.login(&s.phone, &s.password, "thief", None, &jp_ip(2001)).await;
        r.assert_problem(429, "too_many_attempts");
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry > 25 * 60, "{retry}");
        // Even the right password from an unrecognised device is refused, but the owner's device is not.
        let r = app.login(&s.phone, &s.password, &s.device_id, s.device_token.as_deref(), &s.ip).await;
        assert!(r.body["session_token"].is_string(), "{r:?}");
    }

    async fn the_address_throttle_refuses_an_address_after_ten_failures(app: TestApp) {
        let ip = "203.0.113.50";
        for i in 0..10 {
            app.login(&format!("nobody{i}@example.jp"), "whatever-password", "d", None, ip).await.assert_problem(401, "invalid_credentials");
        }
        let r = app.login("nobody-else@example.jp", "whatever-password", "d", None, ip).await;
        r.assert_problem(429, "too_many_attempts");
        assert!(r.body["retry_after"].as_i64().unwrap() > 0);
        // Another address is not affected; ten minutes later this one is free again.
        app.login("nobody@example.jp", "whatever-password", "d", None, "203.0.113.51").await.assert_problem(401, "invalid_credentials");
        app.advance_clock(10 * 60 + 1).await;
        app.login("nobody@example.jp", "whatever-password", "d", None, ip).await.assert_problem(401, "invalid_credentials");
    }

    async fn failed_shopper_logins_never_lock_operators_out_of_an_address(app: TestApp) {
        // Issue 15, defect 4: ten failed shopper logins from an address, during an incident.
        let ip = "203.0.113.60";
        for i in 0..10 {
            app.login(&format!("nobody{i}@example.jp"), "whatever-password", "d", None, ip).await.assert_problem(401, "invalid_credentials");
        }
        app.login("nobody-else@example.jp", "whatever-password", "d", None, ip).await.assert_problem(429, "too_many_attempts");
        // The console from the same address still takes the right password (and TOTP).
        let op = app.operator_session_from(0, ip).await;
        assert_eq!(app.authed(reqwest::Method::GET, "/v1/admin/alerts", &op, None, ip).await.status, 200);
        // Operators' own address limit holds, and failing it does not stop shoppers there either.
        let other = "203.0.113.61";
        for i in 0..10 {
            let body = json!({"email": format!("ghost{i}@example.jp"), "password": "whatever-password"});
            app.post_from("/v1/admin/login", &body, other).await.assert_problem(401, "invalid_credentials");
        }
        let operator = &app.sandbox_doc()["operators"][1];
        let body = json!({"email": operator["email"], "password": operator["password"]});
        app.post_from("/v1/admin/login", &body, other).await.assert_problem(429, "too_many_attempts");
        app.login("nobody@example.jp", "whatever-password", "d", None, other).await.assert_problem(401, "invalid_credentials");
    }

    async fn enumeration_by_comparing_answers_learns_nothing(app: TestApp) {
        let s = app.register().await;
        let ip = jp_ip(77);
        let unknown = app.login("nobody-here@example.jp", "Some-password-1", "d1", None, &ip).await;
        let wrong = app.login(&s.email, "Some-password-1", "d1", None, &ip).await;
        assert_eq!((unknown.status, &unknown.body), (wrong.status, &wrong.body));
        let unknown = app.post_from("/v1/password-reset", &json!({"login": "+819099999999"}), &ip).await;
        let known = app.post_from("/v1/password-reset", &json!({"login": s.phone}), &ip).await;
        assert_eq!(unknown.status, 202);
        assert_eq!(known.status, 202);
        assert_eq!(unknown.body.as_object().unwrap().keys().collect::<Vec<_>>(), known.body.as_object().unwrap().keys().collect::<Vec<_>>());
        // Timing: both cost one Argon2 verification.
        let mut times = (Vec::new(), Vec::new());
        for i in 0..6 {
            let t = Instant::now();
            app.login(&format!("ghost{i}@example.jp"), "Some-password-1", "d2", None, &jp_ip(300 + i)).await;
            times.0.push(t.elapsed());
            let t = Instant::now();
            app.login(&s.email, "Some-password-1", "d2", None, &jp_ip(400 + i)).await;
            times.1.push(t.elapsed());
            // Stay clear of the account's own throttle while measuring.
            app.advance_clock(31 * 60).await;
        }
        let median = |v: &mut Vec<Duration>| { v.sort(); v[v.len() / 2] };
        let (a, b) = (median(&mut times.0), median(&mut times.1));
        let ratio = a.as_secs_f64().max(b.as_secs_f64()) / a.as_secs_f64().min(b.as_secs_f64());
        assert!(ratio < 2.0, "unknown {a:?} vs wrong password {b:?}");
    }

    async fn a_reset_cannot_be_sent_to_the_attacker_nor_completed_by_guessing(app: TestApp) {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let attacker = "attacker@evil.example";
        let ip = jp_ip(500);
        // The API takes no delivery address: asking for one is refused.
        let r = app.post_from("/v1/password-reset", &json!({"login": s.phone, "email": attacker}), &ip).await;
        r.assert_problem(422, "invalid_body");
        let r = app.post_from("/v1/password-reset", &json!({"login": s.phone}), &ip).await;
        assert_eq!(r.status, 202);
        let reset = r.body["reset_id"].as_str().unwrap().to_string();
        assert!(app.messages(attacker).await.is_empty());
        assert!(app.messages(&s.phone).await.iter().any(|m| m["kind"] == "reset_code"));
        assert!(app.messages(&s.email).await.iter().any(|m| m["kind"] == "reset_code"));
        // One proof is not enough, even the right one; guesses use up the reset.
        let sms = app.code_for(&s.phone, "reset_code").await;
        let path = format!("/v1/password-reset/{reset}/complete");
        let r = app.post_from(&path, &json!({"sms_code": sms, "new_password": strong_password()}), &ip).await;
        r.assert_problem(422, "code_invalid");
        assert_eq!(r.body["attempts_left"], 4);
        for guess in ["000000", "111111", "222222", "333333"] {
            app.post_from(&path, &json!({"sms_code": sms, "email_code": guess, "new_password": strong_password()}), &ip).await
                .assert_problem(422, "code_invalid");
        }
        let email = app.code_for(&s.email, "reset_code").await;
        let r = app.post_from(&path, &json!({"sms_code": sms, "email_code": email, "new_password": strong_password()}), &ip).await;
        r.assert_problem(410, "challenge_expired");
        // The owner's session and password are untouched.
        assert_eq!(app.me(s.session.as_ref().unwrap(), &s.ip).await.status, 200);
    }

    async fn a_real_reset_revokes_everything_and_starts_cooling_off(app: TestApp) {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let old_session = s.session.clone().unwrap();
        let old_device = s.device_token.clone().unwrap();
        let r = app.post_from("/v1/password-reset", &json!({"login": s.email}), &s.ip).await;
        let reset = r.body["reset_id"].as_str().unwrap().to_string();
        let (sms, email) = (app.code_for(&s.phone, "reset_code").await, app.code_for(&s.email, "reset_code").await);
        let path = format!("/v1/password-reset/{reset}/complete");
        let r = app.post_from(&path, &json!({"sms_code": sms, "email_code": email, "new_password": "starwarsstarwars"}), &s.ip).await;
        r.assert_problem(422, "weak_password");
        let new_password = strong_password();
        let r = app.post_from(&path, &json!({"sms_code": sms, "email_code": email, "new_password": new_password}), &s.ip).await;
        assert_eq!(r.status, 204, "{r:?}");
        app.me(&old_session, &s.ip).await.assert_problem(401, "unauthenticated");
        let r = app.login(&s.phone, &new_password, &s.device_id, Some(&old_device), &s.ip).await;
        assert!(r.body["challenge_id"].is_string(), "the old device token still counted: {r:?}");
        for to in [&s.phone, &s.email] {
            assert!(app.messages(to).await.iter().any(|m| m["kind"] == "password_reset"), "{to} was not told");
        }
        s.password = new_password;
        app.log_in(&mut s).await;
        let me = app.me(s.session.as_ref().unwrap(), &s.ip).await;
        let until = time::OffsetDateTime::parse(me.body["cooling_off_until"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
        assert!(until - app.state.clock.now() > time::Duration::hours(71), "{until}");
        // The reset cannot be replayed.
        app.post_from(&path, &json!({"sms_code": sms, "email_code": email, "new_password": strong_password()}), &s.ip).await
            .assert_problem(410, "challenge_expired");
    }

    async fn guessing_a_login_code_kills_the_challenge(app: TestApp) {
        let s = app.register().await;
        let r = app.login(&s.phone, &s.password, "new-phone", None, &s.ip).await;
        let challenge = r.body["challenge_id"].as_str().unwrap().to_string();
        assert_eq!(app.send_code(&challenge, &s.ip).await.status, 202);
        let right = app.code_for(&s.phone, "challenge_code").await;
        let wrong = if right == "000000" { "000001" } else { "000000" };
        for left in (0..5).rev() {
            let r = app.verify(&challenge, "sms", wrong, &s.ip).await;
            r.assert_problem(422, "code_invalid");
            assert_eq!(r.body["attempts_left"], left);
            assert!(!r.text.contains(wrong), "the error echoed the code");
        }
        // Dead, even with the right code; a new code does not revive it.
        app.verify(&challenge, "sms", &right, &s.ip).await.assert_problem(410, "challenge_expired");
        app.send_code(&challenge, &s.ip).await.assert_problem(410, "challenge_expired");
        // (Five wrong codes also count against the account: let its short delay pass.)
        app.advance_clock(60).await;
        // A code also dies with time.
        let r = app.login(&s.phone, &s.password, "new-phone", None, &s.ip).await;
        let challenge = r.body["challenge_id"].as_str().unwrap().to_string();
        app.send_code(&challenge, &s.ip).await;
        let right = app.code_for(&s.phone, "challenge_code").await;
        app.advance_clock(5 * 60 + 1).await;
        app.verify(&challenge, "sms", &right, &s.ip).await.assert_problem(410, "challenge_expired");
        // And is used once.
        let r = app.login(&s.phone, &s.password, "new-phone", None, &s.ip).await;
        let challenge = r.body["challenge_id"].as_str().unwrap().to_string();
        app.send_code(&challenge, &s.ip).await;
        let right = app.code_for(&s.phone, "challenge_code").await;
        assert_eq!(app.verify(&challenge, "sms", &right, &s.ip).await.status, 200);
        app.verify(&challenge, "sms", &right, &s.ip).await.assert_problem(410, "challenge_expired");
    }

    async fn a_flood_of_wrong_codes_raises_an_alert(app: TestApp) {
        // Five accounts whose passwords leaked; the attacker guesses each one's SMS code.
        let mut challenges = Vec::new();
        for _ in 0..5 {
            let s = app.register().await;
            let r = app.login(&s.phone, &s.password, "attacker", None, &jp_ip(7000)).await;
            challenges.push(r.body["challenge_id"].as_str().unwrap().to_string());
        }
        assert!(app.alerts().await.iter().all(|a| a["kind"] != "failed_codes"));
        for c in &challenges {
            for guess in ["000000", "111111", "222222", "333333"] {
                app.verify(c, "sms", guess, &jp_ip(7000)).await.assert_problem(422, "code_invalid");
            }
        }
        // 20 wrong codes within a minute: the default threshold.
        let alerts = app.alerts().await;
        let alert = alerts.iter().find(|a| a["kind"] == "failed_codes").unwrap_or_else(|| panic!("{alerts:?}"));
        assert_eq!(alert["severity"], "high");
        assert!(alert["detail"].as_str().unwrap().starts_with("20 wrong one-time codes"), "{alert:?}");
    }

    async fn parallel_guesses_get_five_tries_and_no_more(app: TestApp) {
        let s = app.register().await;
        let r = app.login(&s.phone, &s.password, "thief", None, &s.ip).await;
        let challenge = r.body["challenge_id"].as_str().unwrap().to_string();
        app.send_code(&challenge, &s.ip).await;
        let right = app.code_for(&s.phone, "challenge_code").await;
        let app = std::sync::Arc::new(app);
        let mut tasks = Vec::new();
        for i in 0..20u32 {
            let (app, challenge, right) = (app.clone(), challenge.clone(), right.clone());
            tasks.push(tokio::spawn(async move {
                let guess = format!("{:06}", (right.parse::<u32>().unwrap() + 1 + i) % 1_000_000);
                app.verify(&challenge, "sms", &guess, &jp_ip(5000 + i)).await
            }));
        }
        let mut invalid = 0;
        for t in tasks {
            let r = t.await.unwrap();
            assert!(r.body.get("session_token").is_none());
            match r.body["code"].as_str().unwrap() {
                "code_invalid" => invalid += 1,
                "challenge_expired" | "too_many_attempts" => {}
                other => panic!("unexpected {other}: {r:?}"),
            }
        }
        assert_eq!(invalid, 5, "more than five guesses were judged");
        app.verify(&challenge, "sms", &right, &s.ip).await.assert_problem(410, "challenge_expired");
    }

    async fn a_parallel_login_flood_meets_the_address_limit(app: TestApp) {
        let app = std::sync::Arc::new(app);
        let mut tasks = Vec::new();
        for i in 0..30 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                app.login(&format!("flood{i}@example.jp"), "Leaked-password-1", "bot", None, "203.0.113.77").await
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap().status.as_u16());
        }
        // Attempts are counted before the slow password check, so concurrency gains nothing.
        assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 10, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20, "{statuses:?}");
    }

    async fn failed_resets_cannot_lock_the_owner_out(app: TestApp) {
        let s = app.register().await;
        let r = app.post_from("/v1/password-reset", &json!({"login": s.phone}), &jp_ip(6000)).await;
        let reset = r.body["reset_id"].as_str().unwrap().to_string();
        for i in 0..5u32 {
            let body = json!({"sms_code": "000000", "email_code": "000000", "new_password": strong_password()});
            app.post_from(&format!("/v1/password-reset/{reset}/complete"), &body, &jp_ip(6001 + i)).await
                .assert_problem(422, "code_invalid");
        }
        // The owner, on a new phone, still gets a challenge at once.
        let r = app.login(&s.phone, &s.password, "owners-new-phone", None, &s.ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body["challenge_id"].is_string());
    }

    async fn sms_pumping_is_limited(app: TestApp) {
        let s = app.register().await;
        let r = app.login(&s.phone, &s.password, "new-phone", None, &s.ip).await;
        let challenge = r.body["challenge_id"].as_str().unwrap().to_string();
        for _ in 0..3 {
            assert_eq!(app.send_code(&challenge, &s.ip).await.status, 202);
        }
        let r = app.send_code(&challenge, &s.ip).await;
        r.assert_problem(429, "too_many_attempts");
        assert!(r.headers.get("retry-after").is_some());
    }

    async fn a_forged_forwarded_for_does_not_move_the_client(app: TestApp) {
        let s = app.register().await;
        // The proxy appends the real address (US) to what the client sent (a forged JP one).
        let r = app.login(&s.phone, &s.password, "d", None, &format!("192.0.2.10, {US_IP}")).await;
        r.assert_problem(403, "region_blocked");
        // A forged foreign entry to the left of the real domestic address changes nothing.
        let r = app.login(&s.phone, &s.password, "d", None, &format!("{US_IP}, 192.0.2.10")).await;
        assert_eq!(r.status, 200, "{r:?}");
        // Sign-up and reset from abroad are refused too, before any input is looked at.
        app.post_from("/v1/signup", &json!({}), US_IP).await.assert_problem(403, "region_blocked");
        app.post_from("/v1/password-reset", &json!({"login": s.phone}), US_IP).await.assert_problem(403, "region_blocked");
        // A session from home is refused abroad.
        let mut s = s;
        app.log_in(&mut s).await;
        app.me(s.session.as_ref().unwrap(), US_IP).await.assert_problem(403, "region_blocked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_forwarded_for_is_ignored() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.trusted_proxies.clear();
        c.unknown_country = omamori::config::UnknownCountry::Deny;
    })
    .await
    .unwrap();
    // The peer is 127.0.0.1 (no country, denied here); a header claiming Japan does not help.
    let r = app.login("someone@example.jp", "whatever-password", "d", None, "192.0.2.10").await;
    r.assert_problem(403, "region_blocked");
}

both_backends! {
    async fn a_cookie_session_changes_nothing_without_this_sites_origin(app: TestApp) {
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let token = s.session.clone().unwrap();
        let host = app.url("").trim_start_matches("http://").trim_end_matches('/').to_string();
        let own = format!("http://{host}");
        let by_cookie = |origin: Option<&str>, authorization: Option<&str>| {
            let mut req = app
                .from(reqwest::Method::POST, "/v1/payment-codes", &s.ip)
                .header("Cookie", format!("omamori_session={token}"));
            if let Some(o) = origin {
                req = req.header("Origin", o);
            }
            if let Some(a) = authorization {
                req = req.header("Authorization", a);
            }
            req
        };
        // A forged request from another site, or from another port of this host, or one that
        // hides behind an Authorization header of another scheme: refused before any work.
        for (origin, authorization) in [
            (None, None),
            (Some("https://evil.example"), None),
            (Some("null"), None),
            (Some("http://localhost:1"), None),
            (Some("https://evil.example"), Some("Basic YTpi")),
            (None, Some("Bearer")),
        ] {
            let r = Reply::from(by_cookie(origin, authorization).send().await.unwrap()).await;
            r.assert_problem(403, "csrf_rejected");
        }
        // The site's own page, and an app with its bearer token (no cookie, no Origin), may.
        let r = Reply::from(by_cookie(Some(&own), None).send().await.unwrap()).await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = app.authed(reqwest::Method::POST, "/v1/payment-codes", &token, None, &s.ip).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
}
