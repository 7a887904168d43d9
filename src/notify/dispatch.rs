//! The dispatcher: delivers the outbox through the configured channels, with retries.
//!
//! Two lanes run apart, so that a slow merchant endpoint never delays a sign-in code: people (SMS
//! and e-mail) and hooks (merchant webhooks and the on-call tool). Every poll a lane claims the
//! messages that are due (setting their next attempt a lease ahead, longer than a batch can take,
//! so that another instance passes them by while they are in flight), delivers up to eight at
//! once, and records each outcome; a full batch is followed at once by the next. A failure is
//! retried with exponential backoff (the configured base, doubling, at most an hour apart) until
//! `notify_max_attempts`; only a refusal of that one message (a mailbox that does not exist, a
//! request the gateway calls malformed) fails at once, while an outage or a configuration error
//! (authentication, a wrong URL) is retried. A code that could not leave within
//! [`CODE_DEADLINE_MS`] is never sent: it expired long before. A message that carried a one-time code loses the code and its text once it has left
//! through a real channel, so the outbox is not a store of live codes. Delivery runs apart from
//! requests: it can never block or undo the money movement that wrote the message.

use crate::ids::EventId;
use std::time::Duration;

use futures::StreamExt;
use lettre::AsyncTransport;
use sqlx::Row;

use crate::config::Config;
use crate::secret::Secret;
use crate::state::AppState;
use crate::store::Db;

/// How long a claimed message is left alone by other dispatchers: longer than a batch can take
/// (two rounds of [`DELIVERY_TIMEOUT`]).
const LEASE_MS: i64 = 60_000;
/// The longest a single delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Messages claimed per poll, and delivered at once.
const BATCH: i64 = 16;
const PARALLEL: usize = 8;
/// A message with a one-time code older than this is not sent (codes live 5 minutes).
pub const CODE_DEADLINE_MS: i64 = 15 * 60 * 1000;

/// The dispatcher's lanes.
#[derive(Debug, Clone, Copy)]
pub enum Lane {
    /// SMS and e-mail: codes and notices for people.
    People,
    /// Merchant webhooks and the on-call tool.
    Hooks,
}

impl Lane {
    fn channels(self) -> &'static str {
        match self {
            Lane::People => "('sms', 'email')",
            Lane::Hooks => "('webhook')",
        }
    }
}
/// The text left in place of a delivered message that carried a one-time code.
pub const REDACTED: &str = "(delivered; the one-time code in this message is no longer kept)";

/// The transports, built once from the configuration.
pub struct Channels {
    sandbox: bool,
    smtp: Option<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
    from: lettre::message::Mailbox,
    http: reqwest::Client,
    /// For merchant endpoints: in production it connects only to public addresses.
    merchant_http: reqwest::Client,
    sms: Option<(String, Option<Secret<String>>)>,
    oncall: Option<(String, Option<Secret<String>>)>,
    targets: std::sync::Arc<dyn super::webhooks::WebhookTargets>,
    retry_base_ms: i64,
    max_attempts: i64,
}

/// One due message.
struct Due {
    id: i64,
    channel: String,
    recipient: String,
    kind: String,
    subject: Option<String>,
    body: String,
    event_id: Option<EventId>,
    attempts: i64,
    has_code: bool,
    created_at: i64,
}

/// What became of one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Taken by a real channel (its name).
    Delivered(&'static str),
    /// No real channel for it, in sandbox mode: kept, code and all, for `/v1/sandbox/messages`.
    Kept,
    /// Try again later.
    Retry(String),
    /// Will never succeed (refused by the receiver, or nowhere to send it).
    Fail(String),
}

