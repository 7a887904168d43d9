//! Analytics from memory (issue 12): an instance's cache of closed days answers exactly as the SQL
//! does, for every route, breakdown, store filter, caller and period; a refund made through
//! another instance, of a payment on a day the cache already holds, shows in its next answer; and
//! a day that closes is taken in.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::merchant_analytics::{get, item, pay, store_with_terminal};
use crate::merchant_staff::{STAFF_IP, Staff, demo_owner, staff_login};
use omamori::merchants::analytics_cache;

/// A day and two hours: every advance starts a new Tokyo day and closes the one before.
const A_DAY_AND_A_BIT: i64 = 26 * 3600;

/// The people who ask: an owner, a staff member of stores A and B, one of store C alone. A
/// dashboard login spends a TOTP code, so each round logs in people of its own.
struct Callers {
    owner: Staff,
    two_stores: Staff,
    one_store: Staff,
}

async fn new_staff(app: &TestApp, owner: &str, role: &str, stores: &[&str]) -> Staff {
    let email = format!("{role}-{}@shop.example", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let body = match role {
        "owner" => json!({"email": email, "role": "owner"}),
        _ => json!({"email": email, "role": "staff", "store_ids": stores}),
    };
    let made = app.authed(Method::POST, "/v1/merchant/users", owner, Some(&body), STAFF_IP).await;
    assert_eq!(made.status, 201, "{made:?}");
    Staff::from(&made.body)
}

async fn callers(app: &TestApp, owner: &str, a: &str, b: &str, c: &str) -> Callers {
    Callers {
        owner: new_staff(app, owner, "owner", &[]).await,
        two_stores: new_staff(app, owner, "staff", &[a, b]).await,
        one_store: new_staff(app, owner, "staff", &[c]).await,
    }
}

/// Every question of the dashboard over `ranges` (`&from=...&to=...`, or nothing for the last 30
/// days): each breakdown of sales, customers and baskets, for every store and for each one.
fn questions(ranges: &[String], stores: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut filters: Vec<String> = vec![String::new()];
    filters.extend(stores.iter().map(|s| format!("&store_id={s}")));
    for range in ranges {
        for filter in &filters {
            let mut asks: Vec<String> =
                GROUPS.iter().map(|g| format!("/v1/merchant/analytics/sales?group_by={g}{range}{filter}")).collect();
            for route in ["customers", "baskets"] {
                let query = format!("{range}{filter}");
                asks.push(format!("/v1/merchant/analytics/{route}?{}", query.trim_start_matches('&')));
            }
            out.extend(asks);
        }
    }
    out
}

const GROUPS: [&str; 6] = ["hour", "day", "weekday_hour", "store", "category", "sku"];

/// Asks each question of the cached instance and of the SQL-only one, and compares the answers
/// field by field; every question with a closed day in its period must be answered from memory.
async fn compare(cached: &TestApp, sql: &TestApp, token: &str, paths: &[String]) {
    let before = analytics_cache::stats(cached.db());
    for path in paths {
        let (mine, reference) = (get(cached, path, token).await, get(sql, path, token).await);
        assert_eq!(mine.status, 200, "{path}: {mine:?}");
        assert_eq!(reference.status, 200, "{path}: {reference:?}");
        assert_eq!(mine.body, reference.body, "{path}: the cache and the SQL disagree");
    }
    let after = analytics_cache::stats(cached.db());
    assert_eq!((after.declined, after.deferred), (before.declined, before.deferred), "memory declined: {after:?}");
    assert!(after.answers > before.answers, "nothing was answered from memory: {after:?}");
    assert_eq!(analytics_cache::stats(sql.db()).answers, 0, "the SQL instance has no cache");
}

/// One round of comparisons: each caller asks about `ranges`, the owner also store by store.
async fn compare_all(cached: &TestApp, sql: &TestApp, who: &Callers, ranges: &[String], stores: &[&str]) {
    let owner = staff_login(cached, &who.owner).await;
    compare(cached, sql, &owner, &questions(ranges, stores)).await;
    let two = staff_login(cached, &who.two_stores).await;
    compare(cached, sql, &two, &questions(ranges, &stores[..2])).await;
    let one = staff_login(cached, &who.one_store).await;
    compare(cached, sql, &one, &questions(ranges, &stores[2..])).await;
}

/// Today's date by the service clock, once every instance has learnt its newest offset.
async fn today(app: &TestApp) -> String {
    tokio::time::sleep(omamori::store::clock::REFRESH_INTERVAL * 3).await;
    omamori::store::clock::tokyo_date(app.state.clock.now_ms())
}

/// The basket of a shopper's payment: tea and rice balls often together, cake alone, and now and
/// then a sku twice on one basket or a line without a category.
fn basket(n: usize) -> Value {
    match n % 5 {
        0 => json!([item("TEA", Some("drinks"), 2, 150), item("ONI", Some("food"), 1, 160)]),
        1 => {
            json!([item("TEA", Some("drinks"), 1, 150), item("ONI", Some("food"), 2, 160), item("CAKE", None, 1, 300)])
        }
        2 => json!([
            item("ONI", Some("food"), 1, 160),
            item("TEA", Some("drinks"), 1, 150),
            item("TEA", Some("drinks"), 1, 150)
        ]),
        3 => json!([item("CAKE", None, 2, 300)]),
        _ => json!([]),
    }
}

async fn refund(app: &TestApp, key: &str, payment: &str, amount: i64, items: Value) {
    let body = json!({"amount": amount, "items": items});
    let path = format!("/v1/pos/payments/{payment}/refunds");
    let r = app.pos(Method::POST, &path, key, Some(&body), Some(&uuid::Uuid::new_v4().to_string())).await;
    assert_eq!(r.status, 201, "{r:?}");
}

/// A day of business: `regulars` pay at A, a few at B and C (C stays under `min_customers`).
async fn a_day(app: &TestApp, shops: &[(String, String)], shoppers: &mut [Shopper], day: usize) -> Vec<String> {
    let mut paid = Vec::new();
    for (i, s) in shoppers.iter_mut().enumerate() {
        app.log_in(s).await;
        let basket = basket(i + day);
        let amount = if basket.as_array().unwrap().is_empty() { Some(480 + i as i64) } else { None };
        paid.push(pay(app, &shops[0].1, s, &basket, amount).await);
    }
    for s in shoppers.iter().skip(day % 2).take(3) {
        paid.push(pay(app, &shops[1].1, s, &basket(day + 1), None).await);
    }
    paid.push(pay(app, &shops[2].1, &shoppers[day % shoppers.len()], &basket(day), None).await);
    paid
}

both_backends! {
    async fn the_cache_answers_as_the_sql_does_and_follows_refunds_on_every_instance(app: TestApp) {
        let owner = staff_login(&app, &demo_owner(&app)).await;
        let doc = app.sandbox_doc();
        let op = app.operator_session(0).await;
        let merchant = doc["merchant_id"].as_str().unwrap();
        // (Not the demo store: another instance's start issues it a new terminal key.)
        let shops = vec![
            store_with_terminal(&app, &op, merchant, "Demo Mart Kyoto").await,
            store_with_terminal(&app, &op, merchant, "Demo Mart Sakai").await,
            store_with_terminal(&app, &op, merchant, "Demo Mart Otsu").await,
        ];
        let ids: Vec<&str> = shops.iter().map(|(s, _)| s.as_str()).collect();
        let round_one = callers(&app, &owner, ids[0], ids[1], ids[2]).await;
        let round_two = callers(&app, &owner, ids[0], ids[1], ids[2]).await;
        let round_three = callers(&app, &owner, ids[0], ids[1], ids[2]).await;
        let mut shoppers = Vec::new();
        for _ in 0..7 {
            shoppers.push(app.funded_shopper(20_000).await.0);
        }
        // Three days of business, refunds with and without items among them.
        let first_day = today(&app).await;
        let day_one = a_day(&app, &shops, &mut shoppers, 0).await;
        refund(&app, &shops[0].1, &day_one[0], 150, json!([{"sku": "TEA", "quantity": 1}])).await;
        refund(&app, &shops[0].1, &day_one[4], 100, json!([])).await;
        assert_eq!(app.advance_clock(A_DAY_AND_A_BIT).await.status, 200);
        let second_day = today(&app).await;
        let day_two = a_day(&app, &shops, &mut shoppers, 1).await;
        refund(&app, &shops[0].1, &day_two[0], 300, json!([{"sku": "CAKE", "quantity": 1}])).await;
        assert_eq!(app.advance_clock(A_DAY_AND_A_BIT).await.status, 200);
        let third_day = today(&app).await;
        a_day(&app, &shops, &mut shoppers, 2).await;
        let ranges = vec![
            String::new(),
            format!("&from={first_day}&to={first_day}"),
            format!("&from={first_day}&to={second_day}"),
            format!("&from={second_day}&to={third_day}"),
            format!("&to={third_day}"),
        ];
        // An instance without the cache answers from SQL alone: the reference.
        let sql = app.another_instance_with(|c| c.analytics_cache_mib = 0).await;
        compare_all(&app, &sql, &round_one, &ranges, &ids).await;
        let held = analytics_cache::stats(app.db());
        assert!(held.days >= 2 && held.payments > 0 && held.bytes > 0, "{held:?}");

        // A refund through the other instance of payments on cached days, items named and not.
        refund(&sql, &shops[0].1, &day_one[1], 160, json!([{"sku": "ONI", "quantity": 1}])).await;
        refund(&sql, &shops[1].1, &day_two[day_two.len() - 2], 50, json!([])).await;
        compare_all(&app, &sql, &round_two, &ranges, &ids).await;
        // The next day: yesterday's payments are a closed day now, taken in at the next question.
        assert_eq!(app.advance_clock(A_DAY_AND_A_BIT).await.status, 200);
        let mut more = ranges.clone();
        more.push(format!("&from={third_day}&to={}", today(&app).await));
        compare_all(&app, &sql, &round_three, &more, &ids).await;
        assert!(analytics_cache::stats(app.db()).days > held.days, "{:?}", analytics_cache::stats(app.db()));

        // A quarter: too many closed days to read before answering. SQL answers the first
        // question while the days are read in the background; then memory answers.
        let long_ago = omamori::store::clock::tokyo_date(app.state.clock.now_ms() - 89 * 86_400_000);
        let quarter = format!("/v1/merchant/analytics/sales?group_by=day&from={long_ago}");
        let owner = staff_login(&app, &round_three.owner).await;
        let before = analytics_cache::stats(app.db());
        assert_eq!(get(&app, &quarter, &owner).await.body, get(&sql, &quarter, &owner).await.body);
        assert_eq!(analytics_cache::stats(app.db()).deferred, before.deferred + 1);
        for _ in 0..100 {
            if analytics_cache::stats(app.db()).filling == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        compare(&app, &sql, &owner, &questions(&[format!("&from={long_ago}")], &ids)).await;
        sql.stop().await;
    }
}
