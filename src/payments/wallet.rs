//! The wallet: balance, spending limits, history and notices.
//!
//! Daily and monthly limits count calendar days and months in Asia/Tokyo (UTC+9, no daylight
//! saving). The shopper sets per-payment, daily and monthly limits under operator ceilings;
//! lowering is immediate, raising needs step-up and is refused during cooling-off. Limits are
//! checked inside the payment's transaction, under a lock on the wallet, so two payments cannot
//! both slip under the same limit.

use crate::ids::UserId;
use sqlx::Row;
use time::{OffsetDateTime, UtcOffset};

use super::PaymentsError;
use crate::store::{Conn, clock};

/// Defaults a new wallet starts with, and the ceilings above which a shopper cannot raise them.
pub const DEFAULT_LIMITS: Limits = Limits { per_payment: 50_000, daily: 100_000, monthly: 300_000 };
pub const CEILINGS: Limits = Limits { per_payment: 500_000, daily: 1_000_000, monthly: 3_000_000 };
/// Top-up rules (ARCHITECTURE section 6).
pub const TOPUP_MAX: i64 = 50_000;
pub const TOPUP_DAILY_MAX: i64 = 100_000;
pub const TOPUP_DAILY_MAX_COOLING_OFF: i64 = 10_000;
pub const BALANCE_MAX: i64 = 500_000;
pub const TOPUPS_PER_10_MIN: i64 = 2;
pub const TOPUP_STEP_UP_ABOVE: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Limits {
    pub per_payment: i64,
    pub daily: i64,
    pub monthly: i64,
}

const TOKYO: UtcOffset = match UtcOffset::from_hms(9, 0, 0) {
    Ok(o) => o,
    Err(_) => panic!("+09:00 is a valid offset"),
};

/// The start of the Tokyo calendar day that contains `now_ms`.
pub fn tokyo_day_start(now_ms: i64) -> i64 {
    let t = clock::from_ms(now_ms).to_offset(TOKYO);
    clock::to_ms(t.replace_time(time::Time::MIDNIGHT))
}

/// The start of the Tokyo calendar month that contains `now_ms`.
pub fn tokyo_month_start(now_ms: i64) -> i64 {
    let t: OffsetDateTime = clock::from_ms(now_ms).to_offset(TOKYO);
    let first = t.replace_day(1).unwrap_or(t);
    clock::to_ms(first.replace_time(time::Time::MIDNIGHT))
}

pub async fn limits(conn: &mut Conn, user_id: &UserId) -> Result<Limits, sqlx::Error> {
    let row = sqlx::query("SELECT per_payment, daily, monthly FROM wallet_limits WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => Limits {
            per_payment: r.try_get("per_payment")?,
            daily: r.try_get("daily")?,
            monthly: r.try_get("monthly")?,
        },
        None => DEFAULT_LIMITS,
    })
}

/// What the shopper paid since `since` (payments less their refunds).
pub async fn spent(conn: &mut Conn, user_id: &UserId, since: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount - refunded), 0) AS BIGINT) FROM payments \
         WHERE user_id = $1 AND status = 'succeeded' AND created_at >= $2",
    )
    .bind(user_id)
    .bind(since)
    .fetch_one(&mut *conn)
    .await
}

/// What a payment needs of the payer's own money history, in one round trip (read under the
/// wallet's lock): the limits, what was spent today and this month, the payments of the last hour
/// and the newest successful top-up (the risk rules' facts that payments owns).
#[derive(Debug, Clone, Copy)]
pub struct Spending {
    pub limits: Limits,
    pub today: i64,
    pub this_month: i64,
    pub payments_since_hour: i64,
    pub last_topup_at: Option<i64>,
}

