//! Sign-up: an E.164 phone and an e-mail address, both verified by 6-digit codes before the
//! account (and its wallet) exists.
//!
//! A phone or e-mail that is already registered gets the same `202` as a new one; its owner is
//! told instead of being sent a code, and that sign-up can never be completed. So the answer
//! says nothing about which contacts are registered.

use crate::ids::SignupId;
use crate::ids::UserId;
use sqlx::Row;

use super::password::{Password, check_policy};
use super::{
    CODE_TTL_MS, CodeHolder, Email, IdentityError, MAX_CODE_FAILURES, PhoneNumber, WrongCode, new_code, secret_hash,
    secret_matches,
};
use crate::ledger::{self, AccountKind};
use crate::money::Currency;
use crate::notify::{self, Channel, Message};
use crate::risk::client::ClientInfo;
use crate::risk::throttle::{SmsCause, sms_budget};
use crate::state::AppState;
use crate::store::{self, Conn};

/// What a sign-up asks for, as submitted.
pub struct Request<'a> {
    pub phone: &'a str,
    pub email: &'a str,
    pub password: &'a str,
}

/// A sign-up's contacts and password, checked.
struct Checked {
    phone: PhoneNumber,
    email: Email,
    password: Password,
}

/// `POST /v1/signup`: answers the new sign-up's id.
pub async fn start(state: &AppState, request: &Request<'_>, client: &ClientInfo) -> Result<SignupId, IdentityError> {
    let Checked { phone, email, password } = check(state, request, client).await?;
    let now = state.clock.now_ms();
    // The SMS budget is spent before the (slow) hash, and for every number alike, registered or not.
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let verdict = sms_budget(&mut tx, SmsCause::Unauthenticated, phone.as_str(), client, now).await?;
        tx.commit().await?;
        Ok::<_, IdentityError>(verdict.into_result()?)
    })
    .await?;
    let hash = crate::identity::password::hash(&state.hasher, &password).await?;
    let id = SignupId::generate();
    let signup = NewSignup { id: &id, phone: &phone, email: &email, password_hash: &hash };
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        record(&mut tx, &signup, now).await?;
        tx.commit().await
    })
    .await?;
    Ok(id)
}

/// Refuses a sign-up while the signups switch is engaged, or whose contacts or password will not do.
async fn check(state: &AppState, request: &Request<'_>, client: &ClientInfo) -> Result<Checked, IdentityError> {
    {
        let mut conn = state.db.pool().acquire().await?;
        let subject = crate::risk::switches::Subject { country: client.country.as_deref(), ..Default::default() };
        crate::risk::switches::check(&mut conn, crate::ids::SwitchName::Signups, subject).await?;
    }
    let phone = PhoneNumber::parse(request.phone)?;
    let email = Email::parse(request.email)?;
    let password = Password::parse(request.password).map_err(IdentityError::WeakPassword)?;
    check_policy(&password, phone.as_str(), email.as_str()).map_err(IdentityError::WeakPassword)?;
    Ok(Checked { phone, email, password })
}

/// A sign-up to record, its password already hashed.
struct NewSignup<'a> {
    id: &'a SignupId,
    phone: &'a PhoneNumber,
    email: &'a Email,
    password_hash: &'a str,
}

/// Records the sign-up and sends its codes, in the caller's transaction. A contact that is
/// already registered gets no code (that sign-up can never complete): its owner is told instead.
async fn record(conn: &mut Conn, signup: &NewSignup<'_>, now: i64) -> Result<(), sqlx::Error> {
    let (id, phone, email) = (signup.id, signup.phone.as_str(), signup.email.as_str());
    let phone_taken: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE phone = $1").bind(phone).fetch_one(&mut *conn).await?;
    let email_taken: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1").bind(email).fetch_one(&mut *conn).await?;
    let (phone_code, email_code) = (new_code(), new_code());
    sqlx::query(
        "INSERT INTO signups (id, phone, email, password_hash, phone_code_hash, email_code_hash, state, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)",
    )
    .bind(id)
    .bind(phone)
    .bind(email)
    .bind(signup.password_hash)
    .bind((phone_taken == 0).then(|| secret_hash(&format!("{id}:phone"), &phone_code)))
    .bind((email_taken == 0).then(|| secret_hash(&format!("{id}:email"), &email_code)))
    .bind(now)
    .bind(now + CODE_TTL_MS)
    .execute(&mut *conn)
    .await?;
    for (channel, to, taken, code) in
        [(Channel::Sms, phone, phone_taken > 0, &phone_code), (Channel::Email, email, email_taken > 0, &email_code)]
    {
        if taken {
            tell_registered(conn, channel, to, now).await?;
        } else {
            super::send_code(conn, channel, to, "signup_code", "creating your account", code, now).await?;
        }
    }
    Ok(())
}

