//! Passkeys: registering them, listing and removing them, and answering a challenge with one
//! (a login, a step-up, an operator's or a merchant user's login). The WebAuthn checks are
//! `webauthn`'s; here are the ceremonies' state (each challenge used once, for 5 minutes) and the
//! credentials (only the public key and the signature counter are kept).

use crate::ids::{MerchantUserId, OperatorId, PasskeyId, RegistrationId, UserId};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::webauthn::{self, Rejected, RelyingParty};
use super::{IdentityError, user_by_id};
use crate::state::AppState;
use crate::store::{self, Conn, clock};

/// Whose passkeys: a shopper's, an operator's or a merchant user's (the dashboard's).
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    User(&'a UserId),
    Operator(&'a OperatorId),
    MerchantUser(&'a MerchantUserId),
}

impl Owner<'_> {
    fn column(self) -> &'static str {
        match self {
            Owner::User(_) => "user_id",
            Owner::Operator(_) => "operator_id",
            Owner::MerchantUser(_) => "merchant_user_id",
        }
    }

    fn text(&self) -> &str {
        match self {
            Owner::User(u) => u.as_str(),
            Owner::Operator(o) => o.as_str(),
            Owner::MerchantUser(m) => m.as_str(),
        }
    }
}

/// The relying party, from `OMAMORI_PUBLIC_URL`; `503 unavailable` without it.
pub fn relying_party(state: &AppState) -> Result<RelyingParty, IdentityError> {
    state.config.public_url.as_deref().map(RelyingParty::from_public_url).ok_or(IdentityError::PasskeysUnavailable)
}

/// A passkey as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Passkey {
    pub passkey_id: PasskeyId,
    pub name: String,
    pub created_at: String,
    /// Null until it is first used.
    pub last_used_at: Option<String>,
    /// When it was disabled because its signature counter did not go up (it may have been
    /// copied): it answers no ceremony any more; remove it and add a new one. Null while usable.
    pub disabled_at: Option<String>,
}

/// A registration ceremony begun: pass `options` to `navigator.credentials.create`, then finish
/// under `registration_id`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegistrationStarted {
    pub registration_id: RegistrationId,
    /// The standard `PublicKeyCredentialCreationOptions`, in its JSON form (base64url binaries).
    #[schema(value_type = Object)]
    pub options: Value,
}

/// The credential ids of all an owner's passkeys, disabled ones included (they still count
/// towards [`MAX_PER_OWNER`], and an authenticator should not register them again).
pub async fn credential_ids(conn: &mut Conn, owner: Owner<'_>) -> Result<Vec<String>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT credential_id FROM passkeys WHERE {} = $1 ORDER BY created_at",
        owner.column()
    ));
    sqlx::query_scalar(sql).bind(owner.text()).fetch_all(&mut *conn).await
}

/// The credential ids of the owner's passkeys that can answer a ceremony (not disabled).
pub async fn usable_credential_ids(conn: &mut Conn, owner: Owner<'_>) -> Result<Vec<String>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT credential_id FROM passkeys WHERE {} = $1 AND disabled_at IS NULL ORDER BY created_at",
        owner.column()
    ));
    sqlx::query_scalar(sql).bind(owner.text()).fetch_all(&mut *conn).await
}

/// Whether the owner has a passkey that can answer a ceremony.
pub async fn has_any(conn: &mut Conn, owner: Owner<'_>) -> Result<bool, sqlx::Error> {
    Ok(!usable_credential_ids(conn, owner).await?.is_empty())
}

/// The name an authenticator shows for the account: its e-mail address.
async fn account_name(conn: &mut Conn, owner: Owner<'_>) -> Result<String, IdentityError> {
    let table = match owner {
        Owner::User(_) => "users",
        Owner::Operator(_) => "operators",
        Owner::MerchantUser(_) => "merchant_users",
    };
    let sql = sqlx::AssertSqlSafe(format!("SELECT email FROM {table} WHERE id = $1"));
    let email: Option<String> = sqlx::query_scalar(sql).bind(owner.text()).fetch_optional(&mut *conn).await?;
    email.ok_or(IdentityError::Unauthenticated)
}

/// The most passkeys one owner may have: enough for every device a person uses, and a bound on
/// what one account stores and every ceremony lists.
pub const MAX_PER_OWNER: usize = 10;

/// `409 too_many_passkeys` when the owner has [`MAX_PER_OWNER`] already.
fn ensure_room(registered: usize) -> Result<(), IdentityError> {
    if registered >= MAX_PER_OWNER {
        return Err(IdentityError::TooManyPasskeys { max: MAX_PER_OWNER });
    }
    Ok(())
}

