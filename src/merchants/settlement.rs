//! Settlement: each Asia/Tokyo day, every merchant's payments and refunds not yet settled close into
//! one settlement (its lines, its figures) and the merchant's money moves in the ledger, in one
//! transaction with the rows. A day is claimed by a `settlement_days` row under a lock, so that a
//! repeat (or a second instance) changes nothing.

use serde::Serialize;
use sqlx::Row;

use crate::ids::{MerchantId, SettlementId, StoreId};
use crate::ledger::{self, AccountId, AccountKind, EntryKind, NewEntry, Posting};
use crate::money::{Currency, Yen};
use crate::store::{self, Conn, Db};

/// The payouts clearing account's owner reference (kind `funding_clearing`).
pub const PAYOUTS_OWNER: &str = "payouts";
/// The fee revenue account's owner reference (kind `fees`).
pub const FEE_REVENUE_OWNER: &str = "fee_revenue";
const DAY_MS: i64 = 86_400_000;
const TOKYO_OFFSET_MS: i64 = 9 * 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// `422 invalid_body`.
    #[error("date must be YYYY-MM-DD")]
    InvalidDate,
    /// `409 day_not_ended`.
    #[error("{0} has not ended yet in Asia/Tokyo by the service clock")]
    NotEnded(String),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl store::Retryable for SettleError {
    fn is_retryable(&self) -> bool {
        match self {
            SettleError::Db(e) => e.is_retryable(),
            SettleError::Ledger(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The Asia/Tokyo date (`YYYY-MM-DD`) of an instant in ms.
pub fn tokyo_date(ms: i64) -> String {
    let days = (ms + TOKYO_OFFSET_MS).div_euclid(DAY_MS);
    let date = time::Date::from_julian_day(2_440_588 + days as i32).unwrap_or(time::Date::MIN);
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}

/// The day's bounds in ms: `[start, end)`, Asia/Tokyo.
pub fn day_bounds(date: &str) -> Option<(i64, i64)> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if date.len() != 10 {
        return None;
    }
    let d = time::Date::parse(date, &fmt).ok()?;
    let start = (i64::from(d.to_julian_day()) - 2_440_588) * DAY_MS - TOKYO_OFFSET_MS;
    Some((start, start + DAY_MS))
}

/// One payment or refund in a settlement (`amount` is positive for both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Line {
    pub kind: String,
    pub id: String,
    pub store_id: StoreId,
    pub amount: i64,
    pub created_at: i64,
}

/// A settlement's figures, in yen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Figures {
    pub payments: i64,
    pub gross: i64,
    pub refunds: i64,
    pub fee: i64,
    pub carried_over: i64,
    pub net: i64,
}

impl Figures {
    /// `fee = max(0, floor((gross − refunds) × fee_bps / 10000))`, `net = gross − refunds − fee + carried_over`.
    pub fn of(lines: &[Line], fee_bps: i64, carried_over: i64) -> Figures {
        let pay = lines.iter().filter(|l| l.kind == "payment");
        let payments = pay.clone().count() as i64;
        let gross: i64 = pay.map(|l| l.amount).sum();
        // What went back to shoppers: refunds and reversals.
        let refunds: i64 = lines.iter().filter(|l| l.kind != "payment").map(|l| l.amount).sum();
        let base = i128::from(gross - refunds);
        let fee = if base <= 0 { 0 } else { (base * i128::from(fee_bps) / 10_000) as i64 };
        Figures { payments, gross, refunds, fee, carried_over, net: gross - refunds - fee + carried_over }
    }

    /// `carried` when the net is negative (carried to the next day), else `closed`.
    pub fn status(&self) -> &'static str {
        if self.net < 0 { "carried" } else { "closed" }
    }

    /// The ledger postings of closing: the merchant pays the fee to fee revenue and a positive net
    /// to payouts clearing (a negative net stays in the merchant's account, carried).
    pub fn postings(&self, merchant: AccountId, fees: AccountId, clearing: AccountId) -> Vec<Posting> {
        let fee = self.fee.max(0);
        let paid = self.net.max(0);
        let mut out = Vec::new();
        if fee + paid > 0 {
            out.push(Posting { account: merchant, amount: Yen(-(fee + paid)) });
        }
        if fee > 0 {
            out.push(Posting { account: fees, amount: Yen(fee) });
        }
        if paid > 0 {
            out.push(Posting { account: clearing, amount: Yen(paid) });
        }
        out
    }
}

