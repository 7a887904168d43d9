//! The Stripe card processor: the [`CardProcessor`] port over Stripe's API (form-encoded `POST`s,
//! `Authorization: Bearer sk_...`), chosen by `OMAMORI_PROCESSOR=stripe`.
//!
//! - A card is a PaymentMethod (`pm_...`) that the wallet created with Stripe.js, so the number
//!   never reaches Omamori; linking reads it (brand, last four, Stripe's card fingerprint) and
//!   checks it with a SetupIntent for off-session use. A SetupIntent that `requires_action` is the
//!   issuer's 3-D Secure challenge: the wallet completes it with Stripe.js, and Omamori asks Stripe
//!   whether it passed before the card is active.
//! - A top-up is a PaymentIntent opened (not confirmed) under an `Idempotency-Key` derived from the
//!   top-up id, recorded by Omamori, then confirmed under a second derived key: a repeat, a retry
//!   or the sweeper finds that very PaymentIntent, so a crash never charges twice, even past
//!   Stripe's 24-hour idempotency window.
//! - Every call has a timeout, is retried with backoff on connection errors and 5xx answers only
//!   (each retry carries the same idempotency key), and passes a circuit breaker that answers
//!   `Unavailable` at once while Stripe is failing. Latency and errors are counted in `/metrics`.
//!
//! Nothing here contacts Stripe at start.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::StripeConfig;
use crate::ports::processor::{
    BoxFuture, CardInfo, CardProcessor, Charge, ChargeStatus, IssuerChallenge, ProcessorError, RawCard,
};
use crate::secret::Secret;

/// The API version every call pins, so that answers keep the shape read here.
const STRIPE_VERSION: &str = "2024-06-20";
/// Attempts of one call (the first and two retries).
const ATTEMPTS: u32 = 3;
/// The first retry's delay; each further one doubles.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Consecutive failed calls that open the circuit, and how long it then stays open.
const TRIP_AFTER: u32 = 3;
const OPEN_FOR: Duration = Duration::from_secs(30);

pub struct StripeProcessor {
    http: reqwest::Client,
    base: String,
    key: Secret<String>,
    breaker: Breaker,
}

/// A Stripe answer that is not a server failure: its status and JSON body.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn text(&self, field: &str) -> Option<&str> {
        self.body.get(field).and_then(Value::as_str)
    }

    /// Stripe's error code (`card_declined`, `resource_missing`, ...).
    fn error_code(&self) -> &str {
        self.body.pointer("/error/code").and_then(Value::as_str).unwrap_or_default()
    }
}

impl StripeProcessor {
    pub fn new(config: &StripeConfig) -> anyhow::Result<StripeProcessor> {
        let key = config
            .secret_key
            .clone()
            .ok_or_else(|| anyhow::anyhow!("OMAMORI_PROCESSOR=stripe requires OMAMORI_STRIPE_SECRET_KEY"))?;
        let timeout = Duration::from_millis(config.timeout_ms.into());
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .no_proxy()
            .build()?;
        Ok(StripeProcessor {
            http,
            base: config.api_base.trim_end_matches('/').to_string(),
            key,
            breaker: Breaker::default(),
        })
    }

