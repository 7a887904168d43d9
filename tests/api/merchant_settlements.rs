//! The merchant's settlements and bank account (API.md "Merchants' side"): an owner reads each
//! closed day and its statement (JSON and CSV); staff and other merchants cannot; a new bank
//! account takes a fresh authenticator code, tells every owner and the operators, and takes effect
//! 72 hours later. (That an account set less than 72 hours before a day ended gets no payout in
//! that day's Zengin file is tested in `settlement.rs`.)

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::both_backends;
use crate::helpers::*;
use crate::merchant_staff::{STAFF_IP, Staff, demo_owner, staff_login};

fn parse_rfc3339(text: &str) -> i64 {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The service clock now, in ms.
async fn now_ms(app: &TestApp) -> i64 {
    parse_rfc3339(app.advance_clock(0).await.body["now"].as_str().unwrap())
}

async fn pay(app: &TestApp, amount: i64) -> String {
    let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
    let (s, _) = app.funded_shopper(amount).await;
    let charge = json!({"code": app.payment_code(&s).await, "amount": amount});
    let key = uuid::Uuid::new_v4().to_string();
    let paid = app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&charge), Some(&key)).await;
    assert_eq!(paid.status, 201, "{paid:?}");
    paid.body["payment_id"].as_str().unwrap().to_string()
}

async fn refund(app: &TestApp, payment: &str, amount: i64) {
    let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
    let path = format!("/v1/pos/payments/{payment}/refunds");
    let key = uuid::Uuid::new_v4().to_string();
    let r = app.pos(Method::POST, &path, &terminal, Some(&json!({"amount": amount})), Some(&key)).await;
    assert_eq!(r.status, 201, "{r:?}");
}

/// Ends the current Tokyo day by the service clock and closes it; answers the date.
async fn settle_today(app: &TestApp) -> String {
    use omamori::merchants::settlement::{day_bounds, tokyo_date};
    let now = now_ms(app).await;
    let today = tokyo_date(now);
    let (_, end) = day_bounds(&today).unwrap();
    app.advance_clock((end - now) / 1000 + 1).await;
    let out = app.omamori(&["admin", "settle", "--date", &today]);
    assert!(out.status.success(), "{out:?}");
    today
}

async fn get(app: &TestApp, path: &str, token: &str) -> Reply {
    app.authed(Method::GET, path, token, None, STAFF_IP).await
}

