//! HTTP routes of passkeys (API.md "Passkeys (WebAuthn)"): registering, listing and removing a
//! shopper's, an operator's or a merchant user's passkeys, and starting a login with one. Answering a challenge with
//! a passkey goes through the challenge routes (`routes.rs`).

use crate::http::extract::PathId;
use crate::ids::{PasskeyId, RegistrationId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::login::{self, PasskeyLogin, PasskeyLoginStarted};
use super::passkey::{self, Owner, Passkey, RegistrationStarted};
use crate::http::auth::{MerchantStaff, RequireRole, ShopperClient, UserSession, Viewer};
use crate::http::error::{
    ApiError, AuthErrors, JsonBodyErrors, MerchantStepUp403, NotFound404, OperatorStepUp403, Problem, ShopperAuth,
    TooMany429, Unauthenticated401,
};
use crate::http::extract::ApiJson;
use crate::risk::client::ClientInfo;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_begin, list))
        .routes(routes!(register_finish))
        .routes(routes!(remove))
        .routes(routes!(login_begin))
        .routes(routes!(admin_register_begin, admin_list))
        .routes(routes!(admin_register_finish))
        .routes(routes!(admin_remove))
        .routes(routes!(admin_login_begin))
        .routes(routes!(merchant_register_begin, merchant_list))
        .routes(routes!(merchant_register_finish))
        .routes(routes!(merchant_remove))
        .routes(routes!(merchant_login_begin))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FinishBody {
    /// The `PublicKeyCredential` that `navigator.credentials.create` gave, in its JSON form
    /// (`id`, `rawId`, `type`, `response.clientDataJSON`, `response.attestationObject`; binaries
    /// base64url).
    #[schema(value_type = Object)]
    credential: serde_json::Value,
    /// What to call it (1 to 64 characters); "Passkey" when absent.
    name: Option<String>,
}

/// The passkeys, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
struct PasskeyList {
    items: Vec<Passkey>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasskeyLoginBody {
    /// A stable id the app generates once per installation.
    device_id: String,
}

/// Starts adding a passkey (needs step-up): pass `options` to `navigator.credentials.create`.
#[utoipa::path(post, path = "/v1/me/passkeys", tag = "shopper", security(("bearer" = [])), responses(
    (status = 200, body = RegistrationStarted, description = "The ceremony's options; finish it within 5 minutes"),
    (status = 409, description = "`too_many_passkeys`: the account has 10 passkeys, the most it may have; remove one first", body = Problem, content_type = "application/problem+json"),
    Unauthenticated401,
    (status = 403, description = "`forbidden`: not a shopper's session; `region_blocked`: requests from this country are refused; `step_up_required` with `challenge_id` and `methods`: verify that challenge, then repeat the request", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "`unavailable`: the server has no public address (`OMAMORI_PUBLIC_URL`), so no passkeys", body = Problem, content_type = "application/problem+json")))]
async fn register_begin(
    State(state): State<AppState>,
    s: UserSession,
    client: ShopperClient,
) -> Result<Response, ApiError> {
    super::recovery::require_step_up(&state, &s, &client.0).await?;
    Ok(axum::Json(passkey::begin_registration(&state, Owner::User(s.user_id())).await?).into_response())
}

