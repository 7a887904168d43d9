//! The ledger: double-entry accounts, journal entries and postings (ARCHITECTURE section 5).
//!
//! Every money movement is one [`NewEntry`] of two or more postings that sum to zero, written by
//! [`post`] inside the caller's transaction, so that the business row, the entry and the
//! notification commit together or not at all. Each account keeps a running balance updated in the
//! same statement that checks it: a wallet is debited by one conditional `UPDATE` that fails when
//! funds are short, so concurrent debits can never overdraw it, and the database's `CHECK` backs
//! that up. Entries and postings are never updated or deleted (database triggers refuse it);
//! [`verify`] recomputes every balance from the postings.

use std::fmt;

use serde::Serialize;
use sqlx::Row;

use crate::money::{Currency, Yen};
use crate::store::{Conn, Db};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AccountId(pub i64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account {}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EntryId(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A shopper's stored value; never below zero.
    Wallet,
    /// What Omamori owes a merchant.
    Merchant,
    /// Money in flight from card processors: goes negative as top-ups are credited.
    FundingClearing,
    Fees,
    Suspense,
    /// Money that could not be recovered (the rest of a chargeback).
    Losses,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Wallet => "wallet",
            AccountKind::Merchant => "merchant",
            AccountKind::FundingClearing => "funding_clearing",
            AccountKind::Fees => "fees",
            AccountKind::Suspense => "suspense",
            AccountKind::Losses => "losses",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            AccountKind::Wallet,
            AccountKind::Merchant,
            AccountKind::FundingClearing,
            AccountKind::Fees,
            AccountKind::Suspense,
            AccountKind::Losses,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Whether the balance may go below zero.
    pub fn may_go_negative(self) -> bool {
        self != AccountKind::Wallet
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Topup,
    Payment,
    Refund,
    Reversal,
    Adjustment,
    Chargeback,
    /// Sandbox mode's demo transfers between test accounts.
    SandboxTransfer,
    /// A merchant's day closed: the fee to fee revenue, the net to payouts clearing.
    Settlement,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Topup => "topup",
            EntryKind::Payment => "payment",
            EntryKind::Refund => "refund",
            EntryKind::Reversal => "reversal",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Chargeback => "chargeback",
            EntryKind::SandboxTransfer => "sandbox_transfer",
            EntryKind::Settlement => "settlement",
        }
    }
}

/// One line of an entry: `amount` is added to the account's balance (negative debits it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub account: AccountId,
    pub amount: Yen,
}

/// A journal entry to be written: two or more postings in one currency that sum to zero.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub kind: EntryKind,
    /// The business object this entry records (a top-up id, a payment id, ...).
    pub reference: String,
    pub currency: Currency,
    pub postings: Vec<Posting>,
}

impl NewEntry {
    /// The common case: move `amount` from one account to another.
    pub fn transfer(
        kind: EntryKind,
        reference: impl Into<String>,
        from: AccountId,
        to: AccountId,
        amount: Yen,
    ) -> Self {
        NewEntry {
            kind,
            reference: reference.into(),
            currency: Currency::Jpy,
            postings: vec![Posting { account: from, amount: Yen(-amount.0) }, Posting { account: to, amount }],
        }
    }

    /// Checks the entry's shape before anything is written.
    fn validate(&self) -> Result<(), LedgerError> {
        if self.postings.len() < 2 {
            return Err(LedgerError::TooFewPostings);
        }
        let mut sum: i64 = 0;
        for p in &self.postings {
            if p.amount.0 == 0 {
                return Err(LedgerError::ZeroPosting);
            }
            sum = sum.checked_add(p.amount.0).ok_or(LedgerError::Unbalanced)?;
        }
        if sum != 0 {
            return Err(LedgerError::Unbalanced);
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("a journal entry needs at least two postings")]
    TooFewPostings,
    #[error("a posting of zero is not allowed")]
    ZeroPosting,
    #[error("the postings of a journal entry do not sum to zero")]
    Unbalanced,
    #[error("{0} does not exist")]
    UnknownAccount(AccountId),
    #[error("{0} is not in the entry's currency")]
    CurrencyMismatch(AccountId),
    #[error("insufficient funds in {0}")]
    InsufficientFunds(AccountId),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl crate::store::Retryable for LedgerError {
    fn is_retryable(&self) -> bool {
        matches!(self, LedgerError::Db(e) if e.is_retryable())
    }
}

/// Opens an account with a zero balance.
pub async fn create_account(
    conn: &mut Conn,
    kind: AccountKind,
    currency: Currency,
    owner_ref: Option<&str>,
    now_ms: i64,
) -> Result<AccountId, sqlx::Error> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO accounts (kind, currency, owner_ref, balance, created_at) VALUES ($1, $2, $3, 0, $4) RETURNING id",
    )
    .bind(kind.as_str())
    .bind(currency.code())
    .bind(owner_ref)
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await?;
    Ok(AccountId(id))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: AccountId,
    pub kind: AccountKind,
    pub currency: Currency,
    pub owner_ref: Option<String>,
    pub balance: Yen,
}

