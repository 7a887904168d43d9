//! Stripe's events (`POST /v1/processor/stripe/events`), signed with `Stripe-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` under the endpoint secret
//! (`OMAMORI_STRIPE_WEBHOOK_SECRET`). The signature is checked in constant time before anything
//! else is read, and a timestamp more than 300 seconds from this server's clock (Stripe's default
//! tolerance) is refused as a replay. A correctly signed event always answers 2xx, even when it is
//! of no use here (it is logged and ignored), so that Stripe stops sending it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::processor_events::{self, Handled};
use crate::http::error::{ApiError, Problem};
use crate::state::AppState;

pub const SIGNATURE_HEADER: &str = "Stripe-Signature";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stripe_event)).routes(routes!(processor_config))
}

/// How the wallet collects a card: with the sandbox, its own form (`number`...); with Stripe,
/// Stripe.js from `js_url` with `publishable_key`, sending the PaymentMethod id as `processor_token`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct ProcessorConfig {
    /// `sandbox`, `stripe`, or null when no processor is configured.
    processor: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publishable_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    js_url: Option<String>,
}

/// The card processor the wallet talks to (public: nothing here is a secret).
#[utoipa::path(get, path = "/v1/processor/config", tag = "processor", responses(
    (status = 200, body = ProcessorConfig, description = "The processor, and for Stripe what Stripe.js needs")))]
async fn processor_config(State(state): State<AppState>) -> axum::Json<ProcessorConfig> {
    use crate::config::ProcessorKind;
    let stripe = &state.config.stripe;
    axum::Json(match state.config.processor_kind() {
        Some(ProcessorKind::Stripe) => ProcessorConfig {
            processor: Some("stripe"),
            publishable_key: stripe.publishable_key.clone(),
            js_url: Some(stripe.js_url.clone()),
        },
        Some(ProcessorKind::Sandbox) => {
            ProcessorConfig { processor: Some("sandbox"), publishable_key: None, js_url: None }
        }
        None => ProcessorConfig { processor: None, publishable_key: None, js_url: None },
    })
}

/// The part of a Stripe event Omamori reads.
#[derive(Deserialize, utoipa::ToSchema)]
struct StripeEvent {
    /// `evt_...`
    #[schema(max_length = 255)]
    id: String,
    /// `payment_intent.succeeded`, `payment_intent.payment_failed`, `charge.refunded`,
    /// `charge.dispute.created` (others are acknowledged and ignored)
    #[serde(rename = "type")]
    kind: String,
    data: StripeEventData,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct StripeEventData {
    #[schema(value_type = Object)]
    object: serde_json::Value,
}

/// An event from Stripe (signed; see the module notes).
#[utoipa::path(post, path = "/v1/processor/stripe/events", tag = "processor", request_body = StripeEvent,
    params(("Stripe-Signature" = String, Header,
        description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`, keyed with the endpoint secret; at most 300 seconds old")),
    responses(
    (status = 200, body = Handled, description = "Received: `settled`, `charged_back`, `ignored` (of no use here) or `duplicate`"),
    (status = 400, description = "`malformed_json`: the signed body is not a Stripe event", body = Problem, content_type = "application/problem+json"),
    (status = 401, description = "`invalid_signature`: the signature is missing, wrong or stale", body = Problem, content_type = "application/problem+json"),
    (status = 404, description = "`not_found`: Stripe's webhook is not configured", body = Problem, content_type = "application/problem+json"),
    (status = 413, description = "`payload_too_large`: the body is over 64 KiB", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`invalid_body`: the event id is empty or too long", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "`unavailable`: the database did not answer; Stripe retries", body = Problem, content_type = "application/problem+json")))]
async fn stripe_event(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let Some(secret) = &state.config.stripe.webhook_secret else {
        return Err(ApiError::not_found("Stripe's webhook is not configured"));
    };
    let text = std::str::from_utf8(&body).unwrap_or_default();
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let now_secs = time::OffsetDateTime::now_utc().unix_timestamp();
    if !crate::notify::webhooks::verify(secret.expose(), signature, text, now_secs) {
        tracing::warn!("a Stripe event with a missing, wrong or stale signature was refused");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "the Stripe-Signature header does not sign this body with a current timestamp",
        ));
    }
    let event: StripeEvent = serde_json::from_str(text)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "the body is not a Stripe event"))?;
    if event.id.is_empty() || event.id.len() > 255 {
        return Err(ApiError::invalid_body("id must be 1 to 255 characters"));
    }
    let event = processor_events::Event { id: &event.id, kind: &event.kind, object: &event.data.object };
    Ok(axum::Json(processor_events::handle(&state, &event).await?).into_response())
}