/// Finishes adding a passkey with what the browser answered; the shopper is told on every channel.
#[utoipa::path(post, path = "/v1/me/passkeys/{registration_id}/finish", tag = "shopper", request_body = FinishBody,
    params(("registration_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 201, body = Passkey, description = "The passkey is registered"),
    (status = 409, description = "`too_many_passkeys`: the account has 10 passkeys, the most it may have; remove one first", body = Problem, content_type = "application/problem+json"),
    ShopperAuth, JsonBodyErrors, NotFound404,
    (status = 410, description = "`challenge_expired`: the registration expired or was used", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`passkey_rejected`: the answer does not verify (another origin, another challenge, no user verification, a passkey already registered); `invalid_body`: a field is missing, unknown or of the wrong type, or the name is too long", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "`unavailable`: the server has no public address (`OMAMORI_PUBLIC_URL`), so no passkeys", body = Problem, content_type = "application/problem+json")))]
async fn register_finish(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
    PathId(id): PathId<RegistrationId>,
    body: ApiJson<FinishBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let created =
        passkey::finish_registration(&state, Owner::User(s.user_id()), &id, &b.credential, b.name.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// The shopper's passkeys.
#[utoipa::path(get, path = "/v1/me/passkeys", tag = "shopper", security(("bearer" = [])), responses(
    (status = 200, body = PasskeyList, description = "The passkeys, oldest first"),
    ShopperAuth))]
async fn list(State(state): State<AppState>, s: UserSession, _client: ShopperClient) -> Result<Response, ApiError> {
    let items = passkey::list(&state, Owner::User(s.user_id())).await?;
    Ok(axum::Json(PasskeyList { items }).into_response())
}

/// Removes a passkey (needs step-up); the shopper is told on every channel.
#[utoipa::path(delete, path = "/v1/me/passkeys/{passkey_id}", tag = "shopper", params(("passkey_id" = String, Path)),
    security(("bearer" = [])), responses(
    (status = 204, description = "Removed"),
    Unauthenticated401, NotFound404,
    (status = 403, description = "`forbidden`: not a shopper's session; `region_blocked`: requests from this country are refused; `step_up_required` with `challenge_id` and `methods`: verify that challenge, then repeat the request", body = Problem, content_type = "application/problem+json")))]
async fn remove(
    State(state): State<AppState>,
    s: UserSession,
    client: ShopperClient,
    PathId(id): PathId<PasskeyId>,
) -> Result<Response, ApiError> {
    super::recovery::require_step_up(&state, &s, &client.0).await?;
    if !passkey::remove(&state, Owner::User(s.user_id()), &id).await? {
        return Err(ApiError::not_found("there is no such passkey"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Starts a login with a passkey alone (no login name, no password): pass `options` to
/// `navigator.credentials.get`, then verify the challenge with `{method: "passkey", credential}`.
#[utoipa::path(post, path = "/v1/login/passkey", tag = "shopper", request_body = PasskeyLoginBody, responses(
    (status = 200, body = PasskeyLoginStarted, description = "The login challenge and the ceremony's options"),
    JsonBodyErrors,
    (status = 422, description = "`invalid_body`: a field is missing, unknown or of the wrong type, or `device_id` is not 1 to 128 printable ASCII characters", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`region_blocked`: requests from this country are refused; `switch_engaged`: logins are switched off", body = Problem, content_type = "application/problem+json"),
    TooMany429,
    (status = 503, description = "`unavailable`: the server has no public address (`OMAMORI_PUBLIC_URL`), so no passkeys", body = Problem, content_type = "application/problem+json")))]
async fn login_begin(
    State(state): State<AppState>,
    client: ShopperClient,
    body: ApiJson<PasskeyLoginBody>,
) -> Result<Response, ApiError> {
    let who = PasskeyLogin::Shopper { device_id: &body.value.device_id };
    Ok(axum::Json(login::passkey_login(&state, who, &client.0).await?).into_response())
}

/// Starts adding a passkey to the operator's own account.
#[utoipa::path(post, path = "/v1/admin/me/passkeys", tag = "operator", security(("bearer" = [])), responses(
    (status = 200, body = RegistrationStarted, description = "The ceremony's options; finish it within 5 minutes"),
    (status = 409, description = "`too_many_passkeys`: the account has 10 passkeys, the most it may have; remove one first", body = Problem, content_type = "application/problem+json"),
    Unauthenticated401, OperatorStepUp403,
    (status = 503, description = "`unavailable`: the server has no public address (`OMAMORI_PUBLIC_URL`), so no passkeys", body = Problem, content_type = "application/problem+json")))]
async fn admin_register_begin(
    State(state): State<AppState>,
    op: RequireRole<Viewer>,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    super::recovery::require_operator_step_up(&state, &op, &client).await?;
    Ok(axum::Json(passkey::begin_registration(&state, Owner::Operator(op.operator_id())).await?).into_response())
}

