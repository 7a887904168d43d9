//! Paying in a store: codes the phone shows (consumer-presented), POS charges, refunds,
//! reversals, and paying a store's QR code (merchant-presented).
//!
//! A payment code is random, lives 60 seconds, is bound to the wallet and the device that asked
//! for it (a new code for the same device replaces the old), and is redeemed at most once: the
//! redemption, the limit check, the journal entry, the payment row and the shopper's notice
//! commit together. A terminal that submits unknown codes is refused for 10 minutes after 5 in
//! 10 minutes, and an alert is raised.

use crate::ids::MerchantId;
use crate::ids::PaymentId;
use crate::ids::RefundId;
use crate::ids::StoreId;
use crate::ids::TerminalId;
use crate::ids::UserId;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use super::code::PaymentCode;
use super::{PaymentsError, wallet};
use crate::identity;
use crate::ledger::{self, AccountId, EntryKind, NewEntry};
use crate::merchants::{self, Store};
use crate::money::Yen;
use crate::notify::{self, Channel, Message};
use crate::risk::{alerts, rules, switches, throttle};
use crate::store::{Conn, Db, clock};

pub const CODE_TTL_MS: i64 = 60 * 1000;
pub const UNKNOWN_CODES_LIMIT: i64 = 5;
pub const UNKNOWN_CODES_WINDOW_MS: i64 = 10 * 60 * 1000;
/// How long after a charge the till may reverse it (a charge whose answer it never received);
/// afterwards it refunds (`409 reversal_window_closed`).
pub const REVERSAL_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// `POST /v1/payment-codes`: a fresh code for this wallet and device, replacing the last one.
pub async fn new_code(
    conn: &mut Conn,
    prefix: &str,
    user_id: &UserId,
    device_id: &str,
    now: i64,
) -> Result<NewCode, sqlx::Error> {
    let code = PaymentCode::generate(prefix);
    sqlx::query(
        "UPDATE payment_codes SET state = 'replaced' WHERE user_id = $1 AND device_id = $2 AND state = 'active'",
    )
    .bind(user_id)
    .bind(device_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO payment_codes (code_hash, user_id, device_id, state, created_at, expires_at) VALUES ($1, $2, $3, 'active', $4, $5)",
    )
    .bind(code.lookup_hash())
    .bind(user_id)
    .bind(device_id)
    .bind(now)
    .bind(now + CODE_TTL_MS)
    .execute(&mut *conn)
    .await?;
    Ok(NewCode { code: code.as_str().to_string(), expires_at: clock::rfc3339_ms(now + CODE_TTL_MS) })
}

/// A fresh payment code (`POST /v1/payment-codes`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewCode {
    /// The provider prefix and 18 random digits; printable as a 1-D barcode.
    pub code: String,
    pub expires_at: String,
}

/// Whether `code` is one of `user_id`'s codes (for drawing it).
pub async fn owns_code(
    conn: &mut Conn,
    prefix: &str,
    user_id: &UserId,
    code: &str,
) -> Result<Option<PaymentCode>, sqlx::Error> {
    let Some(code) = PaymentCode::parse(code, prefix) else { return Ok(None) };
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_codes WHERE code_hash = $1 AND user_id = $2")
        .bind(code.lookup_hash())
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok((n == 1).then_some(code))
}

/// Refuses a terminal that has submitted too many unknown codes lately.
pub async fn check_terminal(conn: &mut Conn, terminal_id: &TerminalId, now: i64) -> Result<(), PaymentsError> {
    let row = sqlx::query("SELECT COUNT(*) AS n, MAX(at) AS newest FROM auth_events WHERE scope = 'unknown_code' AND key = $1 AND at > $2")
        .bind(terminal_id)
        .bind(now - UNKNOWN_CODES_WINDOW_MS)
        .fetch_one(&mut *conn)
        .await?;
    let (n, newest): (i64, Option<i64>) = (row.try_get("n")?, row.try_get("newest")?);
    if n >= UNKNOWN_CODES_LIMIT {
        // Refused for 10 minutes after the last unknown code.
        return Err(throttle::too_many(newest.unwrap_or(now) + UNKNOWN_CODES_WINDOW_MS - now).into());
    }
    Ok(())
}

