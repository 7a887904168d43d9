//! Challenges: every second step (login, step-up, operator login, a merchant user's passkey login).
//!
//! A challenge lists the methods its owner has (`sms`, `totp`, `recovery_code`); creating one
//! sends nothing. `send` delivers a fresh SMS code (3 per challenge, 20 per number and 50 per
//! address an hour; a new code never resets the failure count). `verify` accepts a code at most
//! once: wrong codes 1 to 5 answer `422 code_invalid` with `attempts_left` 4 to 0, and after the
//! fifth, or 5 minutes after creation, every verify gets `410 challenge_expired`, even with the
//! right code. Wrong codes also count against the account's throttle and the alert counters.

use crate::ids::CardId;
use crate::ids::ChallengeId;
use crate::ids::MerchantUserId;
use crate::ids::OperatorId;
use crate::ids::SessionId;
use crate::ids::UserId;
use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use super::session::{self, NewSession, Subject};
use super::{
    CODE_TTL_MS, CodeHolder, IdentityError, MAX_CODE_FAILURES, WrongCode, new_code, secret_hash, secret_matches, totp,
};
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
    /// A merchant user's passkey login to the dashboard.
    MerchantLogin,
}

impl Purpose {
    pub fn parse(text: &str) -> Option<Purpose> {
        [Purpose::Login, Purpose::StepUp, Purpose::OperatorLogin, Purpose::Card, Purpose::MerchantLogin]
            .into_iter()
            .find(|p| p.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Login => "login",
            Purpose::StepUp => "step_up",
            Purpose::OperatorLogin => "operator_login",
            Purpose::Card => "card",
            Purpose::MerchantLogin => "merchant_login",
        }
    }
}

/// The methods a user can answer with: SMS always (the phone was verified at sign-up), TOTP when
/// confirmed, recovery codes while any is unused.
pub async fn user_methods(conn: &mut Conn, user_id: &UserId) -> Result<Vec<&'static str>, sqlx::Error> {
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
    if super::passkey::has_any(conn, super::passkey::Owner::User(user_id)).await? {
        methods.push("passkey");
    }
    Ok(methods)
}

pub struct NewChallenge<'a> {
    pub purpose: Purpose,
    pub user_id: Option<&'a UserId>,
    pub operator_id: Option<&'a OperatorId>,
    pub merchant_user_id: Option<&'a MerchantUserId>,
    pub session_id: Option<&'a SessionId>,
    pub device_id: Option<&'a str>,
    /// What the challenge unlocks (the card a card challenge activates).
    pub subject_id: Option<&'a str>,
    pub methods: &'a [&'static str],
    pub client: &'a ClientInfo,
}

/// A challenge just created, as the client sees it: answer it with one of `methods`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub challenge_id: ChallengeId,
    /// `sms`, `totp`, `recovery_code`.
    #[schema(value_type = Vec<String>)]
    pub methods: Vec<&'static str>,
}

/// Creates a challenge in the caller's transaction.
pub async fn create(conn: &mut Conn, c: &NewChallenge<'_>, now: i64) -> Result<Created, sqlx::Error> {
    let id = ChallengeId::generate();
    sqlx::query(
        "INSERT INTO challenges (id, purpose, user_id, operator_id, merchant_user_id, session_id, device_id, methods, \
         state, ip, country, created_at, expires_at, subject_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, $10, $11, $12, $13)",
    )
    .bind(&id)
    .bind(c.purpose.as_str())
    .bind(c.user_id)
    .bind(c.operator_id)
    .bind(c.merchant_user_id)
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
    Ok(Created { challenge_id: id, methods: c.methods.to_vec() })
}

struct Row_ {
    id: ChallengeId,
    purpose: Purpose,
    user_id: Option<UserId>,
    operator_id: Option<OperatorId>,
    merchant_user_id: Option<MerchantUserId>,
    session_id: Option<SessionId>,
    device_id: Option<String>,
    subject_id: Option<String>,
    methods: String,
    sms_code_hash: Option<String>,
    passkey_challenge: Option<String>,
    sms_sends: i64,
    failures: i64,
    state: String,
    expires_at: i64,
    /// A passkey login's challenge named no one; its owner was read from the passkey presented
    /// (in memory only), so the answer must carry its `userHandle` (WebAuthn's discoverable flow).
    named_by_passkey: bool,
}

