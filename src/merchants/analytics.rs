//! Merchants' analytics: the `customer_ref` pseudonym that lets a merchant count returning
//! customers without learning who they are, and the figures built on it (API.md "Merchants'
//! side"): sales by hour, day, weekday and hour, store, category and item; customers; items
//! bought together.
//!
//! Privacy: every figure that counts customers rests on at least `min` distinct pseudonyms or is
//! `None` (`null` in JSON). Where withholding one figure would let it be derived from others
//! (new = customers − returning; one visit bucket from the rest), its complement is withheld too.
//! Money figures are always given (API.md).
//!
//! Hours and days are Asia/Tokyo, computed in SQL with integer arithmetic on the millisecond
//! timestamps (Japan has no daylight saving time), which both backends do alike. A payment counts
//! where it was made; its refunds count against it (so a day's `net` is what that day's sales kept),
//! and in the item breakdowns a refund counts against the items it names.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::Row;

use crate::ids::{MerchantId, StoreId, UserId};
use crate::store::Conn;

/// `cus_` and 26 base32 characters (130 bits) of HMAC-SHA256(key, merchant id ‖ 0 ‖ user id):
/// stable across one merchant's stores, unrelated across merchants, irreversible without the key.
pub fn customer_ref(key: &[u8], merchant_id: &MerchantId, user_id: &UserId) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"customer_ref\0");
    mac.update(merchant_id.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(user_id.as_str().as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("cus_{}", base32_130(&digest))
}

/// The first 130 bits of `bytes` as 26 lower-case RFC 4648 base32 characters.
fn base32_130(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(26);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        if out.len() == 26 {
            break;
        }
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && out.len() < 26 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
        buffer &= (1 << bits) - 1;
    }
    out
}

pub(crate) const TOKYO_MS: i64 = 9 * 3_600_000;
pub(crate) const DAY_MS: i64 = 86_400_000;
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Which payments a question is about: one merchant's, of some of its stores, made in `[start, end)`.
#[derive(Debug, Clone)]
pub struct Filter {
    pub merchant_id: MerchantId,
    /// `None`: every store of the merchant; `Some`: these alone (none at all: nothing).
    pub stores: Option<Vec<StoreId>>,
    pub start: i64,
    pub end: i64,
}

/// A statement's text and its values, bound in order (`$1`, `$2`, ...): only placeholders are
/// ever formatted into the text.
#[derive(Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl Sql {
    pub(crate) fn text(&mut self, v: &str) -> String {
        self.args.push(Arg::Text(v.to_string()));
        format!("${}", self.args.len())
    }

    pub(crate) fn int(&mut self, v: i64) -> String {
        self.args.push(Arg::Int(v));
        format!("${}", self.args.len())
    }

    fn query(self) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text));
        for a in self.args {
            q = match a {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
            };
        }
        q
    }

    pub(crate) async fn fetch_all(self, conn: &mut Conn) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        self.query().fetch_all(&mut *conn).await
    }

    /// The rows one at a time, as they come (a year of them need not be held at once).
    pub(crate) fn fetch(
        self,
        conn: &mut Conn,
    ) -> futures::stream::BoxStream<'_, Result<sqlx::any::AnyRow, sqlx::Error>> {
        self.query().fetch(conn)
    }
}

/// `AND {column} IN (...)` for the filter's stores (nothing for every store; never true for none).
pub(crate) fn store_clause(f: &Filter, sql: &mut Sql, column: &str) -> String {
    match &f.stores {
        None => String::new(),
        Some(list) if list.is_empty() => " AND 1 = 0".to_string(),
        Some(list) => {
            let marks: Vec<String> = list.iter().map(|id| sql.text(id.as_str())).collect();
            format!(" AND {column} IN ({})", marks.join(", "))
        }
    }
}

