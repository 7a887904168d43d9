//! Login, for shoppers and operators: always two steps.
//!
//! The answers for an unknown login and a wrong password are identical, and both cost one Argon2
//! verification (against a dummy hash when there is no account), so neither the body nor the timing
//! tells whether an account exists. A right password yields a challenge, never a session, unless
//! the device presents a device token from a two-step login in the last 30 days.

use crate::ids::OperatorId;
use serde::Serialize;
use sqlx::Row;

use super::challenge::{self, NewChallenge, Purpose};
use super::password::Password;
use super::recovery::unknown_login_key;
use super::session::{self, NewSession, RecognisedDevice, Subject};
use super::{IdentityError, Login, User, user_by_login};
use crate::risk::client::ClientInfo;
use crate::risk::{alerts, rules, throttle};
use crate::state::AppState;
use crate::store::{self, Conn, clock};

/// A device id as the app sends it: 1 to 128 printable ASCII characters.
pub fn check_device_id(device_id: &str) -> Result<(), IdentityError> {
    if device_id.is_empty() || device_id.len() > 128 || !device_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(IdentityError::InvalidDeviceId);
    }
    Ok(())
}

/// A session opened by the password and a recognised device's token, without a second step.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceSession {
    pub session_token: String,
    pub expires_at: String,
}

/// What a right password gets: a session on a recognised device, otherwise a challenge.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum LoginAnswer {
    Session(DeviceSession),
    Challenge(challenge::Created),
}

/// What a login names: the login, the password, and the device with its token if it has one.
pub struct Credentials<'a> {
    pub login: &'a str,
    pub password: &'a str,
    pub device_id: &'a str,
    pub device_token: Option<&'a str>,
}

/// `POST /v1/login`.
pub async fn login(
    state: &AppState,
    credentials: &Credentials<'_>,
    client: &ClientInfo,
    facts: &dyn rules::FactSource,
) -> Result<LoginAnswer, IdentityError> {
    check_device_id(credentials.device_id)?;
    let now = state.clock.now_ms();
    let (user, recognised) = find_account(state, credentials, client, now).await?;
    let key = match (&recognised, &user) {
        (Some(d), _) => format!("device:{}", d.id),
        (None, Some(u)) => format!("account:{}", u.id),
        (None, None) => unknown_login_key(credentials.login),
    };
    let attempt = throttle::Attempt {
        ip: &client.ip_text,
        subnet: &client.subnet,
        key: &key,
        recognised: recognised.is_some(),
        max_delay_ms: None,
    };
    let stored = user.as_ref().map(|u| u.password_hash.as_str());
    let pending = password_step(state, &attempt, stored, credentials.password, now).await?;
    let (Some(user), Some(pending)) = (user, pending) else {
        return Err(IdentityError::InvalidCredentials);
    };
    let device = Device { id: credentials.device_id, recognised: recognised.as_ref(), key: &key };
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        pending.succeeded(&mut tx).await?;
        let answer = second_step(&mut tx, state, &user, &device, (client, facts), now).await?;
        tx.commit().await?;
        Ok::<_, IdentityError>(answer)
    })
    .await
}

/// The account a login names, if any (after the logins switch let it through), and whether the
/// device's token is valid for it.
async fn find_account(
    state: &AppState,
    credentials: &Credentials<'_>,
    client: &ClientInfo,
    now: i64,
) -> Result<(Option<User>, Option<RecognisedDevice>), IdentityError> {
    let mut conn = state.db.pool().acquire().await?;
    let user = match Login::parse(credentials.login) {
        Some(l) => user_by_login(&mut conn, &l).await?,
        None => None,
    };
    let subject = crate::risk::switches::Subject {
        user_id: user.as_ref().map(|u| &u.id),
        country: client.country.as_deref(),
        ..Default::default()
    };
    crate::risk::switches::check(&mut conn, crate::ids::SwitchName::Logins, subject).await?;
    let recognised = match (&user, credentials.device_token) {
        (Some(u), Some(token)) => session::recognise(&mut conn, &u.id, credentials.device_id, token, now).await?,
        _ => None,
    };
    Ok((user, recognised))
}

/// The device a login comes from: its id, its token's row when recognised, and the throttle key
/// the login counts against.
struct Device<'a> {
    id: &'a str,
    recognised: Option<&'a RecognisedDevice>,
    key: &'a str,
}