async fn load(conn: &mut Conn, id: &ChallengeId) -> Result<Option<Row_>, sqlx::Error> {
    if id.as_str().len() > 64 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT id, purpose, user_id, operator_id, merchant_user_id, session_id, device_id, subject_id, methods, \
         sms_code_hash, passkey_challenge, sms_sends, failures, state, expires_at FROM challenges WHERE id = $1",
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
            merchant_user_id: r.try_get("merchant_user_id")?,
            session_id: r.try_get("session_id")?,
            device_id: r.try_get("device_id")?,
            subject_id: r.try_get("subject_id")?,
            methods: r.try_get("methods")?,
            sms_code_hash: r.try_get("sms_code_hash")?,
            passkey_challenge: r.try_get("passkey_challenge")?,
            sms_sends: r.try_get("sms_sends")?,
            failures: r.try_get("failures")?,
            state: r.try_get("state")?,
            expires_at: r.try_get("expires_at")?,
            named_by_passkey: false,
        })
    })
    .transpose()
}

fn is_open(c: &Row_, now: i64) -> bool {
    c.state == "open" && c.expires_at > now && c.failures < MAX_CODE_FAILURES
}

/// What a send gives: an SMS on its way, or the options of a passkey ceremony.
pub enum Sent {
    Sms,
    Passkey(serde_json::Value),
}

/// `POST /v1/challenges/{id}/send {"method": "sms" | "passkey"}`; `caller` is the session the
/// request carries, if any.
pub async fn send(
    state: &AppState,
    id: &ChallengeId,
    method: &str,
    caller: Option<&SessionId>,
    client: &ClientInfo,
) -> Result<Sent, IdentityError> {
    match method {
        "sms" => send_sms(state, id, client).await.map(|()| Sent::Sms),
        "passkey" => send_passkey(state, id, caller).await.map(Sent::Passkey),
        _ => Err(IdentityError::OnlySmsIsSent),
    }
}

/// The request options of the challenge's passkey ceremony, naming the owner's passkeys (none for
/// a passkey login: the browser offers its own). Its WebAuthn challenge is made once, at the first
/// send (a passkey login's when it began), and given again by every later send: a send never
/// replaces a ceremony in progress. A challenge made for a session (a step-up) answers only that
/// session; to anyone else it does not exist.
async fn send_passkey(
    state: &AppState,
    id: &ChallengeId,
    caller: Option<&SessionId>,
) -> Result<serde_json::Value, IdentityError> {
    let rp = super::passkey::relying_party(state)?;
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("challenge", id).await?;
        let c = load(&mut tx, id).await?.ok_or(IdentityError::ChallengeNotFound)?;
        if c.session_id.as_ref().is_some_and(|own| caller != Some(own)) {
            return Err(IdentityError::ChallengeNotFound);
        }
        if !is_open(&c, now) {
            return Err(IdentityError::ChallengeExpired);
        }
        if !c.methods.split(',').any(|m| m == "passkey") {
            return Err(IdentityError::MethodNotAccepted { accepted: c.methods.replace(',', ", ") });
        }
        let allow = match passkey_owner(&c) {
            Some(owner) => super::passkey::usable_credential_ids(&mut tx, owner).await?,
            None => Vec::new(),
        };
        let challenge = match c.passkey_challenge {
            Some(made) => made,
            None => set_passkey_challenge(&mut tx, &c.id).await?,
        };
        tx.commit().await?;
        Ok(super::webauthn::request_options(&rp, &challenge, &allow))
    })
    .await
}

