//! Password reset and change, and adding an authenticator app.
//!
//! A reset is requested by phone or e-mail and always answered `202`. Codes go only to the
//! contacts verified on the account, never to any address in the request. Completing it takes two
//! independent proofs (SMS code, e-mail code, TOTP); it revokes every session and device token,
//! tells every channel, and starts a 72-hour cooling-off. A change needs step-up and the current
//! password, revokes the other sessions and every device token, and starts 24 hours of
//! cooling-off.

use crate::ids::ResetId;
use crate::ids::UserId;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::password::{Password, check_policy};
use super::{
    CODE_TTL_MS, COOLING_OFF_PASSWORD_MS, COOLING_OFF_RESET_MS, CodeHolder, IdentityError, Login, MAX_CODE_FAILURES,
    User, WrongCode, new_code, secret_hash, secret_matches, session, totp, user_by_id, user_by_login,
};
use crate::identity::session::UserSession;
use crate::notify::Channel;
use crate::risk::client::ClientInfo;
use crate::risk::throttle;
use crate::risk::throttle::SmsCause;
use crate::state::AppState;
use crate::store::{self, Conn};

/// `POST /v1/password-reset {login}`: the same answer whether or not the account exists, and
/// whether or not the SMS budget allowed a send (when it is spent, nothing is sent, silently).
pub async fn request(state: &AppState, login: &str, client: &ClientInfo) -> Result<ResetId, sqlx::Error> {
    let now = state.clock.now_ms();
    let id = ResetId::generate();
    let parsed = Login::parse(login);
    // The budget is keyed by what was asked for, so that it is spent alike for unknown logins.
    let budget_key = login.trim().to_lowercase();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let user = match &parsed {
            Some(l) => user_by_login(&mut tx, l).await?,
            None => None,
        };
        let allowed = crate::risk::throttle::sms_budget(&mut tx, SmsCause::Unauthenticated, &budget_key, client, now)
            .await?
            == crate::risk::Verdict::Allowed;
        let (sms_code, email_code) = (new_code(), new_code());
        let user = user.filter(|_| allowed);
        sqlx::query(
            "INSERT INTO password_resets (id, user_id, sms_code_hash, email_code_hash, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, 'open', $5, $6)",
        )
        .bind(&id)
        .bind(user.as_ref().map(|u| u.id.clone()))
        .bind(user.as_ref().map(|_| secret_hash(&format!("{id}:sms"), &sms_code)))
        .bind(user.as_ref().map(|_| secret_hash(&format!("{id}:email"), &email_code)))
        .bind(now)
        .bind(now + CODE_TTL_MS)
        .execute(&mut *tx)
        .await?;
        if let Some(user) = &user {
            // Only to the contacts verified on the account.
            super::send_code(
                &mut tx,
                Channel::Sms,
                &user.phone,
                "reset_code",
                "resetting your password",
                &sms_code,
                now,
            )
            .await?;
            super::send_code(
                &mut tx,
                Channel::Email,
                &user.email,
                "reset_code",
                "resetting your password",
                &email_code,
                now,
            )
            .await?;
        }
        tx.commit().await
    })
    .await?;
    Ok(id)
}

pub struct Proofs<'a> {
    pub sms_code: Option<&'a str>,
    pub email_code: Option<&'a str>,
    pub totp_code: Option<&'a str>,
}

/// `POST /v1/password-reset/{id}/complete`, in three steps: the proofs are checked (and the
/// reset moved to `proven`, so that a second completion cannot run alongside), then the new
/// password is hashed outside any transaction, then the reset is applied. Failures count against
/// the reset and the caller's address, never against the account: strangers must not be able to
/// lock an owner out, nor learn from a lock that the account exists.
pub async fn complete(
    state: &AppState,
    id: &ResetId,
    proofs: Proofs<'_>,
    new_password: &str,
    client: &ClientInfo,
) -> Result<(), IdentityError> {
    let password = Password::parse(new_password).map_err(IdentityError::WeakPassword)?;
    let now = state.clock.now_ms();
    let user = store::retry(|| prove(state, id, &proofs, &password, client, now)).await?;
    let hash = match crate::identity::password::hash(&state.hasher, &password).await {
        Ok(hash) => hash,
        Err(e) => {
            // Let the owner try again with the same codes.
            let _ = store::write_one(&state.db, || {
                sqlx::query("UPDATE password_resets SET state = 'open' WHERE id = $1 AND state = 'proven'").bind(id)
            })
            .await;
            return Err(e.into());
        }
    };
    store::retry(|| apply_reset(state, id, &user, &hash, now)).await
}