/// After a right password, in the caller's transaction: a session for a recognised device the
/// login rules allow, otherwise a login challenge.
async fn second_step(
    conn: &mut Conn,
    state: &AppState,
    user: &User,
    device: &Device<'_>,
    (client, facts): (&ClientInfo, &dyn rules::FactSource),
    now: i64,
) -> Result<LoginAnswer, sqlx::Error> {
    // The risk rules on login: anything but allow asks for the second factor even on a
    // recognised device (only a recognised device could skip it, so only then are they read
    // here). A hold or decline is only told after the second factor (see
    // `challenge::complete`), so the answer here is the same as for any right password and
    // tells a holder of a leaked password list nothing more.
    let trusted = match device.recognised {
        Some(recognised) if recognised.trusted_for_login => {
            let country = client.country.as_deref();
            let signals = rules::signals(
                conn,
                facts,
                &rules::Event {
                    kind: rules::RuleEvent::Login,
                    user_id: &user.id,
                    device_id: device.id,
                    amount: 0,
                    mcc: None,
                    country,
                },
                now,
            )
            .await?;
            rules::evaluate(conn, rules::RuleEvent::Login, &signals).await?.0 == rules::Outcome::Allow
        }
        _ => false,
    };
    if trusted {
        // Something known plus something held: the password and this device's token. This
        // completes a login, so the device's run of failures ends.
        throttle::record_success(conn, device.key).await?;
        let new = NewSession {
            subject: Subject::User(user.id.as_str()),
            device_id: device.id,
            ip: &client.ip_text,
            country: client.country.as_deref(),
            step_up: false,
        };
        let opened = session::open(conn, &new, session::Timeouts::from_config(&state.config), now).await?;
        let expires_at = clock::rfc3339_ms(opened.expires_at);
        return Ok(LoginAnswer::Session(DeviceSession { session_token: opened.token, expires_at }));
    }
    let methods = challenge::user_methods(conn, &user.id).await?;
    let c = NewChallenge {
        purpose: Purpose::Login,
        user_id: Some(&user.id),
        operator_id: None,
        merchant_user_id: None,
        session_id: None,
        device_id: Some(device.id),
        subject_id: None,
        methods: &methods,
        client,
    };
    Ok(LoginAnswer::Challenge(challenge::create(conn, &c, now).await?))
}

/// The password half of a login: checks the throttles and counts the attempt as a failure before
/// the (slow) password check, then verifies. Answers the pending count to undo when the password
/// was right, or `None` when it was wrong (or there is no account: a dummy hash is checked then,
/// so the timing is the same).
pub(super) async fn password_step(
    state: &AppState,
    attempt: &throttle::Attempt<'_>,
    stored: Option<&str>,
    password: &str,
    now: i64,
) -> Result<Option<throttle::Pending>, IdentityError> {
    // A place in the password checks' queue first: a login beyond it is refused before it costs a
    // transaction or a hash (a flood of them cannot slow payments down; the app retries).
    let _place = state.hasher.admit().ok_or(crate::risk::RiskError::TooManyAttempts { retry_after_ms: 1000 })?;
    let pending = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let started = throttle::begin(
            &mut tx,
            crate::risk::throttle::Limits::from_config(&state.config),
            attempt,
            throttle::Failure::Password,
            now,
        )
        .await?;
        alerts::evaluate(&mut tx, &crate::risk::alerts::Thresholds::from_config(&state.config), now).await?;
        // A throttled attempt's refusal is recorded (for the alerts) before it is answered.
        tx.commit().await?;
        Ok::<_, IdentityError>(started.into_result()?)
    })
    .await?;
    let right = crate::identity::password::verify(&state.hasher, &Password::for_login(password), stored).await;
    Ok(right.then_some(pending))
}