impl Channels {
    pub fn from_config(
        config: &Config,
        targets: std::sync::Arc<dyn super::webhooks::WebhookTargets>,
    ) -> anyhow::Result<Channels> {
        let n = &config.notify;
        let smtp = match &n.smtp_url {
            Some(url) => Some(
                lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url.expose())
                    // The URL may carry a password: say only which setting is wrong.
                    .map_err(|_| anyhow::anyhow!("invalid setting OMAMORI_SMTP_URL: lettre cannot use it"))?
                    .timeout(Some(Duration::from_secs(10)))
                    .build(),
            ),
            None => None,
        };
        let builder = || {
            reqwest::Client::builder()
                .timeout(DELIVERY_TIMEOUT)
                .connect_timeout(Duration::from_secs(5))
                // A receiver must answer where it was registered; a redirect could point anywhere.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("omamori/", env!("CARGO_PKG_VERSION")))
        };
        let http = builder().build()?;
        let merchant_http = if config.environment == crate::config::Environment::Production {
            builder().dns_resolver(std::sync::Arc::new(super::webhooks::PublicOnly)).build()?
        } else {
            http.clone()
        };
        Ok(Channels {
            sandbox: config.sandbox,
            smtp,
            from: n.smtp_from.parse()?,
            http,
            merchant_http,
            sms: n.sms_gateway_url.clone().map(|u| (u, n.sms_gateway_token.clone())),
            oncall: n.oncall_webhook_url.clone().map(|u| (u, n.oncall_webhook_token.clone())),
            targets,
            retry_base_ms: n.retry_base_ms as i64,
            max_attempts: n.max_attempts as i64,
        })
    }

    async fn deliver(&self, db: &Db, m: &Due, now: i64) -> Outcome {
        if m.has_code && m.created_at < now - CODE_DEADLINE_MS {
            return Outcome::Fail("its one-time code expired before it could be delivered".into());
        }
        match m.channel.as_str() {
            "email" => self.email(m).await,
            "sms" => match &self.sms {
                Some((url, token)) => {
                    let body = serde_json::json!({"to": m.recipient, "body": m.body, "kind": m.kind}).to_string();
                    post(self.http.post(url), token, body, Refusals::Malformed)
                        .await
                        .map_or_else(|o| o, |()| Outcome::Delivered("sms_gateway"))
                }
                None => self.no_channel("SMS gateway"),
            },
            "webhook" if m.recipient == ONCALL => match &self.oncall {
                Some((url, token)) => post(self.http.post(url), token, m.body.clone(), Refusals::Malformed)
                    .await
                    .map_or_else(|o| o, |()| Outcome::Delivered("oncall")),
                None => self.no_channel("on-call webhook"),
            },
            "webhook" => self.merchant_webhook(db, m).await,
            other => Outcome::Fail(format!("unknown channel {other}")),
        }
    }

    fn no_channel(&self, what: &str) -> Outcome {
        if self.sandbox { Outcome::Kept } else { Outcome::Fail(format!("no {what} is configured")) }
    }

    async fn email(&self, m: &Due) -> Outcome {
        let Some(smtp) = &self.smtp else { return self.no_channel("SMTP server") };
        let Ok(to) = m.recipient.parse::<lettre::message::Mailbox>() else {
            return Outcome::Fail("the recipient is not an e-mail address".into());
        };
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject.clone().unwrap_or_else(|| "Omamori".to_string()))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(m.body.clone());
        let message = match message {
            Ok(message) => message,
            Err(e) => return Outcome::Fail(format!("the message cannot be built: {e}")),
        };
        match smtp.send(message).await {
            Ok(_) => Outcome::Delivered("smtp"),
            // Only a refusal of this recipient is final; a 5xx for authentication or TLS is the
            // channel's configuration, retried until it is fixed.
            Err(e) if recipient_refused(&e) => {
                Outcome::Fail(format!("the SMTP server refused the recipient: {}", smtp_reason(&e)))
            }
            Err(e) => Outcome::Retry(format!("SMTP: {}", smtp_reason(&e))),
        }
    }

    async fn merchant_webhook(&self, db: &Db, m: &Due) -> Outcome {
        let target = match self.targets.target(db, &crate::ids::WebhookId::from_raw(m.recipient.as_str())).await {
            Ok(Some(target)) => target,
            Ok(None) => return Outcome::Fail("the endpoint is disabled or gone".into()),
            Err(e) => return Outcome::Retry(format!("database: {}", crate::store::describe_error(&e))),
        };
        let super::webhooks::Target { url, secret } = target;
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let request = self
            .merchant_http
            .post(&url)
            .header(super::webhooks::SIGNATURE_HEADER, super::webhooks::sign(secret.expose(), timestamp, &m.body))
            .header(super::webhooks::EVENT_ID_HEADER, m.event_id.as_ref().map_or("", EventId::as_str))
            .header("Omamori-Event-Type", &m.kind);
        // A merchant's server that refuses for a while (401 after a deploy, 404 while it moves) gets
        // every retry: its events are its books.
        post(request, &None, m.body.clone(), Refusals::None)
            .await
            .map_or_else(|o| o, |()| Outcome::Delivered("webhook"))
    }

    /// The delay before attempt `attempts + 1`: the base, doubled per attempt, at most an hour, with
    /// up to a tenth more at random so that retries after an outage do not arrive all at once.
    fn backoff_ms(&self, attempts: i64) -> i64 {
        let doubled = self.retry_base_ms.saturating_mul(1i64 << (attempts - 1).clamp(0, 20));
        let delay = doubled.min(3_600_000);
        delay + rand::random_range(0..=delay / 10)
    }
}

