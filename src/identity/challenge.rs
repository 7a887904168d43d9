//! Challenges: every second step (login, step-up, operator login).
//!
//! A challenge lists the methods its owner has (`sms`, `totp`, `recovery_code`); creating one
//! sends nothing. `send` delivers a fresh SMS code (3 per challenge, 20 per number and 50 per
//! address an hour; a new code never resets the failure count). `verify` accepts a code at most
//! once: wrong codes 1 to 5 answer `422 code_invalid` with `attempts_left` 4 to 0, and after the
//! fifth, or 5 minutes after creation, every verify gets `410 challenge_expired`, even with the
//! right code. Wrong codes also count against the account's throttle and the alert counters.

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

use super::session::{self, Subject};
use super::{CODE_TTL_MS, MAX_CODE_FAILURES, new_code, new_id, secret_hash, secret_matches, totp};
use crate::http::error::ApiError;
use crate::notify::Channel;
use crate::ports::BoxFuture;
use crate::risk::client::ClientInfo;
use crate::risk::{rules, throttle};
use crate::state::AppState;
use crate::store::{self, Conn, clock};

pub const SMS_PER_CHALLENGE: i64 = 3;

/// What a challenge is for, as the `challenges.purpose` column holds it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Login,
    StepUp,
    OperatorLogin,
    /// A card issuer's 3-D Secure style challenge.
    Card,
}

impl Purpose {
    pub fn parse(text: &str) -> Option<Purpose> {
        [Purpose::Login, Purpose::StepUp, Purpose::OperatorLogin, Purpose::Card]
            .into_iter()
            .find(|p| p.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "login",
            Purpose::StepUp => "step_up",
            Purpose::OperatorLogin => "operator_login",
            Purpose::Card => "card",
        }
    }
}

/// The methods a user can answer with: SMS always (the phone was verified at sign-up), TOTP when
/// confirmed, recovery codes while any is unused.
pub async fn user_methods(conn: &mut Conn, user_id: &str) -> Result<Vec<&'static str>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT totp_secret, (SELECT COUNT(*) FROM recovery_codes r WHERE r.user_id = u.id AND r.used_at IS NULL) AS codes \
         FROM users u WHERE id = $1",
    )
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    let mut methods = vec!["sms"];
    if row.try_get::<Option<String>, _>("totp_secret")?.is_some() {
        methods.push("totp");
    }
    if row.try_get::<i64, _>("codes")? > 0 {
        methods.push("recovery_code");
    }
    Ok(methods)
}

pub struct NewChallenge<'a> {
    pub purpose: Purpose,
    pub user_id: Option<&'a str>,
    pub operator_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    /// What the challenge unlocks (the card a card challenge activates).
    pub subject_id: Option<&'a str>,
    pub methods: &'a [&'static str],
    pub client: &'a ClientInfo,
}

/// Creates a challenge in the caller's transaction; answers `{challenge_id, methods}`.
pub async fn create(conn: &mut Conn, c: &NewChallenge<'_>, now: i64) -> Result<Value, sqlx::Error> {
    let id = new_id("chl");
    sqlx::query(
        "INSERT INTO challenges (id, purpose, user_id, operator_id, session_id, device_id, methods, state, ip, country, \
         created_at, expires_at, subject_id) VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9, $10, $11, $12)",
    )
    .bind(&id)
    .bind(c.purpose.as_str())
    .bind(c.user_id)
    .bind(c.operator_id)
    .bind(c.session_id)
    .bind(c.device_id)
    .bind(c.methods.join(","))
    .bind(&c.client.ip_text)
    .bind(&c.client.country)
    .bind(now)
    .bind(now + CODE_TTL_MS)
    .bind(c.subject_id)
    .execute(&mut *conn)
    .await?;
    Ok(json!({"challenge_id": id, "methods": c.methods}))
}

struct Row_ {
    id: String,
    purpose: Purpose,
    user_id: Option<String>,
    operator_id: Option<String>,
    session_id: Option<String>,
    device_id: Option<String>,
    subject_id: Option<String>,
    methods: String,
    sms_code_hash: Option<String>,
    sms_sends: i64,
    failures: i64,
    state: String,
    expires_at: i64,
}

