//! Undoing fraud: chargebacks reported by the card processor, and corrections of a fraudulent
//! payment or top-up that one operator proposes and a second approves (ARCHITECTURE sections 6, 8).
//!
//! A chargeback (the card's owner disputed a top-up) takes the money back from the wallet as far
//! as it can, books the rest to the `losses` account, and freezes the wallet for review. A
//! correction is a new journal entry, never an edit: a payment's correction returns what is left of
//! it from the merchant to the wallet; a top-up's correction takes it back out of the wallet into
//! funding clearing (the money goes back to the card), the shortfall to `losses`.

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use super::topups::funding_account;
use crate::http::error::ApiError;
use crate::identity;
use crate::ids::new_id;
use crate::ledger::{self, AccountId, AccountKind, EntryKind, NewEntry, Posting};
use crate::money::{Currency, Yen};
use crate::notify::{self, Channel, Message};
use crate::store::{self, Conn, Db};

const LOSSES_OWNER: &str = "omamori";

/// What a reported chargeback did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Chargeback {
    pub topup_id: String,
    pub status: ChargebackStatus,
    /// Yen taken back from the wallet (absent when the report is a repeat).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub from_wallet: Option<i64>,
    /// Yen the wallet could not cover, booked to losses (absent when the report is a repeat).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub to_losses: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChargebackStatus {
    ChargedBack,
    /// A repeat of a report already applied: nothing more was done.
    AlreadyChargedBack,
}

impl Chargeback {
    /// The answer to a repeated report.
    pub fn repeated(topup_id: &str) -> Chargeback {
        Chargeback {
            topup_id: topup_id.to_string(),
            status: ChargebackStatus::AlreadyChargedBack,
            from_wallet: None,
            to_losses: None,
        }
    }
}

/// Where a correction stands.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionState {
    Proposed,
    Applied,
}

/// A correction as proposed, or applied with what it did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Correction {
    pub correction_id: String,
    pub status: CorrectionState,
    /// What the applied correction undid (absent while proposed).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub result: Option<Reversed>,
}

/// What a correction undid: a payment, or a top-up with where its money came from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Reversed {
    Payment {
        payment_id: String,
        #[schema(value_type = String, example = "reversed")]
        status: &'static str,
    },
    Topup {
        topup_id: String,
        #[schema(value_type = String, example = "reversed")]
        status: &'static str,
        /// Yen taken back from the wallet.
        from_wallet: i64,
        /// Yen the wallet could not cover, booked to losses.
        to_losses: i64,
    },
}

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
    topup_id: &str,
    kind: EntryKind,
    reference: &str,
    now: i64,
) -> Result<(String, i64, i64), ApiError> {
    let row = sqlx::query(
        "SELECT t.user_id, t.amount, t.status, u.wallet_account_id FROM topups t JOIN users u ON u.id = t.user_id WHERE t.id = $1",
    )
    .bind(topup_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("there is no such top-up"))?;
    let (user_id, amount, status, wallet): (String, i64, String, i64) =
        (row.try_get("user_id")?, row.try_get("amount")?, row.try_get("status")?, row.try_get("wallet_account_id")?);
    if status != "succeeded" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_reversible",
            format!("this top-up is {status}, not succeeded"),
        ));
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

/// A chargeback reported by the processor for a top-up: once per top-up (a repeat finds it done).
pub async fn chargeback(db: &Db, topup_id: &str, now: i64) -> Result<Chargeback, ApiError> {
    let (_user, from_wallet, shortfall) = store::retry(|| async {
        let mut tx = db.begin().await?;
        tx.lock("topup", topup_id).await?;
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM topups WHERE id = $1")
            .bind(topup_id)
            .fetch_optional(&mut *tx)
            .await?;
        if status.as_deref() == Some("charged_back") {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_charged_back",
                "this top-up was charged back already",
            ));
        }
        let result = claw_back(&mut tx, topup_id, EntryKind::Chargeback, topup_id, now).await?;
        let detail = json!({"topup_id": topup_id, "from_wallet": result.1, "to_losses": result.2});
        crate::audit::append(&mut tx, "processor", "topup.chargeback", &result.0, &detail, now).await?;
        // The wallet is frozen for review, in the same transaction.
        let reason = format!("chargeback of top-up {topup_id}");
        crate::identity::freeze_in(&mut tx, &result.0, &reason, "system:chargeback", now).await?;
        tx.commit().await?;
        Ok(result)
    })
    .await?;
    Ok(Chargeback {
        topup_id: topup_id.to_string(),
        status: ChargebackStatus::ChargedBack,
        from_wallet: Some(from_wallet),
        to_losses: Some(shortfall),
    })
}

