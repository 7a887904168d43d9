//! Baskets: the line items a till may send with a POS payment, checked against the amount and
//! written with the payment in one multi-row insert (nothing when there are none).

use serde::{Deserialize, Serialize};

use crate::ids::PaymentId;
use crate::store::Conn;

/// At most this many lines in one basket.
pub const MAX_LINES: usize = 100;
/// At most this many characters in a sku or a category.
pub const MAX_SKU_CHARS: usize = 64;
/// At most this many characters in an item's name.
pub const MAX_NAME_CHARS: usize = 200;

/// One line of a basket (`items` of `POST /v1/pos/payments`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub sku: String,
    pub name: String,
    /// Free text (for example "drinks"); absent is stored as none and reported as "uncategorised".
    pub category: Option<String>,
    pub quantity: i64,
    pub unit_amount: i64,
}

/// Why a basket is refused: `422 invalid_items` (with what is wrong) or `422 items_mismatch`.
#[derive(Debug, PartialEq, Eq)]
pub enum BasketError {
    Invalid(String),
    Mismatch { sum: i64 },
}

/// Checks every line and that Σ quantity × unit_amount equals `amount` (no items: nothing to check).
pub fn check(items: &[Item], amount: i64) -> Result<(), BasketError> {
    if items.is_empty() {
        return Ok(());
    }
    if items.len() > MAX_LINES {
        return Err(BasketError::Invalid(format!("items: at most {MAX_LINES} lines")));
    }
    let mut sum: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        check_line(i, item)?;
        let line = item.quantity.checked_mul(item.unit_amount);
        sum = line.and_then(|l| sum.checked_add(l)).ok_or(BasketError::Mismatch { sum: i64::MAX })?;
    }
    if sum != amount {
        return Err(BasketError::Mismatch { sum });
    }
    Ok(())
}

fn check_line(i: usize, item: &Item) -> Result<(), BasketError> {
    let bad = |what: &str| Err(BasketError::Invalid(format!("items[{i}].{what}")));
    let sku = item.sku.trim();
    if sku.is_empty() || sku.chars().count() > MAX_SKU_CHARS || sku.chars().any(char::is_control) {
        return bad(&format!("sku: 1 to {MAX_SKU_CHARS} printable characters"));
    }
    if item.name.trim().is_empty() || item.name.chars().count() > MAX_NAME_CHARS {
        return bad(&format!("name: 1 to {MAX_NAME_CHARS} characters"));
    }
    if item.category.as_ref().is_some_and(|c| c.trim().is_empty() || c.chars().count() > MAX_SKU_CHARS) {
        return bad(&format!("category: 1 to {MAX_SKU_CHARS} characters"));
    }
    if !(1..=1_000_000).contains(&item.quantity) {
        return bad("quantity: a whole number from 1 to 1000000");
    }
    if item.unit_amount < 0 {
        return bad("unit_amount: a whole number of yen, 0 or more");
    }
    Ok(())
}

/// Writes a payment's basket, in the caller's transaction: one statement, none for no items.
pub async fn insert(conn: &mut Conn, payment_id: &PaymentId, items: &[Item]) -> Result<(), sqlx::Error> {
    if items.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO payment_items (payment_id, line_no, sku, name, category, quantity, unit_amount, currency) VALUES {}",
        placeholders(items.len(), 7, ", 'JPY'")
    );
    // Only placeholders are formatted in; every value is bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (i, item) in items.iter().enumerate() {
        q = q
            .bind(payment_id)
            .bind(i as i64 + 1)
            .bind(item.sku.trim())
            .bind(item.name.trim())
            .bind(item.category.as_deref().map(str::trim))
            .bind(item.quantity)
            .bind(item.unit_amount);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// One item a refund returns (`items` of `POST /v1/pos/payments/{payment_id}/refunds`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnedItem {
    pub sku: String,
    pub quantity: i64,
}

