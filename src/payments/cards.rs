//! Linking cards (ARCHITECTURE section 6): step-up first; the issuer's challenge when it asks for
//! one; only the token, brand, last four digits and a keyed fingerprint are kept. A fingerprint
//! belongs to one wallet for good. Failed checks are limited per card (3 a day across all
//! wallets) and per wallet (5 a day); a wallet holds at most 5 cards and adds at most 2 a day;
//! nothing is linked during cooling-off.

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

use crate::http::error::ApiError;
use crate::identity::session::UserSession;
use crate::identity::{self, challenge, recovery};
use crate::ids::new_id;
use crate::ports::processor::{self, CardInfo, ProcessorError, RawCard};
use crate::risk::client::ClientInfo;
use crate::risk::{rules, switches, throttle};
use crate::state::AppState;
use crate::store::{self, Conn};

pub const MAX_CARDS: i64 = 5;
pub const NEW_CARDS_PER_DAY: i64 = 2;
pub const FAILED_CHECKS_PER_CARD: i64 = 3;
pub const FAILED_CHECKS_PER_WALLET: i64 = 5;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// What the shopper submitted: a raw card (sandbox, PCI scope) or a processor token.
pub enum CardInput {
    Raw(RawCard),
    Token(String),
}

fn declined() -> ApiError {
    ApiError::new(StatusCode::PAYMENT_REQUIRED, "card_declined", "the card was declined")
}

pub fn view(id: &str, brand: &str, last4: &str, status: &str) -> Value {
    json!({"card_id": id, "brand": brand, "last4": last4, "status": status})
}

