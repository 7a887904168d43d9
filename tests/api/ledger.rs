//! The ledger's invariants: balanced entries, wallets never below zero (even under concurrency),
//! immutable history, and `omamori admin verify` catching a balance that disagrees.

use std::collections::HashMap;
use std::sync::Arc;

use omamori::ledger::{self, AccountId, AccountKind, EntryKind, LedgerError, NewEntry, Posting};
use omamori::money::{Currency, Yen};
use omamori::store::{self, Db};
use proptest::prelude::*;

use crate::both_backends;
use crate::helpers::*;

both_backends! {
    async fn fifty_concurrent_debits_never_overdraw_a_wallet(app: TestApp) {
        // ¥1,000 covers 33 debits of ¥30; 50 arrive at once.
        let wallet = app.funded_wallet(1_000, None).await;
        let shop = app.create_account("merchant", None).await;
        let app = Arc::new(app);
        let mut tasks = Vec::new();
        for i in 0..50 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move { app.transfer(wallet, shop, 30, &format!("debit-{i}")).await }));
        }
        let (mut ok, mut declined) = (0, 0);
        for t in tasks {
            let r = t.await.unwrap();
            match r.status.as_u16() {
                201 => {
                    ok += 1;
                    assert!(r.body["from_balance"].as_i64().unwrap() >= 0, "{r:?}");
                }
                402 => {
                    declined += 1;
                    assert_eq!(r.body["code"], "insufficient_funds");
                }
                _ => panic!("unexpected answer {r:?}"),
            }
        }
        assert_eq!((ok, declined), (33, 17));
        assert_eq!(app.balance(wallet).await, 10);
        assert_eq!(app.balance(shop).await, 990);
        assert!(ledger::verify(app.db()).await.unwrap().is_empty());
    }

    async fn fifty_concurrent_ledger_posts_never_overdraw_a_wallet(app: TestApp) {
        // The same race one level down, on `ledger::post` inside the callers' own transactions.
        let db = app.db().clone();
        let (funding, wallet, shop) = accounts(&db).await;
        post(&db, NewEntry::transfer(EntryKind::Topup, "t", funding, wallet, Yen(1_000))).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                post(&db, NewEntry::transfer(EntryKind::Payment, format!("p{i}"), wallet, shop, Yen(30))).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(posted) => {
                    ok += 1;
                    assert!(posted.balance_of(wallet).unwrap().0 >= 0);
                }
                Err(LedgerError::InsufficientFunds(a)) => assert_eq!(a, wallet),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(ok, 33);
        assert_eq!(balance(&db, wallet).await, 10);
        assert!(ledger::verify(&db).await.unwrap().is_empty());
    }

    async fn verify_names_an_account_corrupted_in_the_database(app: TestApp) {
        let wallet = app.funded_wallet(1_000, None).await;
        let shop = app.create_account("merchant", None).await;
        assert_eq!(app.transfer(wallet, shop, 250, "v1").await.status, 201);
        let out = app.omamori(&["admin", "verify"]);
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // Someone edits a balance behind the ledger's back.
        sqlx::query("UPDATE accounts SET balance = balance + 7 WHERE id = $1").bind(shop).execute(app.db().pool()).await.unwrap();
        let out = app.omamori(&["admin", "verify"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains(&format!("account {shop} (merchant): stored balance 257 but its postings sum to 250")), "{stdout}");
        assert!(!stdout.contains(&format!("account {wallet} ")), "only the corrupted account is named: {stdout}");
    }

    async fn history_is_immutable_and_the_database_refuses_a_negative_wallet(app: TestApp) {
        let wallet = app.funded_wallet(1_000, None).await;
        let pool = app.db().pool();
        assert!(sqlx::query("UPDATE postings SET amount = amount + 1").execute(pool).await.is_err());
        assert!(sqlx::query("DELETE FROM postings").execute(pool).await.is_err());
        assert!(sqlx::query("UPDATE journal_entries SET kind = 'payment'").execute(pool).await.is_err());
        assert!(sqlx::query("DELETE FROM journal_entries").execute(pool).await.is_err());
        // Even a buggy statement cannot take a wallet below zero: the CHECK refuses it.
        let r = sqlx::query("UPDATE accounts SET balance = -1 WHERE id = $1").bind(wallet).execute(pool).await;
        assert!(r.is_err(), "a negative wallet balance was accepted");
        assert_eq!(app.balance(wallet).await, 1_000);
        assert!(ledger::verify(app.db()).await.unwrap().is_empty());
    }

    async fn malformed_entries_are_refused_and_leave_nothing_behind(app: TestApp) {
        let db = app.db().clone();
        let (funding, wallet, shop) = accounts(&db).await;
        post(&db, NewEntry::transfer(EntryKind::Topup, "t", funding, wallet, Yen(100))).await.unwrap();
        let unbalanced = NewEntry { kind: EntryKind::Adjustment, reference: "bad".into(), currency: Currency::Jpy,
            postings: vec![Posting { account: wallet, amount: Yen(-10) }, Posting { account: shop, amount: Yen(9) }] };
        assert!(matches!(post(&db, unbalanced).await, Err(LedgerError::Unbalanced)));
        let unknown = NewEntry::transfer(EntryKind::Adjustment, "bad", wallet, AccountId(999_999), Yen(5));
        assert!(matches!(post(&db, unknown).await, Err(LedgerError::UnknownAccount(AccountId(999_999)))));
        let overdraw = NewEntry::transfer(EntryKind::Payment, "bad", wallet, shop, Yen(101));
        assert!(matches!(post(&db, overdraw).await, Err(LedgerError::InsufficientFunds(_))));
        // Nothing of the refused entries was written.
        let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal_entries WHERE reference = 'bad'").fetch_one(db.pool()).await.unwrap();
        assert_eq!(entries, 0);
        assert_eq!(balance(&db, wallet).await, 100);
        assert_eq!(balance(&db, shop).await, 0);
    }
}