/// What settling a day did.
#[derive(Debug, Clone, Serialize)]
pub struct DayReport {
    pub date: String,
    /// False when the day was already closed (nothing changed).
    pub closed_now: bool,
    pub settlements: Vec<(MerchantId, SettlementId, Figures)>,
}

async fn system_account(conn: &mut Conn, kind: AccountKind, owner: &str, now: i64) -> Result<AccountId, sqlx::Error> {
    store::lock_conn(conn, "system_account", owner).await?;
    if let Some(a) = ledger::account_by_owner(conn, kind, owner).await? {
        return Ok(a.id);
    }
    ledger::create_account(conn, kind, Currency::Jpy, Some(owner), now).await
}

/// Settles one Asia/Tokyo day for every merchant; a day already closed changes nothing.
pub async fn settle_day(db: &Db, date: &str, now_ms: i64) -> Result<DayReport, SettleError> {
    let (_, end) = day_bounds(date).ok_or(SettleError::InvalidDate)?;
    if end > now_ms {
        return Err(SettleError::NotEnded(date.to_string()));
    }
    store::retry(|| async {
        let mut tx = db.begin().await?;
        tx.lock("settlement_day", date).await?;
        let claimed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM settlement_days WHERE date = $1")
            .bind(date)
            .fetch_one(&mut *tx)
            .await?;
        if claimed > 0 {
            tx.rollback().await?;
            return Ok(DayReport { date: date.to_string(), closed_now: false, settlements: vec![] });
        }
        let fees = system_account(&mut tx, AccountKind::Fees, FEE_REVENUE_OWNER, now_ms).await?;
        let clearing = system_account(&mut tx, AccountKind::FundingClearing, PAYOUTS_OWNER, now_ms).await?;
        let merchants =
            sqlx::query("SELECT id, account_id, fee_bps FROM merchants ORDER BY id").fetch_all(&mut *tx).await?;
        let mut settlements = Vec::new();
        for m in merchants {
            let merchant = MerchantRow {
                id: MerchantId::from_raw(m.try_get::<String, _>("id")?),
                account: AccountId(m.try_get("account_id")?),
                fee_bps: m.try_get("fee_bps")?,
            };
            let ctx = CloseCtx { date, end, fees, clearing, now: now_ms };
            if let Some((id, figures)) = settle_merchant(&mut tx, &merchant, &ctx).await? {
                settlements.push((merchant.id, id, figures));
            }
        }
        sqlx::query("INSERT INTO settlement_days (date, closed_at) VALUES ($1, $2)")
            .bind(date)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DayReport { date: date.to_string(), closed_now: true, settlements })
    })
    .await
}

struct MerchantRow {
    id: MerchantId,
    account: AccountId,
    fee_bps: i64,
}

struct CloseCtx<'a> {
    date: &'a str,
    end: i64,
    fees: AccountId,
    clearing: AccountId,
    now: i64,
}