/// The first step of a completion: the network throttle, then the reset's state, then the proofs
/// (a wrong set is counted and committed), then the new password's policy. Answers the user, the
/// reset moved to `proven`.
async fn prove(
    state: &AppState,
    id: &ResetId,
    proofs: &Proofs<'_>,
    password: &Password,
    client: &ClientInfo,
    now: i64,
) -> Result<User, IdentityError> {
    let mut tx = state.db.begin().await?;
    tx.lock("reset", id).await?;
    let limits = crate::risk::throttle::Limits::from_config(&state.config);
    let verdict = throttle::check_network(&mut tx, limits, &client.ip_text, &client.subnet, now).await?;
    if let Err(refusal) = verdict.into_result() {
        // The refused address is recorded for the alerts.
        tx.commit().await?;
        return Err(refusal.into());
    }
    let row = sqlx::query(
        "SELECT user_id, sms_code_hash, email_code_hash, failures, state, expires_at FROM password_resets WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(IdentityError::ResetNotFound)?;
    let failures: i64 = row.try_get("failures")?;
    if row.try_get::<String, _>("state")? != "open"
        || row.try_get::<i64, _>("expires_at")? <= now
        || failures >= MAX_CODE_FAILURES
    {
        return Err(IdentityError::ChallengeExpired);
    }
    let user = match row.try_get::<Option<UserId>, _>("user_id")? {
        Some(u) => user_by_id(&mut tx, &u).await?,
        None => None,
    };
    let proven = count_proofs(&mut tx, state, id, &row, proofs, user.as_ref()).await?;
    let Some(user) = user.filter(|_| proven >= 2) else {
        let key = format!("reset:{id}");
        let wrong = WrongCode { holder: CodeHolder::Reset, id: id.as_str(), key: &key, max_delay_ms: None };
        let attempts_left = super::wrong_code(tx, state, &wrong, client, now).await?;
        return Err(IdentityError::ResetProofsInvalid { attempts_left });
    };
    // Not a failed try: the proofs were right; the user picks another password.
    check_policy(password, &user.phone, &user.email).map_err(IdentityError::WeakPassword)?;
    sqlx::query("UPDATE password_resets SET state = 'proven' WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(user)
}

/// How many of the proofs are right (an authenticator code is used up by a right answer).
async fn count_proofs(
    conn: &mut Conn,
    state: &AppState,
    id: &ResetId,
    row: &sqlx::any::AnyRow,
    proofs: &Proofs<'_>,
    user: Option<&User>,
) -> Result<u32, IdentityError> {
    let mut proven = 0;
    if let Some(code) = proofs.sms_code
        && secret_matches(&format!("{id}:sms"), code, row.try_get::<Option<String>, _>("sms_code_hash")?.as_deref())
    {
        proven += 1;
    }
    if let Some(code) = proofs.email_code
        && secret_matches(&format!("{id}:email"), code, row.try_get::<Option<String>, _>("email_code_hash")?.as_deref())
    {
        proven += 1;
    }
    if let (Some(code), Some(user)) = (proofs.totp_code, user)
        && totp_matches(conn, state, &user.id, code).await?
    {
        proven += 1;
    }
    Ok(proven)
}

/// The last step of a completion: the new password, a cooling-off, every session and device token
/// revoked, every channel told.
async fn apply_reset(state: &AppState, id: &ResetId, user: &User, hash: &str, now: i64) -> Result<(), IdentityError> {
    let mut tx = state.db.begin().await?;
    tx.lock("reset", id).await?;
    let done = sqlx::query(
        "UPDATE password_resets SET state = 'done', sms_code_hash = NULL, email_code_hash = NULL \
         WHERE id = $1 AND state = 'proven'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if done != 1 {
        return Err(IdentityError::ChallengeExpired);
    }
    sqlx::query(
        "UPDATE users SET password_hash = $1, cooling_off_until = $2, cooling_off_reason = 'password_reset', \
         credentials_changed_at = $3 WHERE id = $4",
    )
    .bind(hash)
    .bind(now + COOLING_OFF_RESET_MS)
    .bind(now)
    .bind(&user.id)
    .execute(&mut *tx)
    .await?;
    session::revoke_all(&mut tx, &user.id, None, now).await?;
    session::revoke_device_tokens(&mut tx, &user.id, now).await?;
    super::passkey::remove_all(&mut tx, super::passkey::Owner::User(&user.id)).await?;
    throttle::record_success(&mut tx, &format!("account:{}", user.id)).await?;
    super::notify_all(
        &mut tx,
        user,
        "password_reset",
        "Your Omamori password was reset, every device was signed out and every passkey removed.",
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn totp_matches(conn: &mut Conn, state: &AppState, user_id: &UserId, code: &str) -> Result<bool, IdentityError> {
    let row = sqlx::query("SELECT totp_secret, totp_last_step FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    let Some(sealed) = row.try_get::<Option<String>, _>("totp_secret")? else { return Ok(false) };
    let seed = open_seed(state, &sealed)?;
    let last: i64 = row.try_get("totp_last_step")?;
    match totp::verify(&seed, code, totp::current_step(), last.max(0) as u64) {
        Some(step) => {
            let n = sqlx::query("UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1")
                .bind(step as i64)
                .bind(user_id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(n == 1)
        }
        None => Ok(false),
    }
}

fn totp_key(state: &AppState) -> Result<&crate::config::KeyRing, IdentityError> {
    Ok(state
        .config
        .keys
        .totp_encryption
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no TOTP encryption key configured"))?)
}

fn open_seed(state: &AppState, sealed: &str) -> Result<Vec<u8>, IdentityError> {
    Ok(totp::open(totp_key(state)?, sealed).ok_or_else(|| anyhow::anyhow!("a TOTP seed cannot be opened"))?)
}

/// `403 step_up_required` with a fresh challenge unless the session stepped up in the last 5 minutes.
pub async fn require_step_up(
    state: &AppState,
    session: &UserSession,
    client: &ClientInfo,
) -> Result<(), IdentityError> {
    let now = state.clock.now_ms();
    if session.step_up_at() + super::STEP_UP_TTL_MS > now {
        return Ok(());
    }
    let challenge = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let methods = super::challenge::user_methods(&mut tx, session.user_id()).await?;
        let c = super::challenge::NewChallenge {
            purpose: super::challenge::Purpose::StepUp,
            user_id: Some(session.user_id()),
            operator_id: None,
            merchant_user_id: None,
            session_id: Some(session.session_id()),
            device_id: Some(session.device_id()),
            subject_id: None,
            methods: &methods,
            client,
        };
        let v = super::challenge::create(&mut tx, &c, now).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(v)
    })
    .await?;
    Err(IdentityError::StepUpRequired { challenge_id: challenge.challenge_id, methods: challenge.methods })
}

/// As [`require_step_up`], for an operator: a session that has not verified a second factor in the
/// last few minutes (its login counts) gets a step-up challenge (the authenticator app, or a passkey
/// when the operator has one), so that a stolen session cookie alone cannot add or remove a passkey.
pub async fn require_operator_step_up(
    state: &AppState,
    session: &crate::identity::session::OperatorSession,
    client: &ClientInfo,
) -> Result<(), IdentityError> {
    let staff = StaffSession {
        owner: super::passkey::Owner::Operator(session.operator_id()),
        session_id: session.session_id(),
        device_id: session.device_id(),
        step_up_at: session.step_up_at(),
    };
    require_staff_step_up(state, &staff, client).await
}

/// As [`require_operator_step_up`], for a merchant user of the dashboard: the authenticator app's
/// code, or a passkey when they have one.
pub async fn require_merchant_step_up(
    state: &AppState,
    session: &crate::identity::session::MerchantSession,
    client: &ClientInfo,
) -> Result<(), IdentityError> {
    let staff = StaffSession {
        owner: super::passkey::Owner::MerchantUser(session.merchant_user_id()),
        session_id: session.session_id(),
        device_id: session.device_id(),
        step_up_at: session.step_up_at(),
    };
    require_staff_step_up(state, &staff, client).await
}

/// An operator's or a merchant user's session, as a step-up sees it.
struct StaffSession<'a> {
    owner: super::passkey::Owner<'a>,
    session_id: &'a crate::ids::SessionId,
    device_id: &'a str,
    step_up_at: i64,
}

async fn require_staff_step_up(
    state: &AppState,
    session: &StaffSession<'_>,
    client: &ClientInfo,
) -> Result<(), IdentityError> {
    let now = state.clock.now_ms();
    if session.step_up_at + super::STEP_UP_TTL_MS > now {
        return Ok(());
    }
    let (operator_id, merchant_user_id) = match session.owner {
        super::passkey::Owner::Operator(o) => (Some(o), None),
        super::passkey::Owner::MerchantUser(m) => (None, Some(m)),
        super::passkey::Owner::User(_) => return Err(anyhow::anyhow!("a shopper's step-up is require_step_up").into()),
    };
    let challenge = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let mut methods = vec!["totp"];
        if super::passkey::has_any(&mut tx, session.owner).await? {
            methods.push("passkey");
        }
        let c = super::challenge::NewChallenge {
            purpose: super::challenge::Purpose::StepUp,
            user_id: None,
            operator_id,
            merchant_user_id,
            session_id: Some(session.session_id),
            device_id: Some(session.device_id),
            subject_id: None,
            methods: &methods,
            client,
        };
        let v = super::challenge::create(&mut tx, &c, now).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(v)
    })
    .await?;
    Err(IdentityError::StepUpRequired { challenge_id: challenge.challenge_id, methods: challenge.methods })
}

/// `POST /v1/me/password`.
pub async fn change(
    state: &AppState,
    session: &UserSession,
    current: &str,
    new: &str,
    client: &ClientInfo,
) -> Result<(), IdentityError> {
    let new = Password::parse(new).map_err(IdentityError::WeakPassword)?;
    require_step_up(state, session, client).await?;
    let user = {
        let mut conn = state.db.pool().acquire().await?;
        user_by_id(&mut conn, session.user_id()).await?.ok_or(IdentityError::Unauthenticated)?
    };
    let now = state.clock.now_ms();
    if !crate::identity::password::verify(&state.hasher, &Password::for_login(current), Some(&user.password_hash)).await
    {
        store::retry(|| async {
            let mut tx = state.db.begin().await?;
            count_wrong(&mut tx, &user, client, throttle::Failure::Password, now).await?;
            tx.commit().await
        })
        .await?;
        return Err(IdentityError::WrongCurrentPassword);
    }
    check_policy(&new, &user.phone, &user.email).map_err(IdentityError::WeakPassword)?;
    let hash = crate::identity::password::hash(&state.hasher, &new).await?;
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        sqlx::query(
            "UPDATE users SET password_hash = $1, credentials_changed_at = $2, \
             cooling_off_reason = CASE WHEN cooling_off_until > $3 THEN cooling_off_reason ELSE 'password_change' END, \
             cooling_off_until = CASE WHEN cooling_off_until > $3 THEN cooling_off_until ELSE $3 END WHERE id = $4",
        )
        .bind(&hash)
        .bind(now)
        .bind(now + COOLING_OFF_PASSWORD_MS)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
        session::revoke_all(&mut tx, &user.id, Some(session.session_id()), now).await?;
        session::revoke_device_tokens(&mut tx, &user.id, now).await?;
        super::notify_all(
            &mut tx,
            &user,
            "password_changed",
            "Your Omamori password was changed and your other devices were signed out.",
            now,
        )
        .await?;
        tx.commit().await
    })
    .await?;
    Ok(())
}