/// Whose passkeys answer the challenge: its owner's (none yet for a passkey login).
fn passkey_owner(c: &Row_) -> Option<super::passkey::Owner<'_>> {
    use super::passkey::Owner;
    match (&c.user_id, &c.operator_id, &c.merchant_user_id) {
        (Some(u), _, _) => Some(Owner::User(u)),
        (_, Some(o), _) => Some(Owner::Operator(o)),
        (_, _, Some(m)) => Some(Owner::MerchantUser(m)),
        _ => None,
    }
}

/// Gives the challenge a fresh WebAuthn challenge, in the caller's transaction.
pub async fn set_passkey_challenge(conn: &mut Conn, id: &ChallengeId) -> Result<String, sqlx::Error> {
    let challenge = super::webauthn::new_challenge();
    sqlx::query("UPDATE challenges SET passkey_challenge = $1 WHERE id = $2")
        .bind(&challenge)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(challenge)
}

async fn send_sms(state: &AppState, id: &ChallengeId, client: &ClientInfo) -> Result<(), IdentityError> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("challenge", id).await?;
        let c = load(&mut tx, id).await?.ok_or(IdentityError::ChallengeNotFound)?;
        if !is_open(&c, now) {
            return Err(IdentityError::ChallengeExpired);
        }
        if !c.methods.split(',').any(|m| m == "sms") {
            return Err(IdentityError::NoSmsMethod);
        }
        let Some(user) = &c.user_id else { return Err(IdentityError::NoSmsMethod) };
        let phone: String =
            sqlx::query_scalar("SELECT phone FROM users WHERE id = $1").bind(user).fetch_one(&mut *tx).await?;
        if c.sms_sends >= SMS_PER_CHALLENGE {
            return Err(throttle::too_many(c.expires_at - now).into());
        }
        throttle::sms_budget(&mut tx, throttle::SmsCause::SecondFactor, &phone, client, now).await?.into_result()?;
        let code = new_code();
        // A new code replaces the old one; the failure count stays.
        sqlx::query("UPDATE challenges SET sms_code_hash = $1, sms_sends = sms_sends + 1 WHERE id = $2")
            .bind(secret_hash(c.id.as_str(), &code))
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
pub async fn purpose_of(db: &crate::store::Db, id: &ChallengeId) -> Result<Option<Purpose>, sqlx::Error> {
    let purpose: Option<String> =
        sqlx::query_scalar("SELECT purpose FROM challenges WHERE id = $1").bind(id).fetch_optional(db.pool()).await?;
    Ok(purpose.as_deref().and_then(Purpose::parse))
}

/// A shopper's session after a two-step login, with the device token that makes the device
/// recognised.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TwoStepSession {
    pub session_token: String,
    pub expires_at: String,
    pub device_token: String,
}

/// A step-up grant: the session may do sensitive things until `expires_at`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepUpGranted {
    /// Always true.
    pub step_up: bool,
    pub expires_at: String,
}

/// A merchant user's dashboard session after a passkey login (as `POST /v1/merchant/login` answers).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MerchantSessionOpened {
    pub session_token: String,
    pub expires_at: String,
}

/// An operator's session, carrying the operator's role.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OperatorSessionOpened {
    pub session_token: String,
    pub expires_at: String,
    /// `viewer`, `operator` or `admin`.
    pub role: &'static str,
}

/// What a verified challenge gives, by its purpose (`Card` is what the card hook answers).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Verified<Card> {
    Login(TwoStepSession),
    StepUp(StepUpGranted),
    OperatorLogin(OperatorSessionOpened),
    MerchantLogin(MerchantSessionOpened),
    Card(Card),
}

/// What a verify answers with: a code by its method, or a passkey's assertion.
pub enum Proof<'a> {
    Code {
        method: &'a str,
        code: &'a str,
    },
    Passkey(&'a serde_json::Value),
    /// `three_d_secure`: the card processor's word that the issuer's 3-D Secure passed (payments
    /// asks the processor before the verify; a card challenge only).
    Issuer {
        confirmed: bool,
    },
}

