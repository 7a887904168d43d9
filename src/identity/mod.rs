//! Identity: users, contacts, passwords, second factors, devices, sessions, step-up, recovery
//! (ARCHITECTURE sections 2 and 7).
//!
//! A password alone never opens anything: login always ends in a challenge (SMS code, TOTP or a
//! recovery code) unless the device presents a device token from an earlier two-step login.
//! Every secret Omamori hands out (session and device tokens, one-time codes, recovery codes) is
//! stored only as a hash; every security event writes its notice in the same transaction.

pub mod challenge;
pub mod freeze;
pub mod login;
pub mod operator_routes;
pub mod operators;
pub mod passkey;
pub mod passkey_routes;
pub mod password;
pub mod recovery;
pub mod routes;
pub mod session;
pub mod signup;
pub mod staff;
pub mod staff_routes;
pub mod totp;
pub mod webauthn;

pub use crate::secret::{mask_email, mask_phone, new_code, new_token, secret_hash, secret_matches};

use crate::ids::ChallengeId;
use crate::ids::UserId;
use std::fmt;

use crate::notify::{self, Channel, Message};
use crate::risk::RiskError;
use crate::store::Conn;

/// How long one-time codes and challenges live.
pub const CODE_TTL_MS: i64 = 5 * 60 * 1000;
/// Wrong codes allowed per challenge, sign-up or reset.
pub const MAX_CODE_FAILURES: i64 = 5;
/// How long a verified step-up lasts.
pub const STEP_UP_TTL_MS: i64 = 5 * 60 * 1000;
/// A recognised device opens a session with password and device token for this long after its
/// last two-step login.
pub const DEVICE_TRUST_MS: i64 = 30 * 24 * 3600 * 1000;
/// Cooling-off after a reset or a contact change, and after a password change or factor removal.
pub const COOLING_OFF_RESET_MS: i64 = 72 * 3600 * 1000;
pub const COOLING_OFF_PASSWORD_MS: i64 = 24 * 3600 * 1000;