/// The merchant's payments, refunds and reversals made before `end` and not yet in a settlement.
/// A payment is a line whatever became of it (the merchant was paid it); a reversal is a line of its
/// own, of what it gave back (`amount − refunded` at the time: a reversed payment takes no refund),
/// dated by its journal entry, so that a payment reversed after its day closed lands in the next
/// settlement, as a refund does.
pub async fn unsettled_lines(conn: &mut Conn, merchant: &MerchantId, end: i64) -> Result<Vec<Line>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT 'payment' AS kind, p.id AS id, p.store_id AS store_id, p.amount AS amount, p.created_at AS created_at \
         FROM payments p WHERE p.merchant_id = $1 AND p.status IN ('succeeded', 'reversed') AND p.created_at < $2 \
           AND NOT EXISTS (SELECT 1 FROM settlement_lines l WHERE l.kind = 'payment' AND l.item_id = p.id) \
         UNION ALL \
         SELECT 'refund' AS kind, r.id AS id, p.store_id AS store_id, r.amount AS amount, r.created_at AS created_at \
         FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE p.merchant_id = $1 AND r.created_at < $2 \
           AND NOT EXISTS (SELECT 1 FROM settlement_lines l WHERE l.kind = 'refund' AND l.item_id = r.id) \
         UNION ALL \
         SELECT 'reversal' AS kind, p.id AS id, p.store_id AS store_id, p.amount - p.refunded AS amount, \
                e.created_at AS created_at \
         FROM payments p JOIN journal_entries e ON e.reference = p.id AND e.kind = $3 \
         WHERE p.merchant_id = $1 AND p.status = 'reversed' AND e.created_at < $2 \
           AND NOT EXISTS (SELECT 1 FROM settlement_lines l WHERE l.kind = 'reversal' AND l.item_id = p.id) \
         ORDER BY created_at, id",
    )
    .bind(merchant)
    .bind(end)
    .bind(EntryKind::Reversal.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(line_from_row).collect()
}

fn line_from_row(r: &sqlx::any::AnyRow) -> Result<Line, sqlx::Error> {
    Ok(Line {
        kind: r.try_get("kind")?,
        id: r.try_get("id")?,
        store_id: r.try_get("store_id")?,
        amount: r.try_get("amount")?,
        created_at: r.try_get("created_at")?,
    })
}

/// The negative net of the merchant's newest settlement, when it was carried.
pub async fn carried_over(conn: &mut Conn, merchant: &MerchantId) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT net, status FROM settlements WHERE merchant_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(merchant)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        Some(r) if r.try_get::<String, _>("status")? == "carried" => r.try_get("net")?,
        _ => 0,
    })
}

async fn settle_merchant(
    conn: &mut Conn,
    m: &MerchantRow,
    ctx: &CloseCtx<'_>,
) -> Result<Option<(SettlementId, Figures)>, SettleError> {
    let lines = unsettled_lines(conn, &m.id, ctx.end).await?;
    let carried = carried_over(conn, &m.id).await?;
    if lines.is_empty() && carried == 0 {
        return Ok(None);
    }
    let figures = Figures::of(&lines, m.fee_bps, carried);
    let id = SettlementId::generate();
    let postings = figures.postings(m.account, ctx.fees, ctx.clearing);
    let entry = if postings.is_empty() {
        None
    } else {
        let e = NewEntry {
            kind: EntryKind::Settlement,
            reference: id.as_str().to_string(),
            currency: Currency::Jpy,
            postings,
        };
        Some(ledger::post(conn, &e, ctx.now).await?.entry.0)
    };
    sqlx::query(
        "INSERT INTO settlements (id, merchant_id, date, payments, gross, refunds, fee_bps, fee, carried_over, net, currency, status, entry_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'JPY', $11, $12, $13)",
    )
    .bind(&id)
    .bind(&m.id)
    .bind(ctx.date)
    .bind(figures.payments)
    .bind(figures.gross)
    .bind(figures.refunds)
    .bind(m.fee_bps)
    .bind(figures.fee)
    .bind(figures.carried_over)
    .bind(figures.net)
    .bind(figures.status())
    .bind(entry)
    .bind(ctx.now)
    .execute(&mut *conn)
    .await?;
    for l in &lines {
        sqlx::query("INSERT INTO settlement_lines (settlement_id, kind, item_id, store_id, amount, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(&l.kind)
            .bind(&l.id)
            .bind(&l.store_id)
            .bind(l.amount)
            .bind(l.created_at)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some((id, figures)))
}

/// Closes every ended day not yet closed, from the day after the newest closed one (or the day of
/// the oldest unsettled payment or refund) up to yesterday by `now_ms`. Returns the days closed.
pub async fn close_ended_days(db: &Db, now_ms: i64) -> Result<Vec<String>, SettleError> {
    let last: Option<String> = sqlx::query_scalar("SELECT MAX(date) FROM settlement_days").fetch_one(db.pool()).await?;
    let mut start = match last.as_deref().and_then(day_bounds) {
        Some((_, end)) => end,
        None => {
            let first: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(t) FROM (SELECT MIN(created_at) AS t FROM payments UNION ALL SELECT MIN(created_at) AS t FROM refunds) x",
            )
            .fetch_one(db.pool())
            .await?;
            match first {
                Some(t) => day_bounds(&tokyo_date(t)).map_or(t, |(s, _)| s),
                None => return Ok(vec![]),
            }
        }
    };
    let mut closed = Vec::new();
    while start + DAY_MS <= now_ms && closed.len() < 400 {
        let date = tokyo_date(start);
        if settle_day(db, &date, now_ms).await?.closed_now {
            closed.push(date);
        }
        start += DAY_MS;
    }
    Ok(closed)
}

