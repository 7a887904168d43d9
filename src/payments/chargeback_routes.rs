//! The card processor's signed chargeback report (ARCHITECTURE section 6).
//!
//! The processor posts `{event_id, charge_ref, reason?}` with `Processor-Signature: t=<unix
//! seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, keyed with `processor_webhook_secret`; the
//! signature is checked in constant time before anything else, and a timestamp more than five
//! minutes off is refused (a replay). The chargeback happens once per top-up: a repeat of the
//! report answers `200` with `already_charged_back`, so that the processor stops retrying.

use crate::ids::EventId;
use crate::ids::TopupId;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::corrections::Reversed as Chargeback;
use crate::http::error::{ApiError, Invalid422, Problem};
use crate::state::AppState;

pub const SIGNATURE_HEADER: &str = "Processor-Signature";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(processor_chargeback))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ChargebackReport {
    /// The processor's id of this report (logged; repeats are harmless).
    event_id: EventId,
    /// The processor's reference of the disputed charge (a top-up's `processor_ref`).
    #[schema(min_length = 1, max_length = 128)]
    charge_ref: String,
    #[allow(dead_code)]
    reason: Option<String>,
}

/// A chargeback reported by the card processor (signed; see the module notes).
#[utoipa::path(post, path = "/v1/processor/chargebacks", tag = "processor", request_body = ChargebackReport,
    params(("Processor-Signature" = String, Header,
        description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`, keyed with the processor webhook secret; at most five minutes old")),
    responses(
    (status = 200, body = Chargeback, description = "Charged back, or (a repeated report) `already_charged_back`"),
    (status = 400, description = "`malformed_json`: the signed body is not JSON", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "`invalid_signature`: the signature is missing, wrong or stale", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "`not_found`: no top-up has this `charge_ref`, or no processor webhook is configured", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "`not_reversible`: the top-up did not succeed", body = Problem, content_type = "application/problem+json"),
    (status = 413, description = "`payload_too_large`: the body is over 64 KiB", body = Problem, content_type = "application/problem+json"),
    Invalid422))]
async fn processor_chargeback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(secret) = &state.config.processor_webhook_secret else {
        return Err(ApiError::not_found("no processor webhook is configured"));
    };
    let text = std::str::from_utf8(&body).unwrap_or_default();
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let now_secs = time::OffsetDateTime::now_utc().unix_timestamp();
    if !crate::notify::webhooks::verify(secret.expose(), signature, text, now_secs) {
        tracing::warn!("a chargeback report with a missing, wrong or stale signature was refused");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "the Processor-Signature header does not sign this body with a current timestamp",
        ));
    }
    let raw: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "the body is not valid JSON"))?;
    let report: ChargebackReport = crate::http::extract::parse_value(&raw)?;
    let charge_ref = report.charge_ref.trim();
    if charge_ref.is_empty() || charge_ref.len() > 128 {
        return Err(ApiError::invalid_body("charge_ref must be 1 to 128 characters"));
    }
    let topup: Option<TopupId> = sqlx::query_scalar("SELECT id FROM topups WHERE processor_ref = $1")
        .bind(charge_ref)
        .fetch_optional(state.db.pool())
        .await?;
    let Some(topup) = topup else { return Err(ApiError::not_found("there is no top-up with this charge_ref")) };
    tracing::info!(event_id = %report.event_id.as_str().chars().take(64).collect::<String>(), topup = %topup, "chargeback reported");
    match super::corrections::chargeback(&state.db, &topup, state.clock.now_ms()).await {
        Ok(v) => Ok(axum::Json(v).into_response()),
        Err(crate::payments::PaymentsError::AlreadyChargedBack) => {
            let repeated = Chargeback {
                payment_id: None,
                topup_id: Some(topup),
                status: "already_charged_back".into(),
                from_wallet: None,
                to_losses: None,
            };
            Ok(axum::Json(repeated).into_response())
        }
        Err(e) => Err(e.into()),
    }
}
