//! What the card processor reports by itself (Stripe's events, verified by the route): a charge
//! that ended settles its pending top-up (as the sweeper would, sooner); a refund made at the
//! processor or a dispute claws the top-up back through the chargeback path. Each event is kept by
//! id, so a repeat is answered at once; every handling is idempotent besides, so an event whose
//! handling failed half-way is simply handled again when the processor retries.

use serde::Serialize;

use super::PaymentsError;
use crate::ids::TopupId;
use crate::ports::processor::ChargeStatus;
use crate::state::AppState;
use crate::store;

/// An event as the processor names it.
pub struct Event<'a> {
    /// The processor's event id (`evt_...`), at most 255 characters.
    pub id: &'a str,
    pub kind: &'a str,
    /// The object the event is about (`data.object`).
    pub object: &'a serde_json::Value,
}

/// What an event did, as the route answers it (Stripe reads only the 2xx).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Handled {
    pub received: bool,
    /// `settled`, `charged_back`, `ignored` or `duplicate`.
    pub outcome: &'static str,
}

/// Handles one verified event, once.
pub async fn handle(state: &AppState, event: &Event<'_>) -> Result<Handled, PaymentsError> {
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM processor_events WHERE id = $1")
        .bind(event.id)
        .fetch_one(state.db.pool())
        .await?;
    if seen > 0 {
        return Ok(Handled { received: true, outcome: "duplicate" });
    }
    let text = |field: &str| event.object.get(field).and_then(|v| v.as_str());
    let outcome = match event.kind {
        "payment_intent.succeeded" | "payment_intent.payment_failed" => match text("id") {
            Some(intent) => settle(state, intent, event.kind == "payment_intent.succeeded").await?,
            None => "ignored",
        },
        // A refund's charge and a dispute both name the PaymentIntent that was the top-up.
        "charge.refunded" | "charge.dispute.created" => match text("payment_intent") {
            Some(intent) => claw_back(state, intent).await?,
            None => "ignored",
        },
        _ => "ignored",
    };
    tracing::info!(event = %event.id.chars().take(64).collect::<String>(), kind = %event.kind.chars().take(64).collect::<String>(), outcome, "processor event");
    let now = state.clock.now_ms();
    store::write_one(&state.db, || {
        sqlx::query(
            "INSERT INTO processor_events (id, kind, received_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
        )
        .bind(event.id)
        .bind(event.kind)
        .bind(now)
    })
    .await?;
    Ok(Handled { received: true, outcome })
}

/// A charge that ended: its pending top-up is settled (credited or declined).
async fn settle(state: &AppState, intent: &str, succeeded: bool) -> Result<&'static str, PaymentsError> {
    let outcome =
        if succeeded { ChargeStatus::Succeeded { reference: intent.to_string() } } else { ChargeStatus::Declined };
    let settled = super::topups::settle_by_reference(state, intent, outcome).await?;
    Ok(if settled.is_some() || !succeeded { "settled" } else { "ignored" })
}

/// Money that went back to the card (a refund at the processor, a dispute): the top-up it had
/// paid for is charged back, once.
async fn claw_back(state: &AppState, intent: &str) -> Result<&'static str, PaymentsError> {
    let topup: Option<TopupId> =
        sqlx::query_scalar("SELECT id FROM topups WHERE processor_ref = $1 AND status = 'succeeded'")
            .bind(intent)
            .fetch_optional(state.db.pool())
            .await?;
    let Some(topup) = topup else { return Ok("ignored") };
    match super::corrections::chargeback(&state.db, &topup, state.clock.now_ms()).await {
        Ok(_) => Ok("charged_back"),
        Err(PaymentsError::AlreadyChargedBack | PaymentsError::NotReversible(_)) => Ok("ignored"),
        Err(e) => Err(e),
    }
}
