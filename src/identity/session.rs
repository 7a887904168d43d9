//! Sessions and device tokens.
//!
//! A session token is 256 random bits shown once; the database keeps its SHA-256. A session is
//! bound to the device that logged in, ends after the idle timeout (default 15 minutes) or the
//! absolute one (default 12 hours), and can be revoked. A device token, issued by a successful
//! two-step login, is what makes a device "recognised" for that account.

use crate::ids::DeviceTokenId;
use crate::ids::MerchantUserId;
use crate::ids::OperatorId;
use crate::ids::SessionId;
use crate::ids::UserId;
use serde::Serialize;
use sqlx::Row;

use super::operators::Role;
use super::{DEVICE_TRUST_MS, new_token, secret_hash};
use crate::store::{Conn, clock};

/// Hash context of session tokens (tokens are random, so the context is fixed).
const SESSION: &str = "session";
const DEVICE: &str = "device";

/// How long sessions last (configurable).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle_ms: i64,
    pub absolute_ms: i64,
}

impl Timeouts {
    pub fn from_config(config: &crate::config::Config) -> Timeouts {
        Timeouts {
            idle_ms: config.session_idle_timeout_secs as i64 * 1000,
            absolute_ms: config.session_absolute_timeout_secs as i64 * 1000,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { idle_ms: 15 * 60 * 1000, absolute_ms: 12 * 3600 * 1000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    User(&'a str),
    Operator {
        id: &'a str,
        role: &'a str,
    },
    /// A merchant's owner or staff member at the dashboard (their role and stores are read from
    /// `merchant_users` on every request, so a change applies at once).
    Merchant(&'a str),
}

/// A session just opened: the token is shown to the client once.
pub struct Opened {
    pub id: SessionId,
    pub token: String,
    pub expires_at: i64,
}

/// A session to open: whose, on which device, from where.
pub struct NewSession<'a> {
    pub subject: Subject<'a>,
    pub device_id: &'a str,
    pub ip: &'a str,
    pub country: Option<&'a str>,
    /// Marks the session as freshly verified (a two-step login counts as step-up).
    pub step_up: bool,
}

/// Opens a session.
pub async fn open(conn: &mut Conn, new: &NewSession<'_>, timeouts: Timeouts, now: i64) -> Result<Opened, sqlx::Error> {
    let id = SessionId::generate();
    let token = new_token();
    let expires_at = now + timeouts.absolute_ms;
    let (kind, user_id, operator_id, role, merchant_user) = match new.subject {
        Subject::User(u) => ("user", Some(u), None, None, None),
        Subject::Operator { id, role } => ("operator", None, Some(id), Some(role), None),
        Subject::Merchant(id) => ("merchant", None, None, None, Some(id)),
    };
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, kind, user_id, operator_id, role, device_id, ip, country, created_at, \
         last_seen_at, expires_at, step_up_at, merchant_user_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13)",
    )
    .bind(&id)
    .bind(secret_hash(SESSION, &token))
    .bind(kind)
    .bind(user_id)
    .bind(operator_id)
    .bind(role)
    .bind(new.device_id)
    .bind(new.ip)
    .bind(new.country)
    .bind(now)
    .bind(expires_at)
    .bind(if new.step_up { now } else { 0 })
    .bind(merchant_user)
    .execute(&mut *conn)
    .await?;
    Ok(Opened { id, token, expires_at })
}

/// A live session found by its token.
#[derive(Debug, Clone)]
pub struct Live {
    pub id: SessionId,
    pub kind: String,
    pub user_id: Option<UserId>,
    pub operator_id: Option<OperatorId>,
    pub role: Option<String>,
    pub merchant_user_id: Option<MerchantUserId>,
    pub device_id: String,
    pub step_up_at: i64,
    pub expires_at: i64,
}

impl Live {
    /// The shopper this session belongs to; `None` for an operator's session.
    pub fn into_user(self) -> Option<UserSession> {
        match (self.kind.as_str(), self.user_id) {
            ("user", Some(user_id)) => Some(UserSession {
                session_id: self.id,
                user_id,
                device_id: self.device_id,
                step_up_at: self.step_up_at,
            }),
            _ => None,
        }
    }

    /// The operator and role this session belongs to; `None` for a shopper's session.
    pub fn into_operator(self) -> Option<OperatorSession> {
        match (self.kind.as_str(), self.operator_id, self.role.as_deref().and_then(Role::parse)) {
            ("operator", Some(operator_id), Some(role)) => Some(OperatorSession {
                session_id: self.id,
                operator_id,
                role,
                device_id: self.device_id,
                step_up_at: self.step_up_at,
            }),
            _ => None,
        }
    }

    /// The merchant user this session belongs to; `None` for a shopper's or an operator's.
    pub fn into_merchant(self) -> Option<MerchantSession> {
        match (self.kind.as_str(), self.merchant_user_id) {
            ("merchant", Some(merchant_user_id)) => Some(MerchantSession {
                session_id: self.id,
                merchant_user_id,
                device_id: self.device_id,
                step_up_at: self.step_up_at,
            }),
            _ => None,
        }
    }
}

/// A merchant owner's or staff member's live session. Only [`authenticate`] makes one (through
/// [`Live::into_merchant`]); what the person may see is read afresh by `http::auth::MerchantStaff`.
#[derive(Debug, Clone)]
pub struct MerchantSession {
    session_id: SessionId,
    merchant_user_id: MerchantUserId,
    device_id: String,
    step_up_at: i64,
}

impl MerchantSession {
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    pub fn merchant_user_id(&self) -> &MerchantUserId {
        &self.merchant_user_id
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// When the session last verified a second factor (its login, or a step-up; milliseconds).
    pub fn step_up_at(&self) -> i64 {
        self.step_up_at
    }
}

/// A shopper's live session. Only [`authenticate`] makes one (through [`Live::into_user`]), so a
/// function that takes it knows the caller logged in.
#[derive(Debug, Clone)]
pub struct UserSession {
    session_id: SessionId,
    user_id: UserId,
    device_id: String,
    step_up_at: i64,
}

impl UserSession {
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// When the session last verified a second factor (milliseconds).
    pub fn step_up_at(&self) -> i64 {
        self.step_up_at
    }
}

/// An operator's live session and role. Only [`authenticate`] makes one (through
/// [`Live::into_operator`]).
#[derive(Debug, Clone)]
pub struct OperatorSession {
    session_id: SessionId,
    operator_id: OperatorId,
    role: Role,
    device_id: String,
    step_up_at: i64,
}

impl OperatorSession {
    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    pub fn operator_id(&self) -> &OperatorId {
        &self.operator_id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// When the session last verified a second factor (its login, or a step-up; milliseconds).
    pub fn step_up_at(&self) -> i64 {
        self.step_up_at
    }

    /// Who acts, for the audit log.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.operator_id)
    }

    /// Whether the operator's role is at least `role`.
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }
}

/// Finds the live session a token belongs to, and notes that it was used. Expired (idle or
/// absolute) and revoked sessions are not found.
pub async fn authenticate(
    conn: &mut Conn,
    token: &str,
    timeouts: Timeouts,
    now: i64,
) -> Result<Option<Live>, sqlx::Error> {
    if token.len() > 100 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT id, kind, user_id, operator_id, role, merchant_user_id, device_id, step_up_at, expires_at, \
         last_seen_at, revoked_at FROM sessions WHERE token_hash = $1",
    )
    .bind(secret_hash(SESSION, token))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let revoked: Option<i64> = r.try_get("revoked_at")?;
    let expires_at: i64 = r.try_get("expires_at")?;
    let last_seen: i64 = r.try_get("last_seen_at")?;
    if revoked.is_some() || expires_at <= now || last_seen + timeouts.idle_ms <= now {
        return Ok(None);
    }
    let id: SessionId = r.try_get("id")?;
    // Writing on every request would make every read a write; a 10-second granularity is plenty
    // against a 15-minute idle timeout.
    if now - last_seen > 10_000 {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(Live {
        id,
        kind: r.try_get("kind")?,
        user_id: r.try_get("user_id")?,
        operator_id: r.try_get("operator_id")?,
        role: r.try_get("role")?,
        merchant_user_id: r.try_get("merchant_user_id")?,
        device_id: r.try_get("device_id")?,
        step_up_at: r.try_get("step_up_at")?,
        expires_at,
    }))
}

pub async fn revoke(conn: &mut Conn, session_id: &SessionId, now: i64) -> Result<bool, sqlx::Error> {
    let n = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(session_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// Revokes every session of a user except `keep` (for a password change).
/// Ends an operator's session (`POST /v1/admin/logout`), audited.
pub async fn end_operator(db: &crate::store::Db, operator: &OperatorSession, now: i64) -> Result<(), sqlx::Error> {
    crate::store::retry(|| async {
        let mut tx = db.begin().await?;
        revoke(&mut tx, operator.session_id(), now).await?;
        let detail = serde_json::json!({"session_id": operator.session_id()});
        crate::audit::append(&mut tx, &operator.actor(), "operator.logout", operator.operator_id(), &detail, now)
            .await?;
        tx.commit().await
    })
    .await
}

/// Revokes one of the user's own sessions; answers whether there was such a live session.
pub async fn revoke_own(
    db: &crate::store::Db,
    user_id: &UserId,
    session_id: &SessionId,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let n = crate::store::write_one(db, || {
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(session_id)
            .bind(user_id)
    })
    .await?;
    Ok(n > 0)
}

pub async fn revoke_all(
    conn: &mut Conn,
    user_id: &UserId,
    keep: Option<&SessionId>,
    now: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3")
        .bind(now)
        .bind(user_id)
        .bind(keep.map_or("", SessionId::as_str))
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

pub async fn mark_step_up(conn: &mut Conn, session_id: &SessionId, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET step_up_at = $1 WHERE id = $2")
        .bind(now)
        .bind(session_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: SessionId,
    pub device_id: String,
    pub created_at: String,
    pub last_seen_at: String,
    pub ip: Option<String>,
    pub country: Option<String>,
    pub current: bool,
}

/// The user's live sessions, newest first.
pub async fn list(
    conn: &mut Conn,
    user_id: &UserId,
    current: Option<&SessionId>,
    timeouts: Timeouts,
    now: i64,
) -> Result<Vec<SessionView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, device_id, created_at, last_seen_at, ip, country FROM sessions \
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_seen_at > $3 \
         ORDER BY created_at DESC, id DESC LIMIT 100",
    )
    .bind(user_id)
    .bind(now)
    .bind(now - timeouts.idle_ms)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let id: SessionId = r.try_get("id")?;
            Ok(SessionView {
                current: current == Some(&id),
                id,
                device_id: r.try_get("device_id")?,
                created_at: clock::rfc3339_ms(r.try_get("created_at")?),
                last_seen_at: clock::rfc3339_ms(r.try_get("last_seen_at")?),
                ip: r.try_get("ip")?,
                country: r.try_get("country")?,
            })
        })
        .collect()
}

/// A device this user logged in from with two steps, as operators see it (never the token).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub device_id: String,
    pub created_at: String,
    /// The last two-step login on it.
    pub last_two_step_at: String,
    /// Whether its token still recognises the device (not revoked by a reset or a sign-out).
    pub recognised: bool,
}

