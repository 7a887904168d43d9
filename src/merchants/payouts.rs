//! Payouts: merchants' fee rates, bank accounts (each takes effect 72 hours after it is set, every
//! one kept), a settled day's Zengin file and its four-eyes confirmation, which marks it `paid`.

use serde::Serialize;
use sqlx::Row;

use super::settlement::day_bounds;
use super::zengin::{self, Originator, Transfer};
use crate::ids::{MerchantId, MerchantUserId, SettlementId};
use crate::risk::throttle;
use crate::state::AppState;
use crate::store::{self, Conn, Db};

/// A new bank account takes effect this long after it is set.
pub const BANK_ACCOUNT_DELAY_MS: i64 = 72 * 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    /// `422 invalid_body`.
    #[error("{0}")]
    Invalid(String),
    /// `422 holder_kana_not_writable`.
    #[error("holder_kana: {0}")]
    HolderKana(zengin::KanaError),
    /// `404 not_found`.
    #[error("{0}")]
    NotFound(&'static str),
    /// `409 day_not_settled`.
    #[error("{0} is not settled yet")]
    NotSettled(String),
    /// `409 second_operator_required`.
    #[error("a payout confirmation takes a second, different operator")]
    SecondOperatorRequired,
    /// `401 invalid_credentials`: the authenticator code is wrong or was used already.
    #[error("the authenticator code is wrong or was used already")]
    WrongCode,
    /// `429 too_many_attempts` (from the throttle).
    #[error(transparent)]
    Risk(#[from] crate::risk::RiskError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl store::Retryable for PayoutError {
    fn is_retryable(&self) -> bool {
        match self {
            PayoutError::Db(e) => e.is_retryable(),
            PayoutError::Risk(e) => e.is_retryable(),
            PayoutError::Identity(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Sets a merchant's fee rate (0 to 10000 basis points), audited.
pub async fn set_fee_bps(db: &Db, merchant: &MerchantId, bps: i64, actor: &str, now: i64) -> Result<(), PayoutError> {
    if !(0..=10_000).contains(&bps) {
        return Err(PayoutError::Invalid("fee_bps must be from 0 to 10000".into()));
    }
    store::retry(|| async {
        let mut tx = db.begin().await?;
        let n = sqlx::query("UPDATE merchants SET fee_bps = $1 WHERE id = $2")
            .bind(bps)
            .bind(merchant)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(PayoutError::NotFound("there is no such merchant"));
        }
        crate::audit::append(&mut tx, actor, "merchant.fee", merchant, &serde_json::json!({"fee_bps": bps}), now)
            .await?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

/// A bank account as a merchant owner gives it.
#[derive(Debug, Clone)]
pub struct NewBankAccount<'a> {
    pub bank_code: &'a str,
    pub branch_code: &'a str,
    pub account_type: &'a str,
    pub account_number: &'a str,
    pub holder_kana: &'a str,
}

/// Checks a bank account; returns the holder's name in half-width katakana.
pub fn check_bank_account(a: &NewBankAccount<'_>) -> Result<String, PayoutError> {
    let digits = |v: &str, n: usize| v.len() == n && v.bytes().all(|b| b.is_ascii_digit());
    if !digits(a.bank_code, 4) || !digits(a.branch_code, 3) || !digits(a.account_number, 7) {
        return Err(PayoutError::Invalid("bank_code has 4 digits, branch_code 3, account_number 7".into()));
    }
    if !matches!(a.account_type, "ordinary" | "current") {
        return Err(PayoutError::Invalid("account_type is ordinary or current".into()));
    }
    zengin::half_width_kana(a.holder_kana).map_err(PayoutError::HolderKana)
}

/// Records a merchant's new bank account inside the caller's transaction (the caller checked the
/// owner's fresh code); it takes effect [`BANK_ACCOUNT_DELAY_MS`] later. Returns `effective_at`.
pub async fn set_bank_account(
    conn: &mut Conn,
    merchant: &MerchantId,
    account: &NewBankAccount<'_>,
    actor: &str,
    now: i64,
) -> Result<i64, PayoutError> {
    let holder = check_bank_account(account)?;
    let effective_at = now + BANK_ACCOUNT_DELAY_MS;
    let id = format!("bnk_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(
        "INSERT INTO bank_accounts (id, merchant_id, bank_code, branch_code, account_type, account_number, holder_kana, set_by, created_at, effective_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(merchant)
    .bind(account.bank_code)
    .bind(account.branch_code)
    .bind(account.account_type)
    .bind(account.account_number)
    .bind(&holder)
    .bind(actor)
    .bind(now)
    .bind(effective_at)
    .execute(&mut *conn)
    .await?;
    let detail = serde_json::json!({"bank_code": account.bank_code, "branch_code": account.branch_code,
        "account_last3": &account.account_number[4..], "effective_at": effective_at});
    crate::audit::append(conn, actor, "merchant.bank_account", merchant, &detail, now).await?;
    Ok(effective_at)
}

/// Who changes a merchant's bank account: a signed-in owner (the caller checked the role).
pub struct Changer<'a> {
    pub merchant: &'a MerchantId,
    pub user_id: &'a MerchantUserId,
    /// For the audit log (`merchant_user:...`).
    pub actor: &'a str,
}

/// Wrong authenticator codes a merchant user may give in [`throttle::WINDOW_MS`] when changing the
/// bank account, before further tries are refused until the window has passed.
pub const BANK_CODE_TRIES: i64 = 5;
const BANK_CODE_SCOPE: &str = "bank_account_code";

/// `PUT /v1/merchant/bank-account`: checks the owner's fresh authenticator code and records the
/// account in one transaction, with its audit entry, an e-mail to every owner of the merchant and
/// an operator alert; nothing is written when the code is wrong (but the failure is counted).
/// Returns `effective_at` (ms).
pub async fn change_bank_account(
    state: &AppState,
    who: &Changer<'_>,
    account: &NewBankAccount<'_>,
    code: &str,
) -> Result<i64, PayoutError> {
    check_bank_account(account)?;
    let now = state.clock.now_ms();
    let outcome = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let (failed, oldest) =
            throttle::window(&mut tx, BANK_CODE_SCOPE, who.user_id.as_str(), now - throttle::WINDOW_MS).await?;
        if failed >= BANK_CODE_TRIES {
            let retry = oldest.map_or(throttle::WINDOW_MS, |t| t + throttle::WINDOW_MS - now).max(1_000);
            return Err(throttle::too_many(retry).into());
        }
        if !crate::identity::staff::confirm_totp(&mut tx, state, who.user_id, code).await? {
            return Err(PayoutError::WrongCode);
        }
        let effective_at = set_bank_account(&mut tx, who.merchant, account, who.actor, now).await?;
        tell_owners_and_operators(&mut tx, who, account, effective_at, now).await?;
        tx.commit().await?;
        Ok(effective_at)
    })
    .await;
    if matches!(outcome, Err(PayoutError::WrongCode)) {
        let user = who.user_id.as_str();
        store::retry(|| async {
            let mut tx = state.db.begin().await?;
            throttle::record(&mut tx, BANK_CODE_SCOPE, user, now).await?;
            tx.commit().await
        })
        .await?;
    }
    outcome
}

/// Every owner of the merchant gets an e-mail (through the outbox, like every notice) and the
/// operators an alert, in the transaction that set the account.
async fn tell_owners_and_operators(
    conn: &mut Conn,
    who: &Changer<'_>,
    account: &NewBankAccount<'_>,
    effective_at: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let when = crate::store::clock::rfc3339_ms(effective_at);
    let what = format!(
        "bank {} branch {} account ending {} ({})",
        account.bank_code,
        account.branch_code,
        &account.account_number[4..],
        account.account_type
    );
    let owners: Vec<String> =
        sqlx::query_scalar("SELECT email FROM merchant_users WHERE merchant_id = $1 AND role = 'owner' ORDER BY email")
            .bind(who.merchant)
            .fetch_all(&mut *conn)
            .await?;
    for email in owners {
        let message = crate::notify::Message {
            channel: crate::notify::Channel::Email,
            to: email,
            kind: "bank_account_changed".into(),
            subject: Some("Omamori: the bank account for your payouts was changed".into()),
            body: format!(
                "The bank account your payouts go to was changed to {what}. It takes effect at {when}; until \
                 then payouts go to the account in effect before. If you did not make this change, tell Omamori \
                 support at once."
            ),
            code: None,
        };
        crate::notify::enqueue(conn, &message, now).await?;
    }
    let detail =
        format!("merchant {} set a new bank account: {what}, by {}; effective {when}", who.merchant, who.actor);
    crate::risk::alerts::raise_each(conn, "bank_account_changed", "high", &detail, now).await
}

/// One payout of a settled day: a settlement with a positive net and the account in effect.
#[derive(Debug, Clone, Serialize)]
pub struct Payout {
    pub settlement_id: SettlementId,
    pub merchant_id: MerchantId,
    #[serde(skip)]
    pub transfer: Transfer,
}

/// The day's payouts: each settlement of `date` with `net > 0` whose merchant had a bank account
/// in effect when the day ended (the newest such account).
pub async fn payouts(conn: &mut Conn, date: &str) -> Result<Vec<Payout>, PayoutError> {
    let (_, end) = day_bounds(date).ok_or_else(|| PayoutError::Invalid("date must be YYYY-MM-DD".into()))?;
    let rows = sqlx::query(
        "SELECT s.id AS id, s.merchant_id AS merchant_id, s.net AS net, b.bank_code AS bank_code, b.branch_code AS branch_code, \
                b.account_type AS account_type, b.account_number AS account_number, b.holder_kana AS holder_kana \
         FROM settlements s JOIN bank_accounts b ON b.id = ( \
             SELECT b2.id FROM bank_accounts b2 WHERE b2.merchant_id = s.merchant_id AND b2.effective_at <= $2 \
             ORDER BY b2.effective_at DESC, b2.id DESC LIMIT 1) \
         WHERE s.date = $1 AND s.net > 0 ORDER BY s.merchant_id",
    )
    .bind(date)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(payout_from_row).collect()
}

fn payout_from_row(r: &sqlx::any::AnyRow) -> Result<Payout, PayoutError> {
    let kind: String = r.try_get("account_type")?;
    Ok(Payout {
        settlement_id: SettlementId::from_raw(r.try_get::<String, _>("id")?),
        merchant_id: MerchantId::from_raw(r.try_get::<String, _>("merchant_id")?),
        transfer: Transfer {
            bank_code: r.try_get("bank_code")?,
            branch_code: r.try_get("branch_code")?,
            account_type: if kind == "current" { 2 } else { 1 },
            account_number: r.try_get("account_number")?,
            holder_kana: r.try_get("holder_kana")?,
            amount: r.try_get("net")?,
        },
    })
}

async fn require_settled(conn: &mut Conn, date: &str) -> Result<(), PayoutError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM settlement_days WHERE date = $1")
        .bind(date)
        .fetch_one(&mut *conn)
        .await?;
    if n == 0 {
        return Err(PayoutError::NotSettled(date.to_string()));
    }
    Ok(())
}

/// The Zengin file of a settled day; the transfer date (振込指定日) is the day after it.
pub async fn zengin_file(db: &Db, originator: &Originator, date: &str) -> Result<Vec<u8>, PayoutError> {
    let (_, end) = day_bounds(date).ok_or_else(|| PayoutError::Invalid("date must be YYYY-MM-DD".into()))?;
    let mut conn = db.pool().acquire().await?;
    require_settled(&mut conn, date).await?;
    let list = payouts(&mut conn, date).await?;
    let next = super::settlement::tokyo_date(end);
    let mmdd = format!("{}{}", &next[5..7], &next[8..10]);
    let transfers: Vec<Transfer> = list.into_iter().map(|p| p.transfer).collect();
    Ok(zengin::file(originator, &mmdd, &transfers))
}

/// Where a payout confirmation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Confirmation {
    pub date: String,
    /// `false`: asked for, waiting for a second operator; `true`: the day's payouts are `paid`.
    pub confirmed: bool,
    /// How many settlements were marked `paid`.
    pub paid: i64,
}

/// Asks for, or (from a second, different operator) confirms, a settled day's payouts.
pub async fn confirm(db: &Db, date: &str, by: &str, reason: &str, now: i64) -> Result<Confirmation, PayoutError> {
    day_bounds(date).ok_or_else(|| PayoutError::Invalid("date must be YYYY-MM-DD".into()))?;
    store::retry(|| async {
        let mut tx = db.begin().await?;
        tx.lock("payout_confirm", date).await?;
        require_settled(&mut tx, date).await?;
        let row = sqlx::query("SELECT requested_by, confirmed_at FROM payout_confirmations WHERE date = $1")
            .bind(date)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match row {
            None => ask(&mut tx, date, by, reason, now).await?,
            Some(r) if r.try_get::<Option<i64>, _>("confirmed_at")?.is_some() => {
                Confirmation { date: date.into(), confirmed: true, paid: 0 }
            }
            Some(r) if r.try_get::<String, _>("requested_by")? == by => {
                return Err(PayoutError::SecondOperatorRequired);
            }
            Some(_) => mark_paid(&mut tx, date, by, reason, now).await?,
        };
        tx.commit().await?;
        Ok(outcome)
    })
    .await
}

async fn ask(conn: &mut Conn, date: &str, by: &str, reason: &str, now: i64) -> Result<Confirmation, PayoutError> {
    sqlx::query("INSERT INTO payout_confirmations (date, requested_by, reason, requested_at) VALUES ($1, $2, $3, $4)")
        .bind(date)
        .bind(by)
        .bind(reason)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    crate::audit::append(conn, by, "payout.confirm_asked", date, &serde_json::json!({"reason": reason}), now).await?;
    Ok(Confirmation { date: date.into(), confirmed: false, paid: 0 })
}

async fn mark_paid(conn: &mut Conn, date: &str, by: &str, reason: &str, now: i64) -> Result<Confirmation, PayoutError> {
    let list = payouts(conn, date).await?;
    for p in &list {
        sqlx::query("UPDATE settlements SET status = 'paid', paid_at = $1 WHERE id = $2 AND status = 'closed'")
            .bind(now)
            .bind(&p.settlement_id)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("UPDATE payout_confirmations SET confirmed_by = $1, confirmed_at = $2 WHERE date = $3")
        .bind(by)
        .bind(now)
        .bind(date)
        .execute(&mut *conn)
        .await?;
    let detail = serde_json::json!({"reason": reason, "paid": list.len()});
    crate::audit::append(conn, by, "payout.confirmed", date, &detail, now).await?;
    Ok(Confirmation { date: date.into(), confirmed: true, paid: list.len() as i64 })
}
