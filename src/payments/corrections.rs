//! Undoing fraud: chargebacks reported by the card processor, and corrections of a fraudulent
//! payment or top-up that one operator proposes and a second approves (ARCHITECTURE sections 6, 8).
//!
//! A chargeback (the card's owner disputed a top-up) takes the money back from the wallet as far
//! as it can, books the rest to the `losses` account, and freezes the wallet for review. A
//! correction is a new journal entry, never an edit: a payment's correction returns what is left of
//! it from the merchant to the wallet; a top-up's correction takes it back out of the wallet into
//! funding clearing (the money goes back to the card), the shortfall to `losses`.

use crate::ids::CorrectionId;
use crate::ids::PaymentId;
use crate::ids::TopupId;
use crate::ids::UserId;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use super::PaymentsError;
use super::topups::funding_account;
use crate::identity;
use crate::ledger::{self, AccountId, AccountKind, EntryKind, NewEntry, Posting};
use crate::money::{Currency, Yen};
use crate::notify::{self, Channel, Message};
use crate::store::{self, Conn, Db};

const LOSSES_OWNER: &str = "omamori";

async fn losses_account(conn: &mut Conn, now: i64) -> Result<AccountId, sqlx::Error> {
    if let Some(a) = ledger::account_by_owner(conn, AccountKind::Losses, LOSSES_OWNER).await? {
        return Ok(a.id);
    }
    ledger::create_account(conn, AccountKind::Losses, Currency::Jpy, Some(LOSSES_OWNER), now).await
}

/// Takes a top-up back: from the wallet as far as its balance goes, the rest from `losses`.
/// Answers (taken from the wallet, booked to losses).
async fn claw_back(
    conn: &mut Conn,
    topup_id: &TopupId,
    kind: EntryKind,
    reference: &str,
    now: i64,
) -> Result<(UserId, i64, i64), PaymentsError> {
    let row = sqlx::query(
        "SELECT t.user_id, t.amount, t.status, u.wallet_account_id FROM topups t JOIN users u ON u.id = t.user_id WHERE t.id = $1",
    )
    .bind(topup_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| PaymentsError::NotFound("there is no such top-up".into()))?;
    let (user_id, amount, status, wallet): (UserId, i64, String, i64) =
        (row.try_get("user_id")?, row.try_get("amount")?, row.try_get("status")?, row.try_get("wallet_account_id")?);
    if status != "succeeded" {
        return Err(PaymentsError::NotReversible(format!("this top-up is {status}, not succeeded")));
    }
    // The lock payments take: a payment cannot slip between reading the balance and the debit.
    store::lock_conn(conn, "wallet", &user_id).await?;
    let balance: i64 =
        sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1").bind(wallet).fetch_one(&mut *conn).await?;
    let from_wallet = balance.clamp(0, amount);
    let shortfall = amount - from_wallet;
    let funding = funding_account(conn, now).await?;
    let mut postings = vec![Posting { account: funding, amount: Yen(amount) }];
    if from_wallet > 0 {
        postings.push(Posting { account: AccountId(wallet), amount: Yen(-from_wallet) });
    }
    if shortfall > 0 {
        let losses = losses_account(conn, now).await?;
        postings.push(Posting { account: losses, amount: Yen(-shortfall) });
    }
    let entry = NewEntry { kind, reference: reference.to_string(), currency: Currency::Jpy, postings };
    ledger::post(conn, &entry, now).await?;
    let new_status = if kind == EntryKind::Chargeback { "charged_back" } else { "reversed" };
    sqlx::query("UPDATE topups SET status = $1 WHERE id = $2")
        .bind(new_status)
        .bind(topup_id)
        .execute(&mut *conn)
        .await?;
    Ok((user_id, from_wallet, shortfall))
}