/// The CTEs every figure starts from: `p`, the filter's succeeded payments; and `newp`, the first
/// payment of each customer whose first payment ever at these stores is in the period (a customer
/// of the period not in `newp` is returning). First payments come from `customer_firsts`, which
/// [`fold`] keeps up to date.
pub(crate) fn scoped(f: &Filter, sql: &mut Sql) -> String {
    let m = sql.text(f.merchant_id.as_str());
    let (s, e) = (sql.int(f.start), sql.int(f.end));
    let in_p = store_clause(f, sql, "store_id");
    let newp = match &f.stores {
        None => format!(
            "SELECT payment_id FROM customer_firsts WHERE merchant_id = {m} AND store_id = '' \
             AND first_at >= {s} AND first_at < {e}"
        ),
        Some(_) => {
            let in_c = store_clause(f, sql, "store_id");
            format!(
                "SELECT payment_id FROM (SELECT payment_id, first_at, ROW_NUMBER() OVER (PARTITION BY customer_ref \
                 ORDER BY first_at, payment_id) AS rn FROM customer_firsts WHERE merchant_id = {m} AND first_at < {e}{in_c} \
                 AND store_id <> '') x WHERE rn = 1 AND first_at >= {s}"
            )
        }
    };
    format!(
        "WITH p AS (SELECT id, store_id, amount, refunded, customer_ref, created_at FROM payments \
         WHERE merchant_id = {m} AND created_at >= {s} AND created_at < {e} AND status = 'succeeded'{in_p}), \
         newp AS ({newp}) "
    )
}

/// How far back a fold rereads: a payment is folded even if it committed this long after the
/// moment it carries.
pub const FOLD_OVERLAP_MS: i64 = 120_000;

/// Folds a merchant's payments since the last fold into `customer_firsts` (each customer's first
/// payment per store and at the merchant), in one transaction; a repeat or a concurrent fold
/// changes nothing twice (each row keeps the earliest payment).
pub async fn fold(db: &crate::store::Db, merchant: &MerchantId, now: i64) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    tx.lock("customer_fold", merchant.as_str()).await?;
    let folded: Option<i64> = sqlx::query_scalar("SELECT folded_to FROM customer_folds WHERE merchant_id = $1")
        .bind(merchant)
        .fetch_optional(&mut *tx)
        .await?;
    let from = folded.map_or(0, |t| t - FOLD_OVERLAP_MS);
    for (store, partition) in [("store_id", "customer_ref, store_id"), ("''", "customer_ref")] {
        let sql = format!(
            "INSERT INTO customer_firsts (merchant_id, customer_ref, store_id, first_at, payment_id) \
             SELECT merchant_id, customer_ref, s, created_at, id FROM (SELECT merchant_id, customer_ref, {store} AS s, \
             created_at, id, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY created_at, id) AS rn FROM payments \
             WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3 AND status = 'succeeded' \
             AND customer_ref IS NOT NULL) x WHERE rn = 1 \
             ON CONFLICT (merchant_id, customer_ref, store_id) DO UPDATE SET first_at = excluded.first_at, \
             payment_id = excluded.payment_id WHERE excluded.first_at < customer_firsts.first_at"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(merchant).bind(from).bind(now).execute(&mut *tx).await?;
    }
    sqlx::query(
        "INSERT INTO customer_folds (merchant_id, folded_to) VALUES ($1, $2) \
         ON CONFLICT (merchant_id) DO UPDATE SET folded_to = excluded.folded_to",
    )
    .bind(merchant)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// [`fold`] for every merchant (the daily-close loop runs it each minute).
pub async fn fold_all(db: &crate::store::Db, now: i64) -> Result<(), sqlx::Error> {
    let merchants: Vec<String> =
        sqlx::query_scalar("SELECT id FROM merchants ORDER BY id").fetch_all(db.pool()).await?;
    for m in merchants {
        fold(db, &MerchantId::from_raw(m), now).await?;
    }
    Ok(())
}

/// How sales are broken down (`group_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Hour,
    Day,
    WeekdayHour,
    Store,
    Category,
    Sku,
}

impl GroupBy {
    pub const NAMES: [&'static str; 6] = ["hour", "day", "weekday_hour", "store", "category", "sku"];

    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "hour" => GroupBy::Hour,
            "day" => GroupBy::Day,
            "weekday_hour" => GroupBy::WeekdayHour,
            "store" => GroupBy::Store,
            "category" => GroupBy::Category,
            "sku" => GroupBy::Sku,
            _ => return None,
        })
    }

    /// The SQL of a payment's key, over `p` (integers for times, text otherwise).
    fn payment_key(self) -> &'static str {
        match self {
            GroupBy::Hour => "((p.created_at + 32400000) / 3600000) % 24",
            GroupBy::Day => "(p.created_at + 32400000) / 86400000",
            GroupBy::WeekdayHour => {
                "(((p.created_at + 32400000) / 86400000 + 3) % 7) * 24 + ((p.created_at + 32400000) / 3600000) % 24"
            }
            GroupBy::Store => "p.store_id",
            GroupBy::Category => "COALESCE(i.category, '')",
            GroupBy::Sku => "i.sku",
        }
    }

    pub(crate) fn by_item(self) -> bool {
        matches!(self, GroupBy::Category | GroupBy::Sku)
    }
}

