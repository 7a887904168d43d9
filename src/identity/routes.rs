//! HTTP routes of identity (API.md: challenges, sign-up, login, sessions, step-up, TOTP,
//! password change and reset, operator login and alerts). Each parses, calls one service
//! function and maps the result.

use crate::http::extract::PathId;
use crate::ids::ChallengeId;
use crate::ids::ResetId;
use crate::ids::SessionId;
use crate::ids::SignupId;
use crate::ids::UserId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::challenge::{Created, Verified};
use super::login::LoginAnswer;
use super::recovery::{RecoveryCodes, TotpSetup};
use super::session::SessionView;
use super::{challenge, login, recovery, session, signup};
use crate::http::auth::{AnySession, RequireRole, ShopperClient, UserSession, Viewer};
use crate::http::cookies::{Browser, SessionReply};
use crate::http::error::{
    ApiError, AuthErrors, Invalid422, JsonBodyErrors, NotFound404, Problem, ShopperAuth, TooMany429, Unauthenticated401,
};
use crate::http::extract::ApiJson;
use crate::payments::cards::Card;
use crate::risk::alerts::Alert;
use crate::risk::client::ClientInfo;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup_start))
        .routes(routes!(signup_verify))
        .routes(routes!(login_route))
        .routes(routes!(challenge_send))
        .routes(routes!(challenge_verify))
        .routes(routes!(logout))
        .routes(routes!(admin_logout))
        .routes(routes!(me))
        .routes(routes!(sessions_list))
        .routes(routes!(session_revoke))
        .routes(routes!(step_up))
        .routes(routes!(totp_begin))
        .routes(routes!(totp_confirm))
        .routes(routes!(password_change))
        .routes(routes!(reset_request))
        .routes(routes!(reset_complete))
        .routes(routes!(admin_login))
        .routes(routes!(admin_alerts))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SignupBody {
    /// E.164, for example +819012345678.
    phone: String,
    email: String,
    password: String,
}

/// A sign-up waiting for its two codes.
#[derive(Serialize, utoipa::ToSchema)]
struct SignupStarted {
    signup_id: SignupId,
}

/// Starts a sign-up: sends an SMS code and an e-mail code.
#[utoipa::path(post, path = "/v1/signup", tag = "shopper", request_body = SignupBody, responses(
    (status = 202, body = SignupStarted, description = "The codes are sent; verify them under `signup_id`"),
    JsonBodyErrors,
    (status = 422, description = "`weak_password` (with `reason`), `invalid_phone`, `invalid_email`; `invalid_body`: a field is missing, unknown or of the wrong type", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`region_blocked`: requests from this country are refused; `switch_engaged`: sign-ups are switched off", body = Problem, content_type = "application/problem+json"),
    TooMany429))]
async fn signup_start(
    State(state): State<AppState>,
    client: ShopperClient,
    body: ApiJson<SignupBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let request = signup::Request { phone: &b.phone, email: &b.email, password: &b.password };
    let id = signup::start(&state, &request, &client.0).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(SignupStarted { signup_id: id })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SignupVerifyBody {
    phone_code: String,
    email_code: String,
}

/// The account a completed sign-up created.
#[derive(Serialize, utoipa::ToSchema)]
struct SignupVerified {
    user_id: UserId,
}

/// Completes a sign-up with both codes; creates the account and its wallet.
#[utoipa::path(post, path = "/v1/signup/{signup_id}/verify", tag = "shopper", request_body = SignupVerifyBody,
    params(("signup_id" = String, Path)), responses(
    (status = 201, body = SignupVerified, description = "The account and its wallet exist"),
    JsonBodyErrors, NotFound404,
    (status = 403, description = "`region_blocked`: requests from this country are refused", body = Problem, content_type = "application/problem+json"),
    (status = 410, description = "`challenge_expired`: the sign-up's codes expired or were used up", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`code_invalid` with `attempts_left`; `invalid_body`: a field is missing, unknown or of the wrong type", body = Problem, content_type = "application/problem+json"),
    TooMany429))]