/// Finishes adding an operator's passkey (audited).
#[utoipa::path(post, path = "/v1/admin/me/passkeys/{registration_id}/finish", tag = "operator", request_body = FinishBody,
    params(("registration_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 201, body = Passkey, description = "The passkey is registered"),
    (status = 409, description = "`too_many_passkeys`: the account has 10 passkeys, the most it may have; remove one first", body = Problem, content_type = "application/problem+json"),
    AuthErrors, JsonBodyErrors, NotFound404,
    (status = 410, description = "`challenge_expired`: the registration expired or was used", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`passkey_rejected`: the answer does not verify; `invalid_body`: a field is missing, unknown or of the wrong type, or the name is too long", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "`unavailable`: the server has no public address (`OMAMORI_PUBLIC_URL`), so no passkeys", body = Problem, content_type = "application/problem+json")))]
async fn admin_register_finish(
    State(state): State<AppState>,
    op: RequireRole<Viewer>,
    PathId(id): PathId<RegistrationId>,
    body: ApiJson<FinishBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let owner = Owner::Operator(op.operator_id());
    let created = passkey::finish_registration(&state, owner, &id, &b.credential, b.name.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// The operator's own passkeys.
#[utoipa::path(get, path = "/v1/admin/me/passkeys", tag = "operator", security(("bearer" = [])), responses(
    (status = 200, body = PasskeyList, description = "The passkeys, oldest first"),
    AuthErrors))]
async fn admin_list(State(state): State<AppState>, op: RequireRole<Viewer>) -> Result<Response, ApiError> {
    let items = passkey::list(&state, Owner::Operator(op.operator_id())).await?;
    Ok(axum::Json(PasskeyList { items }).into_response())
}

/// Removes one of the operator's passkeys (audited).
#[utoipa::path(delete, path = "/v1/admin/me/passkeys/{passkey_id}", tag = "operator",
    params(("passkey_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "Removed"),
    Unauthenticated401, OperatorStepUp403, NotFound404))]
async fn admin_remove(
    State(state): State<AppState>,
    op: RequireRole<Viewer>,
    client: ClientInfo,
    PathId(id): PathId<PasskeyId>,
) -> Result<Response, ApiError> {
    super::recovery::require_operator_step_up(&state, &op, &client).await?;
    if !passkey::remove(&state, Owner::Operator(op.operator_id()), &id).await? {
        return Err(ApiError::not_found("there is no such passkey"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An empty body (or `{}`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// Starts an operator's login with a passkey instead of password and TOTP; verify the challenge
/// with `{method: "passkey", credential}`.
#[utoipa::path(post, path = "/v1/admin/login/passkey", tag = "operator", request_body = NoFields, responses(
    (status = 200, body = PasskeyLoginStarted, description = "The login challenge and the ceremony's options"),
    JsonBodyErrors,
    (status = 422, description = "`invalid_body`: the body has fields (it takes none)", body = Problem, content_type = "application/problem+json"),
    TooMany429,
    (status = 503, description = "`unavailable`: the server has no public address (`OMAMORI_PUBLIC_URL`), so no passkeys", body = Problem, content_type = "application/problem+json")))]
async fn admin_login_begin(
    State(state): State<AppState>,
    client: ClientInfo,
    _body: ApiJson<NoFields>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(login::passkey_login(&state, PasskeyLogin::Operator, &client).await?).into_response())
}

/// Starts adding a passkey to the merchant user's own account (owner or staff).
#[utoipa::path(post, path = "/v1/merchant/me/passkeys", tag = "merchant", security(("bearer" = [])), responses(
    (status = 200, body = RegistrationStarted, description = "The ceremony's options; finish it within 5 minutes"),
    (status = 409, description = "`too_many_passkeys`: the account has 10 passkeys, the most it may have; remove one first", body = Problem, content_type = "application/problem+json"),
    Unauthenticated401, MerchantStepUp403,
    (status = 503, description = "`unavailable`: the server has no public address (`OMAMORI_PUBLIC_URL`), so no passkeys", body = Problem, content_type = "application/problem+json")))]
