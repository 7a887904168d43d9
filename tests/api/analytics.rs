//! Baskets on POS payments and the `customer_ref` pseudonym (issue 12).

use reqwest::Method;
use serde_json::json;

use crate::both_backends;

both_backends! {
    async fn a_basket_must_add_up_and_is_kept_with_the_payment(app: TestApp) {
        let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        let (s, _) = app.funded_shopper(10_000).await;
        let code = app.payment_code(&s).await;
        let items = json!([
            {"sku": "TEA-500", "name": "Green tea", "category": "drinks", "quantity": 2, "unit_amount": 150},
            {"sku": "ONI-1", "name": "Onigiri", "quantity": 1, "unit_amount": 200},
        ]);
        let short = json!({"code": code, "amount": 600, "items": items});
        app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&short), Some("b-1")).await.assert_problem(422, "items_mismatch");
        for (bad, n) in [
            (json!([{"sku": " ", "name": "x", "quantity": 1, "unit_amount": 500}]), 2),
            (json!([{"sku": "a", "name": "x", "quantity": 0, "unit_amount": 500}]), 3),
            (json!([{"sku": "a".repeat(65), "name": "x", "quantity": 1, "unit_amount": 500}]), 4),
            (json!(vec![json!({"sku": "a", "name": "x", "quantity": 1, "unit_amount": 5}); 101]), 5),
        ] {
            let body = json!({"code": code, "amount": 500, "items": bad});
            app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&body), Some(&format!("b-{n}"))).await.assert_problem(422, "invalid_items");
        }
        let body = json!({"code": code, "amount": 500, "items": items});
        let paid = app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&body), Some("b-9")).await;
        assert_eq!(paid.status, 201, "{paid:?}");
        // The key names this body, items included.
        let other = json!({"code": code, "amount": 500, "items": [{"sku": "X", "name": "x", "quantity": 1, "unit_amount": 500}]});
        app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&other), Some("b-9")).await.assert_problem(409, "idempotency_conflict");
        let id = paid.body["payment_id"].as_str().unwrap();
        let rows: Vec<(i64, String, Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT line_no, sku, category, quantity, unit_amount FROM payment_items WHERE payment_id = $1 ORDER BY line_no",
        )
        .bind(id).fetch_all(app.db().pool()).await.unwrap();
        assert_eq!(rows, vec![(1, "TEA-500".into(), Some("drinks".into()), 2, 150), (2, "ONI-1".into(), None, 1, 200)]);
    }

    async fn the_customer_ref_is_a_pseudonym_per_merchant(app: TestApp) {
        let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        let (a, _) = app.funded_shopper(10_000).await;
        let (b, _) = app.funded_shopper(10_000).await;
        let mut refs = Vec::new();
        for (i, s) in [&a, &a, &b].into_iter().enumerate() {
            let code = app.payment_code(s).await;
            let body = json!({"code": code, "amount": 100});
            let paid = app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&body), Some(&format!("c-{i}"))).await;
            assert_eq!(paid.status, 201, "{paid:?}");
            let r: String = sqlx::query_scalar("SELECT customer_ref FROM payments WHERE id = $1")
                .bind(paid.body["payment_id"].as_str().unwrap()).fetch_one(app.db().pool()).await.unwrap();
            refs.push(r);
        }
        for r in &refs {
            assert!(r.len() == 30 && r.starts_with("cus_"), "{r}");
            assert!(r[4..].chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)), "{r}");
        }
        assert_eq!(refs[0], refs[1], "one shopper, one merchant: one pseudonym");
        assert_ne!(refs[0], refs[2]);
        let user_ids: Vec<String> = sqlx::query_scalar("SELECT id FROM users").fetch_all(app.db().pool()).await.unwrap();
        assert!(user_ids.iter().all(|u| !refs[0].contains(&u[4..])), "the pseudonym shows the user id");
    }
}