/// `POST /v1/cards`.
pub async fn link(
    state: &AppState,
    session: &UserSession,
    client: &ClientInfo,
    input: CardInput,
) -> Result<(StatusCode, Value), ApiError> {
    let processor = state.processor.clone().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no card processor is configured")
    })?;
    let key = state
        .config
        .keys
        .card_fingerprint
        .clone()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no fingerprint key")))?;
    {
        let mut conn = state.db.pool().acquire().await?;
        let subject = switches::Subject {
            user_id: Some(session.user_id()),
            country: client.country.as_deref(),
            ..Default::default()
        };
        switches::check(&mut conn, crate::ids::SwitchName::CardLinking, subject).await?;
    }
    recovery::require_step_up(state, session, client).await?;
    let now = state.clock.now_ms();
    let user = {
        let mut conn = state.db.pool().acquire().await?;
        identity::user_by_id(&mut conn, session.user_id()).await?.ok_or_else(crate::http::error::unauthenticated)?
    };
    identity::ensure_not_cooling_off(&user, now)?;
    // A raw number can be fingerprinted before the processor is asked.
    let raw_fingerprint = match &input {
        CardInput::Raw(card) if processor::luhn_valid(card.number.expose()) => {
            Some(processor::fingerprint(&key, &format!("pan:{}", card.number.expose())))
        }
        _ => None,
    };
    // The checks, and the attempt counted as a failure until the processor says otherwise, in
    // one transaction under the wallet's (and the card's) lock: parallel attempts meet the
    // limits as surely as sequential ones.
    let provisional: Vec<i64> = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("cards", &user.id).await?;
        if let Some(fp) = &raw_fingerprint {
            tx.lock("card", fp).await?;
        }
        if throttle::window(&mut tx, "card_fail_wallet", &user.id, now - DAY_MS).await?.0 >= FAILED_CHECKS_PER_WALLET {
            tx.commit().await?;
            return Ok::<_, ApiError>(Err(throttle::too_many(DAY_MS).into()));
        }
        if let Some(fp) = &raw_fingerprint
            && throttle::window(&mut tx, "card_fail_card", fp, now - DAY_MS).await?.0 >= FAILED_CHECKS_PER_CARD
        {
            tx.commit().await?;
            return Ok(Err(throttle::too_many(DAY_MS).into()));
        }
        if let Err(e) = card_counts(&mut tx, &user.id, now).await? {
            return Ok(Err(e));
        }
        let mut events = vec![throttle::record(&mut tx, "card_fail_wallet", &user.id, now).await?];
        if let Some(fp) = &raw_fingerprint {
            events.push(throttle::record(&mut tx, "card_fail_card", fp, now).await?);
        }
        tx.commit().await?;
        Ok(Ok(events))
    })
    .await??;
    let checked = match &input {
        CardInput::Raw(card) => processor.tokenize(card).await,
        CardInput::Token(token) => processor.lookup(token).await,
    };
    // A card that fails its check counts against the wallet (and, when the processor could name
    // the card, against the card on every wallet): card testing meets a wall quickly.
    let info: CardInfo = match checked {
        Ok(info) => info,
        Err(e) => {
            // The provisional failure stands.
            store::retry(|| async {
                let mut tx = state.db.begin().await?;
                crate::risk::alerts::evaluate(
                    &mut tx,
                    &crate::risk::alerts::Thresholds::from_config(&state.config),
                    now,
                )
                .await?;
                tx.commit().await
            })
            .await?;
            return Err(match e {
                ProcessorError::InvalidCard => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_card", "the card details are not valid")
                }
                ProcessorError::Declined => declined(),
                ProcessorError::Unavailable => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the card processor is unavailable; try again",
                ),
            });
        }
    };
    let fingerprint = processor::fingerprint(&key, info.fingerprint_source.expose());
    let card_id = new_id("crd");
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("cards", &user.id).await?;
        tx.lock("card", &fingerprint).await?;
        // A switch on this very card (by id, covering its fingerprint on every wallet).
        let subject = switches::Subject { card_fingerprint: Some(&fingerprint), ..Default::default() };
        if let Err(e) = switches::check(&mut tx, crate::ids::SwitchName::CardLinking, subject).await {
            return Ok::<_, ApiError>(Err(e.into()));
        }
        // The check passed: it was not a failure.
        crate::risk::throttle::unrecord(&mut tx, &provisional).await?;
        if let Err(e) = card_counts(&mut tx, &user.id, now).await? {
            tx.commit().await?;
            return Ok::<_, ApiError>(Err(e));
        }
        let owner: Option<String> = sqlx::query_scalar("SELECT user_id FROM card_fingerprints WHERE fingerprint = $1")
            .bind(&fingerprint)
            .fetch_optional(&mut *tx)
            .await?;
        match owner {
            Some(owner) if owner != user.id => {
                return Ok(Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "card_not_allowed",
                    "this card cannot be added to this wallet",
                )));
            }
            Some(_) => {
                let active: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM cards WHERE user_id = $1 AND fingerprint = $2 AND status <> 'removed'",
                )
                .bind(&user.id)
                .bind(&fingerprint)
                .fetch_one(&mut *tx)
                .await?;
                if active > 0 {
                    return Ok(Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "card_already_linked",
                        "this card is already in your wallet",
                    )));
                }
            }
            None => {
                sqlx::query("INSERT INTO card_fingerprints (fingerprint, user_id, created_at) VALUES ($1, $2, $3)")
                    .bind(&fingerprint)
                    .bind(&user.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // The risk rules: a hold keeps the card unusable until an operator decides.
        let signals = rules::signals(
            &mut tx,
            "card_link",
            &user.id,
            session.device_id(),
            0,
            None,
            client.country.as_deref(),
            now,
        )
        .await?;
        let (outcome, rule) = rules::evaluate(&mut tx, "card_link", &signals).await?;
        if outcome == rules::Outcome::Decline {
            // Nothing of the link is kept, but the decline counts for the risk_declines detector.
            tx.rollback().await?;
            let mut counted = state.db.begin().await?;
            crate::risk::alerts::record_risk_decline(&mut counted, &user.id, now).await?;
            counted.commit().await?;
            return Ok(Err(ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "risk_declined",
                "this card cannot be added for now",
            )));
        }
        let held = matches!(outcome, rules::Outcome::Hold | rules::Outcome::StepUp);
        let status = if held {
            "held"
        } else if info.needs_challenge {
            "pending_challenge"
        } else {
            "active"
        };
        sqlx::query(
            "INSERT INTO cards (id, user_id, processor_token, brand, last4, fingerprint, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&card_id)
        .bind(&user.id)
        .bind(&info.token)
        .bind(&info.brand)
        .bind(&info.last4)
        .bind(&fingerprint)
        .bind(status)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let answer = if held {
            let detail = rules::ReviewDetail {
                card_id: Some(card_id.clone()),
                last4: Some(info.last4.clone()),
                ..Default::default()
            };
            let review =
                rules::open_review(&mut tx, "card", Some(&card_id), &user.id, &rule.unwrap_or_default(), &detail, now)
                    .await?;
            (StatusCode::ACCEPTED, json!({"card_id": card_id, "status": "held", "review_id": review}))
        } else if info.needs_challenge {
            // The issuer's challenge: in the sandbox, a code by SMS to the wallet's phone.
            let c = challenge::NewChallenge {
                purpose: challenge::Purpose::Card,
                user_id: Some(&user.id),
                operator_id: None,
                session_id: Some(session.session_id()),
                device_id: Some(session.device_id()),
                subject_id: Some(&card_id),
                methods: &["sms"],
                client,
            };
            let created = challenge::create(&mut tx, &c, now).await?;
            sqlx::query("UPDATE cards SET challenge_id = $1 WHERE id = $2")
                .bind(&created.challenge_id)
                .bind(&card_id)
                .execute(&mut *tx)
                .await?;
            (
                StatusCode::ACCEPTED,
                json!({"card_id": card_id, "status": "pending_challenge", "challenge_id": created.challenge_id}),
            )
        } else {
            identity::notify_all(
                &mut tx,
                &user,
                "card_linked",
                &format!("A card ending {} was added to your wallet.", info.last4),
                now,
            )
            .await?;
            (StatusCode::CREATED, view(&card_id, &info.brand, &info.last4, "active"))
        };
        tx.commit().await?;
        Ok(Ok(answer))
    })
    .await?
}

