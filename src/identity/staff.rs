//! Merchant staff: the people of one merchant who use the dashboard (`/merchant`). An `owner` sees
//! every store, the staff and the bank account; `staff` see the payments, refunds and analytics of
//! the stores they are given. An operator creates the first owner (API or command line); owners
//! add the rest. Each gets a long random password and an authenticator seed, shown once; the
//! table keeps the password's Argon2 hash and the seed sealed, as for operators.
//!
//! Login takes the e-mail, the password and the authenticator code in one request (the
//! dashboard's one form), or a passkey alone (a `merchant_login` challenge, as an operator's). It is throttled like an operator's: the address, network and account
//! counters are checked and the attempt counted before the password is hashed, and a wrong
//! password and a wrong code get the same `401 invalid_credentials`.

use serde::Serialize;
use sqlx::Row;

use super::challenge::{TotpOwner, open_merchant_session, totp_matches};
use super::login::password_step;
use super::password::Password;
use super::recovery::unknown_login_key;
use super::session::{self, Opened};
use super::{Email, IdentityError, totp};
use crate::ids::{MerchantId, MerchantUserId, StoreId};
use crate::risk::client::ClientInfo;
use crate::risk::throttle;
use crate::state::AppState;
use crate::store::{self, Conn, clock};

/// What a merchant user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    /// Everything of the merchant: every store, the staff, the bank account.
    Owner,
    /// The payments, refunds and analytics of the stores they are given.
    Staff,
}

impl StaffRole {
    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::Owner => "owner",
            StaffRole::Staff => "staff",
        }
    }

    fn parse(s: &str) -> StaffRole {
        if s == "owner" { StaffRole::Owner } else { StaffRole::Staff }
    }
}

/// A person to add: an owner has every store, so `store_ids` is for staff (at least one).
pub struct NewStaff<'a> {
    pub email: &'a str,
    pub role: StaffRole,
    pub store_ids: &'a [StoreId],
}

/// A merchant user just made, with the credentials shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StaffCreated {
    pub user_id: MerchantUserId,
    pub email: String,
    pub role: StaffRole,
    /// Shown once: only its hash is kept.
    pub password: String,
    /// The authenticator app's seed (base32), shown once.
    pub totp_secret: String,
    pub otpauth_uri: String,
}

/// One store a merchant user may see.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoreRef {
    pub store_id: StoreId,
    pub name: String,
}

/// Who a merchant user is and what they may see: read on every request.
#[derive(Debug, Clone)]
pub struct Scope {
    pub user_id: MerchantUserId,
    pub merchant_id: MerchantId,
    pub merchant_name: String,
    pub email: String,
    pub role: StaffRole,
    /// The stores they may see: every store of the merchant for an owner.
    pub stores: Vec<StoreRef>,
}

const STAFF_LOCK: i64 = 0x004d_4552_5553_4552;

/// Adds a merchant user (by an operator or an owner, named in `actor` for the audit log).
pub async fn create(
    state: &AppState,
    merchant: &MerchantId,
    new: &NewStaff<'_>,
    actor: &str,
) -> Result<StaffCreated, IdentityError> {
    let email = Email::parse(new.email)?;
    let stores = match (new.role, new.store_ids) {
        (StaffRole::Owner, []) => &[][..],
        (StaffRole::Owner, _) => return Err(IdentityError::OwnerHasEveryStore),
        (StaffRole::Staff, []) => return Err(IdentityError::StoresRequired),
        (StaffRole::Staff, ids) => ids,
    };
    let password = super::operators::random_password();
    let hash = super::password::hash(&state.hasher, &Password::for_login(&password)).await?;
    let seed = totp::new_seed();
    let key = state.config.keys.totp_encryption.as_ref().ok_or_else(|| anyhow::anyhow!("no TOTP key"))?;
    let sealed = totp::seal(key, &seed);
    let now = state.clock.now_ms();
    let id = MerchantUserId::generate();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.serialize_on(STAFF_LOCK).await?;
        check_merchant_and_stores(&mut tx, merchant, stores).await?;
        if sqlx::query("SELECT 1 FROM merchant_users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            return Err(IdentityError::EmailTaken);
        }
        sqlx::query(
            "INSERT INTO merchant_users (id, merchant_id, email, password_hash, totp_secret, role, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(merchant)
        .bind(email.as_str())
        .bind(&hash)
        .bind(&sealed)
        .bind(new.role.as_str())
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
        give_stores(&mut tx, &id, stores).await?;
        let detail = serde_json::json!({"merchant_id": merchant, "role": new.role.as_str(), "store_ids": stores});
        crate::audit::append(&mut tx, actor, "merchant_user.create", id.as_str(), &detail, now).await?;
        tx.commit().await?;
        Ok(())
    })
    .await?;
    let otpauth_uri = totp::otpauth_uri(&seed, email.as_str());
    Ok(StaffCreated {
        user_id: id,
        email: email.as_str().to_string(),
        role: new.role,
        password,
        totp_secret: totp::base32(&seed),
        otpauth_uri,
    })
}