/// Records an unknown code from a terminal (in its own transaction: the payment's rolls back),
/// and raises an alert when the terminal reaches the limit.
pub async fn record_unknown_code(conn: &mut Conn, terminal_id: &TerminalId, now: i64) -> Result<(), sqlx::Error> {
    throttle::record(conn, "unknown_code", terminal_id.as_str(), now).await?;
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM auth_events WHERE scope = 'unknown_code' AND key = $1 AND at > $2")
            .bind(terminal_id)
            .bind(now - UNKNOWN_CODES_WINDOW_MS)
            .fetch_one(&mut *conn)
            .await?;
    if n >= UNKNOWN_CODES_LIMIT {
        alerts::raise(
            conn,
            "unknown_payment_codes",
            "high",
            &format!("terminal {terminal_id} submitted {n} unknown payment codes in 10 minutes: code guessing? It is refused for 10 minutes."),
            now,
        )
        .await?;
    }
    Ok(())
}

/// What a payment needs: who pays, where, how much.
pub struct Charge<'a> {
    /// Where the cached tables are (`store::cache`): the store, switches, rules, endpoints.
    pub db: &'a Db,
    pub user_id: &'a UserId,
    pub store: &'a Store,
    pub terminal_id: Option<&'a TerminalId>,
    pub code_hash: Option<String>,
    pub amount: Yen,
    pub order_ref: Option<&'a str>,
    pub idem_key: Option<&'a str>,
    /// The basket (checked already), empty when the till sent none.
    pub items: &'a [super::baskets::Item],
    /// The key of the `customer_ref` pseudonyms.
    pub analytics_key: &'a [u8],
}

/// What a payment reads of its payer, once, under the wallet's lock: identity's profile (the user,
/// the device's sessions) and the wallet's spending, two round trips for every check that follows
/// (switches by country, risk rules, limits).
pub struct PayerFacts {
    pub profile: identity::PayerProfile,
    pub spending: wallet::Spending,
}

impl PayerFacts {
    pub async fn read(conn: &mut Conn, user_id: &UserId, device_id: &str, now: i64) -> Result<Self, PaymentsError> {
        let profile = identity::payer_profile(conn, user_id, device_id)
            .await?
            .ok_or_else(|| PaymentsError::Internal(anyhow::anyhow!("payer vanished")))?;
        let spending = wallet::spending(conn, user_id, now).await?;
        Ok(PayerFacts { profile, spending })
    }

    /// The facts the payment risk rules see.
    fn risk_facts(&self) -> rules::Facts {
        rules::Facts {
            first_seen_on_device: self.profile.first_seen_on_device,
            last_topup_at: self.spending.last_topup_at,
            credentials_changed_at: self.profile.credentials_changed_at,
            created_at: self.profile.user.created_at,
            events_last_hour: self.spending.payments_since_hour,
            previous_session: self.profile.previous_session.clone(),
        }
    }
}

/// Facts read already, as the risk rules' source.
struct Known(rules::Facts);

