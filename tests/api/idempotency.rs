//! Idempotency as API.md's "Rules that hold for every route" says, on a money route.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn a_repeat_gets_the_first_answer_and_moves_money_once(app: TestApp) {
        let wallet = app.funded_wallet(1_000, None).await;
        let shop = app.create_account("merchant", None).await;
        let first = app.transfer(wallet, shop, 300, "pay-1").await;
        assert_eq!(first.status, 201, "{first:?}");
        // Same body with keys in another order and other whitespace: the same request.
        let again = Reply::from(
            app.client.post(app.url("/v1/sandbox/transfers"))
                .header("Idempotency-Key", "pay-1")
                .header("Content-Type", "application/json")
                .body(format!("{{ \"amount\": 300,\n \"to_account\": {shop}, \"from_account\": {wallet} }}"))
                .send().await.unwrap(),
        ).await;
        assert_eq!(again.status, 201, "{again:?}");
        assert_eq!(again.body, first.body);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(app.balance(wallet).await, 700);
        assert_eq!(app.balance(shop).await, 300);
    }

    async fn another_body_under_the_same_key_is_a_conflict(app: TestApp) {
        let wallet = app.funded_wallet(1_000, None).await;
        let shop = app.create_account("merchant", None).await;
        assert_eq!(app.transfer(wallet, shop, 300, "k").await.status, 201);
        app.transfer(wallet, shop, 301, "k").await.assert_problem(409, "idempotency_conflict");
        assert_eq!(app.balance(wallet).await, 700);
    }

    async fn keys_belong_to_a_route_and_body_not_reused_across(app: TestApp) {
        let wallet = app.funded_wallet(1_000, None).await;
        let shop = app.create_account("merchant", None).await;
        assert_eq!(app.transfer(wallet, shop, 100, "same").await.status, 201);
        app.transfer(shop, wallet, 100, "same").await.assert_problem(409, "idempotency_conflict");
    }

    async fn a_missing_or_bad_key_on_a_money_route_is_refused(app: TestApp) {
        let wallet = app.funded_wallet(1_000, None).await;
        let shop = app.create_account("merchant", None).await;
        let body = json!({"from_account": wallet, "to_account": shop, "amount": 5});
        app.post("/v1/sandbox/transfers", &body, None).await.assert_problem(400, "idempotency_key_required");
        app.post("/v1/sandbox/transfers", &body, Some(&"x".repeat(256))).await.assert_problem(400, "invalid_idempotency_key");
        assert_eq!(app.post("/v1/sandbox/transfers", &body, Some(&"x".repeat(255))).await.status, 201);
        assert_eq!(app.balance(wallet).await, 995);
    }

    async fn a_business_decline_is_final_and_replayed(app: TestApp) {
        let wallet = app.funded_wallet(100, None).await;
        let shop = app.create_account("merchant", None).await;
        let first = app.transfer(wallet, shop, 500, "too-much").await;
        first.assert_problem(402, "insufficient_funds");
        // Money arrives, but the same key still answers as it first did.
        let funding = app.create_account("funding_clearing", None).await;
        assert_eq!(app.transfer(funding, wallet, 1_000, "top").await.status, 201);
        let again = app.transfer(wallet, shop, 500, "too-much").await;
        again.assert_problem(402, "insufficient_funds");
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(app.balance(wallet).await, 1_100);
    }

    async fn an_invalid_amount_is_not_final_so_the_key_can_be_used_again(app: TestApp) {
        let wallet = app.funded_wallet(1_000, None).await;
        let shop = app.create_account("merchant", None).await;
        app.transfer(wallet, shop, 0, "fixme").await.assert_problem(422, "invalid_amount");
        app.transfer(wallet, shop, 1_000_001, "fixme2").await.assert_problem(422, "invalid_amount");
        let r = app.post("/v1/sandbox/transfers", &json!({"from_account": wallet, "to_account": shop, "amount": 1.5}), Some("fixme3")).await;
        r.assert_problem(422, "invalid_amount");
        let r = app.post("/v1/sandbox/transfers", &json!({"from_account": wallet, "to_account": shop, "amount": "100"}), Some("fixme4")).await;
        r.assert_problem(422, "invalid_amount");
        assert_eq!(app.transfer(wallet, shop, 10, "fixme").await.status, 201);
        assert_eq!(app.balance(wallet).await, 990);
    }

    async fn a_repeat_while_the_first_still_runs_is_told_so(app: TestApp) {
        let wallet = app.funded_wallet(1_000, None).await;
        let shop = app.create_account("merchant", None).await;
        let body = json!({"from_account": wallet, "to_account": shop, "amount": 5});
        // Stand in for a first request that is still running: claim the key as it would.
        let fp = omamori::http::idempotent::fingerprint("POST /v1/sandbox/transfers", &body);
        let now = app.state.clock.now_ms();
        sqlx::query("INSERT INTO idempotency_keys (caller, idem_key, fingerprint, claim, state, lease_until, created_at) VALUES ('sandbox', 'busy', $1, 'other', 'running', $2, $3)")
            .bind(&fp).bind(now + 60_000).bind(now)
            .execute(app.db().pool()).await.unwrap();
        let r = app.post("/v1/sandbox/transfers", &body, Some("busy")).await;
        r.assert_problem(409, "idempotency_in_progress");
        assert_eq!(r.headers["retry-after"], "1");
        // If the first claimant died, a repeat after its lease takes over and does the work once.
        assert_eq!(app.advance_clock(61).await.status, 200);
        assert_eq!(app.post("/v1/sandbox/transfers", &body, Some("busy")).await.status, 201);
        let again = app.post("/v1/sandbox/transfers", &body, Some("busy")).await;
        assert_eq!(again.status, 201);
        assert_eq!(app.balance(wallet).await, 995);
    }

    async fn concurrent_repeats_never_both_execute(app: TestApp) {
        let wallet = app.funded_wallet(10_000, None).await;
        let shop = app.create_account("merchant", None).await;
        let app = Arc::new(app);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move { app.transfer(wallet, shop, 700, "race").await }));
        }
        let mut created = Vec::new();
        for t in tasks {
            let r = t.await.unwrap();
            match r.status.as_u16() {
                201 => created.push(r.body["entry_id"].clone()),
                409 => assert_eq!(r.body["code"], "idempotency_in_progress", "{r:?}"),
                _ => panic!("unexpected answer {r:?}"),
            }
        }
        assert!(!created.is_empty());
        assert!(created.iter().all(|e| *e == created[0]), "two different entries for one key: {created:?}");
        assert_eq!(app.balance(wallet).await, 9_300);
        assert_eq!(app.balance(shop).await, 700);
    }

    async fn a_key_reused_with_an_added_field_is_a_conflict_before_validation(app: TestApp) {
        // API.md: idempotency comes before input validation, on every route that moves money.
        let wallet = app.funded_wallet(1_000, None).await;
        let shop = app.create_account("merchant", None).await;
        let body = json!({"from_account": wallet, "to_account": shop, "amount": 300});
        assert_eq!(app.post("/v1/sandbox/transfers", &body, Some("t-1")).await.status, 201);
        let mut extra = body.clone();
        extra["memo"] = json!("x");
        app.post("/v1/sandbox/transfers", &extra, Some("t-1")).await.assert_problem(409, "idempotency_conflict");
        // A fresh key with the same body is still validated, and the refusal does not use the key up.
        app.post("/v1/sandbox/transfers", &extra, Some("t-2")).await.assert_problem(422, "invalid_body");
        assert_eq!(app.post("/v1/sandbox/transfers", &body, Some("t-2")).await.status, 201);
        assert_eq!(app.balance(wallet).await, 400);

        let doc = app.sandbox_doc();
        let terminal = doc["terminal_key"].as_str().unwrap().to_string();
        let store_qr = doc["store_qr"].as_str().unwrap().to_string();
        let (s, card) = app.funded_shopper(5_000).await;
        let topup = json!({"card_id": card, "amount": 1_000});
        assert_eq!(app.money("/v1/topups", &s, &topup, "tu-1").await.status, 201);
        let mut extra = topup.clone();
        extra["currency"] = json!("JPY");
        app.money("/v1/topups", &s, &extra, "tu-1").await.assert_problem(409, "idempotency_conflict");
        app.money("/v1/topups", &s, &extra, "tu-2").await.assert_problem(422, "invalid_body");
        let qr = json!({"store_qr": store_qr, "amount": 100});
        assert_eq!(app.money("/v1/payments", &s, &qr, "qr-1").await.status, 201);
        let mut extra = qr.clone();
        extra["tip"] = json!(10);
        app.money("/v1/payments", &s, &extra, "qr-1").await.assert_problem(409, "idempotency_conflict");
        app.money("/v1/payments", &s, &extra, "qr-2").await.assert_problem(422, "invalid_body");
        let charge = json!({"code": app.payment_code(&s).await, "amount": 200});
        let paid = app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&charge), Some("pos-1")).await;
        assert_eq!(paid.status, 201, "{paid:?}");
        let mut extra = charge.clone();
        extra["cashier"] = json!("A");
        app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&extra), Some("pos-1")).await.assert_problem(409, "idempotency_conflict");
        app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&extra), Some("pos-2")).await.assert_problem(422, "invalid_body");
        let refunds = format!("/v1/pos/payments/{}/refunds", paid.body["payment_id"].as_str().unwrap());
        assert_eq!(app.pos(Method::POST, &refunds, &terminal, Some(&json!({"amount": 50})), Some("rf-1")).await.status, 201);
        let extra = json!({"amount": 50, "reason": "damaged"});
        app.pos(Method::POST, &refunds, &terminal, Some(&extra), Some("rf-1")).await.assert_problem(409, "idempotency_conflict");
        app.pos(Method::POST, &refunds, &terminal, Some(&extra), Some("rf-2")).await.assert_problem(422, "invalid_body");
        // Nothing moved twice: 5,000 + 1,000 - 100 - 200 + 50.
        assert_eq!(app.wallet(&s).await["balance"], 5_750);
    }
}