async fn signup_verify(
    State(state): State<AppState>,
    client: ShopperClient,
    PathId(id): PathId<SignupId>,
    body: ApiJson<SignupVerifyBody>,
) -> Result<Response, ApiError> {
    let codes = signup::Codes { phone_code: &body.value.phone_code, email_code: &body.value.email_code };
    let user_id = signup::verify(&state, &id, &codes, &client.0).await?;
    Ok((StatusCode::CREATED, axum::Json(SignupVerified { user_id })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    /// The phone (E.164) or the e-mail address.
    login: String,
    password: String,
    /// A stable id the app generates once per installation.
    device_id: String,
    /// What an earlier two-step login on this device returned.
    device_token: Option<String>,
}

/// First step of a login: answers a challenge, or a session for a recognised device.
#[utoipa::path(post, path = "/v1/login", tag = "shopper", request_body = LoginBody, params(Browser), responses(
    (status = 200, body = SessionReply<LoginAnswer>, description = "A challenge (`challenge_id`, `methods`), or a session for a recognised device (in cookies with `Omamori-Session: cookie`)"),
    JsonBodyErrors, Invalid422,
    (status = 401, description = "`invalid_credentials`: no such login, or the wrong password", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`region_blocked`: requests from this country are refused; `switch_engaged`: logins are switched off; `cooling_off`: wait `retry_after` seconds; `risk_declined`", body = Problem, content_type = "application/problem+json"),
    TooMany429))]
async fn login_route(
    State(state): State<AppState>,
    client: ShopperClient,
    browser: Browser,
    body: ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let credentials = login::Credentials {
        login: &b.login,
        password: &b.password,
        device_id: &b.device_id,
        device_token: b.device_token.as_deref().or(browser.device_token()),
    };
    let answer = login::login(&state, &credentials, &client.0, &crate::payments::risk_facts::Owners).await?;
    Ok(browser.login(answer))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// `sms`, or `passkey` for the options of a passkey ceremony
    method: String,
}

/// The options of a passkey ceremony for this challenge.
#[derive(Serialize, utoipa::ToSchema)]
struct PasskeyOptions {
    /// The standard `PublicKeyCredentialRequestOptions`, in its JSON form (base64url binaries):
    /// pass it to `navigator.credentials.get`, then verify with `{method: "passkey", credential}`.
    #[schema(value_type = Object)]
    options: serde_json::Value,
}

/// A code is on its way.
#[derive(Serialize, utoipa::ToSchema)]
struct CodeSent {
    /// Always true.
    sent: bool,
}

/// Sends a fresh code for a challenge (SMS), or gives the options of its passkey ceremony. A
/// step-up challenge's ceremony is given only to the session it was made for (its bearer token or
/// cookie).
#[utoipa::path(post, path = "/v1/challenges/{challenge_id}/send", tag = "shopper", request_body = SendBody,
    params(("challenge_id" = String, Path)), responses(
    (status = 202, body = CodeSent, description = "Sent"),
    (status = 200, body = PasskeyOptions, description = "With `passkey`: the ceremony's options; one WebAuthn challenge per challenge, made at the first send (or when a passkey login began) and given again by every later send, so that no one can replace a ceremony in progress"),
    JsonBodyErrors,
    (status = 404, description = "`not_found`: there is no such challenge; with `passkey`, also a step-up challenge asked for without the session it was made for", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`region_blocked`: requests from this country are refused", body = Problem, content_type = "application/problem+json"),
    (status = 410, description = "`challenge_expired`: the challenge expired or was used up", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`invalid_method`: only `sms` is sent (and `passkey` started), or the challenge takes no such method; `invalid_body`: a field is missing, unknown or of the wrong type", body = Problem, content_type = "application/problem+json"),
    TooMany429,
    (status = 503, description = "`unavailable`: with `passkey`, the server has no public address (`OMAMORI_PUBLIC_URL`)", body = Problem, content_type = "application/problem+json")))]