async fn check_merchant_and_stores(
    conn: &mut Conn,
    merchant: &MerchantId,
    stores: &[StoreId],
) -> Result<(), IdentityError> {
    if sqlx::query("SELECT 1 FROM merchants WHERE id = $1").bind(merchant).fetch_optional(&mut *conn).await?.is_none() {
        return Err(IdentityError::MerchantNotFound);
    }
    for store in stores {
        let of: Option<MerchantId> = sqlx::query_scalar("SELECT merchant_id FROM stores WHERE id = $1")
            .bind(store)
            .fetch_optional(&mut *conn)
            .await?;
        if of.as_ref() != Some(merchant) {
            return Err(IdentityError::UnknownStore);
        }
    }
    Ok(())
}

async fn give_stores(conn: &mut Conn, id: &MerchantUserId, stores: &[StoreId]) -> Result<(), sqlx::Error> {
    let mut seen = std::collections::BTreeSet::new();
    for store in stores.iter().filter(|s| seen.insert(s.as_str())) {
        sqlx::query("INSERT INTO merchant_user_stores (user_id, store_id) VALUES ($1, $2)")
            .bind(id)
            .bind(store)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Sandbox only: the demo merchant's owner, created or given new credentials (the old ones
/// cannot be read back from their hashes to be shown again in `sandbox.json`).
pub async fn create_or_reset_owner(
    state: &AppState,
    merchant: &MerchantId,
    email: &str,
) -> anyhow::Result<StaffCreated> {
    anyhow::ensure!(state.config.sandbox, "merchant credentials are reset only in sandbox mode");
    let mut conn = state.db.pool().acquire().await?;
    let existing: Option<MerchantUserId> = sqlx::query_scalar("SELECT id FROM merchant_users WHERE email = $1")
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    drop(conn);
    let Some(id) = existing else {
        let new = NewStaff { email, role: StaffRole::Owner, store_ids: &[] };
        return Ok(create(state, merchant, &new, "system:sandbox").await?);
    };
    let password = super::operators::random_password();
    let hash = super::password::hash(&state.hasher, &Password::for_login(&password)).await?;
    let seed = totp::new_seed();
    let key = state.config.keys.totp_encryption.as_ref().ok_or_else(|| anyhow::anyhow!("no TOTP key"))?;
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE merchant_users SET password_hash = $1, totp_secret = $2, totp_last_step = 0 WHERE id = $3")
        .bind(&hash)
        .bind(totp::seal(key, &seed))
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE merchant_user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    // New credentials leave no way back in for whoever held the old ones.
    super::passkey::remove_all(&mut tx, super::passkey::Owner::MerchantUser(&id)).await?;
    crate::audit::append(
        &mut tx,
        "system:sandbox",
        "merchant_user.credentials_reset",
        id.as_str(),
        &serde_json::json!({}),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(StaffCreated {
        user_id: id,
        email: email.to_string(),
        role: StaffRole::Owner,
        password,
        otpauth_uri: totp::otpauth_uri(&seed, email),
        totp_secret: totp::base32(&seed),
    })
}

/// `POST /v1/merchant/login {email, password, totp_code}`: a dashboard session, or `401
/// invalid_credentials` for an unknown e-mail, a wrong password or a wrong code alike.
pub async fn login(
    state: &AppState,
    email: &str,
    password: &str,
    totp_code: &str,
    client: &ClientInfo,
) -> Result<Opened, IdentityError> {
    let now = state.clock.now_ms();
    let email = email.trim().to_lowercase();
    let row = if email.len() <= 254 {
        sqlx::query("SELECT id, password_hash FROM merchant_users WHERE email = $1")
            .bind(&email)
            .fetch_optional(state.db.pool())
            .await?
    } else {
        None
    };
    let user: Option<(MerchantUserId, String)> =
        row.map(|r| Ok::<_, sqlx::Error>((r.try_get("id")?, r.try_get("password_hash")?))).transpose()?;
    // Their own namespace, as for operators: a throttle must not tell whose account exists.
    let key = match &user {
        Some((id, _)) => format!("merchant:{id}"),
        None => format!("merchant-login:{}", &unknown_login_key(&email)["login:".len()..]),
    };
    let attempt = throttle::Attempt {
        ip: &client.ip_text,
        subnet: &client.subnet,
        key: &key,
        recognised: false,
        max_delay_ms: Some(60_000),
    };
    let pending = password_step(state, &attempt, user.as_ref().map(|(_, h)| h.as_str()), password, now).await?;
    let (Some((user_id, _)), Some(pending)) = (user, pending) else {
        return Err(IdentityError::InvalidCredentials);
    };
    open_session(state, &user_id, totp_code, pending, client, now).await
}

/// The second half of a login whose password was right: the code decides.
async fn open_session(
    state: &AppState,
    user_id: &MerchantUserId,
    totp_code: &str,
    pending: throttle::Pending,
    client: &ClientInfo,
    now: i64,
) -> Result<Opened, IdentityError> {
    let opened = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        if !totp_matches(&mut tx, state, TotpOwner::MerchantUser(user_id.as_str()), totp_code).await? {
            return Ok(None);
        }
        pending.succeeded(&mut tx).await?;
        let opened = open_merchant_session(&mut tx, state, user_id, "password", client, now).await?;
        tx.commit().await?;
        Ok::<_, IdentityError>(Some(opened))
    })
    .await?;
    opened.ok_or(IdentityError::InvalidCredentials)
}

/// Checks a fresh authenticator code of a signed-in merchant user (a change of bank account asks
/// for one), inside the caller's transaction; a code is accepted once.
pub async fn confirm_totp(
    conn: &mut Conn,
    state: &AppState,
    user_id: &MerchantUserId,
    code: &str,
) -> Result<bool, IdentityError> {
    totp_matches(conn, state, TotpOwner::MerchantUser(user_id.as_str()), code).await
}

/// Who merchant user `id` is and which stores they see (`None` if they are gone).
pub async fn scope(conn: &mut Conn, id: &MerchantUserId) -> Result<Option<Scope>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT u.merchant_id, u.email, u.role, m.name FROM merchant_users u JOIN merchants m ON m.id = u.merchant_id \
         WHERE u.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let merchant_id: MerchantId = r.try_get("merchant_id")?;
    let role = StaffRole::parse(&r.try_get::<String, _>("role")?);
    let stores = match role {
        StaffRole::Owner => {
            sqlx::query("SELECT id, name FROM stores WHERE merchant_id = $1 ORDER BY name, id")
                .bind(&merchant_id)
                .fetch_all(&mut *conn)
                .await?
        }
        StaffRole::Staff => {
            sqlx::query(
                "SELECT s.id, s.name FROM merchant_user_stores g JOIN stores s ON s.id = g.store_id \
                 WHERE g.user_id = $1 AND s.merchant_id = $2 ORDER BY s.name, s.id",
            )
            .bind(id)
            .bind(&merchant_id)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let stores = stores
        .iter()
        .map(|s| Ok(StoreRef { store_id: s.try_get("id")?, name: s.try_get("name")? }))
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(Scope {
        user_id: id.clone(),
        merchant_id,
        merchant_name: r.try_get("name")?,
        email: r.try_get("email")?,
        role,
        stores,
    }))
}

/// A merchant user as an owner sees the staff list (never a secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: MerchantUserId,
    pub email: String,
    pub role: StaffRole,
    /// The stores a staff member is given; empty for an owner, who has every store.
    pub store_ids: Vec<StoreId>,
    pub created_at: String,
}