/// Counts a wrong password or code of a signed-in user against the account and the address.
async fn count_wrong(
    conn: &mut Conn,
    user: &User,
    client: &ClientInfo,
    what: throttle::Failure,
    now: i64,
) -> Result<(), sqlx::Error> {
    let key = format!("account:{}", user.id);
    let attempt = throttle::Attempt {
        ip: &client.ip_text,
        subnet: &client.subnet,
        key: &key,
        recognised: false,
        max_delay_ms: None,
    };
    throttle::record_failure(conn, &attempt, what, now).await?;
    Ok(())
}

/// A new authenticator seed, to be scanned (`otpauth_uri`) or typed (`secret`) into the app.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TotpSetup {
    /// The seed in base32.
    pub secret: String,
    pub otpauth_uri: String,
}

/// `POST /v1/me/totp`: a new seed, pending until confirmed with a code from the app.
pub async fn totp_begin(
    state: &AppState,
    session: &UserSession,
    client: &ClientInfo,
) -> Result<TotpSetup, IdentityError> {
    require_step_up(state, session, client).await?;
    let seed = totp::new_seed();
    let sealed = totp::seal(totp_key(state)?, &seed);
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(session.user_id())
        .fetch_one(state.db.pool())
        .await?;
    store::write_one(&state.db, || {
        sqlx::query("UPDATE users SET totp_pending = $1 WHERE id = $2").bind(&sealed).bind(session.user_id())
    })
    .await?;
    Ok(TotpSetup { secret: totp::base32(&seed), otpauth_uri: totp::otpauth_uri(&seed, &email) })
}