pub async fn account(conn: &mut Conn, id: AccountId) -> Result<Option<Account>, sqlx::Error> {
    let row = sqlx::query("SELECT id, kind, currency, owner_ref, balance FROM accounts WHERE id = $1")
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| account_from_row(&r)).transpose()
}

/// Finds an account by its owner reference and kind (for example the sandbox's demo wallets).
pub async fn account_by_owner(
    conn: &mut Conn,
    kind: AccountKind,
    owner_ref: &str,
) -> Result<Option<Account>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, kind, currency, owner_ref, balance FROM accounts WHERE kind = $1 AND owner_ref = $2 ORDER BY id LIMIT 1",
    )
    .bind(kind.as_str())
    .bind(owner_ref)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| account_from_row(&r)).transpose()
}

fn account_from_row(r: &sqlx::any::AnyRow) -> Result<Account, sqlx::Error> {
    let kind: String = r.try_get("kind")?;
    let currency: String = r.try_get("currency")?;
    Ok(Account {
        id: AccountId(r.try_get("id")?),
        kind: AccountKind::parse(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown account kind {kind}").into()))?,
        currency: Currency::parse(&currency)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown currency {currency}").into()))?,
        owner_ref: r.try_get("owner_ref")?,
        balance: Yen(r.try_get("balance")?),
    })
}

/// The outcome of [`post`]: the entry id and each touched account's balance after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub entry: EntryId,
    pub balances: Vec<(AccountId, Yen)>,
}

impl Posted {
    pub fn balance_of(&self, account: AccountId) -> Option<Yen> {
        self.balances.iter().find(|(a, _)| *a == account).map(|(_, b)| *b)
    }
}

/// The entry's postings, each with the balance its account was left at, in one statement.
async fn insert_postings(
    conn: &mut Conn,
    entry_id: i64,
    postings: &[Posting],
    after: &[i64],
    currency: Currency,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let rows: Vec<String> = (0..postings.len())
        .map(|i| {
            let b = i * 6;
            format!("(${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6)
        })
        .collect();
    let sql = format!(
        "INSERT INTO postings (entry_id, account_id, amount, balance_after, currency, created_at) VALUES {}",
        rows.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (p, balance) in postings.iter().zip(after) {
        q = q.bind(entry_id).bind(p.account.0).bind(p.amount.0).bind(*balance).bind(currency.code()).bind(now_ms);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// Writes `entry` inside the caller's transaction: the entry row, its postings, and every
/// touched account's running balance. Fails (and the caller rolls back) when the entry is not
/// balanced, an account is unknown or in another currency, or a wallet would go below zero.
pub async fn post(conn: &mut Conn, entry: &NewEntry, now_ms: i64) -> Result<Posted, LedgerError> {
    entry.validate()?;
    let entry_id: i64 = sqlx::query_scalar(
        "INSERT INTO journal_entries (kind, reference, currency, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(entry.kind.as_str())
    .bind(&entry.reference)
    .bind(entry.currency.code())
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await?;

    // Touch accounts in id order so that two entries over the same accounts lock them in the same
    // order and cannot deadlock each other on PostgreSQL.
    let mut postings = entry.postings.clone();
    postings.sort_by_key(|p| p.account);
    let mut balances: Vec<(AccountId, Yen)> = Vec::with_capacity(postings.len());
    let mut after: Vec<i64> = Vec::with_capacity(postings.len());
    for p in &postings {
        // One statement both checks and moves: a wallet row is updated only when the result
        // stays at or above zero, so a concurrent debit cannot slip between a read and a write.
        let balance: Option<i64> = sqlx::query_scalar(
            "UPDATE accounts SET balance = balance + $1 \
             WHERE id = $2 AND currency = $3 AND (kind <> 'wallet' OR balance + $1 >= 0) \
             RETURNING balance",
        )
        .bind(p.amount.0)
        .bind(p.account.0)
        .bind(entry.currency.code())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(balance) = balance else {
            return Err(explain_refused_update(conn, p.account, entry.currency).await?);
        };
        after.push(balance);
        match balances.iter_mut().find(|(a, _)| *a == p.account) {
            Some(slot) => slot.1 = Yen(balance),
            None => balances.push((p.account, Yen(balance))),
        }
    }
    insert_postings(conn, entry_id, &postings, &after, entry.currency, now_ms).await?;

    // The invariant, checked again from what the database now holds, in the same transaction.
    let (sum, count): (i64, i64) = {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS total, COUNT(*) AS n FROM postings WHERE entry_id = $1",
        )
        .bind(entry_id)
        .fetch_one(&mut *conn)
        .await?;
        (row.try_get("total")?, row.try_get("n")?)
    };
    if sum != 0 || count != entry.postings.len() as i64 {
        tracing::error!(entry_id, sum, count, "journal entry failed its balance check; rolling back");
        return Err(LedgerError::Unbalanced);
    }
    Ok(Posted { entry: EntryId(entry_id), balances })
}

async fn explain_refused_update(
    conn: &mut Conn,
    account: AccountId,
    currency: Currency,
) -> Result<LedgerError, sqlx::Error> {
    let row =
        sqlx::query("SELECT currency FROM accounts WHERE id = $1").bind(account.0).fetch_optional(&mut *conn).await?;
    Ok(match row {
        None => LedgerError::UnknownAccount(account),
        Some(r) if r.try_get::<String, _>("currency")? != currency.code() => LedgerError::CurrencyMismatch(account),
        Some(_) => LedgerError::InsufficientFunds(account),
    })
}

/// An account whose stored balance disagrees with the sum of its postings, or an entry whose
/// postings do not sum to zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Discrepancy {
    Balance { account: AccountId, kind: String, stored: i64, from_postings: i64 },
    Entry { entry: EntryId, sum: i64 },
    NegativeWallet { account: AccountId, balance: i64 },
}

impl fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Discrepancy::Balance { account, kind, stored, from_postings } => {
                write!(f, "{account} ({kind}): stored balance {stored} but its postings sum to {from_postings}")
            }
            Discrepancy::Entry { entry, sum } => {
                write!(f, "journal entry {}: postings sum to {sum}, not 0", entry.0)
            }
            Discrepancy::NegativeWallet { account, balance } => {
                write!(f, "{account} (wallet): balance {balance} below zero")
            }
        }
    }
}

