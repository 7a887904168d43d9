//! Operator routes of settlement and payouts (API.md "Settlement and payouts"): a merchant's fee
//! rate, a settled day's Zengin file, and its four-eyes payout confirmation.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::payouts::{self, Confirmation};
use super::zengin::{DEMO_ORIGINATOR, Originator};
use crate::http::auth::{OperatorRole, RequireRole};
use crate::http::error::{ApiError, AuthErrors, JsonBodyErrors, NotFound404, Problem};
use crate::http::extract::{ApiJson, PathId};
use crate::ids::MerchantId;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(set_fee)).routes(routes!(zengin_file)).routes(routes!(confirm_payouts))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FeeBody {
    /// The fee rate in basis points, 0 to 10000 (198 = 1.98 %).
    #[schema(minimum = 0, maximum = 10000, example = 198)]
    fee_bps: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct FeeSet {
    merchant_id: MerchantId,
    fee_bps: i64,
}

/// Sets a merchant's fee rate (operator role; audited). It applies from the next close.
#[utoipa::path(put, path = "/v1/admin/merchants/{merchant_id}", tag = "operator", request_body = FeeBody,
    params(("merchant_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = FeeSet, description = "Set"),
    AuthErrors, JsonBodyErrors, NotFound404,
    (status = 422, description = "`invalid_body`: `fee_bps` is not from 0 to 10000", body = Problem, content_type = "application/problem+json")))]
async fn set_fee(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(merchant): PathId<MerchantId>,
    body: ApiJson<FeeBody>,
) -> Result<Response, ApiError> {
    let bps = body.value.fee_bps;
    payouts::set_fee_bps(&state.db, &merchant, bps, &op.actor(), state.clock.now_ms()).await?;
    Ok(axum::Json(FeeSet { merchant_id: merchant, fee_bps: bps }).into_response())
}

fn originator(state: &AppState) -> Result<Originator, ApiError> {
    let configured = state.config.payout_originator.as_deref();
    let value = configured
        .or(state.config.sandbox.then_some(DEMO_ORIGINATOR))
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("OMAMORI_PAYOUT_ORIGINATOR is not configured")))?;
    Originator::parse(value).map_err(|e| ApiError::internal(anyhow::anyhow!("OMAMORI_PAYOUT_ORIGINATOR: {e}")))
}

/// The Zengin (全銀協) general transfer file (種別コード 21) of a settled day: 120-byte records of
/// JIS X 0201 each followed by CR LF; one data record per settlement with `net > 0` whose merchant
/// had a bank account in effect when the day ended. The transfer date is the next day.
#[utoipa::path(get, path = "/v1/admin/payouts/{date}/zengin", tag = "operator",
    params(("date" = String, Path, description = "YYYY-MM-DD, Asia/Tokyo")), security(("bearer" = [])), responses(
    (status = 200, body = String, content_type = "text/plain", description = "The file, bytes of JIS X 0201 (Shift_JIS compatible)"),
    AuthErrors,
    (status = 409, description = "`day_not_settled`: the day is not closed yet", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`invalid_body`: the date is not YYYY-MM-DD", body = Problem, content_type = "application/problem+json")))]
async fn zengin_file(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    Path(date): Path<String>,
) -> Result<Response, ApiError> {
    let originator = originator(&state)?;
    let bytes = payouts::zengin_file(&state.db, &originator, &date).await?;
    // The file names every payee's bank account: who took it, and when, is on the audit chain.
    let mut conn = state.db.pool().acquire().await?;
    let detail = serde_json::json!({"date": date, "bytes": bytes.len()});
    crate::audit::append(&mut conn, &op.actor(), "payouts.zengin_download", &date, &detail, state.clock.now_ms())
        .await?;
    let disposition = format!("attachment; filename=\"zengin-{date}.txt\"");
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=Shift_JIS".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    /// 1 to 500 characters (after trimming).
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    reason: String,
}

/// Asks for (`202`), or from a second, different operator confirms (`200`), a settled day's
/// payouts: the settlements in its Zengin file become `paid`.
#[utoipa::path(post, path = "/v1/admin/payouts/{date}/confirm", tag = "operator", request_body = ReasonBody,
    params(("date" = String, Path, description = "YYYY-MM-DD, Asia/Tokyo")), security(("bearer" = [])), responses(
    (status = 202, body = Confirmation, description = "Asked for; waiting for a second operator"),
    (status = 200, body = Confirmation, description = "Confirmed: the day's payouts are paid"),
    AuthErrors, JsonBodyErrors,
    (status = 409, description = "`second_operator_required`: the operator who asked cannot confirm; `day_not_settled`", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`invalid_body`: the date is not YYYY-MM-DD, or the reason is empty or too long", body = Problem, content_type = "application/problem+json")))]
async fn confirm_payouts(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    Path(date): Path<String>,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let reason = body.value.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::invalid_body("reason must be 1 to 500 characters"));
    }
    let outcome = payouts::confirm(&state.db, &date, &op.actor(), reason, state.clock.now_ms()).await?;
    let status = if outcome.confirmed { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, axum::Json(outcome)).into_response())
}