/// Proposes a correction (first operator).
pub async fn propose(
    db: &Db,
    kind: &str,
    target: &str,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<Correction, ApiError> {
    if !["payment", "topup"].contains(&kind) {
        return Err(ApiError::invalid_body("kind must be payment or topup"));
    }
    let reason = crate::risk::switches::check_reason(reason)?;
    let id = new_id("cor");
    store::retry(|| async {
        let mut tx = db.begin().await?;
        let table = if kind == "payment" { "payments" } else { "topups" };
        let sql = sqlx::AssertSqlSafe(format!("SELECT status FROM {table} WHERE id = $1"));
        let status: Option<String> = sqlx::query_scalar(sql).bind(target).fetch_optional(&mut *tx).await?;
        match status.as_deref() {
            None => return Err(ApiError::not_found(format!("there is no such {kind}"))),
            Some("succeeded") => {}
            Some(other) => {
                return Err(ApiError::new(StatusCode::CONFLICT, "not_reversible", format!("this {kind} is {other}")));
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
        Ok(())
    })
    .await?;
    Ok(Correction { correction_id: id, status: CorrectionState::Proposed, result: None })
}

/// Approves and applies a correction (a second, different operator).
pub async fn approve(db: &Db, id: &str, by: &str, now: i64) -> Result<Correction, ApiError> {
    store::retry(|| async {
        let mut tx = db.begin().await?;
        tx.lock("correction", id).await?;
        let row = sqlx::query("SELECT target_kind, target_id, state, proposed_by FROM corrections WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::not_found("there is no such correction"))?;
        let (kind, target, state, proposed_by): (String, String, String, String) =
            (row.try_get("target_kind")?, row.try_get("target_id")?, row.try_get("state")?, row.try_get("proposed_by")?);
        if state != "proposed" {
            return Err(ApiError::new(StatusCode::CONFLICT, "already_applied", "this correction was applied already"));
        }
        if proposed_by == by {
            return Err(ApiError::new(StatusCode::CONFLICT, "second_operator_required", "a correction takes a second, different operator"));
        }
        let (user_id, result) = if kind == "payment" {
            // The same row lock refunds and till reversals take, so none of them interleave.
            super::pos::lock_payment(&mut tx, &target).await?;
            let user_id: String = sqlx::query_scalar("SELECT user_id FROM payments WHERE id = $1").bind(&target).fetch_one(&mut *tx).await?;
            super::pos::reverse(&mut tx, &target, now).await?;
            (user_id, Reversed::Payment { payment_id: target.clone(), status: "reversed" })
        } else {
            tx.lock("topup", &target).await?;
            let (user_id, from_wallet, shortfall) = claw_back(&mut tx, &target, EntryKind::Adjustment, id, now).await?;
            (user_id, Reversed::Topup { topup_id: target.clone(), status: "reversed", from_wallet, to_losses: shortfall })
        };
        let stored = serde_json::to_value(&result).map_err(ApiError::internal)?;
        sqlx::query("UPDATE corrections SET state = 'applied', approved_by = $1, applied_at = $2, result = $3 WHERE id = $4")
            .bind(by)
            .bind(now)
            .bind(stored.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        crate::audit::append(&mut tx, by, "correction.approve", id, &stored, now).await?;
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
        Ok(Correction { correction_id: id.to_string(), status: CorrectionState::Applied, result: Some(result) })
    })
    .await
}