/// The key of a payment made at `t` (ms) for a breakdown by time, as [`GroupBy::payment_key`]
/// computes it in SQL (an hour of the day, a day number, or weekday × 24 + hour); `None` for the
/// other breakdowns.
pub(crate) fn time_key(group: GroupBy, t: i64) -> Option<i64> {
    let tokyo = t + TOKYO_MS;
    Some(match group {
        GroupBy::Hour => (tokyo / 3_600_000) % 24,
        GroupBy::Day => tokyo / DAY_MS,
        GroupBy::WeekdayHour => ((tokyo / DAY_MS + 3) % 7) * 24 + (tokyo / 3_600_000) % 24,
        GroupBy::Store | GroupBy::Category | GroupBy::Sku => return None,
    })
}

/// A time key as the API spells it: `"09"`, `"2026-12-03"` or `"mon-09"` (empty for the others).
pub(crate) fn time_key_text(group: GroupBy, k: i64) -> String {
    match group {
        GroupBy::Hour => format!("{k:02}"),
        GroupBy::Day => crate::store::clock::tokyo_date(k * DAY_MS + DAY_MS / 2 - TOKYO_MS),
        GroupBy::WeekdayHour => format!("{}-{:02}", WEEKDAYS[(k / 24).rem_euclid(7) as usize], k % 24),
        GroupBy::Store | GroupBy::Category | GroupBy::Sku => String::new(),
    }
}

/// A row's key as the API spells it: `"09"`, `"2026-12-03"`, `"mon-09"`, a store id, a category
/// (`None`: uncategorised) or a sku.
fn key_of(group: GroupBy, row: &sqlx::any::AnyRow) -> Result<Option<String>, sqlx::Error> {
    Ok(Some(match group {
        GroupBy::Hour | GroupBy::Day | GroupBy::WeekdayHour => time_key_text(group, row.try_get::<i64, _>("k")?),
        GroupBy::Store | GroupBy::Sku => row.try_get::<String, _>("k")?,
        GroupBy::Category => {
            let c: String = row.try_get("k")?;
            return Ok((!c.is_empty()).then_some(c));
        }
    }))
}

/// What one row of sales counts, before the privacy rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub payments: i64,
    pub gross: i64,
    pub refunds: i64,
    pub customers: i64,
    pub new_customers: i64,
}

/// One row of `GET /v1/merchant/analytics/sales`, or its totals.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SalesFigures {
    /// Payments (for an item or category: the payments whose basket has it).
    pub payments: i64,
    /// Yen paid (for an item or category: Σ quantity × unit amount of its lines).
    pub gross: i64,
    /// Yen refunded of these payments (for an item or category: of the items refunds named).
    pub refunds: i64,
    pub net: i64,
    /// `gross / payments`, rounded down (0 without payments).
    pub average_ticket: i64,
    /// Distinct customers; `null` under `min_customers`.
    pub customers: Option<i64>,
    /// Customers whose first payment at these stores ever is in this row (so in the period);
    /// `null` when it or `returning_customers` rests on fewer than `min_customers`.
    pub new_customers: Option<i64>,
    pub returning_customers: Option<i64>,
}

/// Withholds a count of more than none and fewer than `min` customers.
pub fn withhold(n: i64, min: i64) -> Option<i64> {
    (n == 0 || n >= min).then_some(n)
}

impl SalesFigures {
    /// The figures of `c`, with the privacy rule: under `min` customers, no customer figure; and new
    /// and returning are given together or not at all (either gives the other away).
    pub fn of(c: Counts, min: i64) -> SalesFigures {
        let customers = (c.customers >= min).then_some(c.customers);
        let returning = c.customers - c.new_customers;
        let split =
            customers.filter(|_| withhold(c.new_customers, min).is_some() && withhold(returning, min).is_some());
        SalesFigures {
            payments: c.payments,
            gross: c.gross,
            refunds: c.refunds,
            net: c.gross - c.refunds,
            average_ticket: if c.payments > 0 { c.gross / c.payments } else { 0 },
            customers,
            new_customers: split.map(|_| c.new_customers),
            returning_customers: split.map(|_| returning),
        }
    }
}