    /// One call, through the breaker, with retries on connection errors and 5xx answers.
    async fn call(
        &self,
        op: &'static str,
        path: &str,
        form: &[(&str, &str)],
        key: Option<&str>,
    ) -> Result<Answer, ProcessorError> {
        if !self.breaker.allow() {
            metrics::counter!("omamori_processor_errors_total", "processor" => "stripe", "operation" => op, "kind" => "circuit_open")
                .increment(1);
            return Err(ProcessorError::Unavailable);
        }
        let started = Instant::now();
        let mut outcome = Err("connection");
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(BACKOFF_BASE * 2u32.pow(attempt - 1)).await;
            }
            outcome = self.attempt(path, form, key).await;
            match &outcome {
                Err(kind) => {
                    metrics::counter!("omamori_processor_errors_total", "processor" => "stripe", "operation" => op, "kind" => *kind)
                        .increment(1);
                }
                Ok(_) => break,
            }
        }
        let label = if outcome.is_ok() { "answered" } else { "failed" };
        metrics::histogram!("omamori_processor_request_duration_seconds", "processor" => "stripe", "operation" => op, "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        self.breaker.record(outcome.is_ok());
        outcome.map_err(|kind| {
            tracing::warn!(operation = op, kind, "Stripe did not answer; the call failed");
            ProcessorError::Unavailable
        })
    }

    /// One HTTP exchange: an answer, or why it is worth retrying (`connection`, `timeout`, `5xx`).
    async fn attempt(&self, path: &str, form: &[(&str, &str)], key: Option<&str>) -> Result<Answer, &'static str> {
        let url = format!("{}{path}", self.base);
        // Every POST carries an idempotency key (retries repeat it); a read carries none.
        let mut request = match key {
            Some(_) => self.http.post(url).form(form),
            None => self.http.get(url),
        };
        request = request.bearer_auth(self.key.expose()).header("Stripe-Version", STRIPE_VERSION);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(|e| if e.is_timeout() { "timeout" } else { "connection" })?;
        let status = response.status().as_u16();
        if status >= 500 {
            return Err("5xx");
        }
        let body = response.json::<Value>().await.map_err(|e| if e.is_timeout() { "timeout" } else { "bad_answer" })?;
        if status == 401 || status == 403 {
            // Our key is wrong or lacks a permission: an operator's problem, never the shopper's card.
            tracing::error!(status, "Stripe refused Omamori's secret key; check OMAMORI_STRIPE_SECRET_KEY");
            return Err("unauthorized");
        }
        Ok(Answer { status, body })
    }

    /// The card of a PaymentMethod: brand, last four and Stripe's fingerprint.
    async fn payment_method(&self, token: &str) -> Result<(String, String, String), ProcessorError> {
        if !token.starts_with("pm_")
            || token.len() > 255
            || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ProcessorError::InvalidCard);
        }
        let pm = self.call("payment_method", &format!("/v1/payment_methods/{token}"), &[], None).await?;
        let card = pm.body.get("card").filter(|_| pm.ok() && pm.text("type") == Some("card"));
        let field = |name: &str| card.and_then(|c| c.get(name)).and_then(Value::as_str).map(str::to_string);
        match (field("brand"), field("last4"), field("fingerprint")) {
            (Some(brand), Some(last4), Some(fingerprint)) => Ok((brand, last4, fingerprint)),
            _ => Err(ProcessorError::InvalidCard),
        }
    }

    /// Checks the card for later off-session charges: a SetupIntent, confirmed with the card.
    /// Answers the SetupIntent when it needs the issuer's challenge.
    async fn set_up(&self, customer: &str, token: &str) -> Result<Option<IssuerChallenge>, ProcessorError> {
        let form = [("customer", customer), ("usage", "off_session"), ("payment_method_types[]", "card")];
        let created =
            self.call("setup_intent", "/v1/setup_intents", &form, Some(&format!("omamori-setup-{token}"))).await?;
        let (Some(id), true) = (created.text("id").map(str::to_string), created.ok()) else {
            return Err(ProcessorError::InvalidCard);
        };
        let form = [("payment_method", token), ("use_stripe_sdk", "true")];
        let key = format!("omamori-setup-{id}-confirm");
        let confirmed =
            self.call("setup_intent", &format!("/v1/setup_intents/{id}/confirm"), &form, Some(&key)).await?;
        match (confirmed.status, confirmed.text("status")) {
            (200, Some("succeeded")) => Ok(None),
            (200, Some("requires_action")) => {
                let secret = confirmed.text("client_secret").ok_or(ProcessorError::InvalidCard)?;
                Ok(Some(IssuerChallenge::ThreeDSecure {
                    reference: id,
                    client_secret: Secret::new(secret.to_string()),
                }))
            }
            (402, _) => Err(ProcessorError::Declined),
            _ if confirmed.error_code() == "card_declined" => Err(ProcessorError::Declined),
            _ => Err(ProcessorError::InvalidCard),
        }
    }

    /// The customer a card is attached to (one per linked card: Stripe lets a saved card be
    /// charged off-session only through its customer).
    async fn customer(&self, token: &str) -> Result<String, ProcessorError> {
        let form = [("description", "Omamori wallet card")];
        let created = self.call("customer", "/v1/customers", &form, Some(&format!("omamori-customer-{token}"))).await?;
        created.text("id").filter(|_| created.ok()).map(str::to_string).ok_or(ProcessorError::Unavailable)
    }

    /// A PaymentIntent's state, as a top-up reads it.
    async fn intent(&self, reference: &str) -> Result<Answer, ProcessorError> {
        self.call("payment_intent", &format!("/v1/payment_intents/{reference}"), &[], None).await
    }
}