async fn load(conn: &mut Conn, id: &str) -> Result<Option<Row_>, sqlx::Error> {
    if id.len() > 64 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT id, purpose, user_id, operator_id, session_id, device_id, subject_id, methods, sms_code_hash, sms_sends, \
         failures, state, expires_at FROM challenges WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(Row_ {
            id: r.try_get("id")?,
            purpose: Purpose::parse(&r.try_get::<String, _>("purpose")?)
                .ok_or_else(|| sqlx::Error::Decode("unknown challenge purpose".into()))?,
            user_id: r.try_get("user_id")?,
            operator_id: r.try_get("operator_id")?,
            session_id: r.try_get("session_id")?,
            device_id: r.try_get("device_id")?,
            subject_id: r.try_get("subject_id")?,
            methods: r.try_get("methods")?,
            sms_code_hash: r.try_get("sms_code_hash")?,
            sms_sends: r.try_get("sms_sends")?,
            failures: r.try_get("failures")?,
            state: r.try_get("state")?,
            expires_at: r.try_get("expires_at")?,
        })
    })
    .transpose()
}

fn not_found() -> ApiError {
    ApiError::not_found("there is no such challenge")
}

pub fn expired() -> ApiError {
    super::IdentityError::ChallengeExpired.into()
}

/// `POST /v1/challenges/{id}/send {"method": "sms"}`.
pub async fn send(state: &AppState, id: &str, method: &str, client: &ClientInfo) -> Result<(), ApiError> {
    if method != "sms" {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_method",
            "only the sms method sends a code; totp and recovery codes are read from your own device or paper",
        ));
    }
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("challenge", id).await?;
        let c = load(&mut tx, id).await?.ok_or_else(not_found)?;
        if c.state != "open" || c.expires_at <= now || c.failures >= MAX_CODE_FAILURES {
            return Err(expired());
        }
        if !c.methods.split(',').any(|m| m == "sms") {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_method",
                "this challenge has no sms method",
            ));
        }
        let phone: String = match (&c.user_id, &c.operator_id) {
            (Some(user), _) => {
                sqlx::query_scalar("SELECT phone FROM users WHERE id = $1").bind(user).fetch_one(&mut *tx).await?
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_method",
                    "this challenge has no sms method",
                ));
            }
        };
        if c.sms_sends >= SMS_PER_CHALLENGE {
            return Err(throttle::too_many(c.expires_at - now).into());
        }
        if let crate::risk::Verdict::Throttled { retry_after_ms } = crate::risk::throttle::sms_budget(
            &mut tx,
            crate::risk::throttle::SmsCause::SecondFactor,
            &phone,
            client,
            now,
        )
        .await?
        {
            return Err(throttle::too_many(retry_after_ms).into());
        }
        let code = new_code();
        // A new code replaces the old one; the failure count stays.
        sqlx::query("UPDATE challenges SET sms_code_hash = $1, sms_sends = sms_sends + 1 WHERE id = $2")
            .bind(secret_hash(&c.id, &code))
            .bind(&c.id)
            .execute(&mut *tx)
            .await?;
        let purpose = match c.purpose {
            Purpose::Login => "signing in",
            _ => "confirming it is you",
        };
        super::send_code(&mut tx, Channel::Sms, &phone, "challenge_code", purpose, &code, now).await?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

/// What challenge `id` is for; `None` when there is no such challenge.
pub async fn purpose_of(db: &crate::store::Db, id: &str) -> Result<Option<Purpose>, sqlx::Error> {
    let purpose: Option<String> =
        sqlx::query_scalar("SELECT purpose FROM challenges WHERE id = $1").bind(id).fetch_optional(db.pool()).await?;
    Ok(purpose.as_deref().and_then(Purpose::parse))
}