/// One row of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SalesRow {
    /// `"00"`–`"23"`, a date, `"mon-09"`, a store id, a category (`null`: uncategorised) or a sku.
    pub key: Option<String>,
    /// The item's name (`group_by=sku` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub figures: SalesFigures,
}

/// `GET /v1/merchant/analytics/sales`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Sales {
    pub min_customers: i64,
    pub items: Vec<SalesRow>,
    /// The period's figures, whatever the breakdown (payments without a basket included).
    pub totals: SalesFigures,
}

fn counts_of(row: &sqlx::any::AnyRow) -> Result<Counts, sqlx::Error> {
    Ok(Counts {
        payments: row.try_get("payments")?,
        gross: row.try_get::<Option<i64>, _>("gross")?.unwrap_or(0),
        refunds: row.try_get::<Option<i64>, _>("refunds")?.unwrap_or(0),
        customers: row.try_get("customers")?,
        new_customers: row.try_get("new_customers")?,
    })
}

/// Customers of a group of payments, and the new ones among them. `newp` holds one payment per new
/// customer (their first), so a group of payments counts a new customer by counting that payment:
/// a sum, where a second distinct count would cost another sort.
const CUSTOMER_COUNTS: &str = "COUNT(DISTINCT p.customer_ref) AS customers, \
     CAST(COALESCE(SUM(CASE WHEN p.id IN (SELECT payment_id FROM newp) THEN 1 ELSE 0 END), 0) AS BIGINT) AS new_customers";

/// [`CUSTOMER_COUNTS`] over item lines, where a payment has several rows.
const ITEM_CUSTOMER_COUNTS: &str = "COUNT(DISTINCT p.customer_ref) AS customers, \
     COUNT(DISTINCT CASE WHEN p.id IN (SELECT payment_id FROM newp) THEN p.customer_ref END) AS new_customers";

/// Sales of the filter's payments, broken down by `group` (`None`: one row, the totals).
async fn payment_counts(
    conn: &mut Conn,
    f: &Filter,
    group: Option<GroupBy>,
) -> Result<Vec<(sqlx::any::AnyRow, Counts)>, sqlx::Error> {
    let mut sql = Sql::default();
    let with = scoped(f, &mut sql);
    let (key, group_by) = match group {
        Some(g) => (format!("{} AS k, ", g.payment_key()), format!(" GROUP BY {}", g.payment_key())),
        None => (String::new(), String::new()),
    };
    sql.text = format!(
        "{with}SELECT {key}COUNT(*) AS payments, CAST(SUM(p.amount) AS BIGINT) AS gross, \
         CAST(SUM(p.refunded) AS BIGINT) AS refunds, {CUSTOMER_COUNTS} \
         FROM p{group_by}"
    );
    let rows = sql.fetch_all(conn).await?;
    rows.into_iter().map(|r| counts_of(&r).map(|c| (r, c))).collect()
}

/// Sales by category or item: each item line's yen, and the items refunds named.
async fn item_counts(
    conn: &mut Conn,
    db: &crate::store::Db,
    f: &Filter,
    group: GroupBy,
) -> Result<Vec<(Option<String>, Option<String>, Counts)>, sqlx::Error> {
    let mut sql = Sql::default();
    let with = scoped(f, &mut sql);
    let key = group.payment_key();
    sql.text = format!(
        "{with}SELECT {key} AS k, MIN(i.name) AS name, COUNT(DISTINCT p.id) AS payments, \
         CAST(SUM(i.quantity * i.unit_amount) AS BIGINT) AS gross, CAST(0 AS BIGINT) AS refunds, {ITEM_CUSTOMER_COUNTS} \
         FROM p JOIN payment_items i ON i.payment_id = p.id GROUP BY {key}"
    );
    let refunds = async {
        let mut other = db.pool().acquire().await?;
        item_refunds(&mut other, f, group).await
    };
    let (rows, refunds) = tokio::try_join!(sql.fetch_all(&mut *conn), refunds)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let k = key_of(group, r)?;
        let mut c = counts_of(r)?;
        c.refunds = refunds.get(k.as_deref().unwrap_or("")).copied().unwrap_or(0);
        let name = if group == GroupBy::Sku { r.try_get("name")? } else { None };
        out.push((k, name, c));
    }
    Ok(out)
}