/// What a chargeback or a correction did: a payment reversed, or a top-up clawed back (from the
/// wallet as far as its balance goes, the rest booked to losses).
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Reversed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topup_id: Option<TopupId>,
    /// `reversed` or `charged_back`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_wallet: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_losses: Option<i64>,
}

impl Reversed {
    fn topup(id: &TopupId, status: &str, from_wallet: i64, to_losses: i64) -> Reversed {
        Reversed {
            payment_id: None,
            topup_id: Some(id.clone()),
            status: status.to_string(),
            from_wallet: Some(from_wallet),
            to_losses: Some(to_losses),
        }
    }

    fn payment(id: &PaymentId) -> Reversed {
        Reversed {
            payment_id: Some(id.clone()),
            topup_id: None,
            status: "reversed".into(),
            from_wallet: None,
            to_losses: None,
        }
    }
}

/// A correction's state as an operator's call answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Correction {
    pub correction_id: CorrectionId,
    /// `proposed` or `applied`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Reversed>,
}

/// A chargeback reported by the processor for a top-up: once per top-up (a repeat finds it done).
pub async fn chargeback(db: &Db, topup_id: &TopupId, now: i64) -> Result<Reversed, PaymentsError> {
    let (_user, from_wallet, shortfall) = store::retry(|| async {
        let mut tx = db.begin().await?;
        tx.lock("topup", topup_id).await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM topups WHERE id = $1")
            .bind(topup_id)
            .fetch_optional(&mut *tx)
            .await?;
        if status.as_deref() == Some("charged_back") {
            return Err(PaymentsError::AlreadyChargedBack);
        }
        let result = claw_back(&mut tx, topup_id, EntryKind::Chargeback, topup_id.as_str(), now).await?;
        let detail = json!({"topup_id": topup_id, "from_wallet": result.1, "to_losses": result.2});
        crate::audit::append(&mut tx, "processor", "topup.chargeback", result.0.as_str(), &detail, now).await?;
        // The wallet is frozen for review, in the same transaction.
        let reason = format!("chargeback of top-up {topup_id}");
        crate::identity::freeze::freeze_in(&mut tx, &result.0, &reason, "system:chargeback", now).await?;
        tx.commit().await?;
        Ok(result)
    })
    .await?;
    Ok(Reversed::topup(topup_id, "charged_back", from_wallet, shortfall))
}