async fn accounts(db: &Db) -> (AccountId, AccountId, AccountId) {
    let mut tx = db.begin().await.unwrap();
    let now = 0;
    let funding =
        ledger::create_account(&mut tx, AccountKind::FundingClearing, Currency::Jpy, None, now).await.unwrap();
    let wallet = ledger::create_account(&mut tx, AccountKind::Wallet, Currency::Jpy, None, now).await.unwrap();
    let shop = ledger::create_account(&mut tx, AccountKind::Merchant, Currency::Jpy, None, now).await.unwrap();
    tx.commit().await.unwrap();
    (funding, wallet, shop)
}

/// Posts one entry in its own transaction, retried as the service does.
async fn post(db: &Db, entry: NewEntry) -> Result<ledger::Posted, LedgerError> {
    store::retry(|| async {
        let mut tx = db.begin().await?;
        let posted = ledger::post(&mut tx, &entry, 0).await?;
        tx.commit().await?;
        Ok(posted)
    })
    .await
}

async fn balance(db: &Db, account: AccountId) -> i64 {
    let mut conn = db.pool().acquire().await.unwrap();
    ledger::account(&mut conn, account).await.unwrap().unwrap().balance.0
}

/// One step of a random sequence over three wallets, a merchant and a funding account.
#[derive(Debug, Clone)]
enum Op {
    Credit { wallet: usize, amount: i64 },
    Debit { wallet: usize, amount: i64 },
    Transfer { from: usize, to: usize, amount: i64 },
    Split { from: usize, amounts: Vec<i64> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 1..5_000i64).prop_map(|(wallet, amount)| Op::Credit { wallet, amount }),
        (0..3usize, 1..5_000i64).prop_map(|(wallet, amount)| Op::Debit { wallet, amount }),
        (0..3usize, 0..3usize, 1..5_000i64).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        (0..3usize, prop::collection::vec(1..2_000i64, 1..4)).prop_map(|(from, amounts)| Op::Split { from, amounts }),
    ]
}