/// Deletes the registration ceremonies past their time (used or not), of everyone: a new
/// registration does it for its owner's, and the janitor for the rest.
pub async fn purge_registrations(conn: &mut Conn, owner: Option<Owner<'_>>, now: i64) -> Result<u64, sqlx::Error> {
    let result = match owner {
        Some(owner) => {
            let sql = sqlx::AssertSqlSafe(format!(
                "DELETE FROM passkey_registrations WHERE {} = $1 AND expires_at <= $2",
                owner.column()
            ));
            sqlx::query(sql).bind(owner.text()).bind(now).execute(&mut *conn).await?
        }
        None => {
            sqlx::query("DELETE FROM passkey_registrations WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *conn)
                .await?
        }
    };
    Ok(result.rows_affected())
}

/// `POST /v1/me/passkeys` (after step-up): a registration ceremony for 5 minutes; `409
/// too_many_passkeys` when the owner has [`MAX_PER_OWNER`].
pub async fn begin_registration(state: &AppState, owner: Owner<'_>) -> Result<RegistrationStarted, IdentityError> {
    let rp = relying_party(state)?;
    let now = state.clock.now_ms();
    let id = RegistrationId::generate();
    let challenge = webauthn::new_challenge();
    let mut conn = state.db.pool().acquire().await?;
    let name = account_name(&mut conn, owner).await?;
    let exclude = credential_ids(&mut conn, owner).await?;
    ensure_room(exclude.len())?;
    purge_registrations(&mut conn, Some(owner), now).await?;
    let (user, operator, merchant_user) = owner_columns(owner);
    sqlx::query(
        "INSERT INTO passkey_registrations (id, user_id, operator_id, merchant_user_id, challenge, state, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5, 'open', $6, $7)",
    )
    .bind(&id)
    .bind(user)
    .bind(operator)
    .bind(merchant_user)
    .bind(&challenge)
    .bind(now)
    .bind(now + webauthn::TIMEOUT_MS)
    .execute(&mut *conn)
    .await?;
    let options =
        webauthn::creation_options(&rp, &challenge, &webauthn::Account { handle: owner.text(), name: &name }, &exclude);
    Ok(RegistrationStarted { registration_id: id, options })
}

/// The owner as the three owner columns (exactly one set).
fn owner_columns(owner: Owner<'_>) -> (Option<&UserId>, Option<&OperatorId>, Option<&MerchantUserId>) {
    match owner {
        Owner::User(u) => (Some(u), None, None),
        Owner::Operator(o) => (None, Some(o), None),
        Owner::MerchantUser(m) => (None, None, Some(m)),
    }
}

/// A passkey's name: trimmed, 1 to 64 characters, no control characters; "Passkey" when none.
fn clean_name(name: Option<&str>) -> Result<String, IdentityError> {
    let name = name.map(str::trim).unwrap_or("");
    if name.is_empty() {
        return Ok("Passkey".to_string());
    }
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(IdentityError::InvalidPasskeyName);
    }
    Ok(name.to_string())
}

/// The challenge of the owner's open registration ceremony `id`, used up (by any answer, right or
/// wrong).
async fn use_registration(
    state: &AppState,
    owner: Owner<'_>,
    id: &RegistrationId,
    now: i64,
) -> Result<String, IdentityError> {
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("passkey_registration", id).await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT challenge, state, expires_at FROM passkey_registrations WHERE id = $1 AND {} = $2",
            owner.column()
        ));
        let row = sqlx::query(sql).bind(id).bind(owner.text()).fetch_optional(&mut *tx).await?;
        let row = row.ok_or(IdentityError::RegistrationNotFound)?;
        let (challenge, st, expires_at): (String, String, i64) =
            (row.try_get("challenge")?, row.try_get("state")?, row.try_get("expires_at")?);
        if st != "open" || expires_at <= now {
            return Err(IdentityError::ChallengeExpired);
        }
        sqlx::query("UPDATE passkey_registrations SET state = 'used' WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, IdentityError>(challenge)
    })
    .await
}