impl rules::FactSource for Known {
    fn facts<'a>(
        &'a self,
        _conn: &'a mut Conn,
        _e: &'a rules::Event<'a>,
        _now: i64,
    ) -> crate::ports::BoxFuture<'a, Result<rules::Facts, sqlx::Error>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// Moves the money of a payment, inside the caller's transaction: limits, the debit (which
/// fails when funds are short), the payment row and the notice.
pub async fn pay(conn: &mut Conn, c: &Charge<'_>, facts: &PayerFacts, now: i64) -> Result<PaymentId, PaymentsError> {
    let user = &facts.profile.user;
    wallet::check_spent(&facts.spending, c.amount.0)?;
    let payment_id = PaymentId::generate();
    let entry = NewEntry::transfer(
        EntryKind::Payment,
        &payment_id,
        AccountId(user.wallet_account_id),
        AccountId(credited_account(c.store)),
        c.amount,
    );
    let posted = ledger::post(conn, &entry, now).await?;
    let source = if c.code_hash.is_some() { "code" } else { "store_qr" };
    let customer_ref = merchants::analytics::customer_ref(c.analytics_key, &c.store.merchant_id, &user.id);
    sqlx::query(
        "INSERT INTO payments (id, user_id, merchant_id, store_id, terminal_id, code_hash, source, amount, currency, status, \
         order_ref, idem_key, created_at, customer_ref) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'JPY', 'succeeded', $9, $10, $11, $12)",
    )
    .bind(&payment_id)
    .bind(&user.id)
    .bind(&c.store.merchant_id)
    .bind(&c.store.id)
    .bind(c.terminal_id)
    .bind(&c.code_hash)
    .bind(source)
    .bind(c.amount.0)
    .bind(c.order_ref)
    .bind(c.idem_key)
    .bind(now)
    .bind(&customer_ref)
    .execute(&mut *conn)
    .await?;
    super::baskets::insert(conn, &payment_id, c.items).await?;
    let balance = posted.balance_of(AccountId(user.wallet_account_id)).unwrap_or_default();
    let event = json!({
        "payment_id": payment_id, "store_id": c.store.id, "terminal_id": c.terminal_id, "amount": c.amount.0,
        "currency": "JPY", "order_ref": c.order_ref, "source": source,
    });
    crate::merchants::webhooks::emit_cached(c.db, conn, &c.store.merchant_id, "payment.succeeded", &event, now).await?;
    email(
        conn,
        &user.email,
        "payment",
        format!("You paid {} at {}", c.amount, c.store.name),
        format!("You paid {} at {} ({}). Balance: {balance}.", c.amount, c.store.name, c.store.merchant_name),
        now,
    )
    .await?;
    Ok(payment_id)
}

/// The merchant account a payment credits: the merchant's accounts in turn (from a random start
/// per process), so that payments in flight together update different balance rows. A row lock is
/// held until the payment's commit, fsync included; with more accounts than payments in flight,
/// payments at one busy store do not wait for each other.
fn credited_account(store: &Store) -> i64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: std::sync::OnceLock<AtomicUsize> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicUsize::new(rand::random_range(0..1 << 16)));
    match store.merchant_accounts.len() {
        0 => store.merchant_account,
        n => store.merchant_accounts[next.fetch_add(1, Ordering::Relaxed) % n],
    }
}

/// A payment that went through.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Paid {
    pub payment_id: PaymentId,
    /// Always `succeeded`.
    pub status: &'static str,
    pub amount: i64,
    pub currency: crate::money::Currency,
}

/// How an authorised charge ended: paid, or declined by a risk rule. A decline is a final answer
/// that must commit with the work (its review case, and the spent code).
#[must_use]
pub enum Charged<T> {
    Paid(T),
    Declined(PaymentsError),
}

/// What a code charge needs from the till (`POST /v1/pos/payments`).
pub struct CodeCharge<'a> {
    pub db: &'a Db,
    pub prefix: &'a str,
    pub terminal: &'a merchants::Terminal,
    pub code: &'a str,
    pub amount: Yen,
    pub order_ref: Option<&'a str>,
    pub idem_key: &'a str,
    pub items: &'a [super::baskets::Item],
    pub analytics_key: &'a [u8],
}

/// `POST /v1/pos/payments`, inside the idempotent transaction: redeems the code, then authorises
/// and moves the money. `CodeInvalid` means the terminal sent an unknown code (the caller counts it).
pub async fn charge_code(conn: &mut Conn, c: &CodeCharge<'_>, now: i64) -> Result<Charged<Paid>, PaymentsError> {
    let Some(code) = PaymentCode::parse(c.code, c.prefix) else { return Err(PaymentsError::CodeInvalid) };
    let (user_id, device_id) = redeem(conn, &code, now).await?;
    let store = merchants::store_by_id_cached(c.db, conn, &c.terminal.store_id)
        .await?
        .ok_or_else(|| PaymentsError::Internal(anyhow::anyhow!("terminal without store")))?;
    // The wallet's lock is held since the code was redeemed.
    let facts = PayerFacts::read(conn, &user_id, &device_id, now).await?;
    // The till's address says nothing of the shopper: the shopper's country is that of the newest
    // session of the phone that drew the code (for country-scoped switches).
    let country = facts.profile.device_country.as_deref();
    let payer = Payer { user_id: &user_id, device_id: &device_id, country, fresh_step_up: None };
    let at = Place { store: &store, terminal_id: Some(&c.terminal.id) };
    check_switches(c.db, conn, &payer, &at).await?;
    if let Some(decline) = authorize(c.db, conn, &payer, &at, c.amount, &facts, now).await? {
        return Ok(Charged::Declined(decline));
    }
    let charge = Charge {
        db: c.db,
        user_id: &user_id,
        store: &store,
        terminal_id: Some(&c.terminal.id),
        code_hash: Some(code.lookup_hash()),
        amount: c.amount,
        order_ref: c.order_ref,
        idem_key: Some(c.idem_key),
        items: c.items,
        analytics_key: c.analytics_key,
    };
    let payment_id = pay(conn, &charge, &facts, now).await?;
    Ok(Charged::Paid(Paid {
        payment_id,
        status: "succeeded",
        amount: c.amount.0,
        currency: crate::money::Currency::Jpy,
    }))
}