/// Omamori's token of a Stripe card: `customer/payment_method`.
fn split_token(token: &str) -> Result<(&str, &str), ProcessorError> {
    match token.split_once('/') {
        Some((customer, pm)) if customer.starts_with("cus_") && pm.starts_with("pm_") => Ok((customer, pm)),
        _ => Err(ProcessorError::InvalidCard),
    }
}

/// What a PaymentIntent's status means for a top-up.
fn intent_outcome(answer: &Answer) -> Result<ChargeStatus, ProcessorError> {
    if !answer.ok() {
        return match answer.status {
            402 => Ok(ChargeStatus::Declined),
            404 => Ok(ChargeStatus::Unknown),
            _ => Err(ProcessorError::Unavailable),
        };
    }
    let reference = answer.text("id").unwrap_or_default().to_string();
    match answer.text("status").unwrap_or_default() {
        "succeeded" => Ok(ChargeStatus::Succeeded { reference }),
        // Never confirmed: no money moved.
        "requires_confirmation" => Ok(ChargeStatus::Unknown),
        "requires_payment_method" | "canceled" => Ok(ChargeStatus::Declined),
        // `processing`, `requires_action` (the shopper's 3-D Secure), `requires_capture`.
        _ => Ok(ChargeStatus::Pending),
    }
}

impl CardProcessor for StripeProcessor {
    fn takes_raw_cards(&self) -> bool {
        false
    }

    fn tokenize<'a>(&'a self, _card: &'a RawCard) -> BoxFuture<'a, Result<CardInfo, ProcessorError>> {
        // Card numbers go from the wallet to Stripe.js, never through Omamori.
        Box::pin(async { Err(ProcessorError::InvalidCard) })
    }

    fn token_fingerprint<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret<String>>, ProcessorError>> {
        Box::pin(async move {
            let (_, _, fingerprint) = self.payment_method(token).await?;
            Ok(Some(Secret::new(format!("stripe:{fingerprint}"))))
        })
    }

    fn lookup<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<CardInfo, ProcessorError>> {
        Box::pin(async move {
            let (brand, last4, fingerprint) = self.payment_method(token).await?;
            let customer = self.customer(token).await?;
            let challenge = self.set_up(&customer, token).await?;
            Ok(CardInfo {
                token: format!("{customer}/{token}"),
                brand,
                last4,
                fingerprint_source: Secret::new(format!("stripe:{fingerprint}")),
                challenge,
            })
        })
    }

    fn challenge_passed<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<bool, ProcessorError>> {
        Box::pin(async move {
            if !reference.starts_with("seti_") {
                return Ok(false);
            }
            let si = self.call("setup_intent", &format!("/v1/setup_intents/{reference}"), &[], None).await?;
            Ok(si.ok() && si.text("status") == Some("succeeded"))
        })
    }

    fn prepare_charge<'a>(
        &'a self,
        token: &'a str,
        amount_yen: i64,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProcessorError>> {
        Box::pin(async move {
            let (customer, pm) = split_token(token)?;
            let amount = amount_yen.to_string();
            let form = [
                ("amount", amount.as_str()),
                ("currency", "jpy"),
                ("customer", customer),
                ("payment_method", pm),
                // A card only: no redirect-based method, so a server-side confirm needs no return_url.
                ("payment_method_types[]", "card"),
                ("metadata[omamori_topup]", idempotency_key),
            ];
            let key = format!("omamori-{idempotency_key}-open");
            let opened = self.call("payment_intent", "/v1/payment_intents", &form, Some(&key)).await?;
            match (opened.ok(), opened.text("id")) {
                (true, Some(id)) => Ok(Some(id.to_string())),
                _ if opened.status == 402 => Err(ProcessorError::Declined),
                _ => Err(ProcessorError::InvalidCard),
            }
        })
    }

