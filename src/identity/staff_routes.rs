//! Routes of merchant staff (API.md, "Merchants' side"): the dashboard's login and logout, who is
//! signed in, the staff list, and the operator's route that creates a merchant's first owner.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::staff::{self, Member, NewStaff, StaffCreated, StaffRole, StoreRef};
use crate::http::auth::{ClientInfo, MerchantStaff, OperatorRole, RequireRole};
use crate::http::cookies::Browser;
use crate::http::error::{ApiError, AuthErrors, JsonBodyErrors, NotFound404, Problem, TooMany429};
use crate::http::extract::{ApiJson, PathId};
use crate::ids::{MerchantId, MerchantUserId, StoreId};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(merchant_login))
        .routes(routes!(merchant_logout))
        .routes(routes!(merchant_me))
        .routes(routes!(create_staff, list_staff))
        .routes(routes!(admin_create_staff))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
    /// The current code of the authenticator app.
    totp_code: String,
}

/// What a login answers to an app or tool (a page gets the token in a cookie instead).
#[derive(Serialize, utoipa::ToSchema)]
struct LoginSession {
    session_token: String,
    expires_at: String,
}

/// Logs a merchant owner or staff member in with password and authenticator code at once.
#[utoipa::path(post, path = "/v1/merchant/login", tag = "merchant", request_body = LoginBody, params(Browser),
    responses(
    (status = 200, body = LoginSession, description = "A dashboard session (with `Omamori-Session: cookie`: `{session, expires_at}` and the token in the `omamori_merchant` cookie)"),
    JsonBodyErrors,
    (status = 401, description = "`invalid_credentials`: no such user, the wrong password or the wrong code", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`invalid_body`", body = Problem, content_type = "application/problem+json"),
    TooMany429))]
async fn merchant_login(
    State(state): State<AppState>,
    client: ClientInfo,
    browser: Browser,
    body: ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let opened = staff::login(&state, &b.email, &b.password, &b.totp_code, &client).await?;
    Ok(browser.merchant_login(opened))
}

/// Ends the dashboard session.
#[utoipa::path(post, path = "/v1/merchant/logout", tag = "merchant", security(("bearer" = [])), responses(
    (status = 204, description = "Logged out"),
    AuthErrors))]
async fn merchant_logout(
    State(state): State<AppState>,
    who: MerchantStaff,
    browser: Browser,
) -> Result<Response, ApiError> {
    staff::logout(&state, who.session()).await?;
    Ok(browser.merchant_logged_out())
}

/// The signed-in merchant user.
#[derive(Serialize, utoipa::ToSchema)]
struct Me {
    merchant_id: MerchantId,
    /// The merchant's name.
    name: String,
    role: StaffRole,
    /// The stores this person sees: every store for an owner.
    stores: Vec<StoreRef>,
    user_id: MerchantUserId,
    email: String,
    /// The service's business date in Asia/Tokyo (`YYYY-MM-DD`; the sandbox may move its clock).
    today: String,
}

/// Who is signed in, with their merchant, role and stores.
#[utoipa::path(get, path = "/v1/merchant/me", tag = "merchant", security(("bearer" = [])), responses(
    (status = 200, body = Me, description = "The signed-in merchant user"),
    AuthErrors))]
async fn merchant_me(State(state): State<AppState>, who: MerchantStaff) -> Result<Response, ApiError> {
    let s = who.scope().clone();
    Ok(axum::Json(Me {
        merchant_id: s.merchant_id,
        name: s.merchant_name,
        role: s.role,
        stores: s.stores,
        user_id: s.user_id,
        email: s.email,
        today: crate::store::clock::tokyo_date(state.clock.now_ms()),
    })
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StaffBody {
    email: String,
    role: StaffRole,
    /// The stores a staff member sees (at least one); leave out for an owner.
    #[serde(default)]
    store_ids: Vec<StoreId>,
}

const CREATE_422: &str = "`invalid_body`; `invalid_email`; `store_ids_required`: a staff member needs at least one store; `unknown_store`: a store id that is not this merchant's";

/// Adds an owner or a staff member (owner only); the password and authenticator seed are shown once.
#[utoipa::path(post, path = "/v1/merchant/users", tag = "merchant", request_body = StaffBody,
    security(("bearer" = [])), responses(
    (status = 201, body = StaffCreated, description = "Created: hand the password and the seed over in person"),
    AuthErrors, JsonBodyErrors,
    (status = 409, description = "`email_taken`: the e-mail is a dashboard user's already", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = CREATE_422, body = Problem, content_type = "application/problem+json")))]
async fn create_staff(
    State(state): State<AppState>,
    who: MerchantStaff,
    body: ApiJson<StaffBody>,
) -> Result<Response, ApiError> {
    who.require_owner()?;
    let b = body.value;
    let new = NewStaff { email: &b.email, role: b.role, store_ids: &b.store_ids };
    let created = staff::create(&state, who.merchant_id(), &new, &who.actor()).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// The merchant's users.
#[derive(Serialize, utoipa::ToSchema)]
struct StaffList {
    items: Vec<Member>,
}

/// The merchant's owners and staff, by e-mail (owner only).
#[utoipa::path(get, path = "/v1/merchant/users", tag = "merchant", security(("bearer" = [])), responses(
    (status = 200, body = StaffList, description = "At most 500, by e-mail"),
    AuthErrors))]
async fn list_staff(State(state): State<AppState>, who: MerchantStaff) -> Result<Response, ApiError> {
    who.require_owner()?;
    let mut conn = state.db.pool().acquire().await?;
    Ok(axum::Json(StaffList { items: staff::list(&mut conn, who.merchant_id()).await? }).into_response())
}

/// Creates a merchant's owner (or staff member) on its behalf (operator role); the password and
/// authenticator seed are shown once.
#[utoipa::path(post, path = "/v1/admin/merchants/{merchant_id}/users", tag = "operator", request_body = StaffBody,
    params(("merchant_id" = MerchantId, Path, description = "The merchant")), security(("bearer" = [])), responses(
    (status = 201, body = StaffCreated, description = "Created: hand the password and the seed over in person"),
    AuthErrors, JsonBodyErrors, NotFound404,
    (status = 409, description = "`email_taken`: the e-mail is a dashboard user's already", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = CREATE_422, body = Problem, content_type = "application/problem+json")))]
async fn admin_create_staff(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(merchant): PathId<MerchantId>,
    body: ApiJson<StaffBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let new = NewStaff { email: &b.email, role: b.role, store_ids: &b.store_ids };
    let created = staff::create(&state, &merchant, &new, &op.actor()).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}