/// Yen of the items the filter's refunds named, by sku or category (`""`: uncategorised); a unit
/// is worth its basket line's unit amount (the highest, should a sku be on two lines).
async fn item_refunds(
    conn: &mut Conn,
    f: &Filter,
    group: GroupBy,
) -> Result<std::collections::HashMap<String, i64>, sqlx::Error> {
    let mut sql = Sql::default();
    let with = scoped(f, &mut sql);
    let line = |col: &str| {
        format!("(SELECT MAX(i.{col}) FROM payment_items i WHERE i.payment_id = r.payment_id AND i.sku = r.sku)")
    };
    let key = if group == GroupBy::Sku { "r.sku".to_string() } else { format!("COALESCE({}, '')", line("category")) };
    sql.text = format!(
        "{with}SELECT x.k AS k, CAST(SUM(x.v) AS BIGINT) AS v FROM (SELECT {key} AS k, r.quantity * {} AS v \
         FROM p JOIN refund_items r ON r.payment_id = p.id WHERE p.refunded > 0) x GROUP BY x.k",
        line("unit_amount")
    );
    let rows = sql.fetch_all(conn).await?;
    rows.iter().map(|r| Ok((r.try_get("k")?, r.try_get::<Option<i64>, _>("v")?.unwrap_or(0)))).collect()
}

/// `GET /v1/merchant/analytics/sales`: the breakdown and the period's totals.
pub async fn sales(db: &crate::store::Db, f: &Filter, group: GroupBy, min: i64) -> Result<Sales, sqlx::Error> {
    // The totals and the breakdown are two scans: each on a connection of its own, at once.
    let totals = async {
        let mut conn = db.pool().acquire().await?;
        Ok::<_, sqlx::Error>(payment_counts(&mut conn, f, None).await?.pop().map(|(_, c)| c).unwrap_or_default())
    };
    let breakdown = async {
        let mut conn = db.pool().acquire().await?;
        let mut out = Vec::new();
        if group.by_item() {
            for (key, name, c) in item_counts(&mut conn, db, f, group).await? {
                out.push(SalesRow { key, name, figures: SalesFigures::of(c, min) });
            }
        } else {
            for (r, c) in payment_counts(&mut conn, f, Some(group)).await? {
                out.push(SalesRow { key: key_of(group, &r)?, name: None, figures: SalesFigures::of(c, min) });
            }
        }
        Ok::<_, sqlx::Error>(out)
    };
    let (totals, mut items) = tokio::try_join!(totals, breakdown)?;
    sort_rows(group, &mut items);
    Ok(Sales { min_customers: min, items, totals: SalesFigures::of(totals, min) })
}

/// The order of a breakdown's rows: items and categories by net (then key), weekdays Monday
/// first, the others by key.
pub(crate) fn sort_rows(group: GroupBy, items: &mut [SalesRow]) {
    match group {
        GroupBy::Category | GroupBy::Sku => {
            items.sort_by(|a, b| b.figures.net.cmp(&a.figures.net).then_with(|| a.key.cmp(&b.key)))
        }
        GroupBy::WeekdayHour => items.sort_by_key(|r| weekday_order(r.key.as_deref())),
        _ => items.sort_by(|a, b| a.key.cmp(&b.key)),
    }
}

fn weekday_order(key: Option<&str>) -> (usize, String) {
    let key = key.unwrap_or("");
    (WEEKDAYS.iter().position(|d| key.starts_with(d)).unwrap_or(7), key.to_string())
}

/// How many customers came how often in the period.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VisitBucket {
    /// Payments in the period; the last bucket counts this many or more.
    pub visits: i64,
    /// `true` on the last bucket ("5 or more").
    pub or_more: bool,
    /// `null` when withheld (fewer than `min_customers`, or the complement of one withheld).
    pub customers: Option<i64>,
}

/// `GET /v1/merchant/analytics/customers`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Customers {
    pub min_customers: i64,
    pub customers: Option<i64>,
    pub new_customers: Option<i64>,
    pub returning_customers: Option<i64>,
    /// The share (0 to 1) of the period's customers who paid twice or more in it.
    pub repeat_rate: Option<f64>,
    pub visits: Vec<VisitBucket>,
    /// The median over customers who paid twice or more of their mean days between payments.
    pub median_days_between_visits: Option<f64>,
}