/// Tells the owner of a registered contact that someone tried to sign up with it.
async fn tell_registered(conn: &mut Conn, channel: Channel, to: &str, now: i64) -> Result<(), sqlx::Error> {
    let what = if channel == Channel::Sms { "phone number" } else { "e-mail address" };
    let message = Message {
        channel,
        to: to.to_string(),
        kind: "signup_existing".into(),
        subject: (channel == Channel::Email).then(|| "Someone tried to sign up with your address".to_string()),
        body: format!(
            "Someone tried to create an Omamori account with your {what}, which already has one. \
             If it was you, sign in or reset your password instead; otherwise you need do nothing."
        ),
        code: None,
    };
    notify::enqueue(conn, &message, now).await?;
    Ok(())
}

/// The two codes a sign-up is verified with.
pub struct Codes<'a> {
    pub phone_code: &'a str,
    pub email_code: &'a str,
}

/// `POST /v1/signup/{id}/verify`: creates the user and the wallet; answers the user id.
pub async fn verify(
    state: &AppState,
    id: &SignupId,
    codes: &Codes<'_>,
    client: &ClientInfo,
) -> Result<UserId, IdentityError> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("signup", id).await?;
        let row = sqlx::query(
            "SELECT phone, email, password_hash, phone_code_hash, email_code_hash, failures, state, expires_at \
             FROM signups WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(IdentityError::SignupNotFound)?;
        let failures: i64 = row.try_get("failures")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let signup_state: String = row.try_get("state")?;
        if signup_state != "pending" || expires_at <= now || failures >= MAX_CODE_FAILURES {
            return Err(IdentityError::ChallengeExpired);
        }
        let phone_hash: Option<String> = row.try_get("phone_code_hash")?;
        let email_hash: Option<String> = row.try_get("email_code_hash")?;
        let phone_ok = secret_matches(&format!("{id}:phone"), codes.phone_code, phone_hash.as_deref());
        let email_ok = secret_matches(&format!("{id}:email"), codes.email_code, email_hash.as_deref());
        if !(phone_ok && email_ok) {
            let key = format!("signup:{id}");
            let wrong = WrongCode { holder: CodeHolder::Signup, id: id.as_str(), key: &key, max_delay_ms: None };
            let attempts_left = super::wrong_code(tx, state, &wrong, client, now).await?;
            return Err(IdentityError::SignupCodesInvalid { attempts_left });
        }
        let (phone, email, hash): (String, String, String) =
            (row.try_get("phone")?, row.try_get("email")?, row.try_get("password_hash")?);
        let Some(user_id) = create_user(&mut tx, &phone, &email, &hash, now).await? else {
            // The sign-up can never complete: it is dead for good.
            sqlx::query("UPDATE signups SET state = 'dead' WHERE id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            return Err(IdentityError::ChallengeExpired);
        };
        sqlx::query("UPDATE signups SET state = 'done', password_hash = '' WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(user_id)
    })
    .await
}

/// Creates the user and the wallet, in the caller's transaction; `None` when one of the contacts
/// is registered by now.
async fn create_user(
    conn: &mut Conn,
    phone: &str,
    email: &str,
    hash: &str,
    now: i64,
) -> Result<Option<UserId>, sqlx::Error> {
    // The contacts were free when the codes were sent; another sign-up may have taken one since.
    // Locked in a fixed order, so that two sign-ups for the same contact cannot both pass.
    store::lock_conn(conn, "contact", phone).await?;
    store::lock_conn(conn, "contact", email).await?;
    let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE phone = $1 OR email = $2")
        .bind(phone)
        .bind(email)
        .fetch_one(&mut *conn)
        .await?;
    if taken > 0 {
        return Ok(None);
    }
    let user_id = UserId::generate();
    let wallet = ledger::create_account(conn, AccountKind::Wallet, Currency::Jpy, Some(user_id.as_str()), now).await?;
    sqlx::query(
        "INSERT INTO users (id, phone, email, password_hash, wallet_account_id, credentials_changed_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&user_id)
    .bind(phone)
    .bind(email)
    .bind(hash)
    .bind(wallet.0)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Some(user_id))
}