/// `POST /v1/me/passkeys/{registration_id}/finish`: checks the browser's answer and keeps the
/// passkey's public key; the owner is told on every channel. The ceremony is used up by any
/// answer, right or wrong.
pub async fn finish_registration(
    state: &AppState,
    owner: Owner<'_>,
    id: &RegistrationId,
    credential: &Value,
    name: Option<&str>,
) -> Result<Passkey, IdentityError> {
    let name = clean_name(name)?;
    let rp = relying_party(state)?;
    let now = state.clock.now_ms();
    let challenge = use_registration(state, owner, id, now).await?;
    let new = webauthn::verify_registration(&rp, &challenge, credential).map_err(IdentityError::PasskeyRejected)?;
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        // Two ceremonies presenting one credential at once: the second waits here and finds it
        // taken (instead of failing on the unique index with a 500).
        tx.lock("passkey_credential", &new.credential_id).await?;
        let taken: Option<String> = sqlx::query_scalar("SELECT id FROM passkeys WHERE credential_id = $1")
            .bind(&new.credential_id)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(IdentityError::PasskeyRejected(Rejected::Invalid("this passkey is already registered")));
        }
        // Ceremonies begun side by side: the count is read again under the owner's lock.
        tx.lock("passkey_owner", owner.text()).await?;
        ensure_room(credential_ids(&mut tx, owner).await?.len())?;
        let passkey_id = PasskeyId::generate();
        let (user, operator, merchant_user) = owner_columns(owner);
        sqlx::query(
            "INSERT INTO passkeys (id, user_id, operator_id, merchant_user_id, credential_id, public_key, sign_count, \
             name, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&passkey_id)
        .bind(user)
        .bind(operator)
        .bind(merchant_user)
        .bind(&new.credential_id)
        .bind(&new.public_key)
        .bind(new.sign_count)
        .bind(&name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        added(&mut tx, owner, now).await?;
        tx.commit().await?;
        Ok(Passkey {
            passkey_id,
            name: name.clone(),
            created_at: clock::rfc3339_ms(now),
            last_used_at: None,
            disabled_at: None,
        })
    })
    .await
}

/// What follows a new passkey, in its transaction: for a shopper, a credential change (as a new
/// password is: the risk rules see it); the owner is told.
async fn added(conn: &mut Conn, owner: Owner<'_>, now: i64) -> Result<(), sqlx::Error> {
    if let Owner::User(user_id) = owner {
        sqlx::query("UPDATE users SET credentials_changed_at = $1 WHERE id = $2")
            .bind(now)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    tell(conn, owner, "passkey_added", "A passkey was added to your Omamori account.", now).await
}

/// Tells a shopper on every channel; an operator's or a merchant user's event goes to the audit log.
async fn tell(conn: &mut Conn, owner: Owner<'_>, kind: &str, text: &str, now: i64) -> Result<(), sqlx::Error> {
    match owner {
        Owner::User(user_id) => match user_by_id(conn, user_id).await? {
            Some(user) => super::notify_all(conn, &user, kind, text, now).await,
            None => Ok(()),
        },
        Owner::Operator(operator_id) => {
            let actor = format!("operator:{operator_id}");
            crate::audit::append(conn, &actor, kind, operator_id, &serde_json::json!({}), now).await
        }
        Owner::MerchantUser(merchant_user_id) => {
            let actor = format!("merchant_user:{merchant_user_id}");
            crate::audit::append(conn, &actor, kind, merchant_user_id, &serde_json::json!({}), now).await
        }
    }
}

/// `GET /v1/me/passkeys`.
pub async fn list(state: &AppState, owner: Owner<'_>) -> Result<Vec<Passkey>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT id, name, created_at, last_used_at, disabled_at FROM passkeys WHERE {} = $1 ORDER BY created_at, id",
        owner.column()
    ));
    let rows = sqlx::query(sql).bind(owner.text()).fetch_all(state.db.pool()).await?;
    rows.iter()
        .map(|r| {
            Ok(Passkey {
                passkey_id: r.try_get("id")?,
                name: r.try_get("name")?,
                created_at: clock::rfc3339_ms(r.try_get("created_at")?),
                last_used_at: r.try_get::<Option<i64>, _>("last_used_at")?.map(clock::rfc3339_ms),
                disabled_at: r.try_get::<Option<i64>, _>("disabled_at")?.map(clock::rfc3339_ms),
            })
        })
        .collect()
}

/// `DELETE /v1/me/passkeys/{id}` (after step-up); `false` when the owner has no such passkey.
pub async fn remove(state: &AppState, owner: Owner<'_>, id: &PasskeyId) -> Result<bool, sqlx::Error> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let sql = sqlx::AssertSqlSafe(format!("DELETE FROM passkeys WHERE id = $1 AND {} = $2", owner.column()));
        let n = sqlx::query(sql).bind(id).bind(owner.text()).execute(&mut *tx).await?.rows_affected();
        if n == 1 {
            tell(&mut tx, owner, "passkey_removed", "A passkey was removed from your Omamori account.", now).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    })
    .await
}

/// Removes every passkey of `owner`, inside the caller's transaction: a password reset or an
/// operator's new credentials must not leave a way back in for whoever took the account over.
pub async fn remove_all(conn: &mut Conn, owner: Owner<'_>) -> Result<u64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("DELETE FROM passkeys WHERE {} = $1", owner.column()));
    Ok(sqlx::query(sql).bind(owner.text()).execute(&mut *conn).await?.rows_affected())
}

/// Who a registered credential belongs to (one of the three is set; none when it is unknown).
#[derive(Debug, Default)]
pub struct Holder {
    pub user_id: Option<UserId>,
    pub operator_id: Option<OperatorId>,
    pub merchant_user_id: Option<MerchantUserId>,
}

