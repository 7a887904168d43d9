//! Operator routes of identity for the console (`/console`): who is signed in, and a shopper
//! looked up by phone or e-mail with what an operator needs to act on a complaint or an attack
//! (sessions, devices, cards, recent money movements, the freeze). A lookup reads personal data,
//! so it needs the operator role and is audited.

use axum::extract::State;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::operators::Profile;
use super::session::{self, DeviceView, SessionView, Timeouts};
use super::{Login, User};
use crate::http::auth::{OperatorRole, RequireRole, Viewer};
use crate::http::error::{ApiError, AuthErrors, NotFound404, Problem};
use crate::ids::UserId;
use crate::payments::cards::Card;
use crate::risk::switches::FreezeState;
use crate::state::AppState;
use crate::store::{Conn, clock};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(admin_me)).routes(routes!(list_operators)).routes(routes!(lookup_user))
}

/// The signed-in operator: the console shows only what this role may do.
#[utoipa::path(get, path = "/v1/admin/me", tag = "operator", security(("bearer" = [])), responses(
    (status = 200, body = Profile, description = "The operator of this session"),
    AuthErrors))]
async fn admin_me(State(state): State<AppState>, op: RequireRole<Viewer>) -> Result<Response, ApiError> {
    let mut conn = state.db.pool().acquire().await?;
    Ok(axum::Json(super::operators::profile(&mut conn, op.operator_id()).await?).into_response())
}

/// Every operator.
#[derive(Serialize, utoipa::ToSchema)]
struct OperatorList {
    items: Vec<Profile>,
}

/// The operators (e-mail and role), so that the console names who engaged or released what.
#[utoipa::path(get, path = "/v1/admin/operators", tag = "operator", security(("bearer" = [])), responses(
    (status = 200, body = OperatorList, description = "At most 500, by e-mail"),
    AuthErrors))]
async fn list_operators(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    let mut conn = state.db.pool().acquire().await?;
    Ok(axum::Json(OperatorList { items: super::operators::list(&mut conn).await? }).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
// The handler takes `Result<Query<..>, _>`, which utoipa cannot see through: say where they are.
#[into_params(parameter_in = Query)]
struct LookupQuery {
    /// The phone (E.164, `+81...`) or the e-mail address, as the shopper would log in.
    #[param(min_length = 3, max_length = 254)]
    login: String,
}

/// One money movement of the wallet, signed (negative when money left it).
#[derive(Serialize, utoipa::ToSchema)]
struct Activity {
    /// The journal entry.
    id: i64,
    kind: String,
    amount: i64,
    balance_after: i64,
    counterparty: Option<String>,
    created_at: String,
}

/// A shopper as the console shows one.
#[derive(Serialize, utoipa::ToSchema)]
struct UserLookup {
    user_id: UserId,
    phone: String,
    email: String,
    created_at: String,
    /// While a recent credential change keeps money actions waiting; null otherwise.
    cooling_off_until: Option<String>,
    balance: i64,
    freeze: FreezeState,
    /// Live sessions, newest first.
    sessions: Vec<SessionView>,
    /// Devices with a two-step login, newest first.
    devices: Vec<DeviceView>,
    cards: Vec<Card>,
    /// The newest 20 movements of the wallet.
    activity: Vec<Activity>,
}

/// Looks a shopper up by phone or e-mail (operator role; every lookup is audited).
#[utoipa::path(get, path = "/v1/admin/users", tag = "operator", params(LookupQuery), security(("bearer" = [])),
    responses(
    (status = 200, body = UserLookup, description = "The shopper"),
    AuthErrors, NotFound404,
    (status = 400, description = "`invalid_query`: `login` is missing", body = Problem, content_type = "application/problem+json")))]
async fn lookup_user(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    q: Result<axum::extract::Query<LookupQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let axum::extract::Query(q) = q.map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "give login: the phone (+81...) or the e-mail")
    })?;
    let not_found = || ApiError::not_found("no shopper has this phone or e-mail");
    let login = Login::parse(&q.login).ok_or_else(not_found)?;
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let user = super::user_by_login(&mut tx, &login).await?.ok_or_else(not_found)?;
    let view = user_view(&mut tx, &user, Timeouts::from_config(&state.config), now).await?;
    let detail = serde_json::json!({"by": if q.login.trim().starts_with('+') { "phone" } else { "email" }});
    crate::audit::append(&mut tx, &op.actor(), "user.lookup", user.id.as_str(), &detail, now).await?;
    tx.commit().await?;
    Ok(axum::Json(view).into_response())
}

async fn user_view(conn: &mut Conn, user: &User, timeouts: Timeouts, now: i64) -> Result<UserLookup, sqlx::Error> {
    let history = crate::payments::wallet::history(conn, user.wallet_account_id, None, 20).await?;
    let activity: Vec<Activity> = history
        .iter()
        .map(|l| Activity {
            id: l.entry_id,
            kind: l.kind.clone(),
            amount: l.amount,
            balance_after: l.balance_after,
            counterparty: l.counterparty.clone(),
            created_at: clock::rfc3339_ms(l.created_at),
        })
        .collect();
    Ok(UserLookup {
        user_id: user.id.clone(),
        phone: user.phone.clone(),
        email: user.email.clone(),
        created_at: clock::rfc3339_ms(user.created_at),
        cooling_off_until: (user.cooling_off_until > now).then(|| clock::rfc3339_ms(user.cooling_off_until)),
        balance: activity.first().map_or(0, |a| a.balance_after),
        freeze: crate::risk::switches::freeze_state(conn, &user.id).await?,
        sessions: session::list(conn, &user.id, None, timeouts, now).await?,
        devices: session::devices(conn, &user.id).await?,
        cards: crate::payments::cards::list(conn, &user.id).await?,
        activity,
    })
}