/// What identity refuses, and why. `http` turns each into its status and `code`; the text is the
/// problem's `detail`.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `422 invalid_phone`.
    #[error("the phone number must be a Japanese number in E.164 form, for example +819012345678")]
    InvalidPhone,
    /// `422 invalid_email`.
    #[error("the e-mail address is not valid")]
    InvalidEmail,
    /// `422 invalid_body`: a device id the app cannot have sent.
    #[error("device_id must be 1 to 128 printable ASCII characters")]
    InvalidDeviceId,
    /// `422 weak_password` with `reason`.
    #[error("choose another password")]
    WeakPassword(password::WeakReason),
    /// `401 invalid_credentials`: the same answer for an unknown login and a wrong password.
    #[error("the login or the password is not right")]
    InvalidCredentials,
    /// `422 invalid_credentials`: a password change with a wrong current password.
    #[error("the current password is not right")]
    WrongCurrentPassword,
    /// `401 unauthenticated`: the session's user is gone.
    #[error("a valid session token is required")]
    Unauthenticated,
    /// `404 not_found`.
    #[error("there is no such challenge")]
    ChallengeNotFound,
    /// `404 not_found`.
    #[error("there is no such sign-up")]
    SignupNotFound,
    /// `404 not_found`.
    #[error("there is no such reset")]
    ResetNotFound,
    /// `404 not_found`.
    #[error("there is no such user")]
    UserNotFound,
    /// `404 not_found`: the card a card challenge unlocks is not waiting for it (any more).
    #[error("there is no such card waiting for a challenge")]
    CardNotWaiting,
    /// `410 challenge_expired`: a challenge, sign-up or reset past its time or its tries.
    #[error("this challenge has expired or is used up; start again")]
    ChallengeExpired,
    /// `422 invalid_method`: only SMS codes are sent.
    #[error("only the sms method sends a code; totp and recovery codes are read from your own device or paper")]
    OnlySmsIsSent,
    /// `422 invalid_method`.
    #[error("this challenge has no sms method")]
    NoSmsMethod,
    /// `422 invalid_method`: `accepted` lists the challenge's methods, comma-separated.
    #[error("this challenge accepts {accepted}")]
    MethodNotAccepted { accepted: String },
    /// `422 code_invalid` with `attempts_left`: a wrong challenge code.
    #[error("the code is not right")]
    CodeInvalid { attempts_left: i64 },
    /// `422 code_invalid` with `attempts_left`: wrong sign-up codes.
    #[error("the codes are not right")]
    SignupCodesInvalid { attempts_left: i64 },
    /// `422 code_invalid` with `attempts_left`: a reset without two valid proofs.
    #[error("two valid proofs are needed: the SMS code, the e-mail code or an authenticator code")]
    ResetProofsInvalid { attempts_left: i64 },
    /// `422 code_invalid`, without `attempts_left`: a wrong code confirming an authenticator app.
    #[error("the code is not right")]
    TotpCodeInvalid,
    /// `409 totp_not_started`.
    #[error("start with POST /v1/me/totp")]
    TotpNotStarted,
    /// `403 step_up_required` with the fresh challenge to verify.
    #[error("confirm it is you first: verify the challenge, then repeat")]
    StepUpRequired { challenge_id: ChallengeId, methods: Vec<&'static str> },
    /// `403 cooling_off` with `retry_after` (seconds).
    #[error("this is not allowed for a while after a password reset or a change of contact details")]
    CoolingOff { retry_after_secs: i64 },
    /// `503 unavailable`: no `OMAMORI_PUBLIC_URL`, so no origin for passkeys.
    #[error("passkeys are not available on this server: it has no public address (OMAMORI_PUBLIC_URL)")]
    PasskeysUnavailable,
    /// `404 not_found`.
    #[error("there is no such passkey registration")]
    RegistrationNotFound,
    /// `422 invalid_body`.
    #[error("a passkey's name is 1 to 64 characters, without control characters")]
    InvalidPasskeyName,
    /// `422 passkey_rejected`: the browser's answer to a registration does not verify.
    #[error("{0}")]
    PasskeyRejected(webauthn::Rejected),
    /// `409 too_many_passkeys`: the owner has as many passkeys as one may have.
    #[error("an account has at most {max} passkeys: remove one before adding another")]
    TooManyPasskeys { max: usize },
    /// `409 email_taken`: a merchant user with this e-mail exists already.
    #[error("this e-mail address already belongs to a dashboard user")]
    EmailTaken,
    /// `404 not_found`.
    #[error("there is no such merchant")]
    MerchantNotFound,
    /// `422 unknown_store`: a store id that is not one of this merchant's stores.
    #[error("store_ids must name stores of this merchant")]
    UnknownStore,
    /// `422 store_ids_required`: a staff member sees only the stores they are given.
    #[error("give a staff member at least one store in store_ids")]
    StoresRequired,
    /// `422 invalid_body`: an owner sees every store.
    #[error("an owner sees every store: leave store_ids out")]
    OwnerHasEveryStore,
    /// `403 risk_declined`: the login rules refused a session after a right second factor (not a
    /// final answer: the same login may pass from the usual phone).
    #[error("this sign-in was declined for your protection; try again from your usual phone")]
    LoginDeclined,
    #[error(transparent)]
    Risk(#[from] RiskError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// `500 internal_error`: a configuration or data fault (no TOTP key, an unreadable seed, a
    /// hash that failed).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl crate::store::Retryable for IdentityError {
    fn is_retryable(&self) -> bool {
        match self {
            IdentityError::Db(e) => e.is_retryable(),
            IdentityError::Risk(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A Japanese phone number in E.164 form (`+81` then 9 or 10 digits). Omamori serves Japan; other
/// country codes, premium-rate ones included, are refused so that sign-ups cannot pump SMS abroad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, IdentityError> {
        let national = raw.strip_prefix("+81").unwrap_or("");
        let ok = (9..=10).contains(&national.len())
            && national.bytes().all(|b| b.is_ascii_digit())
            && !national.starts_with('0');
        if !ok {
            return Err(IdentityError::InvalidPhone);
        }
        Ok(PhoneNumber(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, IdentityError> {
        let lower = raw.trim().to_lowercase();
        let valid = match lower.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.len() >= 3
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
                    && lower.len() <= 254
                    && lower.chars().all(|c| !c.is_whitespace() && !c.is_control())
            }
            None => false,
        };
        // The mailer's own parser decides too: an address it would refuse at send time would leave
        // the shopper waiting for a code that never comes.
        let valid = valid && lower.parse::<lettre::Address>().is_ok();
        if !valid {
            return Err(IdentityError::InvalidEmail);
        }
        Ok(Email(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A login identifier: a phone in E.164 form or an e-mail address.
pub enum Login {
    Phone(PhoneNumber),
    Email(Email),
}

impl Login {
    /// Never fails: an identifier that is neither form simply matches no account (and is
    /// answered exactly as a wrong password would be).
    pub fn parse(raw: &str) -> Option<Login> {
        let raw = raw.trim();
        if raw.starts_with('+') {
            PhoneNumber::parse(raw).ok().map(Login::Phone)
        } else {
            Email::parse(raw).ok().map(Login::Email)
        }
    }
}

/// A user as identity code sees one.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub phone: String,
    pub email: String,
    pub password_hash: String,
    pub wallet_account_id: i64,
    pub totp_secret: Option<String>,
    pub cooling_off_until: i64,
    pub created_at: i64,
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {}", self.id)
    }
}

const USER_COLUMNS: &str =
    "id, phone, email, password_hash, wallet_account_id, totp_secret, cooling_off_until, created_at";

fn user_from_row(r: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    use sqlx::Row;
    Ok(User {
        id: r.try_get("id")?,
        phone: r.try_get("phone")?,
        email: r.try_get("email")?,
        password_hash: r.try_get("password_hash")?,
        wallet_account_id: r.try_get("wallet_account_id")?,
        totp_secret: r.try_get("totp_secret")?,
        cooling_off_until: r.try_get("cooling_off_until")?,
        created_at: r.try_get("created_at")?,
    })
}

pub async fn user_by_id(conn: &mut Conn, id: &UserId) -> Result<Option<User>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"));
    let row = sqlx::query(sql).bind(id).fetch_optional(&mut *conn).await?;
    row.as_ref().map(user_from_row).transpose()
}

/// What a payment needs to know of its payer, in one round trip: the user, the country of the
/// newest session on the paying device, when that device was first seen, and the newest session
/// that has a country (the risk rules' facts that identity owns).
#[derive(Debug, Clone)]
pub struct PayerProfile {
    pub user: User,
    pub credentials_changed_at: i64,
    pub device_country: Option<String>,
    pub first_seen_on_device: Option<i64>,
    pub previous_session: Option<(String, i64)>,
}

pub async fn payer_profile(conn: &mut Conn, id: &UserId, device_id: &str) -> Result<Option<PayerProfile>, sqlx::Error> {
    use sqlx::Row;
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS}, credentials_changed_at, \
         (SELECT s.country FROM sessions s WHERE s.user_id = $1 AND s.device_id = $2 ORDER BY s.created_at DESC LIMIT 1) AS device_country, \
         (SELECT MIN(s.created_at) FROM sessions s WHERE s.user_id = $1 AND s.device_id = $2) AS first_seen, \
         (SELECT s.country FROM sessions s WHERE s.user_id = $1 AND s.country IS NOT NULL ORDER BY s.created_at DESC LIMIT 1) AS located_country, \
         (SELECT s.created_at FROM sessions s WHERE s.user_id = $1 AND s.country IS NOT NULL ORDER BY s.created_at DESC LIMIT 1) AS located_at \
         FROM users WHERE id = $1"
    ));
    let Some(r) = sqlx::query(sql).bind(id).bind(device_id).fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let located: (Option<String>, Option<i64>) = (r.try_get("located_country")?, r.try_get("located_at")?);
    Ok(Some(PayerProfile {
        user: user_from_row(&r)?,
        credentials_changed_at: r.try_get("credentials_changed_at")?,
        device_country: r.try_get("device_country")?,
        first_seen_on_device: r.try_get("first_seen")?,
        previous_session: match located {
            (Some(country), Some(at)) => Some((country, at)),
            _ => None,
        },
    }))
}

pub async fn user_by_login(conn: &mut Conn, login: &Login) -> Result<Option<User>, sqlx::Error> {
    let (column, value) = match login {
        Login::Phone(p) => ("phone", p.as_str()),
        Login::Email(e) => ("email", e.as_str()),
    };
    let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1"));
    let row = sqlx::query(sql).bind(value).fetch_optional(&mut *conn).await?;
    row.as_ref().map(user_from_row).transpose()
}

/// Tells the user on every verified channel (SMS and e-mail), in the caller's transaction.
pub async fn notify_all(conn: &mut Conn, user: &User, kind: &str, text: &str, now: i64) -> Result<(), sqlx::Error> {
    // Every event worth telling the user on every channel is a security event: it is audited too.
    crate::audit::append(conn, &format!("user:{}", user.id), kind, user.id.as_str(), &serde_json::json!({}), now)
        .await?;
    for (channel, to) in [(Channel::Sms, &user.phone), (Channel::Email, &user.email)] {
        let message = Message {
            channel,
            to: to.clone(),
            kind: kind.to_string(),
            subject: (channel == Channel::Email).then(|| format!("Omamori: {text}")),
            body: format!(
                "{text} If this was not you, freeze your account at once: open the Omamori app or call support."
            ),
            code: None,
        };
        notify::enqueue(conn, &message, now).await?;
    }
    Ok(())
}

/// Sends a one-time code by SMS or e-mail, in the caller's transaction.
pub async fn send_code(
    conn: &mut Conn,
    channel: Channel,
    to: &str,
    kind: &str,
    purpose: &str,
    code: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let message = Message {
        channel,
        to: to.to_string(),
        kind: kind.to_string(),
        subject: (channel == Channel::Email).then(|| format!("Your Omamori code for {purpose}")),
        body: format!("Omamori: {code} is your code for {purpose}. It expires in 5 minutes. Never share it."),
        code: Some(code.to_string()),
    };
    notify::enqueue(conn, &message, now).await.map(|_| ())
}

/// The rows a one-time code belongs to.
#[derive(Debug, Clone, Copy)]
pub enum CodeHolder {
    Signup,
    Reset,
    Challenge,
}

/// A wrong code to count: against which row (`id` in the holder's table), under which throttle
/// key, and how long the key's lock may grow (`None` for the default).
pub struct WrongCode<'a> {
    pub holder: CodeHolder,
    pub id: &'a str,
    pub key: &'a str,
    pub max_delay_ms: Option<i64>,
}

/// Counts a wrong code, in the caller's locked transaction, which it then commits: against the
/// sign-up, reset or challenge row (dead at the fifth), against the key and the caller's address,
/// and in the alert counters. Answers the attempts left (for `422 code_invalid`).
pub async fn wrong_code(
    mut tx: crate::store::Tx,
    state: &crate::state::AppState,
    wrong: &WrongCode<'_>,
    client: &crate::risk::client::ClientInfo,
    now: i64,
) -> Result<i64, sqlx::Error> {
    let table = match wrong.holder {
        CodeHolder::Signup => "signups",
        CodeHolder::Reset => "password_resets",
        CodeHolder::Challenge => "challenges",
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET failures = failures + 1, \
         state = CASE WHEN failures + 1 >= $1 THEN 'dead' ELSE state END WHERE id = $2 RETURNING failures"
    ));
    let failures: i64 = sqlx::query_scalar(sql).bind(MAX_CODE_FAILURES).bind(wrong.id).fetch_one(&mut *tx).await?;
    let attempt = crate::risk::throttle::Attempt {
        ip: &client.ip_text,
        subnet: &client.subnet,
        key: wrong.key,
        recognised: false,
        max_delay_ms: wrong.max_delay_ms,
    };
    crate::risk::throttle::record_failure(&mut tx, &attempt, crate::risk::throttle::Failure::Code, now).await?;
    crate::risk::alerts::evaluate(&mut tx, &crate::risk::alerts::Thresholds::from_config(&state.config), now).await?;
    tx.commit().await?;
    Ok((MAX_CODE_FAILURES - failures).max(0))
}

/// When the user's credentials last changed and when the account was made (a risk fact: the
/// sign-up itself is not a change).
pub async fn credential_times(conn: &mut Conn, user_id: &UserId) -> Result<(i64, i64), sqlx::Error> {
    use sqlx::Row;
    let row = sqlx::query("SELECT credentials_changed_at, created_at FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok((row.try_get("credentials_changed_at")?, row.try_get("created_at")?))
}

/// `403 cooling_off` when the user changed credentials recently.
pub fn ensure_not_cooling_off(user: &User, now: i64) -> Result<(), IdentityError> {
    if user.cooling_off_until > now {
        return Err(IdentityError::CoolingOff { retry_after_secs: (user.cooling_off_until - now + 999) / 1000 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_e164() {
        assert!(PhoneNumber::parse("+819012345678").is_ok());
        for bad in ["819012345678", "+0123456789", "+81-90-1234", "+1234567", "+14155550100", "+8109012345678", ""] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(Email::parse(" Hanako@Example.JP ").unwrap().as_str(), "hanako@example.jp");
        for bad in [
            "hanako",
            "@example.jp",
            "a@b",
            "a@.jp",
            "a b@example.jp",
            "a@example.jp.",
            "a..b@example.jp",
            "a(b)@example.jp",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
