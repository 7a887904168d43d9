//! Merchants, stores, terminals and their keys, store QR codes.
//!
//! Operators create merchants (each with a ledger `merchant` account and an ISO 18245 category
//! code), their stores (name, city, postal code, and a category that may override the merchant's)
//! and terminals. A terminal key is 256 random bits shown once, stored as a hash, scoped to its
//! store, and revocable.

pub mod analytics;
pub mod analytics_cache;
pub mod analytics_load;
pub mod analytics_routes;
pub mod analytics_rows;
pub mod dashboard_routes;
pub mod payouts;
pub mod qr;
pub mod routes;
pub mod settlement;
pub mod settlement_routes;
pub mod till_routes;
pub mod zengin;

pub mod webhooks;

use crate::ids::MerchantId;
use crate::ids::StoreId;
use crate::ids::TerminalId;
use sqlx::Row;

use crate::ledger::{self, AccountKind};
use crate::money::Currency;
use crate::secret::{new_token, secret_hash};
use crate::store::{self, Conn, Db};

const TERMINAL: &str = "terminal";

/// What merchants refuse. `http` turns each into its status and `code`.
#[derive(Debug, thiserror::Error)]
pub enum MerchantError {
    /// `422 invalid_category`.
    #[error("category must be an ISO 18245 merchant category code: four digits")]
    InvalidCategory,
    /// `422 invalid_body`.
    #[error("{0}")]
    Invalid(String),
    /// `404 not_found`.
    #[error("{0}")]
    NotFound(&'static str),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl crate::store::Retryable for MerchantError {
    fn is_retryable(&self) -> bool {
        matches!(self, MerchantError::Db(e) if e.is_retryable())
    }
}

/// Checks a display text: 1 to `max` characters, no control characters.
fn text(value: &str, max: usize, field: &'static str) -> Result<String, MerchantError> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(MerchantError::Invalid(format!("{field} must be 1 to {max} characters")));
    }
    Ok(v.to_string())
}

/// An ISO 18245 merchant category code: four digits.
pub fn category(value: &str) -> Result<String, MerchantError> {
    if value.len() == 4 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_string())
    } else {
        Err(MerchantError::InvalidCategory)
    }
}

/// How many ledger accounts a merchant is paid into (its main account and the shards beside it).
pub const ACCOUNT_SHARDS: usize = 32;

/// Gives every merchant made before shards existed its [`ACCOUNT_SHARDS`] accounts (at start;
/// under a lock per merchant, so that instances starting together add them once).
pub async fn ensure_account_shards(db: &Db, now: i64) -> Result<(), sqlx::Error> {
    let short: Vec<MerchantId> = sqlx::query_scalar(
        "SELECT m.id FROM merchants m WHERE (SELECT COUNT(*) FROM accounts a WHERE a.kind = 'merchant' AND a.owner_ref = m.id) < $1",
    )
    .bind(ACCOUNT_SHARDS as i64)
    .fetch_all(db.pool())
    .await?;
    for merchant in short {
        store::retry(|| async {
            let mut tx = db.begin().await?;
            tx.lock("merchant_shards", merchant.as_str()).await?;
            let have: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE kind = 'merchant' AND owner_ref = $1")
                    .bind(&merchant)
                    .fetch_one(&mut *tx)
                    .await?;
            for _ in have..ACCOUNT_SHARDS as i64 {
                ledger::create_account(&mut tx, AccountKind::Merchant, Currency::Jpy, Some(merchant.as_str()), now)
                    .await?;
            }
            tx.commit().await
        })
        .await?;
    }
    Ok(())
}