/// The user's devices (their device tokens), newest two-step login first, at most 50.
pub async fn devices(conn: &mut Conn, user_id: &UserId) -> Result<Vec<DeviceView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT device_id, created_at, last_two_step_at, revoked_at FROM device_tokens WHERE user_id = $1 \
         ORDER BY last_two_step_at DESC, id DESC LIMIT 50",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let revoked_at: Option<i64> = r.try_get("revoked_at")?;
            Ok(DeviceView {
                device_id: r.try_get("device_id")?,
                created_at: clock::rfc3339_ms(r.try_get("created_at")?),
                last_two_step_at: clock::rfc3339_ms(r.try_get("last_two_step_at")?),
                recognised: revoked_at.is_none(),
            })
        })
        .collect()
}

/// A device token that is valid for `user_id` on `device_id`: its row id, and whether its last
/// two-step login is recent enough to skip the second step.
pub struct RecognisedDevice {
    pub id: String,
    pub trusted_for_login: bool,
}

pub async fn recognise(
    conn: &mut Conn,
    user_id: &UserId,
    device_id: &str,
    device_token: &str,
    now: i64,
) -> Result<Option<RecognisedDevice>, sqlx::Error> {
    if device_token.len() > 100 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT id, last_two_step_at FROM device_tokens \
         WHERE token_hash = $1 AND user_id = $2 AND device_id = $3 AND revoked_at IS NULL",
    )
    .bind(secret_hash(DEVICE, device_token))
    .bind(user_id)
    .bind(device_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        let last: i64 = r.try_get("last_two_step_at")?;
        Ok(RecognisedDevice { id: r.try_get("id")?, trusted_for_login: last + DEVICE_TRUST_MS > now })
    })
    .transpose()
}

