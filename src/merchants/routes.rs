//! Operator routes that onboard merchants, stores and terminals.

use crate::http::extract::PathId;
use crate::ids::MerchantId;
use crate::ids::StoreId;
use crate::ids::TerminalId;
use crate::ids::WebhookId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::webhooks::Endpoint;
use crate::http::auth::{OperatorRole, RequireRole, Viewer};
use crate::http::error::{ApiError, AuthErrors, JsonBodyErrors, NotFound404, Problem};
use crate::http::extract::ApiJson;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_merchant))
        .routes(routes!(create_store))
        .routes(routes!(create_terminal))
        .routes(routes!(revoke_terminal))
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(disable_webhook))
}

// Display texts are as `merchants::text` takes them: something besides spaces, no control characters.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MerchantBody {
    /// 1 to 100 characters (after trimming).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// ISO 18245 merchant category code, e.g. "5411" (grocery stores).
    #[schema(pattern = "^[0-9]{4}$", example = "5411")]
    category: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MerchantCreated {
    merchant_id: MerchantId,
}

/// Creates a merchant (operator role).
#[utoipa::path(post, path = "/v1/admin/merchants", tag = "operator", request_body = MerchantBody,
    security(("bearer" = [])), responses(
    (status = 201, body = MerchantCreated, description = "Created"),
    AuthErrors, JsonBodyErrors,
    (status = 422, description = "`invalid_category`: not an ISO 18245 code; `invalid_body`", body = Problem, content_type = "application/problem+json")))]
