//! Reading a merchant's payments into the compact day blocks of `analytics_rows`: one statement
//! per load, a row per payment with its basket lines and returned items as JSON (a row costs the
//! `Any` driver microseconds, a basket line in a row's text costs parsing only), the two
//! dialects' JSON functions side by side.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use serde::Deserialize;
use sqlx::Row;

use super::analytics::{self, DAY_MS, Filter, Sql, TOKYO_MS};
use super::analytics_rows::{self as rows, Block, Catalog, CustomerIds, NO_CUSTOMER, NewPayment, Returned};
use crate::ids::MerchantId;
use crate::store::{Backend, Conn};

/// A Tokyo day's number (as the SQL computes it for times after 1970) and its first moment.
pub fn day_of(ms: i64) -> i64 {
    (ms + TOKYO_MS).div_euclid(DAY_MS)
}

pub fn day_start(day: i64) -> i64 {
    day * DAY_MS - TOKYO_MS
}

/// Which payments a load reads.
pub enum Source<'a> {
    /// Every succeeded payment of the merchant in `[start, end)`, with its first-visit flags.
    Closed { merchant: &'a MerchantId, start: i64, end: i64 },
    /// The filter's payments, each marked new or not to the filter's stores (today's).
    Live(&'a Filter),
}

/// The texts a load numbers its rows by: the merchant's catalog and customers.
pub struct Names<'a> {
    pub catalog: &'a mut Arc<Catalog>,
    pub customers: &'a mut CustomerIds,
}

/// An aggregate of JSON arrays, one per row of `rows` (`[]` or NULL for none).
fn json_rows(backend: Backend, values: &str, from: &str) -> String {
    match backend {
        Backend::Sqlite => format!("(SELECT json_group_array(json_array({values})) {from})"),
        Backend::Postgres => format!("(SELECT CAST(json_agg(json_build_array({values})) AS TEXT) {from})"),
    }
}

impl Source<'_> {
    /// The statement: a row per payment of `p` with its flags, lines and returned items.
    fn sql(&self, backend: Backend) -> Sql {
        let mut sql = Sql::default();
        let (with, flags) = match self {
            Source::Closed { merchant, start, end } => {
                let (m, s, e) = (sql.text(merchant.as_str()), sql.int(*start), sql.int(*end));
                let with = format!(
                    "WITH p AS (SELECT id, store_id, amount, refunded, customer_ref, created_at FROM payments \
                     WHERE merchant_id = {m} AND created_at >= {s} AND created_at < {e} AND status = 'succeeded') "
                );
                let first = |stores: &str| {
                    format!(
                        "(CASE WHEN p.id IN (SELECT payment_id FROM customer_firsts WHERE merchant_id = {m} \
                         AND store_id {stores} AND first_at >= {s} AND first_at < {e}) THEN 1 ELSE 0 END)"
                    )
                };
                // A payment's own store's first visits: the stores of the period's payments.
                let here = format!(
                    "IN (SELECT DISTINCT store_id FROM payments WHERE merchant_id = {m} AND created_at >= {s} \
                     AND created_at < {e})"
                );
                (with, format!("CAST({} + 2 * {} AS BIGINT)", first("= ''"), first(&here)))
            }
            Source::Live(f) => (
                analytics::scoped(f, &mut sql),
                "CAST(CASE WHEN p.id IN (SELECT payment_id FROM newp) THEN 4 ELSE 0 END AS BIGINT)".to_string(),
            ),
        };
        let lines = json_rows(
            backend,
            "i.sku, i.name, i.category, i.quantity, i.unit_amount",
            "FROM payment_items i WHERE i.payment_id = p.id",
        );
        let line = |col: &str| {
            format!("(SELECT MAX(i.{col}) FROM payment_items i WHERE i.payment_id = r.payment_id AND i.sku = r.sku)")
        };
        let values = format!("r.sku, {}, r.quantity * {}", line("category"), line("unit_amount"));
        let returned = json_rows(backend, &values, "FROM refund_items r WHERE r.payment_id = p.id");
        sql.text = format!(
            "{with}SELECT p.created_at, p.store_id, p.amount, p.refunded, p.customer_ref, {flags} AS flags, \
             {lines} AS lines, CASE WHEN p.refunded > 0 THEN {returned} END AS returned FROM p"
        );
        sql
    }
}