impl Proof<'_> {
    fn method(&self) -> &str {
        match self {
            Proof::Code { method, .. } => method,
            Proof::Passkey(_) => "passkey",
            Proof::Issuer { .. } => "three_d_secure",
        }
    }
}

/// `POST /v1/challenges/{id}/verify {"method", "code" | "credential"}`: answers with what the
/// challenge was for.
pub async fn verify<C: CardChallenges>(
    state: &AppState,
    id: &ChallengeId,
    proof: &Proof<'_>,
    client: &ClientInfo,
    hooks: (&C, &dyn rules::FactSource),
) -> Result<Verified<C::Card>, IdentityError> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        // One verify of a challenge at a time: the failure count and the state are read, checked
        // and written under this lock, so parallel guesses cannot exceed 5 or revive a used code.
        tx.lock("challenge", id).await?;
        let mut c = load(&mut tx, id).await?.ok_or(IdentityError::ChallengeNotFound)?;
        if let Proof::Passkey(credential) = proof {
            find_passkey_owner(&mut tx, &mut c, credential).await?;
        }
        let owner = answerable(&mut tx, &c, proof.method(), now).await?;
        // A step-up's answer comes with its session (already through the login's limits).
        if let Proof::Passkey(_) = proof
            && c.session_id.is_none()
            && let Some(retry_after_ms) = passkey_throttled(&mut tx, state, &owner, client, now).await?
        {
            // The refused address is recorded for the alerts before the refusal is answered.
            tx.commit().await?;
            return Err(throttle::too_many(retry_after_ms).into());
        }
        if !code_is_right(&mut tx, state, &c, proof, now).await? {
            // A passkey login's wrong answer proves nothing about the account its credential id
            // names (anyone may name one, and no one can guess a signature): it counts against the
            // address and subnet and on this challenge alone (which dies after five), never on the
            // account, so that no one can lock another's account out with forged answers.
            // (The key keeps its kind's prefix: an operator's failures count in operators' scopes.)
            let own = format!("{}:{}", unnamed_key(c.purpose).unwrap_or("passkey-login"), c.id.as_str());
            let key = if c.named_by_passkey { own.as_str() } else { owner.key.as_str() };
            let wrong =
                WrongCode { holder: CodeHolder::Challenge, id: c.id.as_str(), key, max_delay_ms: owner.max_delay_ms };
            let attempts_left = super::wrong_code(tx, state, &wrong, client, now).await?;
            return Err(IdentityError::CodeInvalid { attempts_left });
        }
        use_up(&mut tx, &c.id).await?;
        match complete(&mut tx, state, (&c, proof), client, hooks, now).await? {
            Completed::Granted(answer) => {
                throttle::record_success(&mut tx, &owner.key).await?;
                tx.commit().await?;
                Ok(answer)
            }
            Completed::LoginDeclined => {
                // A risk decline after a right second factor: its notice, audit entry and count stand.
                tx.commit().await?;
                Err(IdentityError::LoginDeclined)
            }
        }
    })
    .await
}

/// The account a challenge's codes count against: its throttle key and the longest lock it may get.
struct Owner {
    key: String,
    max_delay_ms: Option<i64>,
}

/// Refuses a challenge that cannot be answered now with `method`: expired or used up, without that
/// method, or whose account's throttle is engaged (it gates the second step as it gates the first).
async fn answerable(conn: &mut Conn, c: &Row_, method: &str, now: i64) -> Result<Owner, IdentityError> {
    if !is_open(c, now) {
        return Err(IdentityError::ChallengeExpired);
    }
    if !c.methods.split(',').any(|m| m == method) {
        return Err(IdentityError::MethodNotAccepted { accepted: c.methods.replace(',', ", ") });
    }
    let owner = match (&c.user_id, &c.operator_id, &c.merchant_user_id, c.purpose) {
        (Some(u), _, _, _) => Owner { key: format!("account:{u}"), max_delay_ms: None },
        (_, Some(o), _, _) => Owner { key: format!("operator:{o}"), max_delay_ms: Some(60_000) },
        // The key of the merchant user's password login: both ways in share one throttle.
        (_, _, Some(m), _) => Owner { key: format!("merchant:{m}"), max_delay_ms: Some(60_000) },
        // A passkey login answered with a passkey no one registered: its failures count under a
        // key of their own (and against the address, as any wrong code).
        (None, None, None, p) if unnamed_key(p).is_some() => {
            Owner { key: unnamed_key(p).unwrap_or_default().into(), max_delay_ms: Some(60_000) }
        }
        _ => return Err(anyhow::anyhow!("challenge {} has no owner", c.id).into()),
    };
    if let Some(until) = throttle::locked(conn, &owner.key, now).await? {
        return Err(throttle::too_many(until - now).into());
    }
    Ok(owner)
}