async fn create_merchant(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    body: ApiJson<MerchantBody>,
) -> Result<Response, ApiError> {
    let id =
        super::create_merchant(&state.db, &body.value.name, &body.value.category, &op.actor(), state.clock.now_ms())
            .await?;
    Ok((StatusCode::CREATED, axum::Json(MerchantCreated { merchant_id: id })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StoreBody {
    /// 1 to 100 characters (after trimming).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// 1 to 60 characters (after trimming).
    #[schema(
        min_length = 1,
        max_length = 60,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    city: String,
    /// 1 to 10 characters (after trimming).
    #[schema(
        min_length = 1,
        max_length = 10,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    postal_code: Option<String>,
    /// Overrides the merchant's category (ISO 18245) for this store.
    #[schema(pattern = "^[0-9]{4}$", example = "5812")]
    category: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct StoreCreated {
    store_id: StoreId,
    /// The store's merchant-presented QR payload (EMVCo), for `POST /v1/payments`.
    store_qr: String,
}

/// Creates a store of a merchant; answers its EMVCo QR payload.
#[utoipa::path(post, path = "/v1/admin/merchants/{merchant_id}/stores", tag = "operator", request_body = StoreBody,
    params(("merchant_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 201, body = StoreCreated, description = "Created"),
    AuthErrors, JsonBodyErrors, NotFound404,
    (status = 422, description = "`invalid_category`: not an ISO 18245 code; `invalid_body`", body = Problem, content_type = "application/problem+json")))]
async fn create_store(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(merchant): PathId<MerchantId>,
    body: ApiJson<StoreBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let store = super::NewStore {
        name: &b.name,
        city: &b.city,
        postal_code: b.postal_code.as_deref(),
        category: b.category.as_deref(),
    };
    let (store_id, qr) = super::create_store(&state.db, &merchant, store, &op.actor(), state.clock.now_ms()).await?;
    Ok((StatusCode::CREATED, axum::Json(StoreCreated { store_id, store_qr: qr })).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
struct TerminalCreated {
    terminal_id: TerminalId,
    /// The terminal's key (`tk_...`) for `Authorization: Bearer`, shown this once.
    key: String,
}

/// Issues a terminal key for a store (shown once).
#[utoipa::path(post, path = "/v1/admin/stores/{store_id}/terminals", tag = "operator",
    params(("store_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 201, body = TerminalCreated, description = "Issued"),
    AuthErrors, NotFound404))]
async fn create_terminal(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(store): PathId<StoreId>,
) -> Result<Response, ApiError> {
    let (terminal_id, key) = super::create_terminal(&state.db, &store, &op.actor(), state.clock.now_ms()).await?;
    Ok((StatusCode::CREATED, axum::Json(TerminalCreated { terminal_id, key })).into_response())
}

/// Revokes a terminal key at once.
#[utoipa::path(delete, path = "/v1/admin/terminals/{terminal_id}", tag = "operator",
    params(("terminal_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "Revoked"),
    AuthErrors,
    (status = 404, description = "`not_found`: no such terminal, or it is revoked already", body = Problem, content_type = "application/problem+json")))]
async fn revoke_terminal(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(terminal): PathId<TerminalId>,
) -> Result<Response, ApiError> {
    if !super::revoke_terminal(&state.db, &terminal, &op.actor(), state.clock.now_ms()).await? {
        return Err(ApiError::not_found("there is no such terminal, or it is revoked already"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    /// Where events are posted: an absolute URL (as the WHATWG URL parser reads it) with a host and no
    /// credentials, https (http is accepted outside production, for local receivers; production
    /// also refuses loopback and private hosts).
    #[schema(
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://",
        example = "https://shop.example/omamori-events"
    )]
    url: String,
}

/// A new endpoint, with what is shown only now.
#[derive(Serialize, utoipa::ToSchema)]
struct WebhookCreated {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// The signing secret, shown this once.
    secret: String,
    /// The event types it receives.
    #[schema(value_type = Vec<String>, example = json!(["payment.succeeded", "payment.refunded", "payment.reversed"]))]
    events: &'static [&'static str],
}

/// Registers a webhook endpoint for a merchant (operator role). The answer carries the signing
/// secret, shown this once: each delivery has `Omamori-Signature: t=<unix seconds>,v1=<hex
/// HMAC-SHA256(secret, "<t>.<body>")>` and `Omamori-Event-Id`, the same on every retry.
#[utoipa::path(post, path = "/v1/admin/merchants/{merchant_id}/webhooks", tag = "operator", request_body = WebhookBody,
    params(("merchant_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 201, body = WebhookCreated, description = "Registered"),
    AuthErrors, JsonBodyErrors, NotFound404,
    (status = 422, description = "`invalid_body`: the url is not an https URL (http outside production), or a field is wrong", body = Problem, content_type = "application/problem+json")))]
async fn create_webhook(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(merchant): PathId<MerchantId>,
    body: ApiJson<WebhookBody>,
) -> Result<Response, ApiError> {
    let production = state.config.environment == crate::config::Environment::Production;
    let url = crate::merchants::webhooks::check_url(&body.value.url, production)?;
    let key = state
        .config
        .keys
        .webhook_signing
        .as_ref()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no webhook signing key is configured")))?;
    let (endpoint, secret) =
        crate::merchants::webhooks::create(&state.db, key, &merchant, &url, &op.actor(), state.clock.now_ms()).await?;
    let answer = WebhookCreated { endpoint, secret, events: crate::merchants::webhooks::EVENTS };
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// A merchant's webhook endpoints.
#[derive(Serialize, utoipa::ToSchema)]
struct WebhookList {
    items: Vec<Endpoint>,
}

/// A merchant's webhook endpoints (without their secrets).
#[utoipa::path(get, path = "/v1/admin/merchants/{merchant_id}/webhooks", tag = "operator",
    params(("merchant_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = WebhookList, description = "Every endpoint, oldest first, disabled ones included (none for an unknown merchant)"),
    AuthErrors,
    (status = 404, description = "`not_found`: the id is not of the shape of Omamori's ids", body = Problem, content_type = "application/problem+json")))]
async fn list_webhooks(
    State(state): State<AppState>,
    _viewer: RequireRole<Viewer>,
    PathId(merchant): PathId<MerchantId>,
) -> Result<Response, ApiError> {
    let items = crate::merchants::webhooks::list(&state.db, &merchant).await?;
    Ok(axum::Json(WebhookList { items }).into_response())
}

/// Disables a webhook endpoint at once; nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/admin/webhooks/{webhook_id}", tag = "operator",
    params(("webhook_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "Disabled"),
    AuthErrors,
    (status = 404, description = "`not_found`: no such endpoint, or it is disabled already", body = Problem, content_type = "application/problem+json")))]
async fn disable_webhook(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(webhook): PathId<WebhookId>,
) -> Result<Response, ApiError> {
    if !crate::merchants::webhooks::disable(&state.db, &webhook, &op.actor(), state.clock.now_ms()).await? {
        return Err(ApiError::not_found("there is no such webhook endpoint, or it is disabled already"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