/// Runs [`close_ended_days`] now and then every minute, by the service clock (00:00 Asia/Tokyo
/// closes the day that ended; every instance may run it, the claim row makes it happen once).
pub fn spawn_daily_close(db: Db, clock: crate::store::clock::Clock) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = super::analytics::fold_all(&db, clock.now_ms()).await {
                tracing::warn!(error = %store::describe_error(&e), "could not fold first visits");
            }
            match close_ended_days(&db, clock.now_ms()).await {
                Ok(days) if !days.is_empty() => tracing::info!(?days, "settled ended days"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "daily settlement failed; retrying in a minute"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
    })
}

/// Checks that each merchant's balance in the ledger (its accounts together) is what its settlements
/// leave open: the unsettled payments less the unsettled refunds and reversals, plus a carried net.
/// Returns what disagrees.
pub async fn verify_balances(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let merchants: Vec<(String, i64)> = sqlx::query_as(
        "SELECT m.id, CAST(COALESCE((SELECT SUM(a.balance) FROM accounts a WHERE a.kind = 'merchant' AND a.owner_ref = m.id), 0) AS BIGINT) \
         FROM merchants m ORDER BY m.id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut conn = db.pool().acquire().await?;
    let mut found = Vec::new();
    for (id, balance) in merchants {
        let merchant = MerchantId::from_raw(id);
        let lines = unsettled_lines(&mut conn, &merchant, i64::MAX).await?;
        let carried = carried_over(&mut conn, &merchant).await?;
        // What a close now would owe before its fee: the open lines' net plus the carry.
        let owed = Figures::of(&lines, 0, carried).net;
        if balance != owed {
            found.push(format!(
                "merchant {merchant}: its ledger balance is {balance} yen, but its open lines and carried net ({carried}) make {owed}"
            ));
        }
    }
    Ok(found)
}

/// Checks every settlement: its lines sum to its figures, the figures follow from the rate and the
/// carry, and its ledger entry moved exactly the fee and the paid net. Returns what disagrees.
pub async fn verify(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, payments, gross, refunds, fee_bps, fee, carried_over, net, entry_id FROM settlements ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut conn = db.pool().acquire().await?;
    let mut found = Vec::new();
    for r in rows {
        let id: String = r.try_get("id")?;
        let lines_rows = sqlx::query(
            "SELECT kind, item_id AS id, store_id, amount, created_at FROM settlement_lines WHERE settlement_id = $1",
        )
        .bind(&id)
        .fetch_all(&mut *conn)
        .await?;
        let lines = lines_rows.iter().map(line_from_row).collect::<Result<Vec<_>, _>>()?;
        let stored = Figures {
            payments: r.try_get("payments")?,
            gross: r.try_get("gross")?,
            refunds: r.try_get("refunds")?,
            fee: r.try_get("fee")?,
            carried_over: r.try_get("carried_over")?,
            net: r.try_get("net")?,
        };
        let expected = Figures::of(&lines, r.try_get("fee_bps")?, stored.carried_over);
        if expected != stored {
            found.push(format!("settlement {id}: its figures {stored:?} disagree with its lines {expected:?}"));
        }
        let entry: Option<i64> = r.try_get("entry_id")?;
        let (fee, paid) = entry_amounts(&mut conn, entry).await?;
        if fee != stored.fee.max(0) || paid != stored.net.max(0) {
            found.push(format!(
                "settlement {id}: the ledger moved fee {fee} and net {paid}, not {} and {}",
                stored.fee.max(0),
                stored.net.max(0)
            ));
        }
    }
    Ok(found)
}

async fn entry_amounts(conn: &mut Conn, entry: Option<i64>) -> Result<(i64, i64), sqlx::Error> {
    let Some(entry) = entry else { return Ok((0, 0)) };
    let rows = sqlx::query(
        "SELECT a.kind AS kind, p.amount AS amount FROM postings p JOIN accounts a ON a.id = p.account_id WHERE p.entry_id = $1",
    )
    .bind(entry)
    .fetch_all(&mut *conn)
    .await?;
    let (mut fee, mut paid) = (0, 0);
    for r in rows {
        let kind: String = r.try_get("kind")?;
        let amount: i64 = r.try_get("amount")?;
        match kind.as_str() {
            "fees" => fee += amount,
            "funding_clearing" => paid += amount,
            _ => {}
        }
    }
    Ok((fee, paid))
}

/// A settlement as a merchant reads it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Settlement {
    pub settlement_id: SettlementId,
    /// The Asia/Tokyo day it closed.
    pub date: String,
    pub payments: i64,
    pub gross: i64,
    pub refunds: i64,
    pub fee: i64,
    pub net: i64,
    pub carried_over: i64,
    /// `closed`, `carried` (a negative net, carried to the next day) or `paid`.
    pub status: String,
    /// Every payment and refund (with one settlement; absent in a list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<Line>>,
}