/// Redeems a payment code at most once (only one transaction can move it from active to used,
/// and the row stays locked by that update until the payment commits or rolls back), then takes
/// its owner's wallet lock; answers its owner and device.
async fn redeem(conn: &mut Conn, code: &PaymentCode, now: i64) -> Result<(UserId, String), PaymentsError> {
    let hash = code.lookup_hash();
    let row = sqlx::query(
        "UPDATE payment_codes SET state = 'used' WHERE code_hash = $1 AND state = 'active' AND expires_at > $2 \
         RETURNING user_id, device_id",
    )
    .bind(&hash)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        // Nothing redeemed: an unknown code, or one used, replaced or expired.
        let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_codes WHERE code_hash = $1")
            .bind(&hash)
            .fetch_one(&mut *conn)
            .await?;
        return Err(if known == 0 { PaymentsError::CodeInvalid } else { PaymentsError::CodeExpired });
    };
    let (user_id, device_id): (UserId, String) = (row.try_get("user_id")?, row.try_get("device_id")?);
    // The lock every money movement of this wallet takes (nothing that holds it waits for a code
    // row, so taking it after the code's row lock cannot deadlock).
    crate::store::lock_conn(conn, "wallet", &user_id).await?;
    Ok((user_id, device_id))
}

/// A payment to a store whose QR code the shopper scanned (`POST /v1/payments`).
pub struct StorePayment<'a> {
    pub db: &'a Db,
    pub payer: Payer<'a>,
    /// The scanned payload, trimmed.
    pub store_qr: &'a str,
    pub amount: Yen,
    pub idem_key: &'a str,
    pub analytics_key: &'a [u8],
}

/// A store-QR payment that went through, with whom it paid.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StorePaid {
    pub payment_id: PaymentId,
    /// Always `succeeded`.
    pub status: &'static str,
    pub amount: i64,
    pub merchant: Payee,
}

/// The payee a shopper's app shows after paying.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Payee {
    pub merchant_id: MerchantId,
    pub name: String,
    pub store_id: StoreId,
    pub store_name: String,
}

/// `POST /v1/payments`, inside the idempotent transaction: the payload must parse and match the
/// store it names (a doctored code is refused), then the payment is authorised and made.
pub async fn pay_store_qr(
    conn: &mut Conn,
    p: &StorePayment<'_>,
    now: i64,
) -> Result<Charged<StorePaid>, PaymentsError> {
    let parsed = merchants::qr::parse(p.store_qr).map_err(PaymentsError::Qr)?;
    let store =
        merchants::store_by_id_cached(p.db, conn, &parsed.store_id).await?.ok_or(PaymentsError::UnknownStore)?;
    if store.qr_payload() != p.store_qr {
        return Err(PaymentsError::QrMismatch);
    }
    let at = Place { store: &store, terminal_id: None };
    check_switches(p.db, conn, &p.payer, &at).await?;
    crate::store::lock_conn(conn, "wallet", p.payer.user_id.as_str()).await?;
    let facts = PayerFacts::read(conn, p.payer.user_id, p.payer.device_id, now).await?;
    if let Some(decline) = authorize(p.db, conn, &p.payer, &at, p.amount, &facts, now).await? {
        return Ok(Charged::Declined(decline));
    }
    let charge = Charge {
        db: p.db,
        user_id: p.payer.user_id,
        store: &store,
        terminal_id: None,
        code_hash: None,
        amount: p.amount,
        order_ref: None,
        idem_key: Some(p.idem_key),
        items: &[],
        analytics_key: p.analytics_key,
    };
    let payment_id = pay(conn, &charge, &facts, now).await?;
    let merchant = Payee {
        merchant_id: store.merchant_id.clone(),
        name: store.merchant_name.clone(),
        store_id: store.id.clone(),
        store_name: store.name.clone(),
    };
    Ok(Charged::Paid(StorePaid { payment_id, status: "succeeded", amount: p.amount.0, merchant }))
}