/// `POST /v1/challenges/{id}/verify {"method", "code"}`: answers with what the challenge was for.
pub async fn verify(
    state: &AppState,
    id: &str,
    method: &str,
    code: &str,
    client: &ClientInfo,
    cards: &dyn CardChallenges,
) -> Result<Value, ApiError> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        // One verify of a challenge at a time: the failure count and the state are read, checked
        // and written under this lock, so parallel guesses cannot exceed 5 or revive a used code.
        tx.lock("challenge", id).await?;
        let c = load(&mut tx, id).await?.ok_or_else(not_found)?;
        if c.state != "open" || c.expires_at <= now || c.failures >= MAX_CODE_FAILURES {
            return Ok::<_, ApiError>(Err(expired()));
        }
        if !c.methods.split(',').any(|m| m == method) {
            return Ok::<_, ApiError>(Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_method",
                format!("this challenge accepts {}", c.methods.replace(',', ", ")),
            )));
        }
        let (account_key, max_delay_ms) = match (&c.user_id, &c.operator_id) {
            (Some(u), _) => (format!("account:{u}"), None),
            (_, Some(o)) => (format!("operator:{o}"), Some(60_000)),
            _ => return Err(ApiError::internal(anyhow::anyhow!("challenge {} has no owner", c.id))),
        };
        // The account's throttle gates the second step as it gates the first.
        if let Some(until) = throttle::locked(&mut tx, &account_key, now).await? {
            return Ok::<_, ApiError>(Err(throttle::too_many(until - now).into()));
        }
        let right = match method {
            "sms" => secret_matches(&c.id, code, c.sms_code_hash.as_deref()),
            "totp" => check_totp(&mut tx, state, &c, code).await?,
            "recovery_code" => match &c.user_id {
                Some(user) => use_recovery_code(&mut tx, user, code, now).await?,
                None => false,
            },
            _ => false,
        };
        if !right {
            let wrong =
                super::WrongCode { holder: super::CodeHolder::Challenge, id: &c.id, key: &account_key, max_delay_ms };
            let attempts_left = super::wrong_code(tx, state, &wrong, client, now).await?;
            return Ok::<_, ApiError>(Err(super::IdentityError::CodeInvalid { attempts_left }.into()));
        }
        // Used once: the state moves on and the code is forgotten.
        let moved = sqlx::query(
            "UPDATE challenges SET state = 'verified', sms_code_hash = NULL WHERE id = $1 AND state = 'open'",
        )
        .bind(&c.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            return Ok::<_, ApiError>(Err(expired()));
        }
        let answer = match complete(&mut tx, state, &c, client, cards, now).await? {
            Ok(answer) => answer,
            Err(declined) => {
                // A risk decline after a right second factor: its notice, audit entry and count stand.
                tx.commit().await?;
                return Ok(Err(declined));
            }
        };
        throttle::record_success(&mut tx, &account_key).await?;
        tx.commit().await?;
        Ok(Ok(answer))
    })
    .await?
}

async fn check_totp(conn: &mut Conn, state: &AppState, c: &Row_, code: &str) -> Result<bool, ApiError> {
    let (table, owner) = match (&c.user_id, &c.operator_id) {
        (Some(u), _) => ("users", u),
        (_, Some(o)) => ("operators", o),
        _ => return Ok(false),
    };
    let sql = sqlx::AssertSqlSafe(format!("SELECT totp_secret, totp_last_step FROM {table} WHERE id = $1"));
    let row = sqlx::query(sql).bind(owner).fetch_one(&mut *conn).await?;
    let Some(sealed) = row.try_get::<Option<String>, _>("totp_secret")? else { return Ok(false) };
    let last: i64 = row.try_get("totp_last_step")?;
    let key =
        state.config.keys.totp_encryption.as_ref().ok_or_else(|| ApiError::internal(anyhow::anyhow!("no TOTP key")))?;
    let seed =
        totp::open(key, &sealed).ok_or_else(|| ApiError::internal(anyhow::anyhow!("a TOTP seed cannot be opened")))?;
    match totp::verify(&seed, code, totp::current_step(), last.max(0) as u64) {
        Some(step) => {
            // Recorded in the same transaction: the same code is never accepted twice.
            let sql = sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1"
            ));
            let n = sqlx::query(sql).bind(step as i64).bind(owner).execute(&mut *conn).await?.rows_affected();
            Ok(n == 1)
        }
        None => Ok(false),
    }
}