/// The owner of the credential an assertion names, when it is registered (for a passkey login,
/// whose challenge names no one until then).
pub async fn owner_of(conn: &mut Conn, credential: &Value) -> Result<Holder, sqlx::Error> {
    let Ok(assertion) = webauthn::parse_assertion(credential) else { return Ok(Holder::default()) };
    let row = sqlx::query("SELECT user_id, operator_id, merchant_user_id FROM passkeys WHERE credential_id = $1")
        .bind(&assertion.credential_id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => Ok(Holder {
            user_id: r.try_get("user_id")?,
            operator_id: r.try_get("operator_id")?,
            merchant_user_id: r.try_get("merchant_user_id")?,
        }),
        None => Ok(Holder::default()),
    }
}

/// Whether `credential` answers `challenge` (base64url) for `owner`, in the caller's transaction:
/// one of the owner's passkeys, not disabled, the right origin and relying party, user
/// verification, a valid signature and a counter that went up. The counter and the last use are
/// recorded on success. A counter that did not go up (a copied key) is refused and disables the
/// passkey (see [`disable_copied`]).
pub async fn assertion_is_right(
    conn: &mut Conn,
    state: &AppState,
    owner: Owner<'_>,
    challenge: Option<&str>,
    credential: &Value,
    now: i64,
) -> Result<bool, IdentityError> {
    let rp = relying_party(state)?;
    let Some(challenge) = challenge else { return Ok(false) };
    let Ok(assertion) = webauthn::parse_assertion(credential) else { return Ok(false) };
    if assertion.user_handle.as_deref().is_some_and(|h| h != owner.text()) {
        return Ok(false);
    }
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT id, public_key, sign_count FROM passkeys WHERE credential_id = $1 AND {} = $2 AND disabled_at IS NULL",
        owner.column()
    ));
    let row = sqlx::query(sql).bind(&assertion.credential_id).bind(owner.text()).fetch_optional(&mut *conn).await?;
    let Some(row) = row else { return Ok(false) };
    let (id, key, count): (PasskeyId, String, i64) =
        (row.try_get("id")?, row.try_get("public_key")?, row.try_get("sign_count")?);
    match assertion.verify(&rp, challenge, &key, count) {
        Ok(new_count) => {
            // Only if no other login moved the counter since it was read: two ceremonies that
            // present the same counter cannot both pass (a copied key would).
            let moved =
                sqlx::query("UPDATE passkeys SET sign_count = $1, last_used_at = $2 WHERE id = $3 AND sign_count = $4")
                    .bind(new_count)
                    .bind(now)
                    .bind(&id)
                    .bind(count)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            Ok(moved == 1)
        }
        Err(Rejected::CounterWentBack { backup_eligible: false }) => {
            disable_copied(conn, owner, &id, now).await?;
            Ok(false)
        }
        Err(Rejected::CounterWentBack { backup_eligible: true }) => {
            // A synced key's devices may each keep a counter: refused and reported, not disabled.
            report_counter(conn, owner, &id, now).await?;
            Ok(false)
        }
        Err(Rejected::Invalid(_)) => Ok(false),
    }
}

/// A synced (backup-eligible) passkey whose counter did not go up: its devices may keep counters
/// of their own, so this answer is refused and the operators are told (`passkey_counter`,
/// medium), but the passkey stays usable.
async fn report_counter(conn: &mut Conn, owner: Owner<'_>, id: &PasskeyId, now: i64) -> Result<(), sqlx::Error> {
    let detail = format!(
        "Synced passkey {id} of {} presented a signature counter that did not go up; the answer was refused. \
         Several devices of one owner can cause this; a copy can too.",
        owner.text()
    );
    crate::risk::alerts::raise_each(conn, "passkey_counter", "medium", &detail, now).await
}

/// A passkey whose signature counter did not go up after a valid signature: two authenticators
/// hold its private key. Which is the owner's cannot be told, so it is disabled for both (it
/// answers nothing until the owner removes it and adds a new one), the owner is told, and every
/// operator is alerted (`passkey_cloned`, high), in the caller's transaction.
async fn disable_copied(conn: &mut Conn, owner: Owner<'_>, id: &PasskeyId, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE passkeys SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let text = "A passkey of your Omamori account was refused and disabled: it may have been copied. Remove it and \
                add a new one.";
    tell(conn, owner, "passkey_cloned", text, now).await?;
    let whose = match owner {
        Owner::User(_) => "shopper",
        Owner::Operator(_) => "operator",
        Owner::MerchantUser(_) => "merchant user",
    };
    let detail = format!(
        "Passkey {id} of {whose} {} presented a signature counter that did not go up: it may have been copied. \
         It is disabled until its owner removes it and adds a new one.",
        owner.text()
    );
    crate::risk::alerts::raise_each(conn, "passkey_cloned", "high", &detail, now).await
}