/// The single-use recovery codes an authenticator app comes with, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// 10 codes, `XXXX-XXXX-XXXX-XXXX`.
    pub recovery_codes: Vec<String>,
}

/// `POST /v1/me/totp/confirm {code}`: activates the app and answers 10 single-use recovery codes.
pub async fn totp_confirm(
    state: &AppState,
    session: &UserSession,
    code: &str,
    client: &ClientInfo,
) -> Result<RecoveryCodes, IdentityError> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let user = user_by_id(&mut tx, session.user_id()).await?.ok_or(IdentityError::Unauthenticated)?;
        let pending: Option<String> = sqlx::query_scalar("SELECT totp_pending FROM users WHERE id = $1")
            .bind(&user.id)
            .fetch_one(&mut *tx)
            .await?;
        let Some(pending) = pending else { return Err(IdentityError::TotpNotStarted) };
        let seed = open_seed(state, &pending)?;
        let Some(step) = totp::verify(&seed, code, totp::current_step(), 0) else {
            count_wrong(&mut tx, &user, client, throttle::Failure::Code, now).await?;
            tx.commit().await?;
            return Err(IdentityError::TotpCodeInvalid);
        };
        sqlx::query(
            "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $1 WHERE id = $2",
        )
        .bind(step as i64)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
        let recovery_codes = replace_recovery_codes(&mut tx, &user.id, now).await?;
        super::notify_all(
            &mut tx,
            &user,
            "factor_added",
            "An authenticator app was added to your Omamori account.",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(RecoveryCodes { recovery_codes })
    })
    .await
}

/// Replaces the user's recovery codes with 10 new ones (stored hashed); answers them.
async fn replace_recovery_codes(conn: &mut Conn, user_id: &UserId, now: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    let mut codes = Vec::new();
    for _ in 0..10 {
        let code = recovery_code();
        let normalised: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(secret_hash(user_id.as_str(), &normalised))
            .bind(now)
            .execute(&mut *conn)
            .await?;
        codes.push(code);
    }
    Ok(codes)
}

/// A recovery code: 16 characters (80 bits) from the base32 alphabet, shown as `XXXX-XXXX-XXXX-XXXX`.
/// 80 bits keep a stolen database's hashes out of reach of offline guessing.
fn recovery_code() -> String {
    let mut bytes = [0u8; 10];
    rand::fill(&mut bytes);
    let text = totp::base32(&bytes);
    format!("{}-{}-{}-{}", &text[..4], &text[4..8], &text[8..12], &text[12..16])
}

/// A stable throttle key for a login that matches no account (so it throttles like one that does).
pub fn unknown_login_key(login: &str) -> String {
    format!("login:{}", hex::encode(&Sha256::digest(login.trim().to_lowercase().as_bytes())[..16]))
}