/// When `user_id` first opened a session on `device_id` (a risk fact: a new device).
pub async fn first_seen_on_device(
    conn: &mut Conn,
    user_id: &UserId,
    device_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MIN(created_at) FROM sessions WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .fetch_one(&mut *conn)
        .await
}

/// How many sessions `user_id` opened since `since` (a risk fact: login velocity).
pub async fn opened_since(conn: &mut Conn, user_id: &UserId, since: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND created_at > $2")
        .bind(user_id)
        .bind(since)
        .fetch_one(&mut *conn)
        .await
}

/// The country and time of the newest session of `user_id` that has a country (a risk fact:
/// impossible travel).
pub async fn newest_located(conn: &mut Conn, user_id: &UserId) -> Result<Option<(String, i64)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT country, created_at FROM sessions WHERE user_id = $1 AND country IS NOT NULL \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| Ok((r.try_get("country")?, r.try_get("created_at")?))).transpose()
}

/// Whether this user has ever completed a two-step login on `device_id` (for "new device" notices).
pub async fn device_known(conn: &mut Conn, user_id: &UserId, device_id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_tokens WHERE user_id = $1 AND device_id = $2")
        .bind(user_id)
        .bind(device_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

/// Issues a device token after a two-step login, replacing the device's earlier ones.
pub async fn issue_device_token(
    conn: &mut Conn,
    user_id: &UserId,
    device_id: &str,
    now: i64,
) -> Result<String, sqlx::Error> {
    sqlx::query(
        "UPDATE device_tokens SET revoked_at = $1 WHERE user_id = $2 AND device_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .bind(device_id)
    .execute(&mut *conn)
    .await?;
    let token = new_token();
    sqlx::query(
        "INSERT INTO device_tokens (id, user_id, device_id, token_hash, created_at, last_two_step_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(DeviceTokenId::generate())
    .bind(user_id)
    .bind(device_id)
    .bind(secret_hash(DEVICE, &token))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// A reset or password change makes every device unrecognised again.
pub async fn revoke_device_tokens(conn: &mut Conn, user_id: &UserId, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE device_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