    fn charge<'a>(&'a self, charge: &'a Charge<'a>) -> BoxFuture<'a, Result<String, ProcessorError>> {
        Box::pin(async move {
            let reference = charge.reference.ok_or(ProcessorError::InvalidCard)?;
            // Read first: a repeat must see how the intent stands now, never the replay of an
            // earlier confirmation that Stripe keeps under the same idempotency key.
            let mut answer = self.intent(reference).await?;
            if answer.text("status") == Some("requires_confirmation") {
                let key = format!("omamori-{}-confirm", charge.idempotency_key);
                let path = format!("/v1/payment_intents/{reference}/confirm");
                // On-session: the shopper is in the app, topping up.
                let confirmed = self.call("payment_intent", &path, &[], Some(&key)).await?;
                // A confirm refused (confirmed by an attempt whose answer was lost): the intent tells.
                answer =
                    if confirmed.ok() || confirmed.status == 402 { confirmed } else { self.intent(reference).await? };
            }
            if answer.text("status") == Some("requires_action") {
                let secret = answer.text("client_secret").ok_or(ProcessorError::Unavailable)?;
                return Err(ProcessorError::AuthenticationRequired(Secret::new(secret.to_string())));
            }
            match intent_outcome(&answer)? {
                ChargeStatus::Succeeded { reference } => Ok(reference),
                ChargeStatus::Declined => Err(ProcessorError::Declined),
                ChargeStatus::Unknown | ChargeStatus::Pending => Err(ProcessorError::Unavailable),
            }
        })
    }

    fn cancel_charge<'a>(&'a self, charge: &'a Charge<'a>) -> BoxFuture<'a, Result<(), ProcessorError>> {
        Box::pin(async move {
            let Some(reference) = charge.reference else { return Ok(()) };
            let path = format!("/v1/payment_intents/{reference}/cancel");
            let key = format!("omamori-{}-cancel", charge.idempotency_key);
            let cancelled = self.call("payment_intent", &path, &[], Some(&key)).await?;
            let now = if cancelled.ok() { cancelled } else { self.intent(reference).await? };
            match now.text("status") {
                Some("canceled") => Ok(()),
                _ => Err(ProcessorError::Unavailable),
            }
        })
    }

    fn charge_status<'a>(&'a self, charge: &'a Charge<'a>) -> BoxFuture<'a, Result<ChargeStatus, ProcessorError>> {
        Box::pin(async move {
            // Without a recorded intent, nothing was ever confirmed.
            let Some(reference) = charge.reference else { return Ok(ChargeStatus::Unknown) };
            intent_outcome(&self.intent(reference).await?)
        })
    }
}

/// The circuit breaker: after [`TRIP_AFTER`] consecutive failed calls it opens for [`OPEN_FOR`],
/// answering at once; then one call at a time probes, and a success closes it. Per instance (each
/// learns on its own that Stripe is down, within a few calls).
#[derive(Default)]
struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    fn allow(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.failures < TRIP_AFTER {
            return true;
        }
        let now = Instant::now();
        match s.open_until {
            Some(until) if now < until => false,
            // Half-open: this call probes, the others keep failing fast until it answers.
            _ => {
                s.open_until = Some(now + OPEN_FOR);
                true
            }
        }
    }

    fn record(&self, ok: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            *s = BreakerState::default();
        } else {
            s.failures = s.failures.saturating_add(1);
            if s.failures >= TRIP_AFTER && s.open_until.is_none_or(|u| u <= Instant::now()) {
                s.open_until = Some(Instant::now() + OPEN_FOR);
                tracing::warn!(open_secs = OPEN_FOR.as_secs(), "Stripe keeps failing: the circuit is open");
            }
        }
        metrics::gauge!("omamori_processor_circuit_open", "processor" => "stripe").set(if s.failures >= TRIP_AFTER {
            1.0
        } else {
            0.0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_failures_and_closes_on_success() {
        let b = Breaker::default();
        for _ in 0..TRIP_AFTER {
            assert!(b.allow());
            b.record(false);
        }
        assert!(!b.allow(), "open: fail fast");
        b.state.lock().unwrap().open_until = Some(Instant::now() - Duration::from_millis(1));
        assert!(b.allow(), "half-open: one probe");
        assert!(!b.allow(), "only one probe at a time");
        b.record(true);
        assert!(b.allow());
    }

    #[test]
    fn tokens_name_a_customer_and_a_card() {
        assert_eq!(split_token("cus_1/pm_2").unwrap(), ("cus_1", "pm_2"));
        assert!(split_token("pm_2").is_err());
        assert!(split_token("tok_sandbox_ok").is_err());
    }
}
