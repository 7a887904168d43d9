//! Sign-up: an E.164 phone and an e-mail address, both verified by 6-digit codes before the
//! account (and its wallet) exists.
//!
//! A phone or e-mail that is already registered gets the same `202` as a new one; its owner is
//! told instead of being sent a code, and that sign-up can never be completed. So the answer
//! says nothing about which contacts are registered.

use axum::http::StatusCode;
use sqlx::Row;

use super::password::{Password, check_policy};
use super::{CODE_TTL_MS, Email, MAX_CODE_FAILURES, PhoneNumber, new_code, new_id, secret_hash, secret_matches};
use crate::http::error::ApiError;
use crate::ledger::{self, AccountKind};
use crate::money::Currency;
use crate::notify::{self, Channel, Message};
use crate::risk::client::ClientInfo;
use crate::risk::throttle::{SmsCause, sms_budget};
use crate::state::AppState;
use crate::store;

pub fn weak_password(reason: super::password::WeakReason) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", "choose another password")
        .with("reason", reason.as_str())
}

/// `POST /v1/signup`: answers the new sign-up's id.
pub async fn start(
    state: &AppState,
    phone: &str,
    email: &str,
    password: &str,
    client: &ClientInfo,
) -> Result<String, ApiError> {
    {
        let mut conn = state.db.pool().acquire().await?;
        let subject = crate::risk::switches::Subject { country: client.country.as_deref(), ..Default::default() };
        crate::risk::switches::check(&mut conn, crate::ids::SwitchName::Signups, subject).await?;
    }
    let phone = PhoneNumber::parse(phone)?;
    let email = Email::parse(email)?;
    let password = Password::parse(password).map_err(weak_password)?;
    check_policy(&password, phone.as_str(), email.as_str()).map_err(weak_password)?;
    let now = state.clock.now_ms();
    // The SMS budget is spent before the (slow) hash, and for every number alike, registered or not.
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let verdict = sms_budget(&mut tx, SmsCause::Unauthenticated, phone.as_str(), client, now).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(verdict.into_result().map_err(ApiError::from))
    })
    .await??;
    let hash = crate::identity::password::hash(&state.hasher, &password).await?;
    let id = new_id("sgn");
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let phone_taken: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE phone = $1").bind(phone.as_str()).fetch_one(&mut *tx).await?;
        let email_taken: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = $1").bind(email.as_str()).fetch_one(&mut *tx).await?;
        let (phone_code, email_code) = (new_code(), new_code());
        sqlx::query(
            "INSERT INTO signups (id, phone, email, password_hash, phone_code_hash, email_code_hash, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)",
        )
        .bind(&id)
        .bind(phone.as_str())
        .bind(email.as_str())
        .bind(&hash)
        .bind((phone_taken == 0).then(|| secret_hash(&format!("{id}:phone"), &phone_code)))
        .bind((email_taken == 0).then(|| secret_hash(&format!("{id}:email"), &email_code)))
        .bind(now)
        .bind(now + CODE_TTL_MS)
        .execute(&mut *tx)
        .await?;
        for (channel, to, taken, code) in [
            (Channel::Sms, phone.as_str(), phone_taken > 0, &phone_code),
            (Channel::Email, email.as_str(), email_taken > 0, &email_code),
        ] {
            if taken {
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
                notify::enqueue(&mut tx, &message, now).await?;
            } else {
                super::send_code(&mut tx, channel, to, "signup_code", "creating your account", code, now).await?;
            }
        }
        tx.commit().await?;
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(id)
}

/// `POST /v1/signup/{id}/verify`: creates the user and the wallet; answers the user id.
pub async fn verify(
    state: &AppState,
    id: &str,
    phone_code: &str,
    email_code: &str,
    client: &ClientInfo,
) -> Result<String, ApiError> {
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
        .ok_or_else(|| ApiError::not_found("there is no such sign-up"))?;
        let failures: i64 = row.try_get("failures")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let signup_state: String = row.try_get("state")?;
        if signup_state != "pending" || expires_at <= now || failures >= MAX_CODE_FAILURES {
            return Ok::<_, ApiError>(Err(ApiError::from(super::IdentityError::ChallengeExpired)));
        }
        let phone_ok = secret_matches(&format!("{id}:phone"), phone_code, row.try_get::<Option<String>, _>("phone_code_hash")?.as_deref());
        let email_ok = secret_matches(&format!("{id}:email"), email_code, row.try_get::<Option<String>, _>("email_code_hash")?.as_deref());
        if !(phone_ok && email_ok) {
            let key = format!("signup:{id}");
            let wrong = super::WrongCode { holder: super::CodeHolder::Signup, id, key: &key, max_delay_ms: None };
            let attempts_left = super::wrong_code(tx, state, &wrong, client, now).await?;
            return Ok::<_, ApiError>(Err(super::IdentityError::SignupCodesInvalid { attempts_left }.into()));
        }
        let (phone, email, hash): (String, String, String) =
            (row.try_get("phone")?, row.try_get("email")?, row.try_get("password_hash")?);
        // The contacts were free when the codes were sent; another sign-up may have taken one since.
        // Locked in a fixed order, so that two sign-ups for the same contact cannot both pass.
        tx.lock("contact", &phone).await?;
        tx.lock("contact", &email).await?;
        let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE phone = $1 OR email = $2")
            .bind(&phone)
            .bind(&email)
            .fetch_one(&mut *tx)
            .await?;
        if taken > 0 {
            sqlx::query("UPDATE signups SET state = 'dead' WHERE id = $1").bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            return Ok::<_, ApiError>(Err(ApiError::from(super::IdentityError::ChallengeExpired)));
        }
        let user_id = new_id("usr");
        let wallet = ledger::create_account(&mut tx, AccountKind::Wallet, Currency::Jpy, Some(&user_id), now).await?;
        sqlx::query(
            "INSERT INTO users (id, phone, email, password_hash, wallet_account_id, credentials_changed_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&user_id)
        .bind(&phone)
        .bind(&email)
        .bind(&hash)
        .bind(wallet.0)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE signups SET state = 'done', password_hash = '' WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Ok(user_id))
    })
    .await?
}