pub async fn spending(conn: &mut Conn, user_id: &UserId, now: i64) -> Result<Spending, sqlx::Error> {
    let row = sqlx::query(
        "SELECT l.per_payment, l.daily, l.monthly, \
         CAST(COALESCE((SELECT SUM(p.amount - p.refunded) FROM payments p WHERE p.user_id = $1 AND p.status = 'succeeded' AND p.created_at >= $2), 0) AS BIGINT) AS today, \
         CAST(COALESCE((SELECT SUM(p.amount - p.refunded) FROM payments p WHERE p.user_id = $1 AND p.status = 'succeeded' AND p.created_at >= $3), 0) AS BIGINT) AS this_month, \
         (SELECT COUNT(*) FROM payments p WHERE p.user_id = $1 AND p.created_at > $4) AS last_hour, \
         (SELECT MAX(t.settled_at) FROM topups t WHERE t.user_id = $1 AND t.status = 'succeeded') AS last_topup \
         FROM (SELECT 1 AS one) AS x LEFT JOIN wallet_limits l ON l.user_id = $1",
    )
    .bind(user_id)
    .bind(tokyo_day_start(now))
    .bind(tokyo_month_start(now))
    .bind(now - 3_600_000)
    .fetch_one(&mut *conn)
    .await?;
    let limits = match row.try_get::<Option<i64>, _>("per_payment")? {
        Some(per_payment) => Limits {
            per_payment,
            daily: row.try_get::<Option<i64>, _>("daily")?.unwrap_or(DEFAULT_LIMITS.daily),
            monthly: row.try_get::<Option<i64>, _>("monthly")?.unwrap_or(DEFAULT_LIMITS.monthly),
        },
        None => DEFAULT_LIMITS,
    };
    Ok(Spending {
        limits,
        today: row.try_get("today")?,
        this_month: row.try_get("this_month")?,
        payments_since_hour: row.try_get("last_hour")?,
        last_topup_at: row.try_get("last_topup")?,
    })
}

/// Refuses a payment of `amount` that would break one of the shopper's limits, on the figures
/// [`spending`] read inside the payment's transaction, after the wallet was locked.
pub fn check_spent(s: &Spending, amount: i64) -> Result<(), PaymentsError> {
    let l = s.limits;
    if amount > l.per_payment {
        return Err(limit_exceeded("per_payment", l.per_payment));
    }
    if s.today + amount > l.daily {
        return Err(limit_exceeded("daily", l.daily));
    }
    if s.this_month + amount > l.monthly {
        return Err(limit_exceeded("monthly", l.monthly));
    }
    Ok(())
}

fn limit_exceeded(which: &'static str, limit: i64) -> PaymentsError {
    PaymentsError::LimitExceeded { which, limit }
}

/// The wallet as its owner sees it (`GET /v1/wallet`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub balance: i64,
    pub currency: crate::money::Currency,
    pub limits: Limits,
    pub spent: Spent,
}

/// What the shopper spent, by Asia/Tokyo calendar.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Spent {
    pub today: i64,
    pub this_month: i64,
}

/// `GET /v1/wallet`.
pub async fn summary(conn: &mut Conn, user_id: &UserId, wallet_account: i64, now: i64) -> Result<Summary, sqlx::Error> {
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
        .bind(wallet_account)
        .fetch_one(&mut *conn)
        .await?;
    let l = limits(conn, user_id).await?;
    let today = spent(conn, user_id, tokyo_day_start(now)).await?;
    let month = spent(conn, user_id, tokyo_month_start(now)).await?;
    Ok(Summary { balance, currency: crate::money::Currency::Jpy, limits: l, spent: Spent { today, this_month: month } })
}

/// Whether `new` raises any of `old`.
pub fn raises(old: Limits, new: Limits) -> bool {
    new.per_payment > old.per_payment || new.daily > old.daily || new.monthly > old.monthly
}