/// The recipient of the on-call tool's copies of operator alerts.
pub const ONCALL: &str = "oncall";

/// Which answers refuse one message for good.
#[derive(Clone, Copy)]
enum Refusals {
    /// `400` and `422`: the receiver calls this request malformed; sending it again will not help.
    Malformed,
    /// None: every failure is retried.
    None,
}

/// Posts JSON; a 2xx is delivered, a refusal of this message fails it, anything else is retried.
async fn post(
    request: reqwest::RequestBuilder,
    token: &Option<Secret<String>>,
    body: String,
    refusals: Refusals,
) -> Result<(), Outcome> {
    let mut request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token.expose());
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let s = r.status();
            let why = format!("the receiver answered {}", s.as_u16());
            let permanent = matches!(refusals, Refusals::Malformed)
                && (s == reqwest::StatusCode::BAD_REQUEST || s == reqwest::StatusCode::UNPROCESSABLE_ENTITY);
            Err(if permanent { Outcome::Fail(why) } else { Outcome::Retry(why) })
        }
        // Without the URL: it may carry a token in its query.
        Err(e) => Err(Outcome::Retry(format!("{}", e.without_url()))),
    }
}

/// Whether the server refused the recipient itself (no such mailbox, not allowed, bad address).
fn recipient_refused(e: &lettre::transport::smtp::Error) -> bool {
    e.is_permanent() && e.status().is_some_and(|code| ["550", "551", "553"].contains(&code.to_string().as_str()))
}

/// The SMTP error without anything the server echoed of the message.
fn smtp_reason(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("reply {code}"),
        None if e.is_timeout() => "timed out".into(),
        None => "connection failed".into(),
    }
}

/// Runs both lanes until the task is aborted.
pub fn spawn(state: AppState, channels: Channels) -> tokio::task::JoinHandle<()> {
    let channels = std::sync::Arc::new(channels);
    tokio::spawn(async move {
        let lanes = [Lane::People, Lane::Hooks].map(|lane| {
            let (state, channels) = (state.clone(), channels.clone());
            async move {
                let poll = Duration::from_millis(state.config.notify.poll_ms as u64);
                loop {
                    match run_once(&state, &channels, lane).await {
                        // A full batch: more may be due at once.
                        Ok(n) if n as i64 == BATCH => continue,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %crate::store::describe_error(&e), "the dispatcher could not read the outbox")
                        }
                    }
                    tokio::time::sleep(poll).await;
                }
            }
        });
        futures::future::join_all(lanes).await;
    })
}