const SETTLEMENT_COLUMNS: &str = "id, date, payments, gross, refunds, fee, net, carried_over, status";

fn settlement_from_row(r: &sqlx::any::AnyRow) -> Result<Settlement, sqlx::Error> {
    Ok(Settlement {
        settlement_id: SettlementId::from_raw(r.try_get::<String, _>("id")?),
        date: r.try_get("date")?,
        payments: r.try_get("payments")?,
        gross: r.try_get("gross")?,
        refunds: r.try_get("refunds")?,
        fee: r.try_get("fee")?,
        net: r.try_get("net")?,
        carried_over: r.try_get("carried_over")?,
        status: r.try_get("status")?,
        lines: None,
    })
}

/// The merchant's settlements, newest first.
pub async fn list(db: &Db, merchant: &MerchantId) -> Result<Vec<Settlement>, sqlx::Error> {
    let sql =
        format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE merchant_id = $1 ORDER BY date DESC, id DESC");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(merchant).fetch_all(db.pool()).await?;
    rows.iter().map(settlement_from_row).collect()
}

/// One settlement of the merchant, with its lines; `None` for another merchant's or an unknown id.
pub async fn get(db: &Db, merchant: &MerchantId, id: &SettlementId) -> Result<Option<Settlement>, sqlx::Error> {
    let sql = format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE id = $1 AND merchant_id = $2");
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(merchant).fetch_optional(db.pool()).await?
    else {
        return Ok(None);
    };
    let mut s = settlement_from_row(&row)?;
    let rows = sqlx::query(
        "SELECT kind, item_id AS id, store_id, amount, created_at FROM settlement_lines WHERE settlement_id = $1 ORDER BY created_at, item_id",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await?;
    s.lines = Some(rows.iter().map(line_from_row).collect::<Result<_, _>>()?);
    Ok(Some(s))
}

/// A settlement as CSV: a summary row, then one row per line.
pub fn csv(s: &Settlement) -> String {
    let mut out = String::from("settlement_id,date,payments,gross,refunds,fee,carried_over,net,status\n");
    out.push_str(&format!(
        "{},{},{},{},{},{},{},{},{}\n\nkind,id,store_id,amount,created_at\n",
        s.settlement_id, s.date, s.payments, s.gross, s.refunds, s.fee, s.carried_over, s.net, s.status
    ));
    for l in s.lines.iter().flatten() {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            l.kind,
            l.id,
            l.store_id,
            l.amount,
            crate::store::clock::rfc3339_ms(l.created_at)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(kind: &str, amount: i64) -> Line {
        Line { kind: kind.into(), id: "x".into(), store_id: StoreId::from_raw("sto_x"), amount, created_at: 0 }
    }

    #[test]
    fn the_fee_is_floored_and_never_negative() {
        let f = Figures::of(&[line("payment", 10_000), line("payment", 101)], 198, 0);
        assert_eq!((f.payments, f.gross, f.fee, f.net, f.status()), (2, 10_101, 199, 9_902, "closed"));
        let f = Figures::of(&[line("refund", 3_000)], 198, -50);
        assert_eq!((f.fee, f.net, f.status()), (0, -3_050, "carried"));
    }

    #[test]
    fn tokyo_days_start_at_15_utc() {
        assert_eq!(day_bounds("2026-12-02"), Some((1_796_137_200_000, 1_796_223_600_000)));
        assert_eq!(tokyo_date(1_796_137_200_000), "2026-12-02");
        assert_eq!(tokyo_date(1_796_137_199_999), "2026-12-01");
        assert_eq!(day_bounds("2026-13-01"), None);
        assert_eq!(day_bounds("2026-1-01"), None);
    }

    /// One day: payments, then refunds of some of them (index, share), then whether it closes.
    /// One modelled day: payment amounts, refunds (payment index, percent), whether it closes.
    type Day = (Vec<i64>, Vec<(usize, u8)>, bool);

    fn days() -> impl Strategy<Value = Vec<Day>> {
        let day = (
            proptest::collection::vec(1i64..50_000, 0..6),
            proptest::collection::vec((0usize..40, 1u8..=100), 0..4),
            proptest::bool::weighted(0.7),
        );
        proptest::collection::vec(day, 1..12)
    }

    proptest! {
        /// Settlements plus the open balance equal the merchant's ledger balance, money is conserved,
        /// and a paid net is never negative.
        #[test]
        fn settlements_and_the_open_balance_equal_the_ledger(days in days(), bps in 0i64..1000) {
            let (merchant, fees, clearing) = (AccountId(1), AccountId(2), AccountId(3));
            let mut balances = std::collections::HashMap::<AccountId, i64>::new();
            let mut payments: Vec<(i64, i64)> = Vec::new(); // (amount, refunded)
            let mut open: Vec<Line> = Vec::new();
            let mut carried = 0i64;
            let mut moved_in = 0i64;
            for (pays, refunds, close) in days {
                for amount in pays {
                    payments.push((amount, 0));
                    open.push(line("payment", amount));
                    *balances.entry(merchant).or_default() += amount;
                    moved_in += amount;
                }
                for (i, share) in refunds {
                    let Some(p) = payments.get_mut(i) else { continue };
                    let amount = (p.0 - p.1) * i64::from(share) / 100;
                    if amount <= 0 { continue }
                    p.1 += amount;
                    open.push(line("refund", amount));
                    *balances.entry(merchant).or_default() -= amount;
                    moved_in -= amount;
                }
                if close && (!open.is_empty() || carried != 0) {
                    let f = Figures::of(&open, bps, carried);
                    let postings = f.postings(merchant, fees, clearing);
                    prop_assert!(postings.is_empty() || postings.iter().map(|p| p.amount.0).sum::<i64>() == 0);
                    for p in postings {
                        *balances.entry(p.account).or_default() += p.amount.0;
                    }
                    carried = if f.status() == "carried" { f.net } else { 0 };
                    prop_assert!(f.fee >= 0);
                    open.clear();
                }
                let open_sum: i64 = open.iter().map(|l| if l.kind == "payment" { l.amount } else { -l.amount }).sum();
                let b = |a| balances.get(&a).copied().unwrap_or(0);
                prop_assert_eq!(b(merchant), open_sum + carried);
                prop_assert_eq!(b(merchant) + b(fees) + b(clearing), moved_in);
                prop_assert!(b(clearing) >= 0 && b(fees) >= 0);
            }
        }
    }
}