/// The throttle key of a passkey login's failures that name no account.
fn unnamed_key(purpose: Purpose) -> Option<&'static str> {
    match purpose {
        Purpose::Login => Some("passkey-login:unknown"),
        Purpose::OperatorLogin => Some("operator-login:passkey"),
        Purpose::MerchantLogin => Some("merchant-login:passkey"),
        _ => None,
    }
}

/// The password login's address and subnet limits, at a passkey's answer and before its signature
/// is checked: a flood of assertions from one address or network is refused as a flood of
/// passwords is, whoever's passkey it names. Answers how long to wait.
async fn passkey_throttled(
    tx: &mut store::Tx,
    state: &AppState,
    owner: &Owner,
    client: &ClientInfo,
    now: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let attempt = throttle::Attempt {
        ip: &client.ip_text,
        subnet: &client.subnet,
        key: &owner.key,
        recognised: false,
        max_delay_ms: owner.max_delay_ms,
    };
    let limits = throttle::Limits::from_config(&state.config);
    Ok(match throttle::check_network_locked(tx, limits, &attempt, now).await? {
        crate::risk::Verdict::Throttled { retry_after_ms } => Some(retry_after_ms),
        crate::risk::Verdict::Allowed => None,
    })
}

/// A passkey login's challenge names no one until its answer: the owner is the passkey's (a
/// shopper's for a shopper's login, an operator's for an operator's, a merchant user's for the
/// dashboard's), in the loaded row only. Another kind's passkey leaves it unnamed.
async fn find_passkey_owner(conn: &mut Conn, c: &mut Row_, credential: &serde_json::Value) -> Result<(), sqlx::Error> {
    if passkey_owner(c).is_some() {
        return Ok(());
    }
    let holder = super::passkey::owner_of(conn, credential).await?;
    match c.purpose {
        Purpose::Login => c.user_id = holder.user_id,
        Purpose::OperatorLogin => c.operator_id = holder.operator_id,
        Purpose::MerchantLogin => c.merchant_user_id = holder.merchant_user_id,
        _ => {}
    }
    c.named_by_passkey = passkey_owner(c).is_some();
    Ok(())
}

/// Whether the proof answers the challenge (a TOTP step, a recovery code or a passkey's counter
/// is used up by a right answer, in the caller's transaction).
async fn code_is_right(
    conn: &mut Conn,
    state: &AppState,
    c: &Row_,
    proof: &Proof<'_>,
    now: i64,
) -> Result<bool, IdentityError> {
    let (method, code) = match proof {
        Proof::Code { method, code } => (*method, *code),
        Proof::Issuer { confirmed } => return Ok(*confirmed && c.purpose == Purpose::Card),
        Proof::Passkey(credential) => {
            // A discoverable login's answer names its user; one without a user handle is refused.
            let handle = credential.get("response").and_then(|r| r.get("userHandle")).and_then(|h| h.as_str());
            if c.named_by_passkey && handle.is_none_or(str::is_empty) {
                return Ok(false);
            }
            let Some(owner) = passkey_owner(c) else { return Ok(false) };
            let challenge = c.passkey_challenge.as_deref();
            return super::passkey::assertion_is_right(conn, state, owner, challenge, credential, now).await;
        }
    };
    Ok(match method {
        "sms" => secret_matches(c.id.as_str(), code, c.sms_code_hash.as_deref()),
        "totp" => check_totp(conn, state, c, code).await?,
        "recovery_code" => match &c.user_id {
            Some(user) => use_recovery_code(conn, user, code, now).await?,
            None => false,
        },
        _ => false,
    })
}