/// At most 5 cards in a wallet and 2 new ones a day.
async fn card_counts(conn: &mut Conn, user_id: &str, now: i64) -> Result<Result<(), ApiError>, sqlx::Error> {
    let cards: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cards WHERE user_id = $1 AND status <> 'removed'")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    if cards >= MAX_CARDS {
        return Ok(Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "card_limit_reached",
            "a wallet holds at most 5 cards",
        )));
    }
    let recent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cards WHERE user_id = $1 AND created_at > $2")
        .bind(user_id)
        .bind(now - DAY_MS)
        .fetch_one(&mut *conn)
        .await?;
    if recent >= NEW_CARDS_PER_DAY {
        return Ok(Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "card_limit_reached",
            "at most 2 new cards a day",
        )));
    }
    Ok(Ok(()))
}

/// Completes a card whose issuer challenge was verified (called inside the challenge's transaction);
/// `None` when no such card of the user waits for a challenge.
pub async fn activate(
    conn: &mut Conn,
    user: &identity::User,
    card_id: &str,
    now: i64,
) -> Result<Option<Value>, sqlx::Error> {
    let row =
        sqlx::query("SELECT brand, last4 FROM cards WHERE id = $1 AND user_id = $2 AND status = 'pending_challenge'")
            .bind(card_id)
            .bind(&user.id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let (brand, last4): (String, String) = (row.try_get("brand")?, row.try_get("last4")?);
    sqlx::query("UPDATE cards SET status = 'active' WHERE id = $1").bind(card_id).execute(&mut *conn).await?;
    identity::notify_all(conn, user, "card_linked", &format!("A card ending {last4} was added to your wallet."), now)
        .await?;
    Ok(Some(view(card_id, &brand, &last4, "active")))
}

/// An operator's decision on a held card: approved, it becomes usable; rejected, it is removed.
pub async fn decide_held(conn: &mut Conn, card_id: &str, approve: bool) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE cards SET status = $1 WHERE id = $2 AND status = 'held'")
        .bind(if approve { "active" } else { "removed" })
        .bind(card_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Completes card challenges for identity's `challenge::verify`.
pub struct CardChallengeHook;

impl challenge::CardChallenges for CardChallengeHook {
    type Card = Value;

    fn activate<'a>(
        &'a self,
        conn: &'a mut Conn,
        user: &'a identity::User,
        card_id: &'a str,
        now: i64,
    ) -> crate::ports::BoxFuture<'a, Result<Option<Value>, sqlx::Error>> {
        Box::pin(activate(conn, user, card_id, now))
    }
}

/// `GET /v1/cards`.
pub async fn list(conn: &mut Conn, user_id: &str) -> Result<Vec<Value>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, brand, last4, status FROM cards WHERE user_id = $1 AND status <> 'removed' ORDER BY created_at DESC, id DESC",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(view(
                &r.try_get::<String, _>("id")?,
                &r.try_get::<String, _>("brand")?,
                &r.try_get::<String, _>("last4")?,
                &r.try_get::<String, _>("status")?,
            ))
        })
        .collect()
}

/// `DELETE /v1/cards/{id}`.
pub async fn remove(state: &AppState, user_id: &str, card_id: &str) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    let n = store::write_one(&state.db, || {
        sqlx::query("UPDATE cards SET status = 'removed', removed_at = $1 WHERE id = $2 AND user_id = $3 AND status <> 'removed'")
            .bind(now)
            .bind(card_id)
            .bind(user_id)
    })
    .await?;
    if n == 0 {
        return Err(ApiError::not_found("there is no such card"));
    }
    Ok(())
}