async fn merchant_register_begin(
    State(state): State<AppState>,
    who: MerchantStaff,
    client: ClientInfo,
) -> Result<Response, ApiError> {
    super::recovery::require_merchant_step_up(&state, who.session(), &client).await?;
    Ok(axum::Json(passkey::begin_registration(&state, Owner::MerchantUser(who.user_id())).await?).into_response())
}

/// Finishes adding a merchant user's passkey (audited).
#[utoipa::path(post, path = "/v1/merchant/me/passkeys/{registration_id}/finish", tag = "merchant",
    request_body = FinishBody, params(("registration_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 201, body = Passkey, description = "The passkey is registered"),
    (status = 409, description = "`too_many_passkeys`: the account has 10 passkeys, the most it may have; remove one first", body = Problem, content_type = "application/problem+json"),
    AuthErrors, JsonBodyErrors, NotFound404,
    (status = 410, description = "`challenge_expired`: the registration expired or was used", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`passkey_rejected`: the answer does not verify; `invalid_body`: a field is missing, unknown or of the wrong type, or the name is too long", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "`unavailable`: the server has no public address (`OMAMORI_PUBLIC_URL`), so no passkeys", body = Problem, content_type = "application/problem+json")))]
async fn merchant_register_finish(
    State(state): State<AppState>,
    who: MerchantStaff,
    PathId(id): PathId<RegistrationId>,
    body: ApiJson<FinishBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let owner = Owner::MerchantUser(who.user_id());
    let created = passkey::finish_registration(&state, owner, &id, &b.credential, b.name.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// The merchant user's own passkeys.
#[utoipa::path(get, path = "/v1/merchant/me/passkeys", tag = "merchant", security(("bearer" = [])), responses(
    (status = 200, body = PasskeyList, description = "The passkeys, oldest first"),
    AuthErrors))]
async fn merchant_list(State(state): State<AppState>, who: MerchantStaff) -> Result<Response, ApiError> {
    let items = passkey::list(&state, Owner::MerchantUser(who.user_id())).await?;
    Ok(axum::Json(PasskeyList { items }).into_response())
}

/// Removes one of the merchant user's passkeys (audited).
#[utoipa::path(delete, path = "/v1/merchant/me/passkeys/{passkey_id}", tag = "merchant",
    params(("passkey_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "Removed"),
    Unauthenticated401, MerchantStepUp403, NotFound404))]
async fn merchant_remove(
    State(state): State<AppState>,
    who: MerchantStaff,
    client: ClientInfo,
    PathId(id): PathId<PasskeyId>,
) -> Result<Response, ApiError> {
    super::recovery::require_merchant_step_up(&state, who.session(), &client).await?;
    if !passkey::remove(&state, Owner::MerchantUser(who.user_id()), &id).await? {
        return Err(ApiError::not_found("there is no such passkey"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Starts a merchant user's login with a passkey instead of password and authenticator code;
/// verify the challenge with `{method: "passkey", credential}` (with `Omamori-Session: cookie`, the
/// session goes into the `omamori_merchant` cookie).
#[utoipa::path(post, path = "/v1/merchant/login/passkey", tag = "merchant", request_body = NoFields, responses(
    (status = 200, body = PasskeyLoginStarted, description = "The login challenge and the ceremony's options"),
    JsonBodyErrors,
    (status = 422, description = "`invalid_body`: the body has fields (it takes none)", body = Problem, content_type = "application/problem+json"),
    TooMany429,
    (status = 503, description = "`unavailable`: the server has no public address (`OMAMORI_PUBLIC_URL`), so no passkeys", body = Problem, content_type = "application/problem+json")))]
async fn merchant_login_begin(
    State(state): State<AppState>,
    client: ClientInfo,
    _body: ApiJson<NoFields>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(login::passkey_login(&state, PasskeyLogin::Merchant, &client).await?).into_response())
}