async fn challenge_send(
    State(state): State<AppState>,
    caller: AnySession,
    client: ShopperClient,
    PathId(id): PathId<ChallengeId>,
    body: ApiJson<SendBody>,
) -> Result<Response, ApiError> {
    Ok(match challenge::send(&state, &id, &body.value.method, caller.0.as_ref(), &client.0).await? {
        challenge::Sent::Sms => (StatusCode::ACCEPTED, axum::Json(CodeSent { sent: true })).into_response(),
        challenge::Sent::Passkey(options) => axum::Json(PasskeyOptions { options }).into_response(),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    /// `sms`, `totp`, `recovery_code`, `passkey`, or `three_d_secure` (a card's issuer challenge,
    /// after the app ran it with the processor's SDK; no `code`)
    method: String,
    /// The code (every method but `passkey`).
    code: Option<String>,
    /// With `passkey`: the `PublicKeyCredential` that `navigator.credentials.get` gave, in its JSON
    /// form (`id`, `rawId`, `type`, `response.clientDataJSON`, `response.authenticatorData`,
    /// `response.signature`, `response.userHandle`; binaries base64url).
    #[schema(value_type = Option<Object>)]
    credential: Option<serde_json::Value>,
}

/// Answers a challenge; returns what it was for (a session, a step-up grant).
#[utoipa::path(post, path = "/v1/challenges/{challenge_id}/verify", tag = "shopper", request_body = VerifyBody,
    params(("challenge_id" = String, Path), Browser), responses(
    (status = 200, body = SessionReply<Verified<Card>>, description = "A session (and `device_token`; in cookies with `Omamori-Session: cookie`) after a login; `step_up` after a step-up; an operator's session after an operator login; a dashboard session (or the `omamori_merchant` cookie) after a merchant user's passkey login; the card after a card challenge"),
    JsonBodyErrors, NotFound404,
    (status = 403, description = "`region_blocked`: requests from this country are refused (shoppers only); `risk_declined`: the login was declined", body = Problem, content_type = "application/problem+json"),
    (status = 410, description = "`challenge_expired`: the challenge expired or was used up", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`code_invalid` with `attempts_left`; `invalid_method`: the challenge does not take this method; `invalid_body`: a field is missing, unknown or of the wrong type", body = Problem, content_type = "application/problem+json"),
    TooMany429))]
async fn challenge_verify(
    State(state): State<AppState>,
    client: ClientInfo,
    browser: Browser,
    PathId(id): PathId<ChallengeId>,
    body: ApiJson<VerifyBody>,
) -> Result<Response, ApiError> {
    // Operators and merchant users verify their login here too; the country policy is for
    // shoppers only.
    let purpose = if id.as_str().starts_with("chl_") { challenge::purpose_of(&state.db, &id).await? } else { None };
    if !matches!(purpose, Some(challenge::Purpose::OperatorLogin | challenge::Purpose::MerchantLogin)) {
        crate::risk::client::country_policy(&state.config, &client)?;
    }
    let b = &body.value;
    let proof = match (b.method.as_str(), &b.code, &b.credential) {
        ("passkey", None, Some(credential)) => challenge::Proof::Passkey(credential),
        ("passkey", _, _) => return Err(ApiError::invalid_body("a passkey answers with `credential` (and no `code`)")),
        ("three_d_secure", None, None) => {
            challenge::Proof::Issuer { confirmed: crate::payments::cards::issuer_confirmed(&state, &id).await? }
        }
        (method, Some(code), None) => challenge::Proof::Code { method, code },
        _ => return Err(ApiError::invalid_body("a code answers with `code` (and no `credential`)")),
    };
    let cards = crate::payments::cards::CardChallengeHook;
    let answer =
        challenge::verify(&state, &id, &proof, &client, (&cards, &crate::payments::risk_facts::Owners)).await?;
    Ok(browser.verified(answer))
}

/// Ends this session.
#[utoipa::path(post, path = "/v1/logout", tag = "shopper", security(("bearer" = [])), responses(
    (status = 204, description = "Logged out"),
    ShopperAuth))]