/// Proposes a correction (first operator).
pub async fn propose(
    db: &Db,
    kind: &str,
    target: &str,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<Correction, PaymentsError> {
    if !["payment", "topup"].contains(&kind) {
        return Err(PaymentsError::Invalid("kind must be payment or topup".into()));
    }
    let reason = crate::risk::switches::check_reason(reason)?;
    let id = CorrectionId::generate();
    store::retry(|| async {
        let mut tx = db.begin().await?;
        let table = if kind == "payment" { "payments" } else { "topups" };
        let sql = sqlx::AssertSqlSafe(format!("SELECT status FROM {table} WHERE id = $1"));
        let status: Option<String> = sqlx::query_scalar(sql).bind(target).fetch_optional(&mut *tx).await?;
        match status.as_deref() {
            None => return Err(PaymentsError::NotFound(format!("there is no such {kind}"))),
            Some("succeeded") => {}
            Some(other) => {
                return Err(PaymentsError::NotReversible(format!("this {kind} is {other}")));
            }
        }
        sqlx::query(
            "INSERT INTO corrections (id, target_kind, target_id, reason, state, proposed_by, proposed_at) \
             VALUES ($1, $2, $3, $4, 'proposed', $5, $6)",
        )
        .bind(&id)
        .bind(kind)
        .bind(target)
        .bind(reason)
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        crate::audit::append(
            &mut tx,
            by,
            "correction.propose",
            &id,
            &json!({"kind": kind, "target": target, "reason": reason}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok::<_, PaymentsError>(())
    })
    .await?;
    Ok(Correction { correction_id: id, status: "proposed", result: None })
}

/// Approves and applies a correction (a second, different operator).
pub async fn approve(db: &Db, id: &CorrectionId, by: &str, now: i64) -> Result<Correction, PaymentsError> {
    store::retry(|| async {
        let mut tx = db.begin().await?;
        tx.lock("correction", id).await?;
        let row = sqlx::query("SELECT target_kind, target_id, state, proposed_by FROM corrections WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| PaymentsError::NotFound("there is no such correction".into()))?;
        let (kind, target, state, proposed_by): (String, String, String, String) =
            (row.try_get("target_kind")?, row.try_get("target_id")?, row.try_get("state")?, row.try_get("proposed_by")?);
        if state != "proposed" {
            return Err(PaymentsError::AlreadyApplied);
        }
        if proposed_by == by {
            return Err(PaymentsError::SecondOperatorRequired);
        }
        let (user_id, result) = if kind == "payment" {
            let target = PaymentId::from_raw(target);
            // The same row lock refunds and till reversals take, so none of them interleave.
            super::pos::lock_payment(&mut tx, &target).await?;
            let user_id: UserId = sqlx::query_scalar("SELECT user_id FROM payments WHERE id = $1").bind(&target).fetch_one(&mut *tx).await?;
            super::pos::reverse(&mut tx, &target, now).await?;
            (user_id, Reversed::payment(&target))
        } else {
            let target = TopupId::from_raw(target);
            tx.lock("topup", &target).await?;
            let (user_id, from_wallet, shortfall) =
                claw_back(&mut tx, &target, EntryKind::Adjustment, id.as_str(), now).await?;
            (user_id, Reversed::topup(&target, "reversed", from_wallet, shortfall))
        };
        sqlx::query("UPDATE corrections SET state = 'applied', approved_by = $1, applied_at = $2, result = $3 WHERE id = $4")
            .bind(by)
            .bind(now)
            .bind(serde_json::to_string(&result).expect("a correction result serialises"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        crate::audit::append(&mut tx, by, "correction.approve", id, &json!(result), now).await?;
        if let Some(user) = identity::user_by_id(&mut tx, &user_id).await? {
            notify::enqueue(
                &mut tx,
                &Message {
                    channel: Channel::Email,
                    to: user.email.clone(),
                    kind: "correction".into(),
                    subject: Some("A transaction on your wallet was corrected".into()),
                    body: "Omamori's operators corrected a fraudulent transaction on your wallet. See your history for details.".into(),
                    code: None,
                },
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Correction { correction_id: id.clone(), status: "applied", result: Some(result) })
    })
    .await
}

/// A correction as the console lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listed {
    pub correction_id: CorrectionId,
    /// `payment` or `topup`.
    pub kind: String,
    /// The payment's or top-up's id.
    pub target: String,
    pub reason: String,
    /// `proposed` or `applied`.
    pub status: String,
    pub proposed_by: String,
    pub proposed_at: String,
    pub approved_by: Option<String>,
    pub applied_at: Option<String>,
}

/// The newest corrections, proposed ones first (they wait for a second operator).
pub async fn list(db: &Db, limit: i64) -> Result<Vec<Listed>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, target_kind, target_id, reason, state, proposed_by, proposed_at, approved_by, applied_at \
         FROM corrections ORDER BY CASE WHEN state = 'proposed' THEN 0 ELSE 1 END, proposed_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let applied_at: Option<i64> = r.try_get("applied_at")?;
            Ok(Listed {
                correction_id: r.try_get("id")?,
                kind: r.try_get("target_kind")?,
                target: r.try_get("target_id")?,
                reason: r.try_get("reason")?,
                status: r.try_get("state")?,
                proposed_by: r.try_get("proposed_by")?,
                proposed_at: store::clock::rfc3339_ms(r.try_get("proposed_at")?),
                approved_by: r.try_get("approved_by")?,
                applied_at: applied_at.map(store::clock::rfc3339_ms),
            })
        })
        .collect()
}