/// Who pays, as the switches and the risk rules see them.
pub struct Payer<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a str,
    pub country: Option<&'a str>,
    /// When the shopper's session last proved a second factor, if the shopper can be asked for one
    /// (a shopper paying from the phone can; a till cannot wait for it).
    pub fresh_step_up: Option<i64>,
}

/// Where the money goes.
pub struct Place<'a> {
    pub store: &'a Store,
    pub terminal_id: Option<&'a TerminalId>,
}

/// The `payments` switches every payment passes first: for the user, the merchant and the country.
async fn check_switches(db: &Db, conn: &mut Conn, payer: &Payer<'_>, at: &Place<'_>) -> Result<(), PaymentsError> {
    let subject = switches::Subject {
        user_id: Some(payer.user_id),
        merchant_id: Some(&at.store.merchant_id),
        country: payer.country,
        ..Default::default()
    };
    Ok(switches::check_cached(db, conn, crate::ids::SwitchName::Payments, subject).await?)
}

/// The risk rules every payment passes, in its transaction and under its wallet's lock (after
/// [`check_switches`]). A rule's hold or decline opens a review case and answers the decline to
/// commit; a step-up the shopper can give is asked for (`403`, rolled back); a till cannot wait,
/// so there any outcome but allow declines.
async fn authorize(
    db: &Db,
    conn: &mut Conn,
    payer: &Payer<'_>,
    at: &Place<'_>,
    amount: Yen,
    facts: &PayerFacts,
    now: i64,
) -> Result<Option<PaymentsError>, PaymentsError> {
    // The rules see the shopper's own country only when the shopper is at hand (a till's is not).
    let country = payer.fresh_step_up.and(payer.country);
    let mcc = Some(at.store.category.as_str());
    let signals = rules::signals(
        conn,
        &Known(facts.risk_facts()),
        &rules::Event {
            kind: rules::RuleEvent::Payment,
            user_id: payer.user_id,
            device_id: payer.device_id,
            amount: amount.0,
            mcc,
            country,
        },
        now,
    )
    .await?;
    let rule = match rules::evaluate_cached(db, conn, rules::RuleEvent::Payment, &signals).await? {
        (rules::Outcome::Allow, _) | (_, None) => return Ok(None),
        (rules::Outcome::StepUp, Some(_))
            if payer.fresh_step_up.is_some_and(|at| at + identity::STEP_UP_TTL_MS > now) =>
        {
            return Ok(None);
        }
        // Inside this transaction a challenge cannot be made (it would roll back with the refusal):
        // the app starts one with POST /v1/step-up and repeats.
        (rules::Outcome::StepUp, Some(_)) if payer.fresh_step_up.is_some() => {
            return Err(PaymentsError::StepUpRequired);
        }
        (_, Some(rule)) => rule,
    };
    let detail = rules::ReviewDetail {
        store_id: Some(at.store.id.clone()),
        terminal_id: at.terminal_id.cloned(),
        amount: Some(amount.0),
        ..Default::default()
    };
    let review = rules::open_review(conn, "payment", None, payer.user_id, &rule, &detail, now).await?;
    Ok(Some(rules::risk_declined(Some(&review)).into()))
}

/// A payment as the POS sees it, with its refunds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub payment_id: PaymentId,
    pub store_id: StoreId,
    pub amount: i64,
    pub refunded: i64,
    pub currency: crate::money::Currency,
    /// `succeeded` or `reversed`.
    pub status: String,
    /// `code` (the phone showed a code) or `store_qr` (the phone scanned the store).
    pub source: String,
    pub order_ref: Option<String>,
    pub created_at: String,
    pub refunds: Vec<Refunded>,
}

/// A refund of a payment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Refunded {
    pub refund_id: RefundId,
    pub amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<crate::money::Currency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// A payment of `merchant_id`, with its refunds.