/// A staff member of the demo store, made by the owner; answers their session.
async fn staff_session(app: &TestApp, owner_token: &str) -> String {
    let store = app.sandbox_doc()["store_id"].as_str().unwrap().to_string();
    let email = format!("staff-{}@shop.example", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let body = json!({"email": email, "role": "staff", "store_ids": [store]});
    let made = app.authed(Method::POST, "/v1/merchant/users", owner_token, Some(&body), STAFF_IP).await;
    assert_eq!(made.status, 201, "{made:?}");
    staff_login(app, &Staff::from(&made.body)).await
}

/// The owner of a new merchant, "Kissa Hoshi"; answers their session.
async fn other_merchants_owner(app: &TestApp) -> String {
    let op = app.operator_session(0).await;
    let body = json!({"name": "Kissa Hoshi", "category": "5814"});
    let r = app.authed(Method::POST, "/v1/admin/merchants", &op, Some(&body), OPERATOR_IP).await;
    assert_eq!(r.status, 201, "{r:?}");
    let path = format!("/v1/admin/merchants/{}/users", r.body["merchant_id"].as_str().unwrap());
    let made = app
        .authed(Method::POST, &path, &op, Some(&json!({"email": "hoshi@kissa.example", "role": "owner"})), OPERATOR_IP)
        .await;
    assert_eq!(made.status, 201, "{made:?}");
    staff_login(app, &Staff::from(&made.body)).await
}

fn sum(lines: &[Value], kind: &str) -> i64 {
    lines.iter().filter(|l| l["kind"] == kind).map(|l| l["amount"].as_i64().unwrap()).sum()
}

both_backends! {
    async fn the_owner_reads_a_settled_day_and_its_statement_in_json_and_csv(app: TestApp) {
        let first = pay(&app, 10_000).await;
        pay(&app, 2_500).await;
        refund(&app, &first, 1_200).await;
        let day = settle_today(&app).await;
        let token = staff_login(&app, &demo_owner(&app)).await;
        let list = get(&app, "/v1/merchant/settlements", &token).await;
        assert_eq!(list.status, 200, "{list:?}");
        let items = list.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{list:?}");
        let s = &items[0];
        assert_eq!((s["date"].as_str(), s["payments"].as_i64(), s["gross"].as_i64()), (Some(day.as_str()), Some(2), Some(12_500)));
        // fee = floor(11_300 × 198 / 10000) = 223.
        assert_eq!((s["refunds"].as_i64(), s["fee"].as_i64(), s["carried_over"].as_i64()), (Some(1_200), Some(223), Some(0)));
        assert_eq!((s["net"].as_i64(), s["status"].as_str()), (Some(11_077), Some("closed")));
        assert!(s.get("lines").is_none(), "a list has no lines: {s}");
        let id = s["settlement_id"].as_str().unwrap().to_string();
        // The statement: the same figures, and lines that sum to them.
        let one = get(&app, &format!("/v1/merchant/settlements/{id}"), &token).await;
        assert_eq!(one.status, 200, "{one:?}");
        for field in ["settlement_id", "date", "payments", "gross", "refunds", "fee", "net", "carried_over", "status"] {
            assert_eq!(one.body[field], s[field], "{field}");
        }
        let lines = one.body["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 3, "{one:?}");
        assert_eq!(sum(lines, "payment"), 12_500);
        assert_eq!(sum(lines, "refund"), 1_200);
        let store = app.sandbox_doc()["store_id"].clone();
        let (start, end) = omamori::merchants::settlement::day_bounds(&day).unwrap();
        for l in lines {
            assert_eq!(l["store_id"], store, "{l}");
            let at = parse_rfc3339(l["created_at"].as_str().expect("created_at is RFC 3339 text, never ms"));
            assert!((start..end).contains(&at), "{l}");
        }
        assert!(lines.iter().any(|l| l["kind"] == "payment" && l["id"] == first.as_str()));
        // The CSV: a header, the summary, then a header and one row per line.
        let r = app.from(Method::GET, &format!("/v1/merchant/settlements/{id}.csv"), STAFF_IP).bearer_auth(&token).send().await.unwrap();
        let csv = Reply::from(r).await;
        assert_eq!(csv.status, 200, "{csv:?}");
        assert!(csv.content_type().starts_with("text/csv"), "{csv:?}");
        let disposition = csv.headers["content-disposition"].to_str().unwrap();
        assert!(disposition.starts_with("attachment; filename=\"") && disposition.ends_with(".csv\""), "{disposition}");
        let rows: Vec<&str> = csv.text.lines().collect();
        assert_eq!(rows[0], "settlement_id,date,payments,gross,refunds,fee,carried_over,net,status");
        assert_eq!(rows[1], format!("{id},{day},2,12500,1200,223,0,11077,closed"));
        let at = rows.iter().position(|r| *r == "kind,id,store_id,amount,created_at").expect("the lines' header");
        let data: Vec<&&str> = rows[at + 1..].iter().filter(|r| !r.is_empty()).collect();
        assert_eq!(data.len(), lines.len(), "{}", csv.text);
        for l in lines {
            let row = format!("{},{},{},{},{}", l["kind"].as_str().unwrap(), l["id"].as_str().unwrap(),
                l["store_id"].as_str().unwrap(), l["amount"], l["created_at"].as_str().unwrap());
            assert!(data.iter().any(|d| **d == row), "{row} not in {}", csv.text);
        }
        // An unknown id, and ids that cannot be ids.
        for path in ["/v1/merchant/settlements/stl_nothing", "/v1/merchant/settlements/stl_nothing.csv", "/v1/merchant/settlements/a.b.csv"] {
            get(&app, path, &token).await.assert_problem(404, "not_found");
        }
    }

    async fn settlements_are_the_owners_and_no_other_merchants(app: TestApp) {
        pay(&app, 3_000).await;
        settle_today(&app).await;
        let owner = staff_login(&app, &demo_owner(&app)).await;
        let list = get(&app, "/v1/merchant/settlements", &owner).await;
        let id = list.body["items"][0]["settlement_id"].as_str().unwrap().to_string();
        // A staff member sees none: settlements hold every store's lines.
        let staff = staff_session(&app, &owner).await;
        for path in ["/v1/merchant/settlements".to_string(), format!("/v1/merchant/settlements/{id}"), format!("/v1/merchant/settlements/{id}.csv")] {
            get(&app, &path, &staff).await.assert_problem(403, "forbidden");
            get(&app, &path, "not-a-session").await.assert_problem(401, "unauthenticated");
        }
        // Another merchant's owner sees an empty list and cannot tell the demo merchant's id from none.
        let other = other_merchants_owner(&app).await;
        let theirs = get(&app, "/v1/merchant/settlements", &other).await;
        assert_eq!((theirs.status.as_u16(), theirs.body["items"].as_array().map(Vec::len)), (200, Some(0)), "{theirs:?}");
        for path in [format!("/v1/merchant/settlements/{id}"), format!("/v1/merchant/settlements/{id}.csv")] {
            let r = get(&app, &path, &other).await;
            r.assert_problem(404, "not_found");
            assert!(!r.text.contains("3000"), "{r:?}");
        }
    }
}

fn account(code: &str) -> Value {
    json!({"bank_code": "0005", "branch_code": "123", "account_type": "ordinary", "account_number": "0012345",
        "holder_kana": "オマモリ　シヨウテン", "totp_code": code})
}

async fn put_account(app: &TestApp, token: &str, body: &Value) -> Reply {
    app.authed(Method::PUT, "/v1/merchant/bank-account", token, Some(body), STAFF_IP).await
}

/// A six-digit code that is none of the owner's codes around now.
fn wrong_code(owner: &Staff) -> String {
    let now = omamori::identity::totp::current_step();
    let near: Vec<String> = (now - 2..=now + 2).map(|s| owner.code(s)).collect();
    (0..).map(|n| format!("{:06}", (n * 7919) % 1_000_000)).find(|c| !near.contains(c)).unwrap()
}

/// How many 120-byte records (each followed by CR LF) the day's Zengin file has.
async fn zengin_records(app: &TestApp, op: &str, date: &str) -> usize {
    let path = format!("/v1/admin/payouts/{date}/zengin");
    let r = app.from(Method::GET, &path, OPERATOR_IP).bearer_auth(op).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let file = r.bytes().await.unwrap();
    assert_eq!(file.len() % 122, 0);
    file.len() / 122
}

async fn bank_rows(app: &TestApp) -> i64 {
    let merchant = app.sandbox_doc()["merchant_id"].as_str().unwrap().to_string();
    sqlx::query("SELECT COUNT(*) AS n FROM bank_accounts WHERE merchant_id = $1")
        .bind(&merchant)
        .fetch_one(app.db().pool())
        .await
        .unwrap()
        .get::<i64, _>("n")
}

both_backends! {
    async fn a_wrong_code_a_bad_account_or_a_staff_member_changes_nothing(app: TestApp) {
        let owner = demo_owner(&app);
        let token = staff_login(&app, &owner).await;
        // Malformed digits and a name with no single-byte katakana are refused before the code is read.
        let step = omamori::identity::totp::current_step();
        let mut bad = account(&owner.code(step + 1));
        bad["account_number"] = json!("12345");
        put_account(&app, &token, &bad).await.assert_problem(422, "invalid_body");
        let mut bad = account(&owner.code(step + 1));
        bad["account_type"] = json!("savings");
        put_account(&app, &token, &bad).await.assert_problem(422, "invalid_body");
        let mut bad = account(&owner.code(step + 1));
        bad["holder_kana"] = json!("山田商店");
        put_account(&app, &token, &bad).await.assert_problem(422, "holder_kana_not_writable");
        // A wrong code: refused as a login's is, and nothing is written or told.
        let r = put_account(&app, &token, &account(&wrong_code(&owner))).await;
        r.assert_problem(401, "invalid_credentials");
        let staff = staff_session(&app, &token).await;
        put_account(&app, &staff, &account(&owner.code(step + 1))).await.assert_problem(403, "forbidden");
        assert_eq!(bank_rows(&app).await, 0);
        assert!(!app.alerts().await.iter().any(|a| a["kind"] == "bank_account_changed"));
        assert!(!app.messages(&owner.email).await.iter().any(|m| m["kind"] == "bank_account_changed"));
        // Guessing is throttled: after five wrong codes even a right one waits.
        for _ in 0..4 {
            put_account(&app, &token, &account(&wrong_code(&owner))).await.assert_problem(401, "invalid_credentials");
        }
        let now = omamori::identity::totp::current_step();
        let r = put_account(&app, &token, &account(&owner.code(now + 1))).await;
        r.assert_problem(429, "too_many_attempts");
        assert!(r.headers.get("retry-after").is_some(), "{r:?}");
        assert_eq!(bank_rows(&app).await, 0);
    }

    async fn a_new_bank_account_takes_effect_in_72_hours_and_every_owner_and_operator_is_told(app: TestApp) {
        let owner = demo_owner(&app);
        let token = staff_login(&app, &owner).await;
        let email = format!("second-owner-{}@shop.example", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let made = app.authed(Method::POST, "/v1/merchant/users", &token, Some(&json!({"email": email, "role": "owner"})), STAFF_IP).await;
        assert_eq!(made.status, 201, "{made:?}");
        let before = now_ms(&app).await;
        // The login used this step's code (or the next one's); a code is accepted once.
        let now = omamori::identity::totp::current_step();
        let mut set = None;
        for step in [now, now + 1] {
            let r = put_account(&app, &token, &account(&owner.code(step))).await;
            if r.status == 200 {
                set = Some((r, step));
                break;
            }
            r.assert_problem(401, "invalid_credentials");
        }
        let (set, used_step) = set.expect("a fresh code is accepted");
        let after = now_ms(&app).await;
        let effective = parse_rfc3339(set.body["effective_at"].as_str().unwrap());
        const H72: i64 = 72 * 3_600_000;
        assert!(before + H72 <= effective && effective <= after + H72, "{set:?}");
        assert_eq!(bank_rows(&app).await, 1);
        // The Zengin file has the name half-width.
        let holder: String = sqlx::query("SELECT holder_kana FROM bank_accounts").fetch_one(app.db().pool()).await.unwrap().get("holder_kana");
        assert_eq!(holder, "ｵﾏﾓﾘ ｼﾖｳﾃﾝ");
        // Both owners are e-mailed; the operators get an alert; neither shows the whole number.
        for to in [owner.email.as_str(), email.as_str()] {
            let told: Vec<Value> = app.messages(to).await.into_iter().filter(|m| m["kind"] == "bank_account_changed").collect();
            assert_eq!(told.len(), 1, "{to}: {told:?}");
            assert_eq!(told[0]["channel"], "email");
            let body = told[0]["body"].as_str().unwrap();
            assert!(body.contains("345") && !body.contains("0012345"), "{body}");
        }
        let alerts = app.alerts().await;
        let alert = alerts.iter().find(|a| a["kind"] == "bank_account_changed").expect("an operator alert");
        let detail = alert["detail"].as_str().unwrap();
        assert!(detail.contains(app.sandbox_doc()["merchant_id"].as_str().unwrap()) && !detail.contains("0012345"), "{detail}");
        // Audited.
        let audited: i64 = sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'merchant.bank_account'")
            .fetch_one(app.db().pool()).await.unwrap().get("n");
        assert_eq!(audited, 1);
        // The same code again is refused: a code is accepted once.
        let used = account(&owner.code(used_step));
        put_account(&app, &token, &used).await.assert_problem(401, "invalid_credentials");
        assert_eq!(bank_rows(&app).await, 1);
        // Today's payout waits (the account is not in effect when the day ends); one 3 days later is paid.
        pay(&app, 10_000).await;
        let day1 = settle_today(&app).await;
        // (The second sandbox operator, after the clock moved: a TOTP code is accepted once, and
        // the first just logged in.)
        let op = app.operator_session(1).await;
        assert_eq!(zengin_records(&app, &op, &day1).await, 3, "header, trailer and end: no data record");
        app.advance_clock(3 * 86_400).await;
        pay(&app, 5_000).await;
        let day4 = settle_today(&app).await;
        let op = app.operator_session(1).await;
        assert_eq!(zengin_records(&app, &op, &day4).await, 4, "one data record");
    }
}