/// One customer of the period: payments, first and last, and whether they had paid before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Visitor {
    pub visits: i64,
    pub first: i64,
    pub last: i64,
    pub returning: bool,
}

/// The visit buckets: 1, 2, 3, 4 and "5 or more".
pub const VISIT_BUCKETS: i64 = 5;

impl Customers {
    /// The figures of the period's customers, with the privacy rule.
    pub fn of(visitors: &[Visitor], min: i64) -> Customers {
        let n = visitors.len() as i64;
        let returning = visitors.iter().filter(|v| v.returning).count() as i64;
        let split =
            withhold(n, min).is_some() && withhold(returning, min).is_some() && withhold(n - returning, min).is_some();
        let repeat = visitors.iter().filter(|v| v.visits >= 2).count() as i64;
        let mut gaps: Vec<f64> = visitors
            .iter()
            .filter(|v| v.visits >= 2)
            .map(|v| (v.last - v.first) as f64 / DAY_MS as f64 / (v.visits - 1) as f64)
            .collect();
        gaps.sort_by(f64::total_cmp);
        let median = (gaps.len() as i64 >= min && !gaps.is_empty()).then(|| {
            let m = gaps.len() / 2;
            let v = if gaps.len() % 2 == 1 { gaps[m] } else { (gaps[m - 1] + gaps[m]) / 2.0 };
            (v * 10.0).round() / 10.0
        });
        Customers {
            min_customers: min,
            customers: withhold(n, min),
            new_customers: split.then_some(n - returning),
            returning_customers: split.then_some(returning),
            repeat_rate: (n >= min && n > 0).then(|| ((repeat as f64 / n as f64) * 1000.0).round() / 1000.0),
            visits: visit_buckets(visitors, min),
            median_days_between_visits: median,
        }
    }
}

/// The visit histogram, each bucket withheld under `min`; when exactly one bucket is withheld, the
/// smallest other non-empty one is withheld too, so that it cannot be told from the total.
pub fn visit_buckets(visitors: &[Visitor], min: i64) -> Vec<VisitBucket> {
    let mut counts = [0i64; VISIT_BUCKETS as usize];
    for v in visitors {
        counts[(v.visits.clamp(1, VISIT_BUCKETS) - 1) as usize] += 1;
    }
    let mut shown: Vec<Option<i64>> = counts.iter().map(|&c| withhold(c, min)).collect();
    if shown.iter().filter(|s| s.is_none()).count() == 1 {
        let smallest = (0..shown.len()).filter(|&i| shown[i].is_some_and(|c| c > 0)).min_by_key(|&i| counts[i]);
        if let Some(i) = smallest {
            shown[i] = None;
        }
    }
    (0..VISIT_BUCKETS)
        .map(|i| VisitBucket { visits: i + 1, or_more: i + 1 == VISIT_BUCKETS, customers: shown[i as usize] })
        .collect()
}

