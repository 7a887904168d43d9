//! The merchants' dashboard at `/merchant` in a real browser (tests/browser/merchant.py holds the
//! journeys), run as the wallet's are (`browser.rs`). The fixture is a real day of business: seven
//! shoppers buy baskets at the demo store, one is refunded, the day is closed with `omamori admin
//! settle`, and two more payments come in today.

use reqwest::Method;
use serde_json::{Value, json};

use crate::browser::{browser_app, run_script};
use crate::helpers::*;
use crate::merchant_staff::{STAFF_IP, demo_owner, second_store, staff_login};

/// One POS payment with a basket; answers its id.
async fn basket_payment(app: &TestApp, key: &str, s: &Shopper, items: &Value) -> String {
    let amount: i64 = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["quantity"].as_i64().unwrap() * i["unit_amount"].as_i64().unwrap())
        .sum();
    let code = app.payment_code(s).await;
    let body = json!({"code": code, "amount": amount, "items": items});
    let r = app.pos(Method::POST, "/v1/pos/payments", key, Some(&body), Some(&uuid::Uuid::new_v4().to_string())).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body["payment_id"].as_str().unwrap().to_string()
}

fn item(sku: &str, name: &str, category: &str, quantity: i64, unit_amount: i64) -> Value {
    json!({"sku": sku, "name": name, "category": category, "quantity": quantity, "unit_amount": unit_amount})
}

/// Yesterday's business and today's first payments, and the people who look at them.
async fn business_day(app: &TestApp) -> Value {
    let key = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
    let store_b = second_store(app, "Demo Mart Umeda").await;
    let mut shoppers = Vec::new();
    for _ in 0..7 {
        shoppers.push(app.funded_shopper(10_000).await.0);
    }
    let onigiri = item("4901234567894", "Onigiri salmon", "food", 2, 160);
    let tea = item("4909411084441", "Green tea 500ml", "drinks", 1, 140);
    let coffee = item("4902102112345", "Canned coffee", "drinks", 1, 130);
    let mut first = None;
    for (i, s) in shoppers.iter().enumerate() {
        let basket = if i % 2 == 0 { json!([onigiri, tea]) } else { json!([onigiri, coffee]) };
        let id = basket_payment(app, &key, s, &basket).await;
        first.get_or_insert(id);
    }
    let refund = json!({"amount": 140, "items": [{"sku": "4909411084441", "quantity": 1}]});
    let path = format!("/v1/pos/payments/{}/refunds", first.as_ref().unwrap());
    let r = app.pos(Method::POST, &path, &key, Some(&refund), Some("refund-1")).await;
    assert_eq!(r.status, 201, "{r:?}");
    // The day ends; it is closed; two shoppers come back today.
    let yesterday = crate::settlement::end_today(app).await;
    let out = app.omamori(&["admin", "settle", "--date", &yesterday]);
    assert!(out.status.success(), "{out:?}");
    let token = staff_login(app, &demo_owner(app)).await;
    for s in shoppers.iter_mut().take(2) {
        app.log_in(s).await;
        basket_payment(app, &key, s, &json!([tea])).await;
    }
    // A staff member of the second store only.
    let staff = app
        .authed(
            Method::POST,
            "/v1/merchant/users",
            &token,
            Some(&json!({"email": "umeda@shop.example", "role": "staff", "store_ids": [store_b]})),
            STAFF_IP,
        )
        .await;
    assert_eq!(staff.status, 201, "{staff:?}");
    json!({
        "owner": app.sandbox_doc()["merchant_owner"],
        "staff": staff.body,
        "yesterday": yesterday,
        "store_b": store_b,
        // What the first day's statement must show (7 baskets: 4 of ¥460, 3 of ¥450; one ¥140 refund).
        "gross": 4 * 460 + 3 * 450,
        "refunds": 140,
        "today_payments": 2,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_merchant_owner_sees_today_downloads_payments_and_opens_a_statement() {
    let Some(app) = browser_app().await else { return };
    let fixture = business_day(&app).await;
    // The fixture's logins used this step's code; the journeys wait for the next step.
    tokio::task::spawn_blocking(move || run_script(&app, "merchant.py", "owner", &fixture)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_merchant_staff_see_their_store_in_japanese_on_a_phone() {
    let Some(app) = browser_app().await else { return };
    let fixture = business_day(&app).await;
    tokio::task::spawn_blocking(move || run_script(&app, "merchant.py", "staff", &fixture)).await.unwrap();
}
