//! The merchant's payments and analytics (API.md "Merchants' side"): scoped to the caller's
//! stores, pseudonymous, withheld under `min_customers`, and adding up to the payments list.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::merchant_staff::{STAFF_IP, Staff, demo_owner, staff_login};

pub(crate) async fn get(app: &TestApp, path: &str, token: &str) -> Reply {
    app.authed(Method::GET, path, token, None, STAFF_IP).await
}

/// A new store of `merchant` and its terminal key, made by an operator (session `op`).
pub(crate) async fn store_with_terminal(app: &TestApp, op: &str, merchant: &str, name: &str) -> (String, String) {
    let st = app
        .authed(
            Method::POST,
            &format!("/v1/admin/merchants/{merchant}/stores"),
            op,
            Some(&json!({"name": name, "city": "Osaka"})),
            OPERATOR_IP,
        )
        .await;
    assert_eq!(st.status, 201, "{st:?}");
    let store = st.body["store_id"].as_str().unwrap().to_string();
    let t = app.authed(Method::POST, &format!("/v1/admin/stores/{store}/terminals"), op, None, OPERATOR_IP).await;
    assert_eq!(t.status, 201, "{t:?}");
    (store, t.body["key"].as_str().unwrap().to_string())
}

/// A new store of the demo merchant and its terminal key (an operator logs in for it).
async fn demo_store(app: &TestApp, name: &str) -> (String, String) {
    let op = app.operator_session(0).await;
    store_with_terminal(app, &op, app.sandbox_doc()["merchant_id"].as_str().unwrap(), name).await
}

/// A second merchant with one store, its terminal key and its owner's session.
async fn other_merchant(app: &TestApp, op: &str) -> (String, String, String) {
    let m = app
        .authed(
            Method::POST,
            "/v1/admin/merchants",
            op,
            Some(&json!({"name": "Kissa Hoshi", "category": "5814"})),
            OPERATOR_IP,
        )
        .await;
    assert_eq!(m.status, 201, "{m:?}");
    let merchant = m.body["merchant_id"].as_str().unwrap().to_string();
    let (store, key) = store_with_terminal(app, op, &merchant, "Hoshi").await;
    let email = format!("owner-{}@kissa.example", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let made = app
        .authed(
            Method::POST,
            &format!("/v1/admin/merchants/{merchant}/users"),
            op,
            Some(&json!({"email": email, "role": "owner"})),
            OPERATOR_IP,
        )
        .await;
    assert_eq!(made.status, 201, "{made:?}");
    let token = staff_login(app, &Staff::from(&made.body)).await;
    (store, key, token)
}

pub(crate) fn item(sku: &str, category: Option<&str>, quantity: i64, unit_amount: i64) -> Value {
    json!({"sku": sku, "name": format!("Item {sku}"), "category": category, "quantity": quantity, "unit_amount": unit_amount})
}

/// One POS payment of `items` (or of `amount` without a basket); answers its id.
pub(crate) async fn pay(app: &TestApp, key: &str, s: &Shopper, items: &Value, amount: Option<i64>) -> String {
    let sum = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["quantity"].as_i64().unwrap() * i["unit_amount"].as_i64().unwrap())
        .sum();
    let code = app.payment_code(s).await;
    let body = json!({"code": code, "amount": amount.unwrap_or(sum), "items": items});
    let r = app.pos(Method::POST, "/v1/pos/payments", key, Some(&body), Some(&uuid::Uuid::new_v4().to_string())).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body["payment_id"].as_str().unwrap().to_string()
}