pub async fn create_merchant(
    db: &Db,
    name: &str,
    mcc: &str,
    actor: &str,
    now: i64,
) -> Result<MerchantId, MerchantError> {
    let name = text(name, 100, "name")?;
    let mcc = category(mcc)?;
    let id = MerchantId::generate();
    store::retry(|| async {
        let mut tx = db.begin().await?;
        let account =
            ledger::create_account(&mut tx, AccountKind::Merchant, Currency::Jpy, Some(id.as_str()), now).await?;
        for _ in 1..ACCOUNT_SHARDS {
            ledger::create_account(&mut tx, AccountKind::Merchant, Currency::Jpy, Some(id.as_str()), now).await?;
        }
        sqlx::query("INSERT INTO merchants (id, name, category, account_id, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(&name)
            .bind(&mcc)
            .bind(account.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        crate::audit::append(
            &mut tx,
            actor,
            "merchant.create",
            &id,
            &serde_json::json!({"name": name, "category": mcc}),
            now,
        )
        .await?;
        tx.commit().await
    })
    .await?;
    Ok(id)
}

pub struct NewStore<'a> {
    pub name: &'a str,
    pub city: &'a str,
    pub postal_code: Option<&'a str>,
    pub category: Option<&'a str>,
}

/// Creates a store; answers its id and its QR payload.
pub async fn create_store(
    db: &Db,
    merchant_id: &MerchantId,
    s: NewStore<'_>,
    actor: &str,
    now: i64,
) -> Result<(StoreId, String), MerchantError> {
    let name = text(s.name, 100, "name")?;
    let city = text(s.city, 60, "city")?;
    let postal = s.postal_code.map(|p| text(p, 10, "postal_code")).transpose()?;
    let mcc = s.category.map(category).transpose()?;
    let id = StoreId::generate();
    store::retry(|| async {
        let mut tx = db.begin().await?;
        require_merchant(&mut tx, merchant_id).await?;
        sqlx::query(
            "INSERT INTO stores (id, merchant_id, name, city, postal_code, category, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(merchant_id)
        .bind(&name)
        .bind(&city)
        .bind(&postal)
        .bind(&mcc)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let detail = serde_json::json!({"merchant_id": merchant_id, "name": name, "city": city});
        crate::audit::append(&mut tx, actor, "store.create", &id, &detail, now).await?;
        tx.commit().await?;
        Ok::<_, MerchantError>(())
    })
    .await?;
    let mut conn = db.pool().acquire().await?;
    let store =
        store_by_id(&mut conn, &id).await?.ok_or_else(|| MerchantError::Internal(anyhow::anyhow!("store vanished")))?;
    Ok((id, store.qr_payload()))
}

/// A store with what payments need of its merchant.
#[derive(Debug, Clone)]
pub struct Store {
    pub id: StoreId,
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    /// The merchant's main ledger account (refunds and reversals come out of it).
    pub merchant_account: i64,
    /// Every ledger account the merchant is paid into: the main one first, then its shards
    /// ([`ACCOUNT_SHARDS`]). Payments credit them in turn, so that payments at one busy store do
    /// not queue on one balance row; the merchant's balance is their sum.
    pub merchant_accounts: Vec<i64>,
    pub name: String,
    pub city: String,
    pub postal_code: Option<String>,
    /// The store's category, or the merchant's.
    pub category: String,
}

impl Store {
    pub fn qr_payload(&self) -> String {
        qr::build(&qr::StoreQr {
            store_id: self.id.clone(),
            merchant_name: self.name.clone(),
            merchant_city: self.city.clone(),
            postal_code: self.postal_code.clone(),
            mcc: self.category.clone(),
        })
    }
}

pub async fn store_by_id(conn: &mut Conn, id: &StoreId) -> Result<Option<Store>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT s.id, s.merchant_id, m.name AS merchant_name, m.account_id, s.name, s.city, s.postal_code, \
         COALESCE(s.category, m.category) AS category FROM stores s JOIN merchants m ON m.id = s.merchant_id WHERE s.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(mut store) = row
        .map(|r| {
            Ok::<_, sqlx::Error>(Store {
                id: r.try_get("id")?,
                merchant_id: r.try_get("merchant_id")?,
                merchant_name: r.try_get("merchant_name")?,
                merchant_account: r.try_get("account_id")?,
                merchant_accounts: Vec::new(),
                name: r.try_get("name")?,
                city: r.try_get("city")?,
                postal_code: r.try_get("postal_code")?,
                category: r.try_get("category")?,
            })
        })
        .transpose()?
    else {
        return Ok(None);
    };
    let main = store.merchant_account;
    let shards: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM accounts WHERE kind = 'merchant' AND owner_ref = $1 AND id <> $2 ORDER BY id",
    )
    .bind(&store.merchant_id)
    .bind(main)
    .fetch_all(&mut *conn)
    .await?;
    store.merchant_accounts = std::iter::once(main).chain(shards).collect();
    Ok(Some(store))
}

/// [`store_by_id`] from memory (`store::cache`, group `merchants`: a change to a merchant or a
/// store applies at once where it was made and within a second elsewhere). An unknown id is not
/// kept.
pub async fn store_by_id_cached(db: &Db, conn: &mut Conn, id: &StoreId) -> Result<Option<Store>, sqlx::Error> {
    use crate::store::cache::{Group, cached_found};
    let key = format!("store:{id}");
    let id = id.clone();
    cached_found(db, conn, Group::Merchants, &key, |conn| Box::pin(async move { store_by_id(conn, &id).await })).await
}