async fn use_recovery_code(conn: &mut Conn, user_id: &str, code: &str, now: i64) -> Result<bool, sqlx::Error> {
    let normalised: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase();
    let n =
        sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL")
            .bind(now)
            .bind(user_id)
            .bind(secret_hash(user_id, &normalised))
            .execute(&mut *conn)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// A card issuer's challenge completes in payments, which owns cards: `verify` calls this inside
/// its own transaction, so the card becomes active exactly when the challenge is used up.
pub trait CardChallenges: Send + Sync {
    fn activate<'a>(
        &'a self,
        conn: &'a mut Conn,
        user: &'a super::User,
        card_id: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Value, ApiError>>;
}

/// What a verified challenge gives: the answer, or a risk decline that must commit.
async fn complete(
    conn: &mut Conn,
    state: &AppState,
    c: &Row_,
    client: &ClientInfo,
    cards: &dyn CardChallenges,
    now: i64,
) -> Result<Result<Value, ApiError>, ApiError> {
    let missing =
        |what: &str| ApiError::internal(anyhow::anyhow!("{} challenge {} without {what}", c.purpose.as_str(), c.id));
    match c.purpose {
        Purpose::Login => {
            let user_id = c.user_id.as_deref().ok_or_else(|| missing("user"))?;
            complete_login(conn, state, user_id, c.device_id.as_deref().unwrap_or("unknown"), client, now).await
        }
        Purpose::StepUp => {
            let session_id = c.session_id.as_deref().ok_or_else(|| missing("session"))?;
            session::mark_step_up(conn, session_id, now).await?;
            Ok(Ok(json!({"step_up": true, "expires_at": clock::rfc3339_ms(now + super::STEP_UP_TTL_MS)})))
        }
        Purpose::OperatorLogin => {
            let operator_id = c.operator_id.as_deref().ok_or_else(|| missing("operator"))?;
            let device_id = c.device_id.as_deref().unwrap_or("console");
            Ok(Ok(complete_operator_login(conn, state, operator_id, device_id, client, now).await?))
        }
        Purpose::Card => {
            let (Some(user_id), Some(card_id)) = (c.user_id.as_deref(), c.subject_id.as_deref()) else {
                return Err(missing("user or card"));
            };
            let user = super::user_by_id(conn, user_id).await?.ok_or_else(not_found)?;
            Ok(Ok(cards.activate(conn, &user, card_id, now).await?))
        }
    }
}

/// A shopper's login after both factors: the login risk rules decide here (a hold or a decline
/// refuses the session, tells the user and counts for the `risk_declines` detector); otherwise a
/// session and a device token.
async fn complete_login(
    conn: &mut Conn,
    state: &AppState,
    user_id: &str,
    device_id: &str,
    client: &ClientInfo,
    now: i64,
) -> Result<Result<Value, ApiError>, ApiError> {
    let user = super::user_by_id(conn, user_id).await?.ok_or_else(not_found)?;
    let signals = rules::signals(conn, "login", user_id, device_id, 0, None, client.country.as_deref(), now).await?;
    let (outcome, rule) = rules::evaluate(conn, "login", &signals).await?;
    if matches!(outcome, rules::Outcome::Hold | rules::Outcome::Decline) {
        crate::risk::alerts::record_risk_decline(conn, user_id, now).await?;
        let detail = json!({"rule": rule, "country": client.country, "device_id": device_id,
            "impossible_travel": signals.impossible_travel});
        crate::audit::append(conn, &format!("user:{user_id}"), "login.risk_declined", user_id, &detail, now).await?;
        super::notify_all(
            conn,
            &user,
            "login_blocked",
            "A sign-in to your Omamori account was blocked for your protection.",
            now,
        )
        .await?;
        return Ok(Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "risk_declined",
            "this sign-in was declined for your protection; try again from your usual phone",
        )));
    }
    Ok(Ok(open_user_session(conn, state, &user, device_id, client, now).await?))
}

/// Opens the session and issues the device token of a two-step login; a new device is notified.
async fn open_user_session(
    conn: &mut Conn,
    state: &AppState,
    user: &super::User,
    device_id: &str,
    client: &ClientInfo,
    now: i64,
) -> Result<Value, ApiError> {
    let new_device = !session::device_known(conn, &user.id, device_id).await?;
    let opened = session::open(
        conn,
        &session::NewSession {
            subject: Subject::User(&user.id),
            device_id,
            ip: &client.ip_text,
            country: client.country.as_deref(),
            step_up: true,
        },
        session::Timeouts::from_config(&state.config),
        now,
    )
    .await?;
    let device_token = session::issue_device_token(conn, &user.id, device_id, now).await?;
    if new_device {
        let text = "Your Omamori account was signed in to from a new device.";
        super::notify_all(conn, user, "login_new_device", text, now).await?;
    }
    Ok(
        json!({"session_token": opened.token, "expires_at": clock::rfc3339_ms(opened.expires_at), "device_token": device_token}),
    )
}

/// An operator's login after the TOTP code: a session carrying the operator's role, audited.
async fn complete_operator_login(
    conn: &mut Conn,
    state: &AppState,
    operator_id: &str,
    device_id: &str,
    client: &ClientInfo,
    now: i64,
) -> Result<Value, ApiError> {
    let role = super::operators::role_of(conn, operator_id).await?;
    let opened = session::open(
        conn,
        &session::NewSession {
            subject: Subject::Operator { id: operator_id, role: role.as_str() },
            device_id,
            ip: &client.ip_text,
            country: client.country.as_deref(),
            step_up: true,
        },
        session::Timeouts::from_config(&state.config),
        now,
    )
    .await?;
    let detail = json!({"ip": client.ip_text, "session_id": opened.id});
    crate::audit::append(conn, &format!("operator:{operator_id}"), "operator.login", operator_id, &detail, now).await?;
    Ok(
        json!({"session_token": opened.token, "expires_at": clock::rfc3339_ms(opened.expires_at), "role": role.as_str()}),
    )
}