pub async fn payment_view(
    conn: &mut Conn,
    payment_id: &PaymentId,
    merchant_id: &MerchantId,
) -> Result<Option<PaymentView>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, store_id, amount, refunded, status, order_ref, source, created_at FROM payments WHERE id = $1 AND merchant_id = $2",
    )
    .bind(payment_id)
    .bind(merchant_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let refunds =
        sqlx::query("SELECT id, amount, created_at FROM refunds WHERE payment_id = $1 ORDER BY created_at, id")
            .bind(payment_id)
            .fetch_all(&mut *conn)
            .await?;
    let refunds = refunds
        .iter()
        .map(|f| {
            Ok::<_, sqlx::Error>(Refunded {
                refund_id: f.try_get("id")?,
                amount: f.try_get("amount")?,
                currency: None,
                created_at: Some(clock::rfc3339_ms(f.try_get("created_at")?)),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(PaymentView {
        payment_id: r.try_get("id")?,
        store_id: r.try_get("store_id")?,
        amount: r.try_get("amount")?,
        refunded: r.try_get("refunded")?,
        currency: crate::money::Currency::Jpy,
        status: r.try_get("status")?,
        source: r.try_get("source")?,
        order_ref: r.try_get("order_ref")?,
        created_at: clock::rfc3339_ms(r.try_get("created_at")?),
        refunds,
    }))
}

/// Serialises the refunds, reversal and correction of one payment: a row lock on PostgreSQL (on
/// SQLite the writer lock already does).
pub async fn lock_payment(conn: &mut Conn, payment_id: &PaymentId) -> Result<(), sqlx::Error> {
    if conn.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT id FROM payments WHERE id = $1 FOR UPDATE").bind(payment_id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Refunds part or all of a payment, inside the caller's transaction, which must hold the
/// payment's lock (two refunds of one payment never interleave).
pub async fn refund(
    conn: &mut Conn,
    payment_id: &PaymentId,
    merchant_id: &MerchantId,
    amount: Yen,
    items: &[super::baskets::ReturnedItem],
    now: i64,
) -> Result<Refunded, PaymentsError> {
    let row = sqlx::query(
        "SELECT p.user_id, p.amount, p.refunded, p.status, m.account_id FROM payments p \
                           JOIN merchants m ON m.id = p.merchant_id WHERE p.id = $1 AND p.merchant_id = $2",
    )
    .bind(payment_id)
    .bind(merchant_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| PaymentsError::NotFound("there is no such payment".into()))?;
    let (user_id, paid, refunded, status, merchant_account): (UserId, i64, i64, String, i64) = (
        row.try_get("user_id")?,
        row.try_get("amount")?,
        row.try_get("refunded")?,
        row.try_get("status")?,
        row.try_get("account_id")?,
    );
    if status != "succeeded" || refunded + amount.0 > paid {
        let refundable = if status == "succeeded" { paid - refunded } else { 0 };
        return Err(PaymentsError::RefundExceedsPayment { refundable });
    }
    let subject = switches::Subject { user_id: Some(&user_id), merchant_id: Some(merchant_id), ..Default::default() };
    switches::check(conn, crate::ids::SwitchName::Refunds, subject).await?;
    let user = identity::user_by_id(conn, &user_id)
        .await?
        .ok_or_else(|| PaymentsError::Internal(anyhow::anyhow!("payer vanished")))?;
    let refund_id = RefundId::generate();
    let insert = "INSERT INTO refunds (id, payment_id, amount, currency, created_at) VALUES ($1, $2, $3, 'JPY', $4)";
    sqlx::query(insert).bind(&refund_id).bind(payment_id).bind(amount.0).bind(now).execute(&mut *conn).await?;
    super::baskets::return_items(conn, payment_id, &refund_id, items, amount.0).await?;
    let entry = NewEntry::transfer(
        EntryKind::Refund,
        &refund_id,
        AccountId(merchant_account),
        AccountId(user.wallet_account_id),
        amount,
    );
    ledger::post(conn, &entry, now).await?;
    sqlx::query("UPDATE payments SET refunded = refunded + $1 WHERE id = $2")
        .bind(amount.0)
        .bind(payment_id)
        .execute(&mut *conn)
        .await?;
    let event = json!({
        "payment_id": payment_id, "refund_id": refund_id, "amount": amount.0, "currency": "JPY",
        "refunded_total": refunded + amount.0,
    });
    crate::merchants::webhooks::emit(conn, merchant_id, "payment.refunded", &event, now).await?;
    email(
        conn,
        &user.email,
        "refund",
        format!("You were refunded {amount}"),
        format!("{amount} was refunded to your Omamori wallet."),
        now,
    )
    .await?;
    Ok(Refunded { refund_id, amount: amount.0, currency: Some(crate::money::Currency::Jpy), created_at: None })
}

/// A till's reversal of its payment (`POST /v1/pos/reversals`), inside the caller's locked
/// transaction. It gives money back as a refund does, so the `refunds` switches and freezes stop it
/// too; and it is accepted only within [`REVERSAL_WINDOW_MS`] of the charge (then the till
/// refunds). A payment reversed already answers as reversed: nothing moves.
pub async fn reverse_at_till(conn: &mut Conn, payment_id: &PaymentId, now: i64) -> Result<(), PaymentsError> {
    let row = sqlx::query("SELECT user_id, merchant_id, status, created_at FROM payments WHERE id = $1")
        .bind(payment_id)
        .fetch_one(&mut *conn)
        .await?;
    let (user_id, merchant_id, status, created_at): (UserId, MerchantId, String, i64) =
        (row.try_get("user_id")?, row.try_get("merchant_id")?, row.try_get("status")?, row.try_get("created_at")?);
    if status == "reversed" {
        return Ok(());
    }
    let subject = switches::Subject { user_id: Some(&user_id), merchant_id: Some(&merchant_id), ..Default::default() };
    switches::check(conn, crate::ids::SwitchName::Refunds, subject).await?;
    if now - created_at >= REVERSAL_WINDOW_MS {
        return Err(PaymentsError::ReversalWindowClosed);
    }
    reverse(conn, payment_id, now).await
}

/// Undoes a whole payment (a till's reversal, or an operators' correction), inside the caller's
/// locked transaction.
pub async fn reverse(conn: &mut Conn, payment_id: &PaymentId, now: i64) -> Result<(), PaymentsError> {
    let row = sqlx::query(
        "SELECT p.user_id, p.amount, p.refunded, p.status, p.merchant_id, m.account_id FROM payments p \
                           JOIN merchants m ON m.id = p.merchant_id WHERE p.id = $1",
    )
    .bind(payment_id)
    .fetch_one(&mut *conn)
    .await?;
    let merchant_id: MerchantId = row.try_get("merchant_id")?;
    let (user_id, paid, refunded, status, merchant_account): (UserId, i64, i64, String, i64) = (
        row.try_get("user_id")?,
        row.try_get("amount")?,
        row.try_get("refunded")?,
        row.try_get("status")?,
        row.try_get("account_id")?,
    );
    if status == "reversed" {
        return Ok(());
    }
    let user = identity::user_by_id(conn, &user_id)
        .await?
        .ok_or_else(|| PaymentsError::Internal(anyhow::anyhow!("payer vanished")))?;
    let back = paid - refunded;
    if back > 0 {
        let entry = NewEntry::transfer(
            EntryKind::Reversal,
            payment_id,
            AccountId(merchant_account),
            AccountId(user.wallet_account_id),
            Yen(back),
        );
        ledger::post(conn, &entry, now).await?;
    }
    sqlx::query("UPDATE payments SET status = 'reversed' WHERE id = $1").bind(payment_id).execute(&mut *conn).await?;
    let event = json!({"payment_id": payment_id, "amount": paid, "returned": back, "currency": "JPY"});
    crate::merchants::webhooks::emit(conn, &merchant_id, "payment.reversed", &event, now).await?;
    email(
        conn,
        &user.email,
        "reversal",
        format!("A payment of ¥{paid} was cancelled"),
        format!("A payment of ¥{paid} was cancelled by the store and ¥{back} returned to your wallet."),
        now,
    )
    .await?;
    Ok(())
}

/// Tells the shopper by e-mail, in the caller's transaction.
async fn email(
    conn: &mut Conn,
    to: &str,
    kind: &str,
    subject: String,
    body: String,
    now: i64,
) -> Result<(), sqlx::Error> {
    let message = Message {
        channel: Channel::Email,
        to: to.to_string(),
        kind: kind.into(),
        subject: Some(subject),
        body,
        code: None,
    };
    notify::enqueue(conn, &message, now).await.map(|_| ())
}