/// Used once: the state moves on and the code is forgotten.
async fn use_up(conn: &mut Conn, id: &ChallengeId) -> Result<(), IdentityError> {
    let moved = sqlx::query(
        "UPDATE challenges SET state = 'verified', sms_code_hash = NULL, passkey_challenge = NULL \
         WHERE id = $1 AND state = 'open'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if moved != 1 {
        return Err(IdentityError::ChallengeExpired);
    }
    Ok(())
}

async fn check_totp(conn: &mut Conn, state: &AppState, c: &Row_, code: &str) -> Result<bool, IdentityError> {
    let owner = match (&c.user_id, &c.operator_id, &c.merchant_user_id) {
        (Some(u), _, _) => TotpOwner::User(u.as_str()),
        (_, Some(o), _) => TotpOwner::Operator(o.as_str()),
        (_, _, Some(m)) => TotpOwner::MerchantUser(m.as_str()),
        _ => return Ok(false),
    };
    totp_matches(conn, state, owner, code).await
}

/// Whose authenticator app a code is checked against.
#[derive(Clone, Copy)]
pub(super) enum TotpOwner<'a> {
    User(&'a str),
    Operator(&'a str),
    MerchantUser(&'a str),
}

/// Whether `code` is the owner's current authenticator code, not used before; a match is recorded
/// in the same transaction, so the same code is never accepted twice.
pub(super) async fn totp_matches(
    conn: &mut Conn,
    state: &AppState,
    owner: TotpOwner<'_>,
    code: &str,
) -> Result<bool, IdentityError> {
    let (table, owner) = match owner {
        TotpOwner::User(id) => ("users", id),
        TotpOwner::Operator(id) => ("operators", id),
        TotpOwner::MerchantUser(id) => ("merchant_users", id),
    };
    let sql = sqlx::AssertSqlSafe(format!("SELECT totp_secret, totp_last_step FROM {table} WHERE id = $1"));
    let Some(row) = sqlx::query(sql).bind(owner).fetch_optional(&mut *conn).await? else { return Ok(false) };
    let Some(sealed) = row.try_get::<Option<String>, _>("totp_secret")? else { return Ok(false) };
    let last: i64 = row.try_get("totp_last_step")?;
    let key = state.config.keys.totp_encryption.as_ref().ok_or_else(|| anyhow::anyhow!("no TOTP key"))?;
    let seed = totp::open(key, &sealed).ok_or_else(|| anyhow::anyhow!("a TOTP seed cannot be opened"))?;
    match totp::verify(&seed, code, totp::current_step(), last.max(0) as u64) {
        Some(step) => {
            let sql = sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1"
            ));
            let n = sqlx::query(sql).bind(step as i64).bind(owner).execute(&mut *conn).await?.rows_affected();
            Ok(n == 1)
        }
        None => Ok(false),
    }
}

async fn use_recovery_code(conn: &mut Conn, user_id: &UserId, code: &str, now: i64) -> Result<bool, sqlx::Error> {
    let normalised: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase();
    let n =
        sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL")
            .bind(now)
            .bind(user_id)
            .bind(secret_hash(user_id.as_str(), &normalised))
            .execute(&mut *conn)
            .await?
            .rows_affected();
    Ok(n == 1)
}

/// A card issuer's challenge completes in payments, which owns cards: `verify` calls this inside
/// its own transaction, so the card becomes active exactly when the challenge is used up.
pub trait CardChallenges: Send + Sync {
    /// The activated card, as the challenge's answer shows it.
    type Card: Serialize + Send;

