//! Operators: created from the command line (which prints their password and TOTP secret once),
//! they always log in with password plus TOTP and act under a role: `viewer`, `operator`, `admin`.

use crate::identity::password::Password;
use crate::identity::{Email, totp};
use crate::ids::OperatorId;
use crate::state::AppState;
use crate::store::Conn;

/// What an operator may do (ARCHITECTURE section 8): each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads alerts, switches and the audit log.
    Viewer,
    /// Also engages switches, freezes users, decides review cases, manages merchants.
    Operator,
    /// Also manages operators and rules.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

const OPERATORS_LOCK: i64 = 0x004f_5045_5241_544f;

/// What an operator needs to log in, shown once at creation.
pub struct Created {
    pub id: OperatorId,
    pub email: String,
    pub password: String,
    pub totp_secret: String,
    pub role: Role,
}

/// A long random password for an operator (they keep it in a password manager).
pub(super) fn random_password() -> String {
    let mut bytes = [0u8; 20];
    rand::fill(&mut bytes);
    crate::identity::totp::base32(&bytes).to_lowercase()
}

/// Creates an operator. Fails if the e-mail is already an operator's.
pub async fn create(state: &AppState, email: &str, role: Role) -> anyhow::Result<Created> {
    put(state, email, role, false).await
}

/// Sandbox only: creates the operator, or gives an existing one new credentials (the old ones
/// cannot be read back from their hashes to be shown again in `sandbox.json`).
pub async fn create_or_reset(state: &AppState, email: &str, role: Role) -> anyhow::Result<Created> {
    anyhow::ensure!(state.config.sandbox, "operator credentials are reset only in sandbox mode");
    put(state, email, role, true).await
}

async fn put(state: &AppState, email: &str, role: Role, reset: bool) -> anyhow::Result<Created> {
    let email = Email::parse(email)?;
    let password = random_password();
    let hash = crate::identity::password::hash(&state.hasher, &Password::for_login(&password)).await?;
    let seed = totp::new_seed();
    let key = state
        .config
        .keys
        .totp_encryption
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no TOTP encryption key configured"))?;
    let credentials = StoredCredentials { password_hash: hash, sealed_totp: totp::seal(key, &seed), role };
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    // Two instances starting at once must not both insert the same operator.
    tx.serialize_on(OPERATORS_LOCK).await?;
    let id = match operator_with_email(&mut tx, &email).await? {
        Some(id) if reset => {
            reset_credentials(&mut tx, &id, &credentials, now).await?;
            id
        }
        Some(_) => anyhow::bail!("an operator with e-mail {} exists already", email.as_str()),
        None => insert_operator(&mut tx, &email, &credentials, now).await?,
    };
    let (actor, action) = put_actor_and_action(state, reset);
    crate::audit::append(
        &mut tx,
        &actor,
        action,
        &id,
        &serde_json::json!({"email": email.as_str(), "role": role.as_str()}),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Created { id, email: email.as_str().to_string(), password, totp_secret: totp::base32(&seed), role })
}

/// An operator's credentials as the table keeps them: the password hashed, the TOTP seed sealed.
struct StoredCredentials {
    password_hash: String,
    sealed_totp: String,
    role: Role,
}

async fn operator_with_email(conn: &mut Conn, email: &Email) -> Result<Option<OperatorId>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM operators WHERE email = $1").bind(email.as_str()).fetch_optional(conn).await
}

async fn reset_credentials(
    conn: &mut Conn,
    id: &OperatorId,
    credentials: &StoredCredentials,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE operators SET password_hash = $1, totp_secret = $2, totp_last_step = 0, role = $3 WHERE id = $4",
    )
    .bind(&credentials.password_hash)
    .bind(&credentials.sealed_totp)
    .bind(credentials.role.as_str())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    // Sessions carry the role they logged in with: new credentials end them, and passkeys made
    // with the old ones go too.
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE operator_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    super::passkey::remove_all(conn, super::passkey::Owner::Operator(id)).await?;
    Ok(())
}

/// Inserts a new operator; returns its id.
async fn insert_operator(
    conn: &mut Conn,
    email: &Email,
    credentials: &StoredCredentials,
    now: i64,
) -> Result<OperatorId, sqlx::Error> {
    let id = OperatorId::generate();
    sqlx::query(
        "INSERT INTO operators (id, email, password_hash, totp_secret, role, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(email.as_str())
    .bind(&credentials.password_hash)
    .bind(&credentials.sealed_totp)
    .bind(credentials.role.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Who the audit log names for a creation or reset: the sandbox's own resets are the system's,
/// the rest come from the command line's user.
fn put_actor_and_action(state: &AppState, reset: bool) -> (String, &'static str) {
    let action = if reset { "operator.credentials_reset" } else { "operator.create" };
    let actor = if state.config.sandbox && reset {
        "system:sandbox".to_string()
    } else {
        format!("cli:{}", std::env::var("USER").unwrap_or_default())
    };
    (actor, action)
}

/// The role of operator `id`, as stored.
pub async fn role_of(conn: &mut Conn, id: &OperatorId) -> Result<Role, sqlx::Error> {
    let role: String =
        sqlx::query_scalar("SELECT role FROM operators WHERE id = $1").bind(id).fetch_one(&mut *conn).await?;
    Role::parse(&role).ok_or_else(|| sqlx::Error::Decode(format!("operator {id} has an unknown role").into()))
}

/// An operator as the console shows the signed-in one.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub operator_id: OperatorId,
    pub email: String,
    /// `viewer`, `operator` or `admin`: what the console offers.
    pub role: &'static str,
}

/// Operator `id`'s e-mail and role.
pub async fn profile(conn: &mut Conn, id: &OperatorId) -> Result<Profile, sqlx::Error> {
    let email: String =
        sqlx::query_scalar("SELECT email FROM operators WHERE id = $1").bind(id).fetch_one(&mut *conn).await?;
    let role = role_of(conn, id).await?;
    Ok(Profile { operator_id: id.clone(), email, role: role.as_str() })
}

/// Every operator, by e-mail (at most 500), so that the console can say who did what.
pub async fn list(conn: &mut Conn) -> Result<Vec<Profile>, sqlx::Error> {
    use sqlx::Row;
    let rows =
        sqlx::query("SELECT id, email, role FROM operators ORDER BY email LIMIT 500").fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| {
            let role: String = r.try_get("role")?;
            Ok(Profile {
                operator_id: r.try_get("id")?,
                email: r.try_get("email")?,
                role: Role::parse(&role).unwrap_or(Role::Viewer).as_str(),
            })
        })
        .collect()
}
