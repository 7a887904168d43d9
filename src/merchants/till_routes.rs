//! Pairing a browser till (`/pos`) with its terminal. The cashier types the terminal key once;
//! `POST /v1/pos/pair` checks it and answers it back only as an `HttpOnly`, `SameSite=Strict`
//! cookie sent to `/v1/pos` alone (`http::cookies::terminal_cookie`), so page script never keeps
//! it, and every POS route (`http::auth::TerminalAuth`) takes that cookie as it takes the bearer
//! key. `POST /v1/pos/unpair` clears the cookie. A pairing must come from this server's own page
//! (a same-origin `Origin`), so another site cannot pair a till to a terminal of its choosing.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::auth::{TerminalAuth, unauthenticated};
use crate::http::cookies;
use crate::http::error::{ApiError, AuthErrors, Invalid422, JsonBodyErrors, Problem};
use crate::http::extract::ApiJson;
use crate::ids::{MerchantId, StoreId, TerminalId};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(pair)).routes(routes!(unpair)).routes(routes!(paired))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PairBody {
    /// The terminal's key (`tk_...`), as `POST /v1/admin/stores/{store_id}/terminals` showed it once.
    #[schema(max_length = 100, example = "tk_...")]
    key: String,
}

/// The terminal a till is paired with, and its store.
#[derive(Serialize, utoipa::ToSchema)]
struct PairedTerminal {
    terminal_id: TerminalId,
    store_id: StoreId,
    store_name: String,
    merchant_id: MerchantId,
    merchant_name: String,
}

async fn terminal_view(state: &AppState, terminal: &super::Terminal) -> Result<PairedTerminal, ApiError> {
    let mut conn = state.db.pool().acquire().await?;
    let store = super::store_by_id(&mut conn, &terminal.store_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("terminal without store")))?;
    Ok(PairedTerminal {
        terminal_id: terminal.id.clone(),
        store_id: store.id,
        store_name: store.name,
        merchant_id: store.merchant_id,
        merchant_name: store.merchant_name,
    })
}

fn no_store(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Pairs this browser with a terminal: the key comes back only as the `omamori_terminal` cookie
/// (`HttpOnly`, `SameSite=Strict`, `Path=/v1/pos`); the body names the terminal and its store.
#[utoipa::path(post, path = "/v1/pos/pair", tag = "pos", request_body = PairBody, responses(
    (status = 200, body = PairedTerminal, description = "Paired: the `omamori_terminal` cookie is set"),
    JsonBodyErrors,
    (status = 401, description = "`unauthenticated`: the key is unknown or revoked", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`csrf_rejected`: the request did not come from this server's own page (a same-origin `Origin` is required)", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`invalid_body`: `key` is missing or not text", body = Problem, content_type = "application/problem+json")))]
async fn pair(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ApiJson<PairBody>,
) -> Result<Response, ApiError> {
    if !cookies::same_origin(&headers) {
        return Err(cookies::csrf_rejected());
    }
    let key = body.value.key.trim();
    let well_formed = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let mut conn = state.db.pool().acquire().await?;
    let terminal = match well_formed {
        true => super::authenticate_terminal(&mut conn, key).await?,
        false => None,
    };
    drop(conn);
    let Some(terminal) = terminal else {
        return Err(unauthenticated());
    };
    let view = terminal_view(&state, &terminal).await?;
    Ok(no_store(axum::Json(view).into_response(), cookies::terminal_cookie(&headers, Some(key))))
}

/// `POST /v1/pos/unpair` takes no fields (an empty body or `{}`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UnpairBody {}

/// Unpairs this browser: clears the `omamori_terminal` cookie (the terminal's key stays valid).
/// It needs no live key, so that a till whose key was revoked can still forget it.
#[utoipa::path(post, path = "/v1/pos/unpair", tag = "pos", request_body = Option<UnpairBody>, responses(
    (status = 204, description = "Unpaired: the cookie is cleared"),
    JsonBodyErrors, Invalid422))]
async fn unpair(headers: HeaderMap, _body: ApiJson<UnpairBody>) -> Response {
    no_store(StatusCode::NO_CONTENT.into_response(), cookies::terminal_cookie(&headers, None))
}

/// The terminal this key or paired till belongs to, and its store.
#[utoipa::path(get, path = "/v1/pos/terminal", tag = "pos", security(("bearer" = []), ("terminal" = [])),
    responses((status = 200, body = PairedTerminal, description = "The terminal"), AuthErrors))]
async fn paired(State(state): State<AppState>, t: TerminalAuth) -> Result<Response, ApiError> {
    Ok(axum::Json(terminal_view(&state, &t.0).await?).into_response())
}