/// `GET /v1/merchant/analytics/customers`.
pub async fn customers(conn: &mut Conn, f: &Filter, min: i64) -> Result<Customers, sqlx::Error> {
    let mut sql = Sql::default();
    let with = scoped(f, &mut sql);
    sql.text = format!(
        "{with}SELECT COUNT(*) AS visits, MIN(p.created_at) AS first_at, MAX(p.created_at) AS last_at, \
         MIN(CASE WHEN p.id IN (SELECT payment_id FROM newp) THEN 0 ELSE 1 END) AS came_back \
         FROM p WHERE p.customer_ref IS NOT NULL \
         GROUP BY p.customer_ref"
    );
    let rows = sql.fetch_all(conn).await?;
    let visitors = rows
        .iter()
        .map(|r| {
            Ok(Visitor {
                visits: r.try_get("visits")?,
                first: r.try_get("first_at")?,
                last: r.try_get("last_at")?,
                returning: r.try_get::<i64, _>("came_back")? == 1,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Customers::of(&visitors, min))
}

/// Two items bought together.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Pair {
    pub a_sku: String,
    pub b_sku: String,
    /// Baskets with both.
    pub baskets: i64,
    /// Distinct customers of those baskets (at least `min_customers`).
    pub customers: i64,
    /// How much likelier the two are together than apart: P(a and b) / (P(a) × P(b)) over the
    /// period's baskets (1: no link).
    pub lift: f64,
}

/// `GET /v1/merchant/analytics/baskets`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Baskets {
    pub min_customers: i64,
    /// At most [`MAX_PAIRS`], the most frequent first.
    pub pairs: Vec<Pair>,
}

/// The most pairs an answer lists.
pub const MAX_PAIRS: i64 = 50;

/// Lift of a pair: `together × baskets / (with_a × with_b)`, to three decimals.
pub fn lift(together: i64, with_a: i64, with_b: i64, baskets: i64) -> f64 {
    if with_a == 0 || with_b == 0 {
        return 0.0;
    }
    let l = together as f64 * baskets as f64 / (with_a as f64 * with_b as f64);
    (l * 1000.0).round() / 1000.0
}

/// `GET /v1/merchant/analytics/baskets`: the pairs bought by at least `min` distinct customers.
pub async fn baskets(db: &crate::store::Db, f: &Filter, min: i64) -> Result<Baskets, sqlx::Error> {
    let mut sql = Sql::default();
    let with = scoped(f, &mut sql);
    let least = sql.int(min);
    let most = sql.int(MAX_PAIRS);
    sql.text = format!(
        "{with}SELECT a.sku AS a_sku, b.sku AS b_sku, COUNT(DISTINCT p.id) AS baskets, \
         COUNT(DISTINCT p.customer_ref) AS customers FROM p \
         JOIN payment_items a ON a.payment_id = p.id JOIN payment_items b ON b.payment_id = p.id AND a.sku < b.sku \
         GROUP BY a.sku, b.sku HAVING COUNT(DISTINCT p.customer_ref) >= {least} \
         ORDER BY baskets DESC, a_sku, b_sku LIMIT {most}"
    );
    // The pairs and each item's baskets are two scans: each on a connection of its own, at once.
    let pairs = async {
        let mut conn = db.pool().acquire().await?;
        sql.fetch_all(&mut conn).await
    };
    let singles = async {
        let mut conn = db.pool().acquire().await?;
        sku_baskets(&mut conn, f).await
    };
    let (rows, (per_sku, total)) = tokio::try_join!(pairs, singles)?;
    let mut pairs = Vec::with_capacity(rows.len());
    for r in &rows {
        let (a, b): (String, String) = (r.try_get("a_sku")?, r.try_get("b_sku")?);
        let together: i64 = r.try_get("baskets")?;
        let (na, nb) = (per_sku.get(&a).copied().unwrap_or(0), per_sku.get(&b).copied().unwrap_or(0));
        pairs.push(Pair {
            lift: lift(together, na, nb, total),
            baskets: together,
            customers: r.try_get("customers")?,
            a_sku: a,
            b_sku: b,
        });
    }
    Ok(Baskets { min_customers: min, pairs })
}

/// The period's baskets with each sku, and how many baskets there were.
async fn sku_baskets(
    conn: &mut Conn,
    f: &Filter,
) -> Result<(std::collections::HashMap<String, i64>, i64), sqlx::Error> {
    let mut sql = Sql::default();
    let with = scoped(f, &mut sql);
    sql.text = format!(
        "{with}SELECT i.sku AS sku, COUNT(DISTINCT p.id) AS n FROM p JOIN payment_items i ON i.payment_id = p.id \
         GROUP BY i.sku UNION ALL SELECT '' AS sku, COUNT(DISTINCT i.payment_id) AS n FROM p \
         JOIN payment_items i ON i.payment_id = p.id"
    );
    let mut per_sku = std::collections::HashMap::new();
    let mut total = 0;
    for r in sql.fetch_all(conn).await? {
        let (sku, n): (String, i64) = (r.try_get("sku")?, r.try_get("n")?);
        if sku.is_empty() {
            total = n
        } else {
            per_sku.insert(sku, n);
        }
    }
    Ok((per_sku, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pseudonym_is_per_merchant() {
        let (m1, m2) = (MerchantId::from_raw("mer_a"), MerchantId::from_raw("mer_b"));
        let u = UserId::from_raw("usr_x");
        let a = customer_ref(b"k", &m1, &u);
        assert_eq!(a, customer_ref(b"k", &m1, &u));
        assert_ne!(a, customer_ref(b"k", &m2, &u));
        assert_eq!(a.len(), 30);
        assert!(a[4..].chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)), "{a}");
    }
}