/// Checks the items a refund names and records them, in the caller's transaction, which holds the
/// payment's lock: each sku once, in the payment's basket, no more than is left to return, and
/// together worth `amount` (a unit at its basket line's unit amount, the highest should the sku be
/// on two lines). No items: nothing to check or write.
pub async fn return_items(
    conn: &mut Conn,
    payment_id: &PaymentId,
    refund_id: &crate::ids::RefundId,
    items: &[ReturnedItem],
    amount: i64,
) -> Result<(), super::PaymentsError> {
    use super::PaymentsError::{InvalidItems, ItemsMismatch};
    if items.is_empty() {
        return Ok(());
    }
    if items.len() > MAX_LINES {
        return Err(InvalidItems(format!("items: at most {MAX_LINES} lines")));
    }
    let lines = sqlx::query(
        "SELECT b.sku, b.bought, b.unit, CAST(COALESCE((SELECT SUM(r.quantity) FROM refund_items r \
         WHERE r.payment_id = $1 AND r.sku = b.sku), 0) AS BIGINT) AS returned FROM (SELECT sku, \
         CAST(SUM(quantity) AS BIGINT) AS bought, MAX(unit_amount) AS unit FROM payment_items \
         WHERE payment_id = $1 GROUP BY sku) b",
    )
    .bind(payment_id)
    .fetch_all(&mut *conn)
    .await?;
    // sku → (units left to return, the value of one)
    let mut left = std::collections::HashMap::new();
    for r in &lines {
        use sqlx::Row;
        let (bought, returned): (i64, i64) = (r.try_get("bought")?, r.try_get("returned")?);
        left.insert(r.try_get::<String, _>("sku")?, (bought - returned, r.try_get::<i64, _>("unit")?));
    }
    let mut worth: i64 = 0;
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let sku = item.sku.trim();
        if !seen.insert(sku) {
            return Err(InvalidItems(format!("items[{i}].sku: named twice")));
        }
        let Some(&(remaining, unit)) = left.get(sku) else {
            return Err(InvalidItems(format!("items[{i}].sku: not in this payment's basket")));
        };
        if !(1..=remaining).contains(&item.quantity) {
            return Err(InvalidItems(format!("items[{i}].quantity: 1 to {remaining} (what is left to return)")));
        }
        worth = worth.saturating_add(item.quantity.saturating_mul(unit));
    }
    if worth != amount {
        return Err(ItemsMismatch(format!("the items are worth ¥{worth}, not the ¥{amount} refunded")));
    }
    let sql = format!(
        "INSERT INTO refund_items (refund_id, payment_id, sku, quantity) VALUES {}",
        placeholders(items.len(), 4, "")
    );
    // Only placeholders are formatted in; every value is bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for item in items {
        q = q.bind(refund_id).bind(payment_id).bind(item.sku.trim()).bind(item.quantity);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// `rows` groups of `columns` numbered placeholders for a multi-row `VALUES` (`($1, $2), ($3, $4)`),
/// each followed by `tail` (constant SQL, never a value).
fn placeholders(rows: usize, columns: usize, tail: &str) -> String {
    let row = |r: usize| {
        let marks: Vec<String> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
        format!("({}{tail})", marks.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: i64, unit_amount: i64) -> Item {
        Item { sku: sku.into(), name: "n".into(), category: None, quantity, unit_amount }
    }

    #[test]
    fn placeholders_number_every_value() {
        assert_eq!(placeholders(2, 3, ""), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 2, ", 'JPY'"), "($1, $2, 'JPY')");
    }

    #[test]
    fn a_basket_must_add_up() {
        assert_eq!(check(&[item("a", 2, 150), item("b", 1, 200)], 500), Ok(()));
        assert_eq!(check(&[item("a", 2, 150)], 500), Err(BasketError::Mismatch { sum: 300 }));
        assert!(matches!(check(&[item("", 1, 500)], 500), Err(BasketError::Invalid(_))));
        assert!(matches!(check(&[item("a", 0, 500)], 0), Err(BasketError::Invalid(_))));
        assert!(matches!(check(&vec![item("a", 1, 1); 101], 101), Err(BasketError::Invalid(_))));
        assert!(matches!(check(&[item("a", 2, i64::MAX)], 1), Err(BasketError::Mismatch { .. })));
    }
}