/// Claims and delivers what is due now in `lane`; returns how many messages it attempted.
pub async fn run_once(state: &AppState, channels: &Channels, lane: Lane) -> Result<usize, sqlx::Error> {
    let now = state.clock.now_ms();
    let claim = uuid::Uuid::new_v4().simple().to_string();
    let due = crate::store::retry(|| async {
        let mut tx = state.db.begin().await?;
        // The outer condition is checked again against the row as it is when the update reaches it,
        // so two dispatchers that pick the same row claim it once.
        let claim_sql = sqlx::AssertSqlSafe(format!(
            "UPDATE outbox SET claim = $1, next_attempt_at = $2 WHERE id IN \
             (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $3 AND channel IN {channels} \
             ORDER BY next_attempt_at, id LIMIT $4) AND status = 'pending' AND next_attempt_at <= $3",
            channels = lane.channels()
        ));
        sqlx::query(claim_sql).bind(&claim).bind(now + LEASE_MS).bind(now).bind(BATCH).execute(&mut *tx).await?;
        let rows = sqlx::query(
            "SELECT id, channel, recipient, kind, subject, body, event_id, attempts, created_at, \
             CASE WHEN code IS NULL THEN 0 ELSE 1 END AS has_code FROM outbox \
             WHERE claim = $1 AND status = 'pending' ORDER BY id",
        )
        .bind(&claim)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(Due {
                    id: r.try_get("id")?,
                    channel: r.try_get("channel")?,
                    recipient: r.try_get("recipient")?,
                    kind: r.try_get("kind")?,
                    subject: r.try_get("subject")?,
                    body: r.try_get("body")?,
                    event_id: r.try_get("event_id")?,
                    attempts: r.try_get("attempts")?,
                    has_code: r.try_get::<i64, _>("has_code")? == 1,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
    })
    .await?;
    let count = due.len();
    futures::stream::iter(due)
        .for_each_concurrent(PARALLEL, |m| {
            let claim = &claim;
            async move {
                let outcome = match tokio::time::timeout(DELIVERY_TIMEOUT, channels.deliver(&state.db, &m, now)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Outcome::Retry("timed out".into()),
                };
                if let Err(e) = record(state, channels, &m, claim, &outcome).await {
                    // The lease runs out and the message is tried again: at least once, never lost.
                    tracing::warn!(id = m.id, error = %crate::store::describe_error(&e), "could not record a delivery");
                }
            }
        })
        .await;
    Ok(count)
}

async fn record(
    state: &AppState,
    channels: &Channels,
    m: &Due,
    claim: &str,
    outcome: &Outcome,
) -> Result<(), sqlx::Error> {
    let now = state.clock.now_ms();
    let attempts = m.attempts + 1;
    let retry_at = now + channels.backoff_ms(attempts);
    let label = match outcome {
        Outcome::Delivered(via) => via,
        Outcome::Kept => "sandbox",
        Outcome::Retry(_) if attempts < channels.max_attempts => "retry",
        Outcome::Retry(_) | Outcome::Fail(_) => "failed",
    };
    // Built afresh for each try of the transaction.
    let statement = || match (outcome, label) {
        (Outcome::Delivered(via), _) => sqlx::query(
            "UPDATE outbox SET status = 'delivered', delivered_at = $1, delivered_via = $2, attempts = $3, \
             last_error = NULL, claim = NULL, body = CASE WHEN code IS NULL THEN body ELSE $4 END, code = NULL \
             WHERE id = $5 AND claim = $6",
        )
        .bind(now)
        .bind(*via)
        .bind(attempts)
        .bind(REDACTED)
        .bind(m.id)
        .bind(claim),
        (Outcome::Kept, _) => sqlx::query(
            "UPDATE outbox SET status = 'delivered', delivered_at = $1, delivered_via = 'sandbox', attempts = $2, \
             claim = NULL WHERE id = $3 AND claim = $4",
        )
        .bind(now)
        .bind(attempts)
        .bind(m.id)
        .bind(claim),
        (Outcome::Retry(why), "retry") => sqlx::query(
            "UPDATE outbox SET attempts = $1, next_attempt_at = $2, last_error = $3, claim = NULL \
             WHERE id = $4 AND claim = $5",
        )
        .bind(attempts)
        .bind(retry_at)
        .bind(why.as_str())
        .bind(m.id)
        .bind(claim),
        (Outcome::Retry(why) | Outcome::Fail(why), _) => sqlx::query(
            "UPDATE outbox SET status = 'failed', attempts = $1, last_error = $2, claim = NULL, \
             body = CASE WHEN code IS NULL THEN body ELSE $3 END, code = NULL WHERE id = $4 AND claim = $5",
        )
        .bind(attempts)
        .bind(why.as_str())
        .bind(REDACTED)
        .bind(m.id)
        .bind(claim),
    };
    crate::store::write_one(&state.db, statement).await?;
    metrics::counter!("omamori_notifications_total", "channel" => m.channel.clone(), "outcome" => label).increment(1);
    match outcome {
        Outcome::Retry(why) | Outcome::Fail(why) => {
            tracing::warn!(id = m.id, channel = %m.channel, kind = %m.kind, attempts, outcome = label, why = %why, "a notification was not delivered")
        }
        _ => tracing::debug!(id = m.id, channel = %m.channel, outcome = label, "notification delivered"),
    }
    Ok(())
}