/// Issues a terminal key for a store; answers the terminal id and the key (shown once).
pub async fn create_terminal(
    db: &Db,
    store_id: &StoreId,
    actor: &str,
    now: i64,
) -> Result<(TerminalId, String), MerchantError> {
    let id = TerminalId::generate();
    let key = format!("tk_{}", new_token());
    store::retry(|| async {
        let mut tx = db.begin().await?;
        let exists: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM stores WHERE id = $1").bind(store_id).fetch_one(&mut *tx).await?;
        if exists == 0 {
            return Err(MerchantError::NotFound("there is no such store"));
        }
        sqlx::query("INSERT INTO terminals (id, store_id, key_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(store_id)
            .bind(secret_hash(TERMINAL, &key))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        crate::audit::append(&mut tx, actor, "terminal.create", &id, &serde_json::json!({"store_id": store_id}), now)
            .await?;
        tx.commit().await?;
        Ok(())
    })
    .await?;
    Ok((id, key))
}

pub async fn revoke_terminal(db: &Db, terminal_id: &TerminalId, actor: &str, now: i64) -> Result<bool, MerchantError> {
    let n = store::retry(|| async {
        let mut tx = db.begin().await?;
        let n = sqlx::query("UPDATE terminals SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(terminal_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            crate::audit::append(&mut tx, actor, "terminal.revoke", terminal_id, &serde_json::json!({}), now).await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(n)
    })
    .await?;
    Ok(n == 1)
}

/// A terminal authenticated by its key.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub id: TerminalId,
    pub store_id: StoreId,
}

/// Revokes every terminal of a store (the sandbox issues a fresh demo key at each start).
pub async fn revoke_store_terminals(db: &Db, store_id: &StoreId, now: i64) -> Result<u64, sqlx::Error> {
    crate::store::write_one(db, || {
        sqlx::query("UPDATE terminals SET revoked_at = $1 WHERE store_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(store_id)
    })
    .await
}

/// The merchant called `name` and its first store, if both exist.
pub async fn first_store_of_merchant_named(db: &Db, name: &str) -> Result<Option<(MerchantId, StoreId)>, sqlx::Error> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT m.id AS merchant_id, s.id AS store_id FROM merchants m JOIN stores s ON s.merchant_id = m.id \
         WHERE m.name = $1 ORDER BY s.created_at LIMIT 1",
    )
    .bind(name)
    .fetch_optional(db.pool())
    .await?;
    row.map(|r| Ok((r.try_get("merchant_id")?, r.try_get("store_id")?))).transpose()
}

pub async fn authenticate_terminal(conn: &mut Conn, key: &str) -> Result<Option<Terminal>, sqlx::Error> {
    if !key.starts_with("tk_") || key.len() > 100 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT id, store_id FROM terminals WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(secret_hash(TERMINAL, key))
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| Ok(Terminal { id: r.try_get("id")?, store_id: r.try_get("store_id")? })).transpose()
}

fn terminal_cache_key(key: &str) -> String {
    format!("terminal:{}", secret_hash(TERMINAL, key))
}

/// The terminal of a key this instance has seen under the newest generation, without touching
/// the database (`None`: ask [`authenticate_terminal_cached`]).
pub fn terminal_in_memory(db: &Db, key: &str) -> Option<Terminal> {
    if !key.starts_with("tk_") || key.len() > 100 {
        return None;
    }
    crate::store::cache::peek(db, crate::store::cache::Group::Merchants, &terminal_cache_key(key))
}

/// [`authenticate_terminal`] from memory for a key seen before (`store::cache`, group
/// `merchants`: a revoked terminal is refused at once by the instance that revoked it and within
/// a second by the others). An unknown key always asks the database, and is not kept.
pub async fn authenticate_terminal_cached(
    db: &Db,
    conn: &mut Conn,
    key: &str,
) -> Result<Option<Terminal>, sqlx::Error> {
    use crate::store::cache::{Group, cached_found};
    if !key.starts_with("tk_") || key.len() > 100 {
        return Ok(None);
    }
    let hash = terminal_cache_key(key);
    let key = key.to_string();
    cached_found(db, conn, Group::Merchants, &hash, |conn| {
        Box::pin(async move { authenticate_terminal(conn, &key).await })
    })
    .await
}

/// `404` unless the merchant exists (inside the caller's transaction).
pub async fn require_merchant(conn: &mut crate::store::Conn, merchant_id: &MerchantId) -> Result<(), MerchantError> {
    let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM merchants WHERE id = $1")
        .bind(merchant_id)
        .fetch_one(&mut *conn)
        .await?;
    if exists == 0 {
        return Err(MerchantError::NotFound("there is no such merchant"));
    }
    Ok(())
}