/// A basket line as the statement spells it: `[sku, name, category, quantity, unit_amount]`.
#[derive(Deserialize)]
struct LineJson<'a> {
    #[serde(borrow)]
    sku: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    quantity: i64,
    unit_amount: i64,
}

/// A returned item: `[sku, the highest category of its lines, quantity × the highest unit]`.
#[derive(Deserialize)]
struct ReturnedJson<'a> {
    #[serde(borrow)]
    sku: Cow<'a, str>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    value: Option<i64>,
}

/// Reads a source's payments into blocks by Tokyo day (`None`: a value does not fit in memory,
/// and SQL must answer).
pub async fn load(
    conn: &mut Conn,
    backend: Backend,
    src: &Source<'_>,
    names: Names<'_>,
) -> Result<Option<BTreeMap<i64, Block>>, sqlx::Error> {
    let mut blocks: BTreeMap<i64, Block> = BTreeMap::new();
    let mut rows = src.sql(backend).fetch(conn);
    while let Some(r) = rows.try_next().await? {
        let created_at: i64 = r.try_get(0)?;
        let day = day_of(created_at);
        let block = blocks.entry(day).or_insert_with(|| Block::new(day_start(day)));
        if add(block, &r, created_at, &mut *names.catalog, &mut *names.customers)?.is_none() {
            return Ok(None);
        }
    }
    drop(rows);
    for b in blocks.values_mut() {
        b.finish();
    }
    Ok(Some(blocks))
}

/// Adds one row's payment, lines and returned items to its day's block.
fn add(
    block: &mut Block,
    r: &sqlx::any::AnyRow,
    created_at: i64,
    catalog: &mut Arc<Catalog>,
    customers: &mut CustomerIds,
) -> Result<Option<()>, sqlx::Error> {
    let customer = match r.try_get::<Option<&str>, _>(4)? {
        None => NO_CUSTOMER,
        Some(c) => match customers.id(c) {
            Some(id) => id,
            None => return Ok(None),
        },
    };
    let Some(store) = rows::store_id(catalog, r.try_get::<&str, _>(1)?) else { return Ok(None) };
    let flags = u8::try_from(r.try_get::<i64, _>(5)?).unwrap_or(0);
    let p = NewPayment { created_at, amount: r.try_get(2)?, refunded: r.try_get(3)?, customer, store, flags };
    let Some(payment) = block.push_payment(p) else { return Ok(None) };
    let decode = |e: serde_json::Error| sqlx::Error::Decode(Box::new(e));
    if let Some(text) = r.try_get::<Option<&str>, _>(6)? {
        for l in serde_json::from_str::<Vec<LineJson>>(text).map_err(decode)? {
            let variant = rows::variant_id(catalog, &l.sku, l.category.as_deref().unwrap_or(""), &l.name);
            let (Some(variant), Some(gross)) = (variant, l.quantity.checked_mul(l.unit_amount)) else {
                return Ok(None);
            };
            if block.push_line(payment, variant, gross).is_none() {
                return Ok(None);
            }
        }
    }
    if let Some(text) = r.try_get::<Option<&str>, _>(7)? {
        for x in serde_json::from_str::<Vec<ReturnedJson>>(text).map_err(decode)? {
            // A returned sku that is not in the basket is worth nothing (SQL sums a NULL).
            let Some(value) = x.value else { continue };
            let sku = rows::sku_id(catalog, &x.sku);
            let category = rows::category_id(catalog, x.category.as_deref().unwrap_or(""));
            let (Some(sku), Some(category)) = (sku, category) else { return Ok(None) };
            block.push_returned(Returned { payment, sku, category, value });
        }
    }
    Ok(Some(()))
}