async fn logout(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
    browser: Browser,
) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    session::revoke_own(&state.db, s.user_id(), s.session_id(), now).await?;
    Ok(browser.logged_out())
}

/// Ends this operator's session: the token is refused from the next request on.
#[utoipa::path(post, path = "/v1/admin/logout", tag = "operator", security(("bearer" = [])), responses(
    (status = 204, description = "Logged out"),
    AuthErrors))]
async fn admin_logout(
    State(state): State<AppState>,
    op: RequireRole<Viewer>,
    browser: Browser,
) -> Result<Response, ApiError> {
    session::end_operator(&state.db, &op, state.clock.now_ms()).await?;
    Ok(browser.operator_logged_out())
}

/// The signed-in shopper, as the shopper sees the account.
#[derive(Serialize, utoipa::ToSchema)]
struct Me {
    user_id: UserId,
    /// Masked: only the last digits show.
    phone: String,
    email: String,
    /// The second factors the account has (`sms`, `totp`, ...).
    #[schema(value_type = Vec<String>)]
    factors: Vec<&'static str>,
    created_at: String,
    /// While a recent credential change keeps money actions waiting; null otherwise.
    cooling_off_until: Option<String>,
}

/// The signed-in shopper.
#[utoipa::path(get, path = "/v1/me", tag = "shopper", security(("bearer" = [])), responses(
    (status = 200, body = Me, description = "The account"),
    ShopperAuth))]
async fn me(State(state): State<AppState>, s: UserSession, _client: ShopperClient) -> Result<Response, ApiError> {
    let mut conn = state.db.pool().acquire().await?;
    let user = super::user_by_id(&mut conn, s.user_id()).await?.ok_or_else(crate::http::auth::unauthenticated)?;
    let factors = challenge::user_methods(&mut conn, &user.id).await?;
    let cooling_off_until = (user.cooling_off_until > state.clock.now_ms())
        .then(|| crate::store::clock::rfc3339_ms(user.cooling_off_until));
    Ok(axum::Json(Me {
        phone: super::mask_phone(&user.phone),
        created_at: crate::store::clock::rfc3339_ms(user.created_at),
        user_id: user.id,
        email: user.email,
        factors,
        cooling_off_until,
    })
    .into_response())
}

/// The shopper's live sessions.
#[derive(Serialize, utoipa::ToSchema)]
struct SessionList {
    items: Vec<SessionView>,
}

/// The shopper's live sessions (`current` marks this one).
#[utoipa::path(get, path = "/v1/sessions", tag = "shopper", security(("bearer" = [])), responses(
    (status = 200, body = SessionList, description = "The live sessions"),
    ShopperAuth))]
async fn sessions_list(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
) -> Result<Response, ApiError> {
    let mut conn = state.db.pool().acquire().await?;
    let items = session::list(
        &mut conn,
        s.user_id(),
        Some(s.session_id()),
        crate::identity::session::Timeouts::from_config(&state.config),
        state.clock.now_ms(),
    )
    .await?;
    Ok(axum::Json(SessionList { items }).into_response())
}

/// Revokes one of the shopper's sessions.
#[utoipa::path(delete, path = "/v1/sessions/{session_id}", tag = "shopper", params(("session_id" = String, Path)),
    security(("bearer" = [])), responses(
    (status = 204, description = "Revoked"),
    ShopperAuth,
    NotFound404))]