/// Random sequences of credits, debits and transfers never break the invariants: every balance
/// equals the model's, no wallet goes below zero, the books sum to zero, and `verify` is clean.
fn property_run(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Some(app) = rt.block_on(TestApp::spawn(backend)) else {
        return;
    };
    let db = app.db().clone();
    let cases = if backend == Backend::Sqlite { 48 } else { 24 };
    let mut runner =
        proptest::test_runner::TestRunner::new(proptest::test_runner::Config { cases, ..Default::default() });
    runner
        .run(&prop::collection::vec(op(), 1..40), |ops| {
            rt.block_on(async {
                let mut tx = db.begin().await.unwrap();
                let funding = ledger::create_account(&mut tx, AccountKind::FundingClearing, Currency::Jpy, None, 0)
                    .await
                    .unwrap();
                let shop =
                    ledger::create_account(&mut tx, AccountKind::Merchant, Currency::Jpy, None, 0).await.unwrap();
                let mut wallets = Vec::new();
                for _ in 0..3 {
                    wallets.push(
                        ledger::create_account(&mut tx, AccountKind::Wallet, Currency::Jpy, None, 0).await.unwrap(),
                    );
                }
                tx.commit().await.unwrap();
                let mut model: HashMap<AccountId, i64> = HashMap::new();
                for op in &ops {
                    let postings: Vec<(AccountId, i64)> = match op {
                        Op::Credit { wallet, amount } => {
                            vec![(funding, -amount), (wallets[*wallet], *amount)]
                        }
                        Op::Debit { wallet, amount } => {
                            vec![(wallets[*wallet], -amount), (shop, *amount)]
                        }
                        Op::Transfer { from, to, amount } if from != to => {
                            vec![(wallets[*from], -amount), (wallets[*to], *amount)]
                        }
                        Op::Transfer { .. } => continue,
                        Op::Split { from, amounts } => {
                            let mut p = vec![(wallets[*from], -amounts.iter().sum::<i64>())];
                            p.extend(amounts.iter().enumerate().map(|(i, a)| (wallets[(from + 1 + i % 2) % 3], *a)));
                            p
                        }
                    };
                    // What the model expects: refused if any wallet would end below zero.
                    let mut next = model.clone();
                    for (a, amt) in &postings {
                        *next.entry(*a).or_default() += amt;
                    }
                    let would_overdraw = wallets.iter().any(|w| next.get(w).copied().unwrap_or(0) < 0);
                    let entry = NewEntry {
                        kind: EntryKind::Adjustment,
                        reference: "prop".into(),
                        currency: Currency::Jpy,
                        postings: postings.iter().map(|(a, amt)| Posting { account: *a, amount: Yen(*amt) }).collect(),
                    };
                    match post(&db, entry).await {
                        Ok(_) => {
                            prop_assert!(!would_overdraw, "an overdraft was accepted: {op:?}");
                            model = next;
                        }
                        Err(LedgerError::InsufficientFunds(_)) => {
                            prop_assert!(would_overdraw, "a covered entry was refused: {op:?}")
                        }
                        Err(e) => {
                            return Err(TestCaseError::fail(format!("unexpected error {e} for {op:?}")));
                        }
                    }
                }
                let mut total = 0;
                for a in [funding, shop].iter().chain(wallets.iter()) {
                    let b = balance(&db, *a).await;
                    prop_assert_eq!(b, model.get(a).copied().unwrap_or(0), "balance of {}", a);
                    total += b;
                }
                prop_assert_eq!(total, 0, "the books do not sum to zero");
                for w in &wallets {
                    prop_assert!(balance(&db, *w).await >= 0);
                }
                prop_assert!(ledger::verify(&db).await.unwrap().is_empty());
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(async move { drop(app) });
}

#[test]
fn random_sequences_keep_the_invariants_on_sqlite() {
    property_run(Backend::Sqlite);
}

#[test]
fn random_sequences_keep_the_invariants_on_postgres() {
    property_run(Backend::Postgres);
}