/// The merchant's users, by e-mail (at most 500).
pub async fn list(conn: &mut Conn, merchant: &MerchantId) -> Result<Vec<Member>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, email, role, created_at FROM merchant_users WHERE merchant_id = $1 ORDER BY email LIMIT 500",
    )
    .bind(merchant)
    .fetch_all(&mut *conn)
    .await?;
    let mut members = Vec::with_capacity(rows.len());
    for r in rows {
        let user_id: MerchantUserId = r.try_get("id")?;
        let store_ids: Vec<StoreId> =
            sqlx::query_scalar("SELECT store_id FROM merchant_user_stores WHERE user_id = $1 ORDER BY store_id")
                .bind(&user_id)
                .fetch_all(&mut *conn)
                .await?;
        members.push(Member {
            user_id,
            email: r.try_get("email")?,
            role: StaffRole::parse(&r.try_get::<String, _>("role")?),
            store_ids,
            created_at: clock::rfc3339_ms(r.try_get("created_at")?),
        });
    }
    Ok(members)
}

/// Ends a dashboard session (`POST /v1/merchant/logout`), audited.
pub async fn logout(state: &AppState, session: &session::MerchantSession) -> Result<(), sqlx::Error> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        session::revoke(&mut tx, session.session_id(), now).await?;
        let actor = format!("merchant_user:{}", session.merchant_user_id());
        let detail = serde_json::json!({"session_id": session.session_id()});
        crate::audit::append(
            &mut tx,
            &actor,
            "merchant_user.logout",
            session.merchant_user_id().as_str(),
            &detail,
            now,
        )
        .await?;
        tx.commit().await
    })
    .await
}