/// Recomputes every balance from the postings and checks every entry; returns what disagrees.
pub async fn verify(db: &Db) -> Result<Vec<Discrepancy>, sqlx::Error> {
    let mut found = Vec::new();
    let rows = sqlx::query(
        "SELECT a.id AS id, a.kind AS kind, a.balance AS balance, \
                CAST(COALESCE((SELECT SUM(p.amount) FROM postings p WHERE p.account_id = a.id), 0) AS BIGINT) AS computed \
         FROM accounts a ORDER BY a.id",
    )
    .fetch_all(db.pool())
    .await?;
    for r in rows {
        let (id, kind, stored, computed): (i64, String, i64, i64) =
            (r.try_get("id")?, r.try_get("kind")?, r.try_get("balance")?, r.try_get("computed")?);
        if stored != computed {
            found.push(Discrepancy::Balance {
                account: AccountId(id),
                kind: kind.clone(),
                stored,
                from_postings: computed,
            });
        }
        if kind == "wallet" && stored < 0 {
            found.push(Discrepancy::NegativeWallet { account: AccountId(id), balance: stored });
        }
    }
    let rows = sqlx::query(
        "SELECT entry_id, CAST(SUM(amount) AS BIGINT) AS total FROM postings GROUP BY entry_id HAVING SUM(amount) <> 0 ORDER BY entry_id",
    )
    .fetch_all(db.pool())
    .await?;
    for r in rows {
        found.push(Discrepancy::Entry { entry: EntryId(r.try_get("entry_id")?), sum: r.try_get("total")? });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(account: i64, amount: i64) -> Posting {
        Posting { account: AccountId(account), amount: Yen(amount) }
    }

    fn entry(postings: Vec<Posting>) -> NewEntry {
        NewEntry { kind: EntryKind::Adjustment, reference: "t".into(), currency: Currency::Jpy, postings }
    }

    #[test]
    fn an_entry_must_balance_before_anything_is_written() {
        assert!(entry(vec![p(1, -5), p(2, 5)]).validate().is_ok());
        assert!(entry(vec![p(1, -5), p(2, 3), p(3, 2)]).validate().is_ok());
        assert!(matches!(entry(vec![p(1, -5), p(2, 4)]).validate(), Err(LedgerError::Unbalanced)));
        assert!(matches!(entry(vec![p(1, 0), p(2, 0)]).validate(), Err(LedgerError::ZeroPosting)));
        assert!(matches!(entry(vec![p(1, 5)]).validate(), Err(LedgerError::TooFewPostings)));
        assert!(matches!(entry(vec![]).validate(), Err(LedgerError::TooFewPostings)));
        // Overflow must not wrap around to a false zero.
        assert!(matches!(
            entry(vec![p(1, i64::MAX), p(2, i64::MAX), p(3, 2)]).validate(),
            Err(LedgerError::Unbalanced)
        ));
    }
}
