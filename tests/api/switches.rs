//! Kill switches and freezes: engaged at once on every instance, released only by two operators.

use std::time::Instant;

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn a_switch_engaged_on_one_instance_refuses_requests_on_another_within_a_second(app: TestApp) {
        // The second instance's start made fresh sandbox credentials: read them from its sandbox.json.
        let other = app.another_instance().await;
        let doc = other.sandbox_doc();
        let terminal = doc["terminal_key"].as_str().unwrap().to_string();
        let store_qr = doc["store_qr"].as_str().unwrap().to_string();
        let (s, card) = app.funded_shopper(5_000).await;
        // The other instance has paid before, so the switches it knows are in its memory.
        let warm = app.payment_code(&s).await;
        let r = other.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&json!({"code": warm, "amount": 100})), Some("sw-0")).await;
        assert_eq!(r.status, 201, "{r:?}");
        let code = app.payment_code(&s).await;
        let op = other.operator_session(0).await;
        let r = app.authed(Method::POST, "/v1/admin/switches", &op, Some(&json!({"name": "payments", "reason": "fraud wave"})), OPERATOR_IP).await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.body["engaged"], true);
        let engaged = Instant::now();
        let switch_id = r.body["id"].as_str().unwrap().to_string();
        // The instance that engaged it refuses the very next request.
        app.money("/v1/payments", &s, &json!({"store_qr": app.sandbox_doc()["store_qr"], "amount": 100}), "sw-here").await
            .assert_problem(403, "switch_engaged");
        // The other refuses within a second (asked with an amount over the limit, which is declined
        // without spending the code as long as the switch is not seen there).
        let propagation = until_refused(&other, &terminal, &code, 403).await;
        assert!(propagation < std::time::Duration::from_secs(1), "took {propagation:?}");
        eprintln!("switch propagation to the other instance: {propagation:?} (engaged {:?} ago)", engaged.elapsed());
        let r = other.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&json!({"code": code, "amount": 100})), Some("sw-1")).await;
        r.assert_problem(403, "switch_engaged");
        assert_eq!(r.body["switch"], "payments");
        let r = other.money("/v1/payments", &s, &json!({"store_qr": store_qr, "amount": 100}), "sw-2").await;
        r.assert_problem(403, "switch_engaged");
        // Other money keeps moving.
        assert_eq!(other.money("/v1/topups", &s, &json!({"card_id": card, "amount": 1_000}), "sw-3").await.status, 201);
        let listed = app.authed(Method::GET, "/v1/admin/switches", &op, None, OPERATOR_IP).await;
        assert_eq!(listed.body["items"][0]["name"], "payments");
        // One operator cannot release alone.
        let path = format!("/v1/admin/switches/{switch_id}/release");
        let r = app.authed(Method::POST, &path, &op, Some(&json!({"reason": "over"})), OPERATOR_IP).await;
        assert_eq!(r.status, 202, "{r:?}");
        assert_eq!(r.body["released"], false);
        app.authed(Method::POST, &path, &op, Some(&json!({"reason": "over"})), OPERATOR_IP).await.assert_problem(409, "second_operator_required");
        other.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&json!({"code": code, "amount": 100})), Some("sw-1")).await
            .assert_problem(403, "switch_engaged");
        let op2 = other.operator_session(1).await;
        let r = app.authed(Method::POST, &path, &op2, Some(&json!({"reason": "confirmed over"})), OPERATOR_IP).await;
        assert_eq!(r.body["released"], true, "{r:?}");
        let propagation = until_refused(&other, &terminal, &code, 402).await;
        assert!(propagation < std::time::Duration::from_secs(1), "the release took {propagation:?}");
        // The refused request, repeated with the same key, now goes through.
        let r = other.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&json!({"code": code, "amount": 100})), Some("sw-1")).await;
        assert_eq!(r.status, 201, "{r:?}");
        // A viewer may look but not engage; shoppers and terminals may do neither.
        let mut shopper = s.clone();
        app.log_in(&mut shopper).await;
        app.authed(Method::GET, "/v1/admin/switches", shopper.session.as_ref().unwrap(), None, &shopper.ip).await.assert_problem(403, "forbidden");
        app.pos(Method::POST, "/v1/admin/switches", &terminal, Some(&json!({"name": "payments", "reason": "x"})), None).await
            .assert_problem(401, "unauthenticated");
        other.stop().await;
    }

    async fn scoped_switches_stop_only_their_scope(app: TestApp) {
        let store_qr = app.sandbox_doc()["store_qr"].as_str().unwrap().to_string();
        let (a, _) = app.funded_shopper(5_000).await;
        let (b, _) = app.funded_shopper(5_000).await;
        let op = app.operator_session(0).await;
        let body = json!({"name": "payments", "scope": {"kind": "user", "id": a.user_id}, "reason": "reported stolen phone"});
        assert_eq!(app.authed(Method::POST, "/v1/admin/switches", &op, Some(&body), OPERATOR_IP).await.status, 201);
        app.money("/v1/payments", &a, &json!({"store_qr": store_qr, "amount": 100}), "a1").await.assert_problem(403, "switch_engaged");
        assert_eq!(app.money("/v1/payments", &b, &json!({"store_qr": store_qr, "amount": 100}), "b1").await.status, 201);
        // A card switch stops that card on every wallet, by its fingerprint.
        let number = test_card();
        let (owner, _) = app.funded_shopper(0).await;
        let r = app.link_card(&owner, &number).await;
        let card = r.body["card_id"].as_str().unwrap().to_string();
        let body = json!({"name": "card_linking", "scope": {"kind": "card", "id": card}, "reason": "reported stolen"});
        assert_eq!(app.authed(Method::POST, "/v1/admin/switches", &op, Some(&body), OPERATOR_IP).await.status, 201);
        let mut thief = app.register().await;
        app.log_in(&mut thief).await;
        app.link_card(&thief, &number).await.assert_problem(403, "switch_engaged");
        assert_eq!(app.link_card(&thief, &test_card()).await.status, 201, "other cards still link");
        // A scope that names nothing is refused, so an operator cannot believe a typo contained anything.
        let body = json!({"name": "payments", "scope": {"kind": "user", "id": "usr_typo"}, "reason": "x"});
        app.authed(Method::POST, "/v1/admin/switches", &op, Some(&body), OPERATOR_IP).await.assert_problem(404, "not_found");
        // Payments from one country stop at the till too: the shopper's country is their phone's.
        let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        let body = json!({"name": "payments", "scope": {"kind": "country", "id": "JP"}, "reason": "fraud wave in JP"});
        assert_eq!(app.authed(Method::POST, "/v1/admin/switches", &op, Some(&body), OPERATOR_IP).await.status, 201);
        let code = app.payment_code(&b).await;
        let r = app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&json!({"code": code, "amount": 100})), Some("jp-till")).await;
        r.assert_problem(403, "switch_engaged");
        assert_eq!(r.body["switch"], "payments");
        // Sign-ups from one country; logins everywhere.
        let body = json!({"name": "signups", "scope": {"kind": "country", "id": "jp"}, "reason": "SMS pumping"});
        assert_eq!(app.authed(Method::POST, "/v1/admin/switches", &op, Some(&body), OPERATOR_IP).await.status, 201);
        app.signup(&new_phone(), "new@example.jp", &strong_password(), &jp_ip(42)).await.assert_problem(403, "switch_engaged");
        let body = json!({"name": "logins", "reason": "incident"});
        assert_eq!(app.authed(Method::POST, "/v1/admin/switches", &op, Some(&body), OPERATOR_IP).await.status, 201);
        let r = app.login(&b.phone, &b.password, &b.device_id, None, &b.ip).await;
        r.assert_problem(403, "switch_engaged");
        assert_eq!(r.body["switch"], "logins");
        // Bad requests are precise.
        app.authed(Method::POST, "/v1/admin/switches", &op, Some(&json!({"name": "everything", "reason": "x"})), OPERATOR_IP).await
            .assert_problem(422, "invalid_body");
        app.authed(Method::POST, "/v1/admin/switches", &op, Some(&json!({"name": "topups", "scope": {"kind": "user"}, "reason": "x"})), OPERATOR_IP).await
            .assert_problem(422, "invalid_body");
    }

    async fn a_frozen_user_cannot_pay(app: TestApp) {
        let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        let (mut s, card) = app.funded_shopper(5_000).await;
        let op = app.operator_session(0).await;
        let r = app.authed(Method::POST, &format!("/v1/admin/users/{}/freeze", s.user_id), &op, Some(&json!({"reason": "account takeover reported"})), OPERATOR_IP).await;
        assert_eq!(r.status, 204, "{r:?}");
        // Every session ends at once.
        app.me(s.session.as_ref().unwrap(), &s.ip).await.assert_problem(401, "unauthenticated");
        app.log_in(&mut s).await;
        let code = app.payment_code(&s).await;
        app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&json!({"code": code, "amount": 100})), Some("fz")).await
            .assert_problem(403, "account_frozen");
        app.money("/v1/topups", &s, &json!({"card_id": card, "amount": 1_000}), "fz2").await.assert_problem(403, "account_frozen");
        app.link_card(&s, &test_card()).await.assert_problem(403, "account_frozen");
        assert_eq!(app.wallet(&s).await["balance"], 5_000);
        app.authed(Method::POST, "/v1/admin/users/usr_nobody/freeze", &op, Some(&json!({"reason": "x"})), OPERATOR_IP).await.assert_problem(404, "not_found");
    }
}