/// `POST /v1/admin/login {email, password}`: then a TOTP challenge, always.
pub async fn operator_login(
    state: &AppState,
    email: &str,
    password: &str,
    client: &ClientInfo,
) -> Result<challenge::Created, IdentityError> {
    let now = state.clock.now_ms();
    let email = email.trim().to_lowercase();
    let row = if email.len() <= 254 {
        sqlx::query("SELECT id, password_hash FROM operators WHERE email = $1")
            .bind(&email)
            .fetch_optional(state.db.pool())
            .await?
    } else {
        None
    };
    let operator: Option<(OperatorId, String)> =
        row.map(|r| Ok::<_, sqlx::Error>((r.try_get("id")?, r.try_get("password_hash")?))).transpose()?;
    // Unknown operator logins have their own namespace: a shopper-side throttle on the same
    // identifier must not tell whether an operator exists.
    let key = match &operator {
        Some((id, _)) => format!("operator:{id}"),
        None => format!("operator-login:{}", &unknown_login_key(&email)["login:".len()..]),
    };
    let attempt = throttle::Attempt {
        ip: &client.ip_text,
        subnet: &client.subnet,
        key: &key,
        recognised: false,
        max_delay_ms: Some(60_000),
    };
    let pending = password_step(state, &attempt, operator.as_ref().map(|(_, h)| h.as_str()), password, now).await?;
    let (Some((operator_id, _)), Some(pending)) = (operator, pending) else {
        return Err(IdentityError::InvalidCredentials);
    };
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        pending.succeeded(&mut tx).await?;
        let c = NewChallenge {
            purpose: Purpose::OperatorLogin,
            user_id: None,
            operator_id: Some(&operator_id),
            merchant_user_id: None,
            session_id: None,
            device_id: Some("console"),
            subject_id: None,
            methods: &["totp"],
            client,
        };
        let v = challenge::create(&mut tx, &c, now).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(v)
    })
    .await
    .map_err(IdentityError::from)
}

/// A passkey login begun: pass `options` to `navigator.credentials.get`, then verify the
/// challenge with `{method: "passkey", credential}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PasskeyLoginStarted {
    pub challenge_id: crate::ids::ChallengeId,
    /// The standard `PublicKeyCredentialRequestOptions`, in its JSON form (base64url binaries),
    /// with no `allowCredentials`: the browser offers the passkeys it holds for this site.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// Who a passkey login is for: a shopper (on `device_id`), an operator (at the console) or a
/// merchant user (at the dashboard).
pub enum PasskeyLogin<'a> {
    Shopper { device_id: &'a str },
    Operator,
    Merchant,
}

/// `POST /v1/login/passkey {device_id}`, `POST /v1/admin/login/passkey` and
/// `POST /v1/merchant/login/passkey`: a login challenge
/// that names no account and takes only a passkey (a discoverable credential: the passkey tells
/// whose it is). The logins switch and the address and subnet throttles apply as to a password.
pub async fn passkey_login(
    state: &AppState,
    who: PasskeyLogin<'_>,
    client: &ClientInfo,
) -> Result<PasskeyLoginStarted, IdentityError> {
    let rp = super::passkey::relying_party(state)?;
    let now = state.clock.now_ms();
    let (purpose, device_id) = match who {
        PasskeyLogin::Shopper { device_id } => {
            check_device_id(device_id)?;
            (Purpose::Login, device_id)
        }
        PasskeyLogin::Operator => (Purpose::OperatorLogin, "console"),
        PasskeyLogin::Merchant => (Purpose::MerchantLogin, "merchant"),
    };
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        if purpose == Purpose::Login {
            let subject = crate::risk::switches::Subject { country: client.country.as_deref(), ..Default::default() };
            crate::risk::switches::check(&mut tx, crate::ids::SwitchName::Logins, subject).await?;
        }
        // No account is named yet: the address and subnet limits (operators' and merchant users'
        // own for them, as their password logins have; the key is this address's, so that no one
        // else's attempts lock it).
        let limits = throttle::Limits::from_config(&state.config);
        let verdict = if purpose == Purpose::Login {
            throttle::check_network(&mut tx, limits, &client.ip_text, &client.subnet, now).await?
        } else {
            let kind = if purpose == Purpose::MerchantLogin { "merchant" } else { "operator" };
            let key = format!("{kind}-login:passkey:{}", client.ip_text);
            let attempt = throttle::Attempt {
                ip: &client.ip_text,
                subnet: &client.subnet,
                key: &key,
                recognised: false,
                max_delay_ms: Some(60_000),
            };
            throttle::check(&mut tx, limits, &attempt, now).await?
        };
        if let crate::risk::Verdict::Throttled { retry_after_ms } = verdict {
            // The refused address is recorded for the alerts.
            tx.commit().await?;
            return Err(throttle::too_many(retry_after_ms).into());
        }
        let c = NewChallenge {
            purpose,
            user_id: None,
            operator_id: None,
            merchant_user_id: None,
            session_id: None,
            device_id: Some(device_id),
            subject_id: None,
            methods: &["passkey"],
            client,
        };
        let created = challenge::create(&mut tx, &c, now).await?;
        let webauthn_challenge = challenge::set_passkey_challenge(&mut tx, &created.challenge_id).await?;
        tx.commit().await?;
        let options = super::webauthn::request_options(&rp, &webauthn_challenge, &[]);
        Ok::<_, IdentityError>(PasskeyLoginStarted { challenge_id: created.challenge_id, options })
    })
    .await
}
