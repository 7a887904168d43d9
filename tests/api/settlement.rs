//! Settlement (API.md "Settlement and payouts"): a Tokyo day closes into one settlement per
//! merchant, idempotently, with its ledger entry; refunds after a close and negative days carry on.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::both_backends;
use crate::helpers::TestApp;
use omamori::merchants::settlement::{day_bounds, tokyo_date};

/// The service clock now, in ms.
async fn now_ms(app: &TestApp) -> i64 {
    let r = app.advance_clock(0).await;
    let now =
        time::OffsetDateTime::parse(r.body["now"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Moves the clock to one second after the current Tokyo day ends; returns that day.
pub(crate) async fn end_today(app: &TestApp) -> String {
    let now = now_ms(app).await;
    let today = tokyo_date(now);
    let (_, end) = day_bounds(&today).unwrap();
    app.advance_clock((end - now) / 1000 + 1).await;
    today
}

fn settle(app: &TestApp, date: &str) -> String {
    let out = app.omamori(&["admin", "settle", "--date", date]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn pay(app: &TestApp, amount: i64) -> String {
    pay_keyed(app, amount).await.0
}

/// A POS payment of `amount`: its id and the idempotency key the till sent (what a reversal names).
async fn pay_keyed(app: &TestApp, amount: i64) -> (String, String) {
    let doc = app.sandbox_doc();
    let terminal = doc["terminal_key"].as_str().unwrap().to_string();
    let (s, _) = app.funded_shopper(amount).await;
    let charge = json!({"code": app.payment_code(&s).await, "amount": amount});
    let key = uuid::Uuid::new_v4().to_string();
    let paid = app.pos(Method::POST, "/v1/pos/payments", &terminal, Some(&charge), Some(&key)).await;
    assert_eq!(paid.status, 201, "{paid:?}");
    (paid.body["payment_id"].as_str().unwrap().to_string(), key)
}

async fn reverse(app: &TestApp, key: &str) {
    let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
    let r = app.pos(Method::POST, "/v1/pos/reversals", &terminal, Some(&json!({"idempotency_key": key})), None).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// The lines of a settlement: (kind, id, amount), in order.
async fn lines(app: &TestApp, settlement: &str) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT kind, item_id, amount FROM settlement_lines WHERE settlement_id = $1 ORDER BY created_at, kind, item_id")
        .bind(settlement)
        .fetch_all(app.db().pool())
        .await
        .unwrap()
}

async fn refund(app: &TestApp, payment: &str, amount: i64) {
    let terminal = app.sandbox_doc()["terminal_key"].as_str().unwrap().to_string();
    let path = format!("/v1/pos/payments/{payment}/refunds");
    let key = uuid::Uuid::new_v4().to_string();
    let r = app.pos(Method::POST, &path, &terminal, Some(&json!({"amount": amount})), Some(&key)).await;
    assert_eq!(r.status, 201, "{r:?}");
}

/// The settlements of a date, as JSON rows.
async fn settlements(app: &TestApp, date: &str) -> Vec<Value> {
    let rows = sqlx::query(
        "SELECT id, payments, gross, refunds, fee, carried_over, net, status FROM settlements WHERE date = $1 ORDER BY id",
    )
    .bind(date)
    .fetch_all(app.db().pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            json!({
                "id": r.get::<String, _>("id"), "payments": r.get::<i64, _>("payments"), "gross": r.get::<i64, _>("gross"),
                "refunds": r.get::<i64, _>("refunds"), "fee": r.get::<i64, _>("fee"),
                "carried_over": r.get::<i64, _>("carried_over"), "net": r.get::<i64, _>("net"),
                "status": r.get::<String, _>("status"),
            })
        })
        .collect()
}

fn verify_ok(app: &TestApp) {
    let out = app.omamori(&["admin", "verify"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("settlements verified"));
}

both_backends! {
    async fn a_day_settles_once_and_a_refund_after_the_close_lands_in_the_next(app: TestApp) {
        let p = pay(&app, 10_000).await;
        let day1 = end_today(&app).await;
        let out = settle(&app, &day1);
        let first = settlements(&app, &day1).await;
        assert_eq!(first.len(), 1, "{out}");
        let s = &first[0];
        assert_eq!((s["payments"].as_i64(), s["gross"].as_i64(), s["refunds"].as_i64()), (Some(1), Some(10_000), Some(0)));
        assert_eq!((s["fee"].as_i64(), s["net"].as_i64(), s["status"].as_str()), (Some(198), Some(9_802), Some("closed")));
        // A repeat changes nothing and exits 0.
        assert!(settle(&app, &day1).contains("already settled"));
        assert_eq!(settlements(&app, &day1).await, first);
        // A day not yet ended is refused.
        let today = tokyo_date(now_ms(&app).await);
        let out = app.omamori(&["admin", "settle", "--date", &today]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        // A refund after the close lands in the next day's settlement.
        refund(&app, &p, 3_000).await;
        let day2 = end_today(&app).await;
        settle(&app, &day2);
        let second = settlements(&app, &day2).await;
        assert_eq!(second.len(), 1);
        let s = &second[0];
        assert_eq!((s["payments"].as_i64(), s["gross"].as_i64(), s["refunds"].as_i64()), (Some(0), Some(0), Some(3_000)));
        assert_eq!((s["fee"].as_i64(), s["net"].as_i64(), s["status"].as_str()), (Some(0), Some(-3_000), Some("carried")));
        assert_eq!(settlements(&app, &day1).await, first, "a closed settlement never changes");
        // The negative day carries over into the next.
        pay(&app, 5_000).await;
        let day3 = end_today(&app).await;
        settle(&app, &day3);
        let third = settlements(&app, &day3).await;
        let s = &third[0];
        assert_eq!((s["gross"].as_i64(), s["fee"].as_i64(), s["carried_over"].as_i64()), (Some(5_000), Some(99), Some(-3_000)));
        assert_eq!((s["net"].as_i64(), s["status"].as_str()), (Some(1_901), Some("closed")));
        verify_ok(&app);
    }
}

both_backends! {
    async fn a_reversal_after_the_close_lands_in_the_next_settlement_and_a_refunded_then_reversed_one_nets_out(app: TestApp) {
        // Late on a day (a till may reverse for 24 hours): a payment, then the day closes.
        end_today(&app).await;
        app.advance_clock(86_000).await;
        let (late, late_key) = pay_keyed(&app, 8_000).await;
        let day1 = end_today(&app).await;
        settle(&app, &day1);
        let first = settlements(&app, &day1).await;
        assert_eq!((first[0]["gross"].as_i64(), first[0]["net"].as_i64()), (Some(8_000), Some(7_842)));
        // The next day: the till reverses that payment; another is refunded in part, then reversed.
        reverse(&app, &late_key).await;
        let (other, other_key) = pay_keyed(&app, 5_000).await;
        refund(&app, &other, 2_000).await;
        reverse(&app, &other_key).await;
        let day2 = end_today(&app).await;
        settle(&app, &day2);
        let second = settlements(&app, &day2).await;
        assert_eq!(second.len(), 1);
        let s = &second[0];
        // Gross: the one payment of the day; back to shoppers: 8,000 + 2,000 + 3,000; no fee on a loss.
        assert_eq!((s["payments"].as_i64(), s["gross"].as_i64(), s["refunds"].as_i64()), (Some(1), Some(5_000), Some(13_000)));
        assert_eq!((s["fee"].as_i64(), s["net"].as_i64(), s["status"].as_str()), (Some(0), Some(-8_000), Some("carried")));
        let kinds: Vec<(String, String, i64)> = lines(&app, s["id"].as_str().unwrap()).await;
        let mut got: Vec<(&str, &str, i64)> = kinds.iter().map(|(k, i, a)| (k.as_str(), i.as_str(), *a)).collect();
        got.sort();
        let mut want = vec![("payment", other.as_str(), 5_000), ("refund", "", 2_000), ("reversal", late.as_str(), 8_000), ("reversal", other.as_str(), 3_000)];
        want.sort();
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0, g.2), (w.0, w.2), "{got:?}");
            if !w.1.is_empty() {
                assert_eq!(g.1, w.1, "{got:?}");
            }
        }
        assert_eq!(settlements(&app, &day1).await, first, "a closed settlement never changes");
        // The ledger agrees: the merchant's balance is the carried net, and nothing is left open.
        verify_ok(&app);
        let out = app.omamori(&["admin", "verify"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("merchant balances verified"), "{out:?}");
        // A repeat close changes nothing.
        assert!(settle(&app, &day2).contains("already settled"));
        // A reversal the ledger never saw (marked in the payments table alone) is caught.
        let unbacked = pay(&app, 1_000).await;
        sqlx::query("UPDATE payments SET status = 'reversed' WHERE id = $1").bind(&unbacked).execute(app.db().pool()).await.unwrap();
        sqlx::query("INSERT INTO journal_entries (kind, reference, currency, created_at) VALUES ('reversal', $1, 'JPY', 0)")
            .bind(&unbacked)
            .execute(app.db().pool())
            .await
            .unwrap();
        let out = app.omamori(&["admin", "verify"]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && said.contains("MISMATCH merchant"), "{out:?}");
    }
}

/// One day of the property below: payments early in the day, payments late in the day, refunds of
/// any payment so far (index, percent of what is left), reversals of the day's payments before the
/// close, whether the day closes, and reversals of the day's late payments the next morning (after
/// the close: a till may reverse for 24 hours).
type Day = (Vec<i64>, Vec<i64>, Vec<(usize, u8)>, Vec<usize>, bool, Vec<usize>);

fn random_days() -> impl proptest::strategy::Strategy<Value = Vec<Day>> {
    use proptest::collection::vec;
    let day = (
        vec(1i64..50_000, 0..3),
        vec(1i64..50_000, 0..3),
        vec((0usize..20, 1u8..=100), 0..3),
        vec(0usize..4, 0..2),
        proptest::bool::weighted(0.7),
        vec(0usize..3, 0..3),
    );
    vec(day, 1..5)
}

/// A payment of the property: (id, idempotency key, amount, refunded, reversed).
type Paid = (String, String, i64, i64, bool);

async fn pay_into(app: &TestApp, paid: &mut Vec<Paid>, amounts: &[i64]) {
    for &amount in amounts {
        let (id, key) = pay_keyed(app, amount).await;
        paid.push((id, key, amount, 0, false));
    }
}

async fn refund_some(app: &TestApp, paid: &mut [Paid], refunds: &[(usize, u8)]) {
    let n = paid.len();
    for &(i, share) in refunds {
        let Some(p) = paid.get_mut(i % n.max(1)) else { continue };
        let amount = (p.2 - p.3) * i64::from(share) / 100;
        if !p.4 && amount > 0 {
            refund(app, &p.0, amount).await;
            p.3 += amount;
        }
    }
}

async fn reverse_some(app: &TestApp, among: &mut [Paid], which: &[usize]) {
    for &i in which {
        if let Some(p) = among.get_mut(i).filter(|p| !p.4) {
            reverse(app, &p.1).await;
            p.4 = true;
        }
    }
}

/// Runs `days` through the real service (POS payments, refunds and reversals over HTTP, the close
/// as `omamori admin settle`), checking after each day that every settlement agrees with its lines
/// and its ledger entry, and each merchant's ledger balance with its open lines and carried net.
async fn run_days(app: &TestApp, days: &[Day]) {
    end_today(app).await;
    let mut paid: Vec<Paid> = Vec::new();
    let mut yesterday_late = 0..0;
    let mut reverse_next: &[usize] = &[];
    for (early, late, refunds, reverse_now, close, next) in days {
        reverse_some(app, &mut paid[yesterday_late.clone()], reverse_next).await;
        let first = paid.len();
        pay_into(app, &mut paid, early).await;
        app.advance_clock(86_000).await;
        let first_late = paid.len();
        pay_into(app, &mut paid, late).await;
        refund_some(app, &mut paid, refunds).await;
        reverse_some(app, &mut paid[first..], reverse_now).await;
        let day = end_today(app).await;
        if *close {
            settle(app, &day);
        }
        (yesterday_late, reverse_next) = (first_late..paid.len(), next);
        let db = app.db();
        let ledger = omamori::ledger::verify(db).await.unwrap();
        assert!(ledger.is_empty(), "{days:?}: {ledger:?}");
        let mut found = omamori::merchants::settlement::verify(db).await.unwrap();
        found.extend(omamori::merchants::settlement::verify_balances(db).await.unwrap());
        assert!(found.is_empty(), "after day {day} of {days:?}: {found:?}");
    }
}

both_backends! {
    async fn for_random_days_settlements_and_the_open_balance_equal_the_ledger(app: TestApp) {
        use proptest::strategy::{Strategy, ValueTree};
        // Deterministic (the same cases every run); each case continues the one before it.
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..6 {
            let days = random_days().new_tree(&mut runner).unwrap().current();
            run_days(&app, &days).await;
        }
    }
}

async fn zengin(app: &TestApp, op: &str, date: &str) -> (u16, Vec<u8>) {
    let path = format!("/v1/admin/payouts/{date}/zengin");
    let r = app.from(Method::GET, &path, crate::helpers::OPERATOR_IP).bearer_auth(op).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// The records of a Zengin file: each 120 bytes, followed by CR LF.
fn records(file: &[u8]) -> Vec<&[u8]> {
    assert_eq!(file.len() % 122, 0, "every record is 120 bytes and CR LF");
    file.chunks(122)
        .map(|r| {
            assert_eq!(&r[120..], b"\r\n");
            &r[..120]
        })
        .collect()
}

fn field(r: &[u8], at: usize, len: usize) -> String {
    // Half-width katakana bytes 0xA1-0xDF are U+FF61-U+FF9F.
    r[at..at + len]
        .iter()
        .map(|b| if *b >= 0xA1 { char::from_u32(0xFF61 + u32::from(*b) - 0xA1).unwrap() } else { *b as char })
        .collect()
}

async fn set_bank_account(app: &TestApp, merchant: &str, holder: &str) {
    use omamori::merchants::payouts::{NewBankAccount, set_bank_account};
    let account = NewBankAccount {
        bank_code: "0005",
        branch_code: "123",
        account_type: "ordinary",
        account_number: "0012345",
        holder_kana: holder,
    };
    let now = now_ms(app).await;
    let mut tx = app.db().begin().await.unwrap();
    let merchant = omamori::ids::MerchantId::from_raw(merchant);
    set_bank_account(&mut tx, &merchant, &account, "test", now).await.unwrap();
    tx.commit().await.unwrap();
}

both_backends! {
    async fn the_zengin_file_pays_what_was_settled_to_accounts_in_effect_and_takes_two_operators(app: TestApp) {
        let merchant = app.sandbox_doc()["merchant_id"].as_str().unwrap().to_string();
        set_bank_account(&app, &merchant, "オマモリ　シヨウテン").await;
        pay(&app, 10_000).await;
        let day1 = end_today(&app).await;
        let op = app.operator_session(0).await;
        let (status, _) = zengin(&app, &op, &day1).await;
        assert_eq!(status, 409, "a day not settled has no file");
        settle(&app, &day1);
        // The account was set less than 72 hours before the day ended: no payout yet.
        let (status, file) = zengin(&app, &op, &day1).await;
        assert_eq!(status, 200);
        let recs = records(&file);
        assert_eq!(recs.len(), 3);
        assert_eq!(field(recs[1], 0, 19), "8000000000000000000");
        app.advance_clock(3 * 86_400).await;
        pay(&app, 5_000).await;
        let day4 = end_today(&app).await;
        settle(&app, &day4);
        let op = app.operator_session(0).await;
        let (_, file) = zengin(&app, &op, &day4).await;
        let recs = records(&file);
        assert_eq!(recs.len(), 4);
        // The file names bank accounts: each download is on the audit chain, with who took it.
        let downloads: Vec<(String, String)> =
            sqlx::query_as("SELECT actor, subject FROM audit_log WHERE action = 'payouts.zengin_download' ORDER BY id")
                .fetch_all(app.db().pool()).await.unwrap();
        assert_eq!(downloads.len(), 2, "a refused download (day not settled) gives no file: {downloads:?}");
        assert!(downloads.iter().all(|(actor, _)| actor.starts_with("operator:")), "{downloads:?}");
        assert_eq!(downloads[1].1, day4);
        assert_eq!(field(recs[0], 0, 4), "1210");
        assert_eq!(field(recs[0], 14, 6), "ｵﾏﾓﾘ(ｶ");
        let d = recs[1];
        assert_eq!(field(d, 0, 1), "2");
        assert_eq!(field(d, 1, 4), "0005");
        assert_eq!(field(d, 20, 3), "123");
        assert_eq!(field(d, 42, 1), "1");
        assert_eq!(field(d, 43, 7), "0012345");
        assert_eq!(field(d, 50, 30).trim_end(), "ｵﾏﾓﾘ ｼﾖｳﾃﾝ");
        let settled = settlements(&app, &day4).await;
        assert_eq!(field(d, 80, 10).parse::<i64>().unwrap(), settled[0]["net"].as_i64().unwrap());
        assert_eq!(settled[0]["net"], 4_901);
        let t = recs[2];
        assert_eq!(field(t, 0, 1), "8");
        assert_eq!(field(t, 1, 6).parse::<i64>().unwrap(), 1);
        assert_eq!(field(t, 7, 12).parse::<i64>().unwrap(), 4_901);
        assert_eq!(field(recs[3], 0, 1), "9");
        // Four eyes: the first operator asks, cannot confirm alone, a second confirms.
        let path = format!("/v1/admin/payouts/{day4}/confirm");
        let reason = json!({"reason": "daily payout"});
        let ip = crate::helpers::OPERATOR_IP;
        assert_eq!(app.authed(Method::POST, &path, &op, Some(&reason), ip).await.status, 202);
        app.authed(Method::POST, &path, &op, Some(&reason), ip).await.assert_problem(409, "second_operator_required");
        assert_eq!(settlements(&app, &day4).await[0]["status"], "closed");
        let op2 = app.operator_session(1).await;
        let r = app.authed(Method::POST, &path, &op2, Some(&reason), ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(settlements(&app, &day4).await[0]["status"], "paid");
        assert_eq!(settlements(&app, &day1).await[0]["status"], "closed");
        // The fee rate is an operator's to set.
        let r = app.authed(Method::PUT, &format!("/v1/admin/merchants/{merchant}"), &op, Some(&json!({"fee_bps": 250})), ip).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, json!({"merchant_id": merchant, "fee_bps": 250}));
        app.authed(Method::PUT, &format!("/v1/admin/merchants/{merchant}"), &op, Some(&json!({"fee_bps": 10_001})), ip).await
            .assert_problem(422, "invalid_body");
        verify_ok(&app);
    }
}