/// Every payment the list shows for `query`, following the cursors.
async fn all_payments(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let c = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let r = get(app, &format!("/v1/merchant/payments?limit=2{query}{c}"), token).await;
        assert_eq!(r.status, 200, "{r:?}");
        out.extend(r.body["items"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

both_backends! {
    async fn staff_see_their_stores_alone_and_nothing_of_another_merchant(app: TestApp) {
        let owner = staff_login(&app, &demo_owner(&app)).await;
        let store_a = app.sandbox_doc()["store_id"].as_str().unwrap().to_string();
        let key_a = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        let op = app.operator_session(0).await;
        let (store_b, key_b) = store_with_terminal(&app, &op, app.sandbox_doc()["merchant_id"].as_str().unwrap(), "Demo Mart Umeda").await;
        let (s, _) = app.funded_shopper(10_000).await;
        let at_a = pay(&app, &key_a, &s, &json!([item("A1", None, 1, 300)]), None).await;
        let at_b = pay(&app, &key_b, &s, &json!([item("B1", None, 1, 500)]), None).await;
        let made = app.authed(Method::POST, "/v1/merchant/users", &owner, Some(&json!({"email": "umeda@shop.example", "role": "staff", "store_ids": [store_b]})), STAFF_IP).await;
        assert_eq!(made.status, 201, "{made:?}");
        let staff = staff_login(&app, &Staff::from(&made.body)).await;
        // The staff member of B sees B's payment, never A's, whatever they ask.
        let seen: Vec<String> = all_payments(&app, &staff, "").await.iter().map(|p| p["payment_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(seen, vec![at_b.clone()]);
        for path in [
            format!("/v1/merchant/payments?store_id={store_a}"),
            format!("/v1/merchant/payments.csv?store_id={store_a}"),
            format!("/v1/merchant/analytics/sales?store_id={store_a}"),
            format!("/v1/merchant/analytics/customers?store_id={store_a}"),
            format!("/v1/merchant/analytics/baskets?store_id={store_a}"),
        ] {
            get(&app, &path, &staff).await.assert_problem(404, "not_found");
        }
        let sales = get(&app, "/v1/merchant/analytics/sales?group_by=store", &staff).await;
        assert_eq!(sales.status, 200, "{sales:?}");
        let keys: Vec<&str> = sales.body["items"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
        assert_eq!(keys, vec![store_b.as_str()]);
        assert_eq!(sales.body["totals"]["gross"], 500);
        let csv = get(&app, "/v1/merchant/payments.csv", &staff).await;
        assert!(csv.text.contains(&at_b) && !csv.text.contains(&at_a), "{}", csv.text);
        // The owner sees both; another merchant's owner sees neither, and the demo store is none of theirs.
        let ids: Vec<String> = all_payments(&app, &owner, "").await.iter().map(|p| p["payment_id"].as_str().unwrap().to_string()).collect();
        assert!(ids.contains(&at_a) && ids.contains(&at_b), "{ids:?}");
        let (_, _, other) = other_merchant(&app, &op).await;
        assert!(all_payments(&app, &other, "").await.is_empty());
        get(&app, &format!("/v1/merchant/analytics/sales?store_id={store_a}"), &other).await.assert_problem(404, "not_found");
        get(&app, "/v1/merchant/payments", "not-a-session").await.assert_problem(401, "unauthenticated");
    }

    async fn the_pseudonym_is_stable_within_a_merchant_and_differs_at_another(app: TestApp) {
        let owner = staff_login(&app, &demo_owner(&app)).await;
        let key_a = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
        let op = app.operator_session(0).await;
        let (store_b, key_b) = store_with_terminal(&app, &op, app.sandbox_doc()["merchant_id"].as_str().unwrap(), "Demo Mart Umeda").await;
        let (other_store, other_key, other) = other_merchant(&app, &op).await;
        let (s, _) = app.funded_shopper(10_000).await;
        pay(&app, &key_a, &s, &json!([]), Some(100)).await;
        pay(&app, &key_b, &s, &json!([]), Some(200)).await;
        pay(&app, &other_key, &s, &json!([]), Some(300)).await;
        let mine: Vec<Value> = all_payments(&app, &owner, &format!("&store_id={store_b}")).await;
        let at_a: Vec<Value> = all_payments(&app, &owner, "").await.into_iter().filter(|p| p["amount"] == 100).collect();
        let theirs = all_payments(&app, &other, &format!("&store_id={other_store}")).await;
        let (r_a, r_b, r_other) = (at_a[0]["customer_ref"].as_str().unwrap(), mine[0]["customer_ref"].as_str().unwrap(), theirs[0]["customer_ref"].as_str().unwrap());
        assert_eq!(r_a, r_b, "one merchant: one pseudonym across its stores");
        assert_ne!(r_a, r_other, "two merchants: two pseudonyms");
        assert!(r_other.starts_with("cus_") && r_other.len() == 30, "{r_other}");
        // Nothing of the shopper is in what the merchant sees.
        let text = get(&app, "/v1/merchant/payments", &owner).await.text;
        assert!(!text.contains(&s.phone) && !text.contains(&s.email) && !text.contains("usr_"), "{text}");
    }

    async fn four_customers_are_withheld_and_five_are_counted(app: TestApp) {
        let owner = staff_login(&app, &demo_owner(&app)).await;
        let (store, key) = demo_store(&app, "Demo Mart Namba").await;
        let q = format!("store_id={store}");
        for n in 1..=5 {
            let (s, _) = app.funded_shopper(10_000).await;
            pay(&app, &key, &s, &json!([item("TEA", Some("drinks"), 1, 150), item("ONI", Some("food"), 2, 160)]), None).await;
            let sales = get(&app, &format!("/v1/merchant/analytics/sales?{q}&group_by=category"), &owner).await;
            let customers = get(&app, &format!("/v1/merchant/analytics/customers?{q}"), &owner).await;
            let baskets = get(&app, &format!("/v1/merchant/analytics/baskets?{q}"), &owner).await;
            assert_eq!(sales.body["min_customers"], 5, "{sales:?}");
            let totals = &sales.body["totals"];
            // Money is always given.
            assert_eq!((totals["payments"].as_i64(), totals["gross"].as_i64(), totals["average_ticket"].as_i64()), (Some(n), Some(470 * n), Some(470)));
            if n < 5 {
                assert!(totals["customers"].is_null() && totals["new_customers"].is_null(), "{n}: {sales:?}");
                assert!(sales.body["items"].as_array().unwrap().iter().all(|r| r["customers"].is_null()), "{sales:?}");
                assert!(customers.body["customers"].is_null() && customers.body["repeat_rate"].is_null(), "{n}: {customers:?}");
                assert!(customers.body["visits"][0]["customers"].is_null(), "{customers:?}");
                assert_eq!(baskets.body["pairs"], json!([]), "{baskets:?}");
            } else {
                assert_eq!((totals["customers"].as_i64(), totals["new_customers"].as_i64(), totals["returning_customers"].as_i64()), (Some(5), Some(5), Some(0)), "{sales:?}");
                let drinks = sales.body["items"].as_array().unwrap().iter().find(|r| r["key"] == "drinks").unwrap().clone();
                assert_eq!((drinks["payments"].as_i64(), drinks["gross"].as_i64(), drinks["customers"].as_i64()), (Some(5), Some(750), Some(5)));
                assert_eq!((customers.body["customers"].as_i64(), customers.body["new_customers"].as_i64()), (Some(5), Some(5)), "{customers:?}");
                assert_eq!(customers.body["repeat_rate"], 0.0);
                assert_eq!(customers.body["visits"][0], json!({"visits": 1, "or_more": false, "customers": 5}));
                assert!(customers.body["median_days_between_visits"].is_null(), "nobody came twice");
                assert_eq!(baskets.body["pairs"], json!([{"a_sku": "ONI", "b_sku": "TEA", "baskets": 5, "customers": 5, "lift": 1.0}]), "{baskets:?}");
            }
        }
    }

    async fn sales_add_up_to_the_payments_list_and_refunds_count_against_their_items(app: TestApp) {
        let owner = staff_login(&app, &demo_owner(&app)).await;
        let (store, key) = demo_store(&app, "Demo Mart Kobe").await;
        let (s, _) = app.funded_shopper(10_000).await;
        let first = pay(&app, &key, &s, &json!([item("TEA", Some("drinks"), 2, 150), item("ONI", None, 1, 200)]), None).await;
        pay(&app, &key, &s, &json!([item("TEA", Some("drinks"), 1, 150)]), None).await;
        pay(&app, &key, &s, &json!([]), Some(999)).await;
        let refund = |items: Value, amount: i64, k: &str| {
            let (app, key, path) = (&app, key.clone(), format!("/v1/pos/payments/{first}/refunds"));
            let body = json!({"amount": amount, "items": items});
            let k = k.to_string();
            async move { app.pos(Method::POST, &path, &key, Some(&body), Some(&k)).await }
        };
        // Items must come from the basket, once each, no more than bought, worth the amount.
        refund(json!([{"sku": "COFFEE", "quantity": 1}]), 150, "r1").await.assert_problem(422, "invalid_items");
        refund(json!([{"sku": "TEA", "quantity": 3}]), 450, "r2").await.assert_problem(422, "invalid_items");
        refund(json!([{"sku": "TEA", "quantity": 1}, {"sku": "TEA", "quantity": 1}]), 300, "r3").await.assert_problem(422, "invalid_items");
        refund(json!([{"sku": "TEA", "quantity": 1}]), 100, "r4").await.assert_problem(422, "items_mismatch");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refunds").fetch_one(app.db().pool()).await.unwrap();
        assert_eq!(rows, 0, "a refused refund leaves nothing behind");
        assert_eq!(refund(json!([{"sku": "TEA", "quantity": 1}]), 150, "r5").await.status, 201);
        refund(json!([{"sku": "TEA", "quantity": 2}]), 300, "r6").await.assert_problem(422, "invalid_items");
        assert_eq!(refund(json!([]), 50, "r7").await.status, 201, "a refund may name no items");
        // The list and the sales agree, however they are cut.
        let q = format!("store_id={store}");
        let list = all_payments(&app, &owner, &format!("&{q}")).await;
        assert_eq!(list.len(), 3);
        let gross: i64 = list.iter().map(|p| p["amount"].as_i64().unwrap()).sum();
        let refunded: i64 = list.iter().map(|p| p["refunded"].as_i64().unwrap()).sum();
        assert_eq!((gross, refunded), (500 + 150 + 999, 200));
        let with_items = list.iter().find(|p| p["payment_id"] == first.as_str()).unwrap();
        assert_eq!(with_items["items"][1], json!({"sku": "ONI", "name": "Item ONI", "category": null, "quantity": 1, "unit_amount": 200}));
        for group in ["hour", "day", "weekday_hour", "store"] {
            let r = get(&app, &format!("/v1/merchant/analytics/sales?{q}&group_by={group}"), &owner).await;
            assert_eq!(r.status, 200, "{r:?}");
            let t = &r.body["totals"];
            assert_eq!((t["payments"].as_i64(), t["gross"].as_i64(), t["refunds"].as_i64(), t["net"].as_i64()), (Some(3), Some(gross), Some(refunded), Some(gross - refunded)), "{group}");
            let rows = r.body["items"].as_array().unwrap();
            let sum = |f: &str| rows.iter().map(|x| x[f].as_i64().unwrap()).sum::<i64>();
            assert_eq!((sum("payments"), sum("gross"), sum("refunds")), (3, gross, refunded), "{group}: {r:?}");
            let key = rows[0]["key"].as_str().unwrap();
            let ok = match group {
                "hour" => key.len() == 2 && key.parse::<u8>().unwrap() < 24,
                "day" => key.len() == 10 && key.as_bytes()[4] == b'-',
                "weekday_hour" => ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].contains(&&key[..3]) && key.len() == 6,
                _ => key == store,
            };
            assert!(ok, "{group}: {key}");
        }
        let skus = get(&app, &format!("/v1/merchant/analytics/sales?{q}&group_by=sku"), &owner).await;
        let tea = skus.body["items"].as_array().unwrap().iter().find(|r| r["key"] == "TEA").unwrap().clone();
        assert_eq!((tea["payments"].as_i64(), tea["gross"].as_i64(), tea["refunds"].as_i64(), tea["net"].as_i64()), (Some(2), Some(450), Some(150), Some(300)), "{skus:?}");
        assert_eq!(tea["name"], "Item TEA");
        let cats = get(&app, &format!("/v1/merchant/analytics/sales?{q}&group_by=category"), &owner).await;
        let keys: Vec<Value> = cats.body["items"].as_array().unwrap().iter().map(|r| r["key"].clone()).collect();
        assert_eq!(keys, vec![json!("drinks"), Value::Null], "by net, uncategorised as null: {cats:?}");
    }

    async fn a_returning_customer_is_told_from_a_new_one(app: TestApp) {
        let owner = staff_login(&app, &demo_owner(&app)).await;
        let (store, key) = demo_store(&app, "Demo Mart Nara").await;
        let mut regulars = Vec::new();
        for _ in 0..5 {
            let (s, _) = app.funded_shopper(10_000).await;
            pay(&app, &key, &s, &json!([]), Some(100)).await;
            regulars.push(s);
        }
        let yesterday = get(&app, "/v1/merchant/me", &owner).await.body["today"].as_str().unwrap().to_string();
        assert_eq!(app.advance_clock(26 * 3600).await.status, 200);
        let owner = staff_login(&app, &demo_owner(&app)).await;
        for s in regulars.iter_mut() {
            app.log_in(s).await;
            pay(&app, &key, s, &json!([]), Some(100)).await;
        }
        for _ in 0..5 {
            let (s, _) = app.funded_shopper(10_000).await;
            pay(&app, &key, &s, &json!([]), Some(100)).await;
        }
        let today = get(&app, "/v1/merchant/me", &owner).await.body["today"].as_str().unwrap().to_string();
        let c = get(&app, &format!("/v1/merchant/analytics/customers?store_id={store}&from={today}&to={today}"), &owner).await;
        assert_eq!((c.body["customers"].as_i64(), c.body["new_customers"].as_i64(), c.body["returning_customers"].as_i64()), (Some(10), Some(5), Some(5)), "{c:?}");
        // Over both days: ten customers, all new to the period, five of them twice.
        let both = get(&app, &format!("/v1/merchant/analytics/customers?store_id={store}&from={yesterday}&to={today}"), &owner).await;
        assert_eq!((both.body["customers"].as_i64(), both.body["new_customers"].as_i64(), both.body["repeat_rate"].as_f64()), (Some(10), Some(10), Some(0.5)), "{both:?}");
        assert_eq!(both.body["visits"][0]["customers"], 5);
        assert_eq!(both.body["visits"][1]["customers"], 5);
        let days = both.body["median_days_between_visits"].as_f64().unwrap();
        assert!((0.9..=1.2).contains(&days), "{both:?}");
        let by_day = get(&app, &format!("/v1/merchant/analytics/sales?store_id={store}&from={yesterday}&to={today}&group_by=day"), &owner).await;
        let rows = by_day.body["items"].as_array().unwrap();
        assert_eq!(rows.iter().map(|r| r["key"].as_str().unwrap()).collect::<Vec<_>>(), vec![yesterday.as_str(), today.as_str()]);
        assert_eq!((rows[1]["new_customers"].as_i64(), rows[1]["returning_customers"].as_i64()), (Some(5), Some(5)), "{by_day:?}");
    }

    async fn bad_queries_get_precise_problems(app: TestApp) {
        let owner = staff_login(&app, &demo_owner(&app)).await;
        for (path, code) in [
            ("/v1/merchant/analytics/sales?group_by=month", "invalid_group_by"),
            ("/v1/merchant/analytics/sales?from=2026-13-01", "invalid_date"),
            ("/v1/merchant/analytics/sales?from=yesterday", "invalid_date"),
            ("/v1/merchant/analytics/customers?from=2026-12-02&to=2026-12-01", "invalid_range"),
            ("/v1/merchant/analytics/baskets?from=2024-01-01&to=2026-01-01", "invalid_range"),
            ("/v1/merchant/payments?cursor=nonsense", "invalid_cursor"),
            ("/v1/merchant/payments?limit=0", "invalid_query"),
            ("/v1/merchant/payments?limit=many", "invalid_query"),
            ("/v1/merchant/payments?to=2026-02-30", "invalid_date"),
            ("/v1/merchant/payments.csv?from=2026-12-02&to=2026-12-01", "invalid_range"),
        ] {
            get(&app, path, &owner).await.assert_problem(400, code);
        }
        let a_year = get(&app, "/v1/merchant/analytics/sales?from=2025-01-01&to=2025-12-31&group_by=weekday_hour", &owner).await;
        assert_eq!(a_year.status, 200, "{a_year:?}");
    }
}