async fn session_revoke(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
    PathId(id): PathId<SessionId>,
) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    if !session::revoke_own(&state.db, s.user_id(), &id, now).await? {
        return Err(ApiError::not_found("there is no such session"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A challenge whose verification grants step-up for 5 minutes.
#[utoipa::path(post, path = "/v1/step-up", tag = "shopper", security(("bearer" = [])), responses(
    (status = 200, body = Created, description = "The challenge to verify"),
    ShopperAuth))]
async fn step_up(State(state): State<AppState>, s: UserSession, client: ShopperClient) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    let answer = crate::store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let methods = challenge::user_methods(&mut tx, s.user_id()).await?;
        let c = challenge::NewChallenge {
            purpose: challenge::Purpose::StepUp,
            user_id: Some(s.user_id()),
            operator_id: None,
            merchant_user_id: None,
            session_id: Some(s.session_id()),
            device_id: Some(s.device_id()),
            subject_id: None,
            methods: &methods,
            client: &client.0,
        };
        let v = challenge::create(&mut tx, &c, now).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(v)
    })
    .await?;
    Ok(axum::Json(answer).into_response())
}

/// Starts adding an authenticator app (needs step-up).
#[utoipa::path(post, path = "/v1/me/totp", tag = "shopper", security(("bearer" = [])), responses(
    (status = 200, body = TotpSetupAnswer, description = "The secret to add to the app; confirm it with a code"),
    Unauthenticated401,
    (status = 403, description = "`forbidden`: not a shopper's session; `region_blocked`: requests from this country are refused; `step_up_required` with `challenge_id` and `methods`: verify that challenge, then repeat the request", body = Problem, content_type = "application/problem+json")))]
async fn totp_begin(
    State(state): State<AppState>,
    s: UserSession,
    client: ShopperClient,
) -> Result<Response, ApiError> {
    let setup = recovery::totp_begin(&state, &s, &client.0).await?;
    let otpauth_qr_svg = crate::payments::code::qr_svg(&setup.otpauth_uri);
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], axum::Json(TotpSetupAnswer { setup, otpauth_qr_svg }))
        .into_response())
}

/// A new authenticator seed, and its `otpauth_uri` drawn as a QR code for the app's camera (drawn
/// here, as the payment code's QR is, so that the page needs no QR encoder of its own).
#[derive(Serialize, utoipa::ToSchema)]
struct TotpSetupAnswer {
    #[serde(flatten)]
    setup: TotpSetup,
    /// `otpauth_uri` as a QR code: an SVG document (black modules on white, quiet zone included).
    otpauth_qr_svg: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

/// Confirms the authenticator app with a code from it; answers 10 single-use recovery codes.
#[utoipa::path(post, path = "/v1/me/totp/confirm", tag = "shopper", request_body = CodeBody, security(("bearer" = [])),
    responses(
    (status = 200, body = RecoveryCodes, description = "The app is confirmed; keep the recovery codes"),
    ShopperAuth,
    JsonBodyErrors,
    (status = 409, description = "`totp_not_started`: start with `POST /v1/me/totp`", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`code_invalid`: not the app's current code; `invalid_body`: a field is missing, unknown or of the wrong type", body = Problem, content_type = "application/problem+json")))]
async fn totp_confirm(
    State(state): State<AppState>,
    s: UserSession,
    client: ShopperClient,
    body: ApiJson<CodeBody>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(recovery::totp_confirm(&state, &s, &body.value.code, &client.0).await?).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the password (needs step-up); signs out the other sessions.
#[utoipa::path(post, path = "/v1/me/password", tag = "shopper", request_body = PasswordBody, security(("bearer" = [])),
    responses(
    (status = 204, description = "Changed"),
    Unauthenticated401,
    (status = 403, description = "`forbidden`: not a shopper's session; `region_blocked`: requests from this country are refused; `step_up_required` with `challenge_id` and `methods`: verify that challenge, then repeat the request", body = Problem, content_type = "application/problem+json"),
    JsonBodyErrors,
    (status = 422, description = "`weak_password` (with `reason`); `invalid_credentials`: the current password is wrong; `invalid_body`: a field is missing, unknown or of the wrong type", body = Problem, content_type = "application/problem+json")))]
async fn password_change(
    State(state): State<AppState>,
    s: UserSession,
    client: ShopperClient,
    body: ApiJson<PasswordBody>,
) -> Result<Response, ApiError> {
    recovery::change(&state, &s, &body.value.current_password, &body.value.new_password, &client.0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    /// The phone or the e-mail address of the account.
    login: String,
}

/// Asks for a password reset; codes go only to the contacts verified on the account.
#[utoipa::path(post, path = "/v1/password-reset", tag = "shopper", request_body = ResetBody, responses(
    (status = 202, body = ResetStarted, description = "Asked for (the same answer whether or not the account exists)"),
    JsonBodyErrors, Invalid422,
    (status = 403, description = "`region_blocked`: requests from this country are refused", body = Problem, content_type = "application/problem+json")))]
