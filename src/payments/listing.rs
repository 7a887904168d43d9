//! A merchant's payments, newest first, with their baskets and `customer_ref`
//! (`GET /v1/merchant/payments` and its CSV): the list the dashboard searches and exports.

use serde::Serialize;
use sqlx::Row;

use super::baskets::Item;
use crate::ids::{PaymentId, StoreId, TerminalId};
use crate::merchants::analytics::{Filter, Sql, store_clause};
use crate::store::{Conn, clock};

/// One payment as a merchant sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MerchantPayment {
    pub payment_id: PaymentId,
    pub store_id: StoreId,
    /// The till that charged it; `null` when the shopper scanned the store's QR code.
    pub terminal_id: Option<TerminalId>,
    pub amount: i64,
    /// Yen refunded so far.
    pub refunded: i64,
    pub currency: crate::money::Currency,
    /// `succeeded` or `reversed`.
    pub status: String,
    /// The shopper's pseudonym at this merchant (`null` on payments older than pseudonyms).
    pub customer_ref: Option<String>,
    /// The basket (empty when the till sent none).
    pub items: Vec<Item>,
    pub created_at: String,
}

/// Where a page starts: after the payment made at `.0` ms with id `.1` (the `next_cursor`
/// `"{created_at}.{payment_id}"`: payments of one millisecond are not skipped).
pub type Cursor = (i64, String);

/// Reads a `next_cursor`; `None` when it is not one.
pub fn parse_cursor(c: &str) -> Option<Cursor> {
    let (at, id) = c.split_once('.')?;
    let id = id.to_string();
    (id.len() <= 64 && !id.is_empty()).then_some(())?;
    Some((at.parse().ok()?, id))
}

/// Up to `limit` payments of the filter (every status), newest first, after `before`; and the
/// cursor of the next page when there may be one.
pub async fn page(
    conn: &mut Conn,
    f: &Filter,
    before: Option<&Cursor>,
    limit: i64,
) -> Result<(Vec<MerchantPayment>, Option<String>), sqlx::Error> {
    let mut sql = Sql::default();
    let m = sql.text(f.merchant_id.as_str());
    let (s, e) = (sql.int(f.start), sql.int(f.end));
    let stores = store_clause(f, &mut sql, "store_id");
    let (at, id) = before.cloned().unwrap_or((i64::MAX, "~".into()));
    let (at, id) = (sql.int(at), sql.text(&id));
    let lim = sql.int(limit);
    sql.text = format!(
        "SELECT id, store_id, terminal_id, amount, refunded, status, customer_ref, created_at FROM payments \
         WHERE merchant_id = {m} AND created_at >= {s} AND created_at < {e}{stores} \
         AND (created_at < {at} OR (created_at = {at} AND id < {id})) ORDER BY created_at DESC, id DESC LIMIT {lim}"
    );
    let rows = sql.fetch_all(&mut *conn).await?;
    let mut items = baskets_of(conn, &rows).await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut last = None;
    for r in &rows {
        let id: PaymentId = r.try_get("id")?;
        let created: i64 = r.try_get("created_at")?;
        last = Some(format!("{created}.{id}"));
        out.push(MerchantPayment {
            items: items.remove(id.as_str()).unwrap_or_default(),
            payment_id: id,
            store_id: r.try_get("store_id")?,
            terminal_id: r.try_get("terminal_id")?,
            amount: r.try_get("amount")?,
            refunded: r.try_get("refunded")?,
            currency: crate::money::Currency::Jpy,
            status: r.try_get("status")?,
            customer_ref: r.try_get("customer_ref")?,
            created_at: clock::rfc3339_ms(created),
        });
    }
    let next = if rows.len() as i64 == limit { last } else { None };
    Ok((out, next))
}

/// The baskets of these payments, by payment id, in line order: one statement.
async fn baskets_of(
    conn: &mut Conn,
    rows: &[sqlx::any::AnyRow],
) -> Result<std::collections::HashMap<String, Vec<Item>>, sqlx::Error> {
    let mut map: std::collections::HashMap<String, Vec<Item>> = std::collections::HashMap::new();
    if rows.is_empty() {
        return Ok(map);
    }
    let mut sql = Sql::default();
    let mut marks = Vec::with_capacity(rows.len());
    for r in rows {
        marks.push(sql.text(&r.try_get::<String, _>("id")?));
    }
    sql.text = format!(
        "SELECT payment_id, sku, name, category, quantity, unit_amount FROM payment_items \
         WHERE payment_id IN ({}) ORDER BY payment_id, line_no",
        marks.join(", ")
    );
    for r in sql.fetch_all(conn).await? {
        map.entry(r.try_get("payment_id")?).or_default().push(Item {
            sku: r.try_get("sku")?,
            name: r.try_get("name")?,
            category: r.try_get("category")?,
            quantity: r.try_get("quantity")?,
            unit_amount: r.try_get("unit_amount")?,
        });
    }
    Ok(map)
}

/// The CSV header of [`csv_lines`].
pub const CSV_HEADER: &str =
    "payment_id,created_at,store_id,terminal_id,amount,refunded,currency,status,customer_ref,items\r\n";

/// Payments as CSV lines; `items` is `sku×quantity` joined by spaces.
pub fn csv_lines(payments: &[MerchantPayment]) -> String {
    use crate::store::csv::field;
    let mut out = String::new();
    for p in payments {
        let items: Vec<String> = p.items.iter().map(|i| format!("{}×{}", i.sku, i.quantity)).collect();
        out.push_str(&format!(
            "{},{},{},{},{},{},JPY,{},{},{}\r\n",
            p.payment_id,
            p.created_at,
            p.store_id,
            p.terminal_id.as_ref().map(|t| t.as_str()).unwrap_or(""),
            p.amount,
            p.refunded,
            p.status,
            p.customer_ref.as_deref().unwrap_or(""),
            field(&items.join(" "))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        assert_eq!(parse_cursor("1700000000000.pay_x"), Some((1_700_000_000_000, "pay_x".into())));
        assert_eq!(parse_cursor("pay_x"), None);
        assert_eq!(parse_cursor("12."), None);
        assert_eq!(parse_cursor("x.pay"), None);
    }
}