both_backends! {
    async fn a_reversal_obeys_the_refund_switches_and_freezes_and_closes_after_24_hours(app: TestApp) {
        // Issue 15, defect 1: a reversal gives money back as a refund does.
        let doc = app.sandbox_doc();
        let terminal = doc["terminal_key"].as_str().unwrap().to_string();
        let merchant = doc["merchant_id"].as_str().unwrap().to_string();
        let (mut s, _) = app.funded_shopper(5_000).await;
        let charge = json!({"code": app.payment_code(&s).await, "amount": 1_000});
        let paid = app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&charge), Some("rv-1")).await;
        assert_eq!(paid.status, 201, "{paid:?}");
        let refunds = format!("/v1/pos/payments/{}/refunds", paid.body["payment_id"].as_str().unwrap());
        let reversal = json!({"idempotency_key": "rv-1"});
        let (op, op2) = (app.operator_session(0).await, app.operator_session(1).await);
        let scopes = [json!({"kind": "global"}), json!({"kind": "merchant", "id": merchant}), json!({"kind": "user", "id": s.user_id})];
        for (i, scope) in scopes.into_iter().enumerate() {
            let body = json!({"name": "refunds", "scope": scope, "reason": "refund fraud"});
            let r = app.authed(Method::POST, "/v1/admin/switches", &op, Some(&body), OPERATOR_IP).await;
            assert_eq!(r.status, 201, "{r:?}");
            let release = format!("/v1/admin/switches/{}/release", r.body["id"].as_str().unwrap());
            app.pos(Method::POST, &refunds, &terminal, Some(&json!({"amount": 1_000})), Some(&format!("rf-{i}"))).await
                .assert_problem(403, "switch_engaged");
            let r = app.pos(Method::POST, "/v1/pos/reversals", &terminal, Some(&reversal), None).await;
            r.assert_problem(403, "switch_engaged");
            assert_eq!(r.body["switch"], "refunds", "{scope}");
            assert_eq!(r.body["scope"], scope["kind"]);
            for who in [&op, &op2] {
                assert_eq!(app.authed(Method::POST, &release, who, Some(&json!({"reason": "over"})), OPERATOR_IP).await.status, 202);
            }
        }
        assert_eq!(app.wallet(&s).await["balance"], 4_000, "a refused reversal moved money");
        // A charge a day old is the till's to refund, not to reverse.
        let late = json!({"code": app.payment_code(&s).await, "amount": 500});
        let late_paid = app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&late), Some("rv-2")).await;
        assert_eq!(late_paid.status, 201, "{late_paid:?}");
        app.advance_clock(24 * 3600).await;
        let r = app.pos(Method::POST, "/v1/pos/reversals", &terminal, Some(&json!({"idempotency_key": "rv-2"})), None).await;
        r.assert_problem(409, "reversal_window_closed");
        assert!(r.body["detail"].as_str().unwrap().contains("refund"), "{r:?}");
        let view = app.pos(Method::GET, &format!("/v1/pos/payments/{}", late_paid.body["payment_id"].as_str().unwrap()), &terminal, None, None).await;
        assert_eq!(view.body["status"], "succeeded");
        let late_refunds = format!("/v1/pos/payments/{}/refunds", late_paid.body["payment_id"].as_str().unwrap());
        assert_eq!(app.pos(Method::POST, &late_refunds, &terminal, Some(&json!({"amount": 500})), Some("rf-late")).await.status, 201);
        // A frozen shopper's charge is not reversed either (the window aside: a fresh charge).
        app.log_in(&mut s).await;
        let fresh = json!({"code": app.payment_code(&s).await, "amount": 700});
        assert_eq!(app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&fresh), Some("rv-3")).await.status, 201);
        let op = app.operator_session(0).await;
        let r = app.authed(Method::POST, &format!("/v1/admin/users/{}/freeze", s.user_id), &op, Some(&json!({"reason": "takeover"})), OPERATOR_IP).await;
        assert_eq!(r.status, 204, "{r:?}");
        app.pos(Method::POST, "/v1/pos/reversals", &terminal, Some(&json!({"idempotency_key": "rv-3"})), None).await
            .assert_problem(403, "account_frozen");
        let balance: i64 = sqlx::query_scalar("SELECT a.balance FROM accounts a JOIN users u ON u.wallet_account_id = a.id WHERE u.id = $1")
            .bind(&s.user_id).fetch_one(app.db().pool()).await.unwrap();
        assert_eq!(balance, 5_000 - 1_000 - 500 + 500 - 700);
        let out = app.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }

    async fn a_reversal_within_the_window_still_undoes_the_charge(app: TestApp) {
        let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        let (s, _) = app.funded_shopper(5_000).await;
        let charge = json!({"code": app.payment_code(&s).await, "amount": 1_000});
        assert_eq!(app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&charge), Some("rv-ok")).await.status, 201);
        app.advance_clock(24 * 3600 - 60).await;
        let r = app.pos(Method::POST, "/v1/pos/reversals", &terminal, Some(&json!({"idempotency_key": "rv-ok"})), None).await;
        assert_eq!(r.status, 200, "{r:?}");
        // Once reversed, a repeat is the same answer, even after the window.
        app.advance_clock(120).await;
        let again = app.pos(Method::POST, "/v1/pos/reversals", &terminal, Some(&json!({"idempotency_key": "rv-ok"})), None).await;
        assert_eq!(again.body, r.body);
        let balance: i64 = sqlx::query_scalar("SELECT a.balance FROM accounts a JOIN users u ON u.wallet_account_id = a.id WHERE u.id = $1")
            .bind(&s.user_id).fetch_one(app.db().pool()).await.unwrap();
        assert_eq!(balance, 5_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_engages_a_switch_in_an_emergency() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let (s, card) = app.funded_shopper(1_000).await;
    let out = app.omamori(&["admin", "switch", "engage", "--name", "topups", "--reason", "processor breach"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = app.money("/v1/topups", &s, &json!({"card_id": card, "amount": 1_000}), "cli").await;
    r.assert_problem(403, "switch_engaged");
    assert_eq!(r.body["switch"], "topups");
    let out = app.omamori(&["admin", "switch", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("processor breach"));
    let out = app.omamori(&["admin", "switch", "engage", "--name", "nonsense", "--reason", "x"]);
    assert_eq!(out.status.code(), Some(1));
}

both_backends! {
    async fn operator_actions_and_security_events_are_chained_and_tampering_is_found(app: TestApp) {
        let op = app.operator_session(0).await;
        let body = json!({"name": "refunds", "reason": "investigating"});
        assert_eq!(app.authed(Method::POST, "/v1/admin/switches", &op, Some(&body), OPERATOR_IP).await.status, 201);
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let r = app.authed(Method::GET, "/v1/admin/audit", &op, None, OPERATOR_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        let items = r.body["items"].as_array().unwrap();
        let actions: Vec<&str> = items.iter().map(|i| i["action"].as_str().unwrap()).collect();
        for a in ["login_new_device", "switch.engage", "operator.login", "terminal.create", "merchant.create"] {
            assert!(actions.contains(&a), "{a} not audited: {actions:?}");
        }
        // Each entry carries the previous one's hash.
        for pair in items.windows(2) {
            assert_eq!(pair[0]["prev_hash"], pair[1]["hash"]);
        }
        let out = app.omamori(&["admin", "audit", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        // Someone edits a row behind the log's back: the first broken link is named.
        let target = items.iter().find(|i| i["action"] == "switch.engage").unwrap()["id"].as_i64().unwrap();
        sqlx::query("UPDATE audit_log SET actor = 'someone-else' WHERE id = $1").bind(target).execute(app.db().pool()).await.unwrap();
        let out = app.omamori(&["admin", "audit", "verify"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains(&format!("BROKEN audit entry {target}: its contents do not match")), "{stdout}");
        // Put it back: the chain holds again.
        let original = items.iter().find(|i| i["id"] == target).unwrap()["actor"].as_str().unwrap().to_string();
        sqlx::query("UPDATE audit_log SET actor = $1 WHERE id = $2").bind(&original).bind(target).execute(app.db().pool()).await.unwrap();
        assert!(app.omamori(&["admin", "audit", "verify"]).status.success());
        // Removing the newest entries leaves a chain that holds; the head published earlier does not.
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_log ORDER BY id").fetch_all(app.db().pool()).await.unwrap();
        let head = app.authed(Method::GET, "/v1/admin/audit/head", &op, None, OPERATOR_IP).await;
        let anchor = head.body["anchor"].as_str().unwrap().to_string();
        assert!(app.omamori(&["admin", "audit", "verify", "--anchor", &anchor]).status.success());
        let newest = *ids.last().unwrap();
        sqlx::query("DELETE FROM audit_log WHERE id >= $1").bind(newest - 1).execute(app.db().pool()).await.unwrap();
        assert!(app.omamori(&["admin", "audit", "verify"]).status.success(), "a truncated chain still holds by itself");
        let out = app.omamori(&["admin", "audit", "verify", "--anchor", &anchor]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains("is gone: entries were removed from the end"), "{stdout}");
        assert_eq!(app.omamori(&["admin", "audit", "verify", "--anchor", "nonsense"]).status.code(), Some(2));
        // Removing a row instead breaks the link of the entry after it.
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_log ORDER BY id").fetch_all(app.db().pool()).await.unwrap();
        sqlx::query("DELETE FROM audit_log WHERE id = $1").bind(ids[1]).execute(app.db().pool()).await.unwrap();
        let out = app.omamori(&["admin", "audit", "verify"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains(&format!("BROKEN audit entry {}: its prev_hash does not match", ids[2])), "{stdout}");
        // Shoppers cannot read it.
        app.authed(Method::GET, "/v1/admin/audit", s.session.as_ref().unwrap(), None, &s.ip).await.assert_problem(403, "forbidden");
    }
}

both_backends! {
    async fn a_victims_payment_is_reversed_by_two_operators_and_the_books_stay_clean(app: TestApp) {
        let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        let (victim, _) = app.funded_shopper(5_000).await;
        // A thief who took over the account pays at a till.
        let code = app.payment_code(&victim).await;
        let r = app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&json!({"code": code, "amount": 4_000})), Some("theft")).await;
        let payment = r.body["payment_id"].as_str().unwrap().to_string();
        let op1 = app.operator_session(0).await;
        let op2 = app.operator_session(1).await;
        let r = app.authed(Method::POST, &format!("/v1/admin/users/{}/freeze", victim.user_id), &op1, Some(&json!({"reason": "takeover"})), OPERATOR_IP).await;
        assert_eq!(r.status, 204);
        let r = app.authed(Method::POST, "/v1/admin/corrections", &op1, Some(&json!({"kind": "payment", "id": payment, "reason": "fraud by account takeover"})), OPERATOR_IP).await;
        assert_eq!(r.status, 202, "{r:?}");
        let correction = r.body["correction_id"].as_str().unwrap().to_string();
        let path = format!("/v1/admin/corrections/{correction}/approve");
        // Nothing moves until a second operator approves.
        app.authed(Method::POST, &path, &op1, None, OPERATOR_IP).await.assert_problem(409, "second_operator_required");
        let balance = |app: &TestApp| {
            let pool = app.db().pool().clone();
            let user = victim.user_id.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT a.balance FROM accounts a JOIN users u ON u.wallet_account_id = a.id WHERE u.id = $1")
                    .bind(user).fetch_one(&pool).await.unwrap()
            }
        };
        assert_eq!(balance(&app).await, 1_000);
        let r = app.authed(Method::POST, &path, &op2, None, OPERATOR_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(balance(&app).await, 5_000);
        app.authed(Method::POST, &path, &op2, None, OPERATOR_IP).await.assert_problem(409, "already_applied");
        let out = app.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let audit = app.authed(Method::GET, "/v1/admin/audit", &op1, None, OPERATOR_IP).await;
        let actions: Vec<&str> = audit.body["items"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
        assert!(actions.contains(&"correction.propose") && actions.contains(&"correction.approve") && actions.contains(&"user.freeze"), "{actions:?}");
    }

    async fn a_chargeback_takes_what_it_can_books_the_rest_to_losses_and_freezes(app: TestApp) {
        let store_qr = app.sandbox_doc()["store_qr"].as_str().unwrap().to_string();
        let (mut s, card) = app.funded_shopper(0).await;
        let r = app.money("/v1/topups", &s, &json!({"card_id": card, "amount": 8_000}), "stolen-card").await;
        let topup = r.body["topup_id"].as_str().unwrap().to_string();
        // The money was spent at once.
        assert_eq!(app.money("/v1/payments", &s, &json!({"store_qr": store_qr, "amount": 5_000}), "spend").await.status, 201);
        let r = app.post("/v1/sandbox/chargebacks", &json!({"topup_id": topup}), None).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["from_wallet"], 3_000);
        assert_eq!(r.body["to_losses"], 5_000);
        // The freeze ended every session; the owner logs in again to find the wallet empty and frozen.
        app.log_in(&mut s).await;
        assert_eq!(app.wallet(&s).await["balance"], 0);
        let losses: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE kind = 'losses'").fetch_one(app.db().pool()).await.unwrap();
        assert_eq!(losses, -5_000);
        // Frozen for review; reported twice, it moves nothing more.
        app.money("/v1/payments", &s, &json!({"store_qr": store_qr, "amount": 1}), "after").await.assert_problem(403, "account_frozen");
        app.post("/v1/sandbox/chargebacks", &json!({"topup_id": topup}), None).await.assert_problem(409, "already_charged_back");
        let out = app.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_testing_flood_engages_containment_by_itself() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn_with(backend, |c| c.alert_card_declines_per_minute = 6).await else { continue };
        // Stolen numbers tried from several wallets, as card testers do.
        for _ in 0..3 {
            let mut s = app.register().await;
            app.log_in(&mut s).await;
            for _ in 0..2 {
                app.link_card(&s, "4242424242424241").await.assert_problem(422, "invalid_card");
            }
        }
        // Card linking has stopped everywhere, without an operator, and the operators were told.
        let mut honest = app.register().await;
        app.log_in(&mut honest).await;
        let r = app.link_card(&honest, &test_card()).await;
        r.assert_problem(403, "switch_engaged");
        assert_eq!(r.body["switch"], "card_linking");
        let alerts = app.alerts().await;
        let alert = alerts.iter().find(|a| a["kind"] == "card_declines").unwrap_or_else(|| panic!("{alerts:?}"));
        assert!(alert["detail"].as_str().unwrap().contains("Stopped everywhere by switch card_linking"), "{alert:?}");
        // Every operator received it by e-mail.
        let doc = app.sandbox_doc();
        for op in doc["operators"].as_array().unwrap() {
            let mail = app.messages(op["email"].as_str().unwrap()).await;
            assert!(
                mail.iter()
                    .any(|m| m["kind"] == "operator_alert" && m["subject"].as_str().unwrap().contains("card_declines")),
                "{mail:?}"
            );
        }
        let op = app.operator_session(0).await;
        let switches = app.authed(reqwest::Method::GET, "/v1/admin/switches", &op, None, OPERATOR_IP).await;
        assert_eq!(switches.body["items"][0]["engaged_by"], "system:containment");
    }
}

/// Two `omamori serve` processes on one PostgreSQL database: a switch engaged through one refuses
/// the next request on the other within a second.
#[test]
fn a_switch_propagates_between_two_serve_processes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir_a = TempDir::new();
    let dir_b = TempDir::new();
    let Some(db) = rt.block_on(TestDatabase::create(Backend::Postgres, &dir_a)) else { return };
    let start = |dir: &TempDir| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_omamori"))
            .args(["serve", "--sandbox"])
            .env_clear()
            .env("OMAMORI_LISTEN", "127.0.0.1:0")
            .env("OMAMORI_DATABASE_URL", &db.url)
            .env("OMAMORI_DATA_DIR", &dir.0)
            .env("OMAMORI_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line.trim().strip_prefix("listening on ").unwrap().to_string();
        (child, base)
    };
    // B first: each sandbox start renews the demo credentials, so A's sandbox.json is the valid one.
    let (mut b, base_b) = start(&dir_b);
    let (mut a, base_a) = start(&dir_a);
    rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir_a.0.join("sandbox.json")).unwrap()).unwrap();
        let op = &doc["operators"][0];
        let r = client
            .post(format!("{base_a}/v1/admin/login"))
            .json(&json!({"email": op["email"], "password": op["password"]}))
            .send()
            .await
            .unwrap();
        let challenge = r.json::<serde_json::Value>().await.unwrap()["challenge_id"].as_str().unwrap().to_string();
        let seed = omamori::identity::totp::base32_decode(op["totp_secret"].as_str().unwrap()).unwrap();
        let code = omamori::identity::totp::code_at_step(&seed, omamori::identity::totp::current_step());
        let r = client
            .post(format!("{base_a}/v1/challenges/{challenge}/verify"))
            .json(&json!({"method": "totp", "code": code}))
            .send()
            .await
            .unwrap();
        let token = r.json::<serde_json::Value>().await.unwrap()["session_token"].as_str().unwrap().to_string();
        let signup = json!({"phone": "+819011112222", "email": "two@example.jp", "password": strong_password()});
        // Before: B takes sign-ups.
        assert_eq!(client.post(format!("{base_b}/v1/signup")).json(&signup).send().await.unwrap().status(), 202);
        let r = client
            .post(format!("{base_a}/v1/admin/switches"))
            .bearer_auth(&token)
            .json(&json!({"name": "signups", "reason": "SMS pumping"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let engaged = std::time::Instant::now();
        let r = Reply::from(client.post(format!("{base_b}/v1/signup")).json(&signup).send().await.unwrap()).await;
        let elapsed = engaged.elapsed();
        r.assert_problem(403, "switch_engaged");
        assert!(elapsed < std::time::Duration::from_secs(1), "{elapsed:?}");
        eprintln!("switch propagation between two serve processes: {elapsed:?}");
    });
    for child in [&mut a, &mut b] {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
    }
    drop(db);
}

both_backends! {
    async fn a_risk_rule_holds_a_top_up_then_spend_from_a_new_device(app: TestApp) {
        let op = app.operator_session(0).await;
        // An electronics shop (goods easy to resell) with its own terminal.
        let m = app.authed(Method::POST, "/v1/admin/merchants", &op, Some(&json!({"name": "Denki Land", "category": "5732"})), OPERATOR_IP).await;
        let st = app.authed(Method::POST, &format!("/v1/admin/merchants/{}/stores", m.body["merchant_id"].as_str().unwrap()), &op,
            Some(&json!({"name": "Denki Land Akihabara", "city": "Tokyo"})), OPERATOR_IP).await;
        let t = app.authed(Method::POST, &format!("/v1/admin/stores/{}/terminals", st.body["store_id"].as_str().unwrap()), &op, None, OPERATOR_IP).await;
        let electronics = t.body["key"].as_str().unwrap().to_string();
        let grocery = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        // A phone first seen today tops up and at once buys electronics: held, so declined at the till.
        let (s, _) = app.funded_shopper(20_000).await;
        let code = app.payment_code(&s).await;
        let r = app.pos(Method::POST, "/v1/pos/payments", &electronics, Some(&json!({"code": code, "amount": 15_000})), Some("tv")).await;
        r.assert_problem(402, "risk_declined");
        let review = r.body["review_id"].as_str().unwrap().to_string();
        // The same request again gets the same answer; the code is spent; nothing moved.
        let again = app.pos(Method::POST, "/v1/pos/payments", &electronics, Some(&json!({"code": code, "amount": 15_000})), Some("tv")).await;
        assert_eq!(again.body, r.body);
        assert_eq!(app.wallet(&s).await["balance"], 20_000);
        let reviews = app.authed(Method::GET, "/v1/admin/reviews", &op, None, OPERATOR_IP).await;
        let case = reviews.body["items"].as_array().unwrap().iter().find(|c| c["id"] == review.as_str()).cloned().unwrap();
        assert_eq!(case["rule_id"], "resale-spend-from-new-device");
        assert_eq!(case["state"], "open");
        // The same shopper buying groceries is not bothered.
        let code = app.payment_code(&s).await;
        assert_eq!(app.pos(Method::POST, "/v1/pos/payments", &grocery, Some(&json!({"code": code, "amount": 1_500})), Some("rice")).await.status, 201);
        // An admin turns the rule off: the next request obeys, without a restart.
        let r = app.authed(Method::PUT, "/v1/admin/rules/resale-spend-from-new-device", &op, Some(&json!({"enabled": false})), OPERATOR_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        let code = app.payment_code(&s).await;
        assert_eq!(app.pos(Method::POST, "/v1/pos/payments", &electronics, Some(&json!({"code": code, "amount": 15_000})), Some("tv2")).await.status, 201);
        // Rules are data with a shape: nonsense is refused, and the change was audited.
        app.authed(Method::PUT, "/v1/admin/rules/resale-spend-from-new-device", &op, Some(&json!({"conditions": {"moon_phase": "full"}})), OPERATOR_IP).await
            .assert_problem(422, "invalid_body");
        app.authed(Method::PUT, "/v1/admin/rules/%00", &op, Some(&json!({"enabled": true})), OPERATOR_IP).await
            .assert_problem(404, "not_found");
        let audit = app.authed(Method::GET, "/v1/admin/audit", &op, None, OPERATOR_IP).await;
        assert!(audit.body["items"].as_array().unwrap().iter().any(|i| i["action"] == "rule.update"));
        let out = app.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }

    async fn a_large_top_up_from_a_new_phone_after_a_reset_waits_for_an_operator(app: TestApp) {
        let (mut s, card) = app.funded_shopper(0).await;
        let r = app.post_from("/v1/password-reset", &json!({"login": s.phone}), &s.ip).await;
        let reset = r.body["reset_id"].as_str().unwrap().to_string();
        let (sms, email) = (app.code_for(&s.phone, "reset_code").await, app.code_for(&s.email, "reset_code").await);
        s.password = strong_password();
        let r = app.post_from(&format!("/v1/password-reset/{reset}/complete"), &json!({"sms_code": sms, "email_code": email, "new_password": s.password}), &s.ip).await;
        assert_eq!(r.status, 204);
        // Cooling-off is over, but the credentials changed this week and the phone is new.
        app.advance_clock(73 * 3600).await;
        s.device_id = "a-phone-first-seen-today".into();
        app.log_in(&mut s).await;
        let r = app.money("/v1/topups", &s, &json!({"card_id": card, "amount": 20_000}), "big").await;
        assert_eq!(r.status, 202, "{r:?}");
        assert_eq!(r.body["status"], "held");
        assert_eq!(app.wallet(&s).await["balance"], 0);
        let op = app.operator_session(0).await;
        let reviews = app.authed(Method::GET, "/v1/admin/reviews", &op, None, OPERATOR_IP).await;
        let case = reviews.body["items"][0].clone();
        assert_eq!(case["kind"], "topup");
        assert_eq!(case["subject_id"], r.body["topup_id"]);
        let decide = format!("/v1/admin/reviews/{}/decide", case["id"].as_str().unwrap());
        let d = app.authed(Method::POST, &decide, &op, Some(&json!({"decision": "approve"})), OPERATOR_IP).await;
        assert_eq!(d.status, 200, "{d:?}");
        assert_eq!(app.wallet(&s).await["balance"], 20_000);
        app.authed(Method::POST, &decide, &op, Some(&json!({"decision": "reject"})), OPERATOR_IP).await.assert_problem(409, "already_decided");
        // A small top-up is not held.
        app.advance_clock(11 * 60).await;
        app.log_in(&mut s).await;
        assert_eq!(app.money("/v1/topups", &s, &json!({"card_id": card, "amount": 5_000}), "small").await.status, 201);
        // A new card from this new phone, the same week, waits for an operator too.
        let r = app.link_card(&s, &test_card()).await;
        assert_eq!(r.status, 202, "{r:?}");
        assert_eq!(r.body["status"], "held");
        let new_card = r.body["card_id"].as_str().unwrap().to_string();
        app.advance_clock(11 * 60).await;
        app.log_in(&mut s).await;
        app.money("/v1/topups", &s, &json!({"card_id": new_card, "amount": 1_000}), "held-card").await.assert_problem(422, "card_not_found");
        let decide = format!("/v1/admin/reviews/{}/decide", r.body["review_id"].as_str().unwrap());
        let op = app.operator_session(1).await;
        assert_eq!(app.authed(Method::POST, &decide, &op, Some(&json!({"decision": "approve"})), OPERATOR_IP).await.status, 200);
        assert_eq!(app.money("/v1/topups", &s, &json!({"card_id": new_card, "amount": 1_000}), "approved-card").await.status, 201);
    }
}

/// A Korean address in the test country data (the upper half of 2001:db8::/32).
const KR_IP: &str = "2001:db8:8000::5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_travel_steps_up_a_known_phone_and_an_admin_rule_declines_a_new_one() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let countries = ["JP", "US", "KR"].map(String::from).to_vec();
        let Some(app) = TestApp::spawn_with(backend, |c| c.allowed_countries = countries).await else { continue };
        let mut s = app.register().await;
        app.log_in(&mut s).await;
        let token = s.device_token.clone().unwrap();
        // At home, the phone's device token opens a session with the password alone.
        let r = app.login(&s.phone, &s.password, &s.device_id, Some(&token), &s.ip).await;
        assert!(r.body["session_token"].is_string(), "{r:?}");
        // Ten minutes later the same token from the United States: nobody flies that fast, so the
        // second factor is asked for.
        app.advance_clock(600).await;
        let r = app.login(&s.phone, &s.password, &s.device_id, Some(&token), US_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body["session_token"].is_null() && r.body["challenge_id"].is_string(), "{r:?}");
        // Thirty hours later the trip is possible: the token is enough again.
        app.advance_clock(30 * 3600).await;
        let r = app.login(&s.phone, &s.password, &s.device_id, Some(&token), US_IP).await;
        assert!(r.body["session_token"].is_string(), "{r:?}");

        // An admin adds a rule through the API: impossible travel from a phone never seen is declined.
        let op = app.operator_session(0).await;
        let rule = json!({"id": "travel-new-phone", "event": "login", "priority": 5,
            "conditions": {"impossible_travel": true, "new_device": true}, "outcome": "decline"});
        let r = app.authed(Method::POST, "/v1/admin/rules", &op, Some(&rule), OPERATOR_IP).await;
        assert_eq!(r.status, 201, "{r:?}");
        app.authed(Method::POST, "/v1/admin/rules", &op, Some(&rule), OPERATOR_IP)
            .await
            .assert_problem(409, "rule_exists");
        for bad in [
            json!({"id": "x", "event": "lunch", "priority": 1, "conditions": {}, "outcome": "hold"}),
            json!({"id": "x", "event": "login", "priority": 1, "conditions": {"moon": 1}, "outcome": "hold"}),
            json!({"id": "x", "event": "login", "priority": 1, "conditions": {}, "outcome": "shrug"}),
            json!({"id": "a b", "event": "login", "priority": 1, "conditions": {}, "outcome": "hold"}),
        ] {
            app.authed(Method::POST, "/v1/admin/rules", &op, Some(&bad), OPERATOR_IP)
                .await
                .assert_problem(422, "invalid_body");
        }
        // Ten minutes after the session in the United States, a phone never seen logs in from Korea
        // with the right password. The answer is what any right password gets (so it tells a holder
        // of a leaked list nothing more); even with the SMS code too (a swapped SIM), no session:
        // declined, and the owner is told.
        app.advance_clock(600).await;
        let r = app.login(&s.phone, &s.password, "attacker-phone", None, KR_IP).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body["session_token"].is_null() && r.body["challenge_id"].is_string(), "{r:?}");
        let r = app.pass_sms_challenge(r.body["challenge_id"].as_str().unwrap(), &s.phone, KR_IP).await;
        r.assert_problem(403, "risk_declined");
        assert!(r.body.get("session_token").is_none(), "{r:?}");
        assert!(app.messages(&s.email).await.iter().any(|m| m["kind"] == "login_blocked"));
        let audit = app.authed(Method::GET, "/v1/admin/audit", &op, None, OPERATOR_IP).await;
        let actions: Vec<&str> =
            audit.body["items"].as_array().unwrap().iter().filter_map(|i| i["action"].as_str()).collect();
        assert!(actions.contains(&"rule.create") && actions.contains(&"login.risk_declined"), "{actions:?}");
        // The owner's own phone, where it was last seen, still gets in.
        let r = app.login(&s.phone, &s.password, &s.device_id, Some(&token), US_IP).await;
        assert!(r.body["session_token"].is_string(), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_of_risk_holds_stops_top_ups_by_the_configured_policy() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn_with(backend, |c| {
            c.alert_risk_declines_per_minute = 3;
            c.containment_policy = vec![("risk_declines".into(), omamori::ids::SwitchName::Topups)];
        })
        .await
        else {
            continue;
        };
        let op = app.operator_session(0).await;
        let rule = json!({"id": "odd-amount", "event": "topup", "priority": 1,
            "conditions": {"amount_at_least": 7_000}, "outcome": "hold"});
        assert_eq!(app.authed(Method::POST, "/v1/admin/rules", &op, Some(&rule), OPERATOR_IP).await.status, 201);
        // One account tripping the rule again and again is one user, not a wave (and holds one case).
        let (s, card) = app.funded_shopper(0).await;
        for i in 0..3 {
            let r =
                app.money("/v1/topups", &s, &json!({"card_id": card, "amount": 7_000 + i}), &format!("held-{i}")).await;
            if i == 0 {
                assert_eq!(r.status, 202, "{r:?}");
                assert_eq!(r.body["status"], "held");
            } else {
                r.assert_problem(429, "too_many_attempts");
            }
        }
        tokio::time::sleep(omamori::risk::alerts::DETECTOR_PERIOD + std::time::Duration::from_millis(500)).await;
        assert!(!alerts_with(&app, &op).await.iter().any(|a| a["kind"] == "risk_declines"));
        // Two more users in the same minute make three.
        for i in 0..2 {
            let (other, other_card) = app.funded_shopper(0).await;
            let body = json!({"card_id": other_card, "amount": 7_500});
            let r = app.money("/v1/topups", &other, &body, &format!("wave-{i}")).await;
            assert_eq!(r.status, 202, "{r:?}");
        }
        // Within seconds the detector sees the wave and the policy stops top-ups everywhere.
        let started = Instant::now();
        let alert = loop {
            let alerts = alerts_with(&app, &op).await;
            if let Some(alert) = alerts.iter().find(|a| a["kind"] == "risk_declines") {
                break alert.clone();
            }
            assert!(started.elapsed().as_secs() < 15, "no risk_declines alert within 15 s: {alerts:?}");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        let refused = app.money("/v1/topups", &s, &json!({"card_id": card, "amount": 1_000}), "after-wave").await;
        refused.assert_problem(403, "switch_engaged");
        assert_eq!(refused.body["switch"], "topups");
        assert!(alert["detail"].as_str().unwrap().contains("Stopped everywhere by switch topups"), "{alert:?}");
        let out = app.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// A processor report signed as the processor signs it.
fn processor_signed(app: &TestApp, secret: &str, body: &serde_json::Value, t: i64) -> reqwest::RequestBuilder {
    use hmac::Mac;
    let text = body.to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{text}").as_bytes());
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    app.client
        .post(app.url("/v1/processor/chargebacks"))
        .header("Processor-Signature", signature)
        .header("Content-Type", "application/json")
        .body(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processors_signed_chargeback_report_freezes_once_and_forgeries_move_nothing() {
    const SECRET: &str = "processor-shared-secret-0123456789";
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn_with(backend, |c| {
            c.processor_webhook_secret = Some(omamori::secret::Secret::new(SECRET.into()))
        })
        .await
        else {
            continue;
        };
        let (s, card) = app.funded_shopper(0).await;
        let r = app.money("/v1/topups", &s, &json!({"card_id": card, "amount": 6_000}), "disputed").await;
        let topup = r.body["topup_id"].as_str().unwrap().to_string();
        let charge_ref: String = sqlx::query_scalar("SELECT processor_ref FROM topups WHERE id = $1")
            .bind(&topup)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
        let report = json!({"event_id": "evt_proc_1", "charge_ref": charge_ref, "reason": "fraudulent"});
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // Forged, stale, or unsigned reports are refused before anything is read.
        for request in [
            processor_signed(&app, "not-the-secret-at-all", &report, now),
            processor_signed(&app, SECRET, &report, now - 3_600),
            app.client.post(app.url("/v1/processor/chargebacks")).json(&report),
        ] {
            Reply::from(request.send().await.unwrap()).await.assert_problem(401, "invalid_signature");
        }
        assert_eq!(app.wallet(&s).await["balance"], 6_000);
        // The real report charges back and freezes; its retry changes nothing.
        let r = Reply::from(processor_signed(&app, SECRET, &report, now).send().await.unwrap()).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!((r.body["topup_id"].as_str(), r.body["from_wallet"].as_i64()), (Some(topup.as_str()), Some(6_000)));
        let r = Reply::from(processor_signed(&app, SECRET, &report, now + 1).send().await.unwrap()).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["status"], "already_charged_back");
        let unknown = json!({"event_id": "evt_proc_2", "charge_ref": "ch_nobody"});
        Reply::from(processor_signed(&app, SECRET, &unknown, now).send().await.unwrap())
            .await
            .assert_problem(404, "not_found");
        let out = app.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let frozen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM switches WHERE kind = 'freeze' AND scope_id = $1")
            .bind(&s.user_id)
            .fetch_one(app.db().pool())
            .await
            .unwrap();
        assert!(frozen > 0);
    }
}

/// The alerts, read with a session already open (operator TOTP codes are single-use per step).
async fn alerts_with(app: &TestApp, op: &str) -> Vec<serde_json::Value> {
    let r = app.authed(Method::GET, "/v1/admin/alerts", op, None, OPERATOR_IP).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["items"].as_array().unwrap().clone()
}

/// Charges `code` at `other` with an amount over every limit, under a fresh key each time, until
/// the answer is `status` (403: the switch is seen; 402: it is not, and the code is not spent);
/// answers how long that took.
async fn until_refused(other: &TestApp, terminal: &str, code: &str, status: u16) -> std::time::Duration {
    let start = Instant::now();
    for i in 0.. {
        let body = json!({"code": code, "amount": 60_000});
        let r = other
            .pos(Method::POST, "/v1/pos/payments", terminal, Some(&body), Some(&format!("probe-{status}-{i}")))
            .await;
        if r.status == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(3), "still {r:?} after 3 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    unreachable!()
}

/// The staleness bound of the switch cache across instances (issue 14, "many instances"): three
/// servers on one PostgreSQL database, paying meanwhile; a switch engaged through the first
/// refuses that instance's next payment at once and every other instance's within 1 s, and
/// payments resume everywhere within 1 s of the release (`omamori bench switch`, 3 trials).
#[test]
fn a_switch_reaches_every_instance_within_a_second() {
    let Some(url) = postgres_url() else { return };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omamori"))
        .args(["bench", "switch", "--trials", "3", "--database-url", &url])
        .env("OMAMORI_LOG_LEVEL", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("its next payment refused at once in 3 of 3 trials"), "{stdout}");
    assert!(stdout.contains("ledger verify after the run: clean"), "{stdout}");
    for phase in ["engaged: first payment refused", "released: first payment accepted"] {
        let line = stdout.lines().find(|l| l.starts_with(phase)).unwrap_or_else(|| panic!("no {phase:?}: {stdout}"));
        let max: f64 = line
            .rsplit_once("max ")
            .and_then(|(_, r)| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no max in {line:?}"));
        assert!(max <= 1000.0, "{line}");
    }
    let paid: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("payments meanwhile on every instance: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no payments line: {stdout}"));
    assert!(paid > 0, "{stdout}");
}