    /// Activates the user's card; `None` when no such card of the user waits for a challenge.
    fn activate<'a>(
        &'a self,
        conn: &'a mut Conn,
        user: &'a super::User,
        card_id: &'a CardId,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Self::Card>, sqlx::Error>>;
}

/// What a verified challenge comes to: its answer, or a login the risk rules declined (whose
/// notice, audit entry and count must commit before the refusal).
#[must_use]
enum Completed<T> {
    Granted(T),
    LoginDeclined,
}

/// Gives what a verified challenge is for (and how it was answered), in the caller's transaction.
async fn complete<C: CardChallenges>(
    conn: &mut Conn,
    state: &AppState,
    (c, proof): (&Row_, &Proof<'_>),
    client: &ClientInfo,
    (cards, facts): (&C, &dyn rules::FactSource),
    now: i64,
) -> Result<Completed<Verified<C::Card>>, IdentityError> {
    let missing =
        |what: &str| IdentityError::from(anyhow::anyhow!("{} challenge {} without {what}", c.purpose.as_str(), c.id));
    let answer = match c.purpose {
        Purpose::Login => {
            let user_id = c.user_id.as_ref().ok_or_else(|| missing("user"))?;
            let device_id = c.device_id.as_deref().unwrap_or("unknown");
            return Ok(match complete_login(conn, state, (user_id, device_id), (client, facts), now).await? {
                Completed::Granted(opened) => Completed::Granted(Verified::Login(opened)),
                Completed::LoginDeclined => Completed::LoginDeclined,
            });
        }
        Purpose::StepUp => {
            let session_id = c.session_id.as_ref().ok_or_else(|| missing("session"))?;
            session::mark_step_up(conn, session_id, now).await?;
            let expires_at = clock::rfc3339_ms(now + super::STEP_UP_TTL_MS);
            Verified::StepUp(StepUpGranted { step_up: true, expires_at })
        }
        Purpose::OperatorLogin => {
            let operator_id = c.operator_id.as_ref().ok_or_else(|| missing("operator"))?;
            let device_id = c.device_id.as_deref().unwrap_or("console");
            // Its way in, as the audit names it: a passkey alone, or the password and then the code.
            let method = if matches!(proof, Proof::Passkey(_)) { "passkey" } else { "password" };
            let operator = (operator_id, device_id, method);
            Verified::OperatorLogin(complete_operator_login(conn, state, operator, client, now).await?)
        }
        Purpose::MerchantLogin => {
            let merchant_user_id = c.merchant_user_id.as_ref().ok_or_else(|| missing("merchant user"))?;
            let opened = open_merchant_session(conn, state, merchant_user_id, "passkey", client, now).await?;
            Verified::MerchantLogin(MerchantSessionOpened {
                session_token: opened.token,
                expires_at: clock::rfc3339_ms(opened.expires_at),
            })
        }
        Purpose::Card => {
            let (Some(user_id), Some(card_id)) = (c.user_id.as_ref(), c.subject_id.as_deref()) else {
                return Err(missing("user or card"));
            };
            let user = super::user_by_id(conn, user_id).await?.ok_or(IdentityError::ChallengeNotFound)?;
            let card_id = CardId::from_raw(card_id);
            Verified::Card(cards.activate(conn, &user, &card_id, now).await?.ok_or(IdentityError::CardNotWaiting)?)
        }
    };
    Ok(Completed::Granted(answer))
}

/// A shopper's login after both factors: the login risk rules decide here (a hold or a decline
/// refuses the session, tells the user and counts for the `risk_declines` detector); otherwise a
/// session and a device token.
async fn complete_login(
    conn: &mut Conn,
    state: &AppState,
    (user_id, device_id): (&UserId, &str),
    (client, facts): (&ClientInfo, &dyn rules::FactSource),
    now: i64,
) -> Result<Completed<TwoStepSession>, IdentityError> {
    let user = super::user_by_id(conn, user_id).await?.ok_or(IdentityError::ChallengeNotFound)?;
    // The user's own `logins` switch, again at the second step: a passkey login names its user only
    // now, and a switch engaged since the password step must hold too.
    let subject = crate::risk::switches::Subject {
        user_id: Some(user_id),
        country: client.country.as_deref(),
        ..Default::default()
    };
    crate::risk::switches::check(conn, crate::ids::SwitchName::Logins, subject).await?;
    let signals = rules::signals(
        conn,
        facts,
        &rules::Event {
            kind: rules::RuleEvent::Login,
            user_id,
            device_id,
            amount: 0,
            mcc: None,
            country: client.country.as_deref(),
        },
        now,
    )
    .await?;
    let (outcome, rule) = rules::evaluate(conn, rules::RuleEvent::Login, &signals).await?;
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
        return Ok(Completed::LoginDeclined);
    }
    Ok(Completed::Granted(open_user_session(conn, state, &user, device_id, client, now).await?))
}