async fn reset_request(
    State(state): State<AppState>,
    client: ShopperClient,
    body: ApiJson<ResetBody>,
) -> Result<Response, ApiError> {
    let id = recovery::request(&state, &body.value.login, &client.0).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(ResetStarted { reset_id: id })).into_response())
}

/// A reset waiting for its proofs.
#[derive(Serialize, utoipa::ToSchema)]
struct ResetStarted {
    reset_id: ResetId,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetCompleteBody {
    sms_code: Option<String>,
    email_code: Option<String>,
    totp_code: Option<String>,
    new_password: String,
}

/// Completes a reset with two of the three proofs.
#[utoipa::path(post, path = "/v1/password-reset/{reset_id}/complete", tag = "shopper", request_body = ResetCompleteBody,
    params(("reset_id" = String, Path)), responses(
    (status = 204, description = "Reset; every session revoked"),
    JsonBodyErrors, NotFound404,
    (status = 403, description = "`region_blocked`: requests from this country are refused", body = Problem, content_type = "application/problem+json"),
    (status = 410, description = "`challenge_expired`: the reset expired or was used up", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`code_invalid` with `attempts_left`; `weak_password` (with `reason`); `invalid_body`: a field is missing, unknown or of the wrong type", body = Problem, content_type = "application/problem+json"),
    TooMany429))]
async fn reset_complete(
    State(state): State<AppState>,
    client: ShopperClient,
    PathId(id): PathId<ResetId>,
    body: ApiJson<ResetCompleteBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let proofs = recovery::Proofs {
        sms_code: b.sms_code.as_deref(),
        email_code: b.email_code.as_deref(),
        totp_code: b.totp_code.as_deref(),
    };
    recovery::complete(&state, &id, proofs, &b.new_password, &client.0).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminLoginBody {
    email: String,
    password: String,
}

/// Operator login, first step; the TOTP challenge follows, always.
#[utoipa::path(post, path = "/v1/admin/login", tag = "operator", request_body = AdminLoginBody, responses(
    (status = 200, body = Created, description = "The TOTP challenge to verify"),
    JsonBodyErrors, Invalid422,
    (status = 401, description = "`invalid_credentials`: no such operator, or the wrong password", body = Problem, content_type = "application/problem+json"),
    TooMany429))]
async fn admin_login(
    State(state): State<AppState>,
    client: ClientInfo,
    body: ApiJson<AdminLoginBody>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(login::operator_login(&state, &body.value.email, &body.value.password, &client).await?)
        .into_response())
}

/// Alerts raised by the detectors, newest first.
#[utoipa::path(get, path = "/v1/admin/alerts", tag = "operator", security(("bearer" = [])), responses(
    (status = 200, body = AlertList, description = "At most 200, newest first"),
    AuthErrors))]
async fn admin_alerts(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    let items = crate::risk::alerts::list(&state.db, 200).await?;
    Ok(axum::Json(AlertList { items }).into_response())
}

/// Alerts, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct AlertList {
    items: Vec<Alert>,
}