/// Validates requested limits against the ceilings.
pub fn validate(new: Limits) -> Result<(), PaymentsError> {
    for (name, value, ceiling) in [
        ("per_payment", new.per_payment, CEILINGS.per_payment),
        ("daily", new.daily, CEILINGS.daily),
        ("monthly", new.monthly, CEILINGS.monthly),
    ] {
        if !(1..=ceiling).contains(&value) {
            return Err(PaymentsError::LimitOutOfRange { name, ceiling });
        }
    }
    if new.per_payment > new.daily || new.daily > new.monthly {
        return Err(PaymentsError::Invalid("limits must satisfy per_payment <= daily <= monthly".into()));
    }
    Ok(())
}

pub async fn set_limits(conn: &mut Conn, user_id: &UserId, l: Limits, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wallet_limits (user_id, per_payment, daily, monthly, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET per_payment = $2, daily = $3, monthly = $4, updated_at = $5",
    )
    .bind(user_id)
    .bind(l.per_payment)
    .bind(l.daily)
    .bind(l.monthly)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One line of history.
pub struct HistoryLine {
    pub posting_id: i64,
    pub entry_id: i64,
    pub kind: String,
    pub amount: i64,
    pub balance_after: i64,
    pub counterparty: Option<String>,
    pub created_at: i64,
}

/// The wallet's postings, newest first, before the posting id `before` (the cursor).
pub async fn history(
    conn: &mut Conn,
    wallet_account: i64,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<HistoryLine>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT p.id AS posting_id, e.id AS entry_id, e.kind, p.amount, p.balance_after, p.created_at, \
                COALESCE(m.name, c.brand || ' ****' || c.last4, rm.name) AS counterparty \
         FROM postings p JOIN journal_entries e ON e.id = p.entry_id \
         LEFT JOIN payments pay ON pay.id = e.reference \
         LEFT JOIN merchants m ON m.id = pay.merchant_id \
         LEFT JOIN topups t ON t.id = e.reference \
         LEFT JOIN cards c ON c.id = t.card_id \
         LEFT JOIN refunds r ON r.id = e.reference \
         LEFT JOIN payments rp ON rp.id = r.payment_id \
         LEFT JOIN merchants rm ON rm.id = rp.merchant_id \
         WHERE p.account_id = $1 AND p.id < $2 ORDER BY p.id DESC LIMIT $3",
    )
    .bind(wallet_account)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(HistoryLine {
                posting_id: r.try_get("posting_id")?,
                entry_id: r.try_get("entry_id")?,
                kind: r.try_get("kind")?,
                amount: r.try_get("amount")?,
                balance_after: r.try_get("balance_after")?,
                counterparty: r.try_get("counterparty")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokyo_days_and_months() {
        // 2026-11-30 20:00 UTC is 2026-12-01 05:00 in Tokyo.
        let t = clock::to_ms(time::macros::datetime!(2026-11-30 20:00 UTC));
        assert_eq!(tokyo_day_start(t), clock::to_ms(time::macros::datetime!(2026-11-30 15:00 UTC)));
        assert_eq!(tokyo_month_start(t), clock::to_ms(time::macros::datetime!(2026-11-30 15:00 UTC)));
        let t = clock::to_ms(time::macros::datetime!(2026-11-30 14:59 UTC));
        assert_eq!(tokyo_month_start(t), clock::to_ms(time::macros::datetime!(2026-10-31 15:00 UTC)));
    }

    #[test]
    fn limits_are_ordered_and_capped() {
        assert!(validate(DEFAULT_LIMITS).is_ok());
        assert!(validate(Limits { per_payment: 0, ..DEFAULT_LIMITS }).is_err());
        assert!(validate(Limits { monthly: CEILINGS.monthly + 1, ..DEFAULT_LIMITS }).is_err());
        assert!(validate(Limits { per_payment: 200_000, daily: 100_000, monthly: 300_000 }).is_err());
        assert!(raises(DEFAULT_LIMITS, Limits { daily: 100_001, ..DEFAULT_LIMITS }));
        assert!(!raises(DEFAULT_LIMITS, Limits { daily: 99_999, ..DEFAULT_LIMITS }));
    }
}