/// Opens the session and issues the device token of a two-step login; a new device is notified.
async fn open_user_session(
    conn: &mut Conn,
    state: &AppState,
    user: &super::User,
    device_id: &str,
    client: &ClientInfo,
    now: i64,
) -> Result<TwoStepSession, sqlx::Error> {
    let new_device = !session::device_known(conn, &user.id, device_id).await?;
    let new = NewSession {
        subject: Subject::User(user.id.as_str()),
        device_id,
        ip: &client.ip_text,
        country: client.country.as_deref(),
        step_up: true,
    };
    let opened = session::open(conn, &new, session::Timeouts::from_config(&state.config), now).await?;
    let device_token = session::issue_device_token(conn, &user.id, device_id, now).await?;
    if new_device {
        let text = "Your Omamori account was signed in to from a new device.";
        super::notify_all(conn, user, "login_new_device", text, now).await?;
    }
    Ok(TwoStepSession { session_token: opened.token, expires_at: clock::rfc3339_ms(opened.expires_at), device_token })
}

/// An operator's login after the TOTP code or by a passkey (`method`, `password` or `passkey`): a
/// session carrying the operator's role, audited as `operator.login` with its method.
async fn complete_operator_login(
    conn: &mut Conn,
    state: &AppState,
    (operator_id, device_id, method): (&OperatorId, &str, &str),
    client: &ClientInfo,
    now: i64,
) -> Result<OperatorSessionOpened, sqlx::Error> {
    let role = super::operators::role_of(conn, operator_id).await?;
    let new = NewSession {
        subject: Subject::Operator { id: operator_id.as_str(), role: role.as_str() },
        device_id,
        ip: &client.ip_text,
        country: client.country.as_deref(),
        step_up: true,
    };
    let opened = session::open(conn, &new, session::Timeouts::from_config(&state.config), now).await?;
    let detail = json!({"ip": client.ip_text, "session_id": opened.id, "method": method});
    crate::audit::append(conn, &format!("operator:{operator_id}"), "operator.login", operator_id, &detail, now).await?;
    Ok(OperatorSessionOpened {
        session_token: opened.token,
        expires_at: clock::rfc3339_ms(opened.expires_at),
        role: role.as_str(),
    })
}

/// Opens a dashboard session after both factors (password and code, or a passkey: `method`), in
/// the caller's transaction, audited as `merchant_user.login`.
pub(super) async fn open_merchant_session(
    conn: &mut Conn,
    state: &AppState,
    user_id: &MerchantUserId,
    method: &str,
    client: &ClientInfo,
    now: i64,
) -> Result<session::Opened, sqlx::Error> {
    let new = NewSession {
        subject: Subject::Merchant(user_id.as_str()),
        device_id: "merchant",
        ip: &client.ip_text,
        country: client.country.as_deref(),
        step_up: true,
    };
    let opened = session::open(conn, &new, session::Timeouts::from_config(&state.config), now).await?;
    let detail = serde_json::json!({"session_id": opened.id, "ip": client.ip_text, "method": method});
    let actor = format!("merchant_user:{user_id}");
    crate::audit::append(conn, &actor, "merchant_user.login", user_id.as_str(), &detail, now).await?;
    Ok(opened)
}
