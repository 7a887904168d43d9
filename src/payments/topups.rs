//! Top-ups: from a linked card to the wallet, in two phases (ARCHITECTURE section 6).
//!
//! The card charge happens outside the database, so a `pending` top-up row (unique per shopper
//! and `Idempotency-Key`) is committed first, the processor is charged with the top-up id as its
//! idempotency key, and then the wallet is credited from the funding-clearing account in one
//! transaction that also stores the answer. A crash in between leaves a pending row that a repeat
//! of the request, or the sweeper, settles by asking the processor: never a second charge.

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

use super::wallet;
use crate::http::error::ApiError;
use crate::idempotency::{self, Stored};
use crate::identity::session::UserSession;
use crate::identity::{self, recovery};
use crate::ids::new_id;
use crate::ledger::{self, AccountId, AccountKind, EntryKind, NewEntry};
use crate::money::{Currency, Yen};
use crate::notify::{self, Channel, Message};
use crate::ports::processor::{ChargeStatus, ProcessorError};
use crate::risk::client::ClientInfo;
use crate::risk::{rules, throttle};
use crate::state::AppState;
use crate::store::{self, Conn};

const FUNDING_OWNER: &str = "card-processor";
const TEN_MINUTES_MS: i64 = 10 * 60 * 1000;
/// A pending top-up older than this is the sweeper's to settle.
pub const SWEEP_AFTER_MS: i64 = 2 * 60 * 1000;
/// A pending top-up the processor never heard of is abandoned after this long.
pub const ABANDON_AFTER_MS: i64 = 60 * 60 * 1000;

/// The account card money arrives through (created on first use).
pub async fn funding_account(conn: &mut Conn, now: i64) -> Result<AccountId, sqlx::Error> {
    if let Some(a) = ledger::account_by_owner(conn, AccountKind::FundingClearing, FUNDING_OWNER).await? {
        return Ok(a.id);
    }
    ledger::create_account(conn, AccountKind::FundingClearing, Currency::Jpy, Some(FUNDING_OWNER), now).await
}

/// `POST /v1/topups` under a claimed `Idempotency-Key`: the answer is stored with the money (the
/// caller stores a decline found before any row was written, and releases the key on any other
/// error).
pub async fn run(
    state: &AppState,
    session: &UserSession,
    client: &ClientInfo,
    idem_key: &str,
    card_id: &str,
    amount: &Value,
    claim: &idempotency::Claim,
) -> Result<(StatusCode, Value), ApiError> {
    {
        let mut conn = state.db.pool().acquire().await?;
        let fingerprint: Option<String> =
            sqlx::query_scalar("SELECT fingerprint FROM cards WHERE id = $1 AND user_id = $2")
                .bind(card_id)
                .bind(session.user_id())
                .fetch_optional(&mut *conn)
                .await?;
        let subject = crate::risk::switches::Subject {
            user_id: Some(session.user_id()),
            card_fingerprint: fingerprint.as_deref(),
            country: client.country.as_deref(),
            ..Default::default()
        };
        crate::risk::switches::check(&mut conn, crate::ids::SwitchName::Topups, subject).await?;
    }
    let amount = crate::money::parse_amount(amount, state.config.amount_ceiling_yen)
        .map_err(|e| ApiError::invalid_amount(e.to_string()))?;
    let processor = state.processor.clone().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no card processor is configured")
    })?;
    let now = state.clock.now_ms();
    let user = {
        let mut conn = state.db.pool().acquire().await?;
        identity::user_by_id(&mut conn, session.user_id()).await?.ok_or_else(crate::http::error::unauthenticated)?
    };
    // A repeat after a crash resumes the top-up it started (its own card and amount), never a
    // new one, and one that already ended answers as it ended without charging again.
    let existing = sqlx::query("SELECT id, card_id, amount, status FROM topups WHERE user_id = $1 AND idem_key = $2")
        .bind(&user.id)
        .bind(idem_key)
        .fetch_optional(state.db.pool())
        .await?;
    let topup_id = match existing {
        Some(row) => {
            let (id, row_card, row_amount, status): (String, String, i64, String) =
                (row.try_get("id")?, row.try_get("card_id")?, row.try_get("amount")?, row.try_get("status")?);
            if row_card != card_id || row_amount != amount.0 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_conflict",
                    "this Idempotency-Key was already used with a different request",
                ));
            }
            if status != "pending" {
                return settle(state, &id, ChargeStatus::Unknown, Some(claim)).await;
            }
            id
        }
        None => {
            // Step-up when large or the first top-up on this device.
            let on_device: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM topups WHERE user_id = $1 AND device_id = $2 AND status = 'succeeded'",
            )
            .bind(&user.id)
            .bind(session.device_id())
            .fetch_one(state.db.pool())
            .await?;
            if amount.0 > wallet::TOPUP_STEP_UP_ABOVE || on_device == 0 {
                recovery::require_step_up(state, session, client).await?;
            }
            let id = new_id("top");
            // The rules and the pending row in one transaction under the wallet's top-up lock,
            // so parallel requests cannot all slip under the same cap.
            let held_answer: Option<Value> = store::retry(|| async {
                let mut tx = state.db.begin().await?;
                tx.lock("topups", &user.id).await?;
                let card_ok: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cards WHERE id = $1 AND user_id = $2 AND status = 'active'")
                    .bind(card_id)
                    .bind(&user.id)
                    .fetch_one(&mut *tx)
                    .await?;
                if card_ok == 0 {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "card_not_found",
                        "there is no such active card in your wallet",
                    ));
                }
                check_rules(&mut tx, &user, amount.0, now).await?;
                // The risk rules: a hold keeps the top-up uncharged until an operator decides.
                let signals =
                    rules::signals(&mut tx, "topup", &user.id, session.device_id(), amount.0, None, client.country.as_deref(), now).await?;
                let (outcome, rule) = rules::evaluate(&mut tx, "topup", &signals).await?;
                if outcome == rules::Outcome::Decline {
                    // Counted for the risk_declines detector, although the top-up itself is refused.
                    crate::risk::alerts::record_risk_decline(&mut tx, &user.id, now).await?;
                    tx.commit().await?;
                    return Err(rules::risk_declined(None).into());
                }
                let held = matches!(outcome, rules::Outcome::Hold | rules::Outcome::StepUp);
                sqlx::query(
                    "INSERT INTO topups (id, user_id, card_id, amount, currency, status, idem_key, device_id, created_at) \
                     VALUES ($1, $2, $3, $4, 'JPY', $5, $6, $7, $8)",
                )
                .bind(&id)
                .bind(&user.id)
                .bind(card_id)
                .bind(amount.0)
                .bind(if held { "held" } else { "pending" })
                .bind(idem_key)
                .bind(session.device_id())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if held {
                    let rule = rule.unwrap_or_default();
                    let detail = rules::ReviewDetail { amount: Some(amount.0), card_id: Some(card_id.to_string()), ..Default::default() };
                    rules::open_review(&mut tx, "topup", Some(&id), &user.id, &rule, &detail, now).await?;
                    let answer = json!({"topup_id": id, "status": "held"});
                    let stored = Stored { status: 202, content_type: "application/json".into(), body: answer.to_string() };
                    idempotency::complete(&mut tx, claim, &stored).await?;
                    tx.commit().await?;
                    return Ok(Some(answer));
                }
                tx.commit().await?;
                Ok(None)
            })
            .await?;
            if let Some(held) = held_answer {
                return Ok((StatusCode::ACCEPTED, held));
            }
            id
        }
    };
    let token: String =
        sqlx::query_scalar("SELECT c.processor_token FROM topups t JOIN cards c ON c.id = t.card_id WHERE t.id = $1")
            .bind(&topup_id)
            .fetch_one(state.db.pool())
            .await?;
    let row_amount: i64 = sqlx::query_scalar("SELECT amount FROM topups WHERE id = $1")
        .bind(&topup_id)
        .fetch_one(state.db.pool())
        .await?;
    let outcome = match processor.charge(&token, row_amount, &topup_id).await {
        Ok(reference) => ChargeStatus::Succeeded { reference },
        Err(ProcessorError::Declined) | Err(ProcessorError::InvalidCard) => ChargeStatus::Declined,
        Err(ProcessorError::Unavailable) => {
            // Still pending: the sweeper or a repeat settles it.
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the card processor is unavailable; repeat the request",
            ));
        }
    };
    settle(state, &topup_id, outcome, Some(claim)).await
}

/// The limits of section 6: per top-up, per Tokyo day (¥10,000 during cooling-off), the balance
/// ceiling, and at most 2 top-ups in 10 minutes. Pending top-ups count: they may yet succeed.
async fn check_rules(conn: &mut Conn, user: &identity::User, amount: i64, now: i64) -> Result<(), ApiError> {
    let exceeded = |detail: String| ApiError::decline(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", detail);
    if amount > wallet::TOPUP_MAX {
        return Err(exceeded(format!("a top-up is at most ¥{}", wallet::TOPUP_MAX)));
    }
    let today: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM topups \
         WHERE user_id = $1 AND status IN ('pending', 'succeeded') AND created_at >= $2",
    )
    .bind(&user.id)
    .bind(wallet::tokyo_day_start(now))
    .fetch_one(&mut *conn)
    .await?;
    let daily =
        if user.cooling_off_until > now { wallet::TOPUP_DAILY_MAX_COOLING_OFF } else { wallet::TOPUP_DAILY_MAX };
    if today + amount > daily {
        return Err(exceeded(format!("top-ups are at most ¥{daily} a day")));
    }
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
        .bind(user.wallet_account_id)
        .fetch_one(&mut *conn)
        .await?;
    let pending: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM topups WHERE user_id = $1 AND status = 'pending'",
    )
    .bind(&user.id)
    .fetch_one(&mut *conn)
    .await?;
    if balance + pending + amount > wallet::BALANCE_MAX {
        return Err(exceeded(format!("a wallet holds at most ¥{}", wallet::BALANCE_MAX)));
    }
    let recent: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM topups WHERE user_id = $1 AND status IN ('pending', 'succeeded') AND created_at > $2",
    )
    .bind(&user.id)
    .bind(now - TEN_MINUTES_MS)
    .fetch_one(&mut *conn)
    .await?;
    if recent >= wallet::TOPUPS_PER_10_MIN {
        // Not final: after Retry-After the same request may go through.
        return Err(throttle::too_many(TEN_MINUTES_MS).into());
    }
    Ok(())
}

/// Applies a charge's outcome to a pending top-up, once (later calls find it settled).
pub async fn settle(
    state: &AppState,
    topup_id: &str,
    outcome: ChargeStatus,
    claim: Option<&idempotency::Claim>,
) -> Result<(StatusCode, Value), ApiError> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("topup", topup_id).await?;
        let row = sqlx::query("SELECT user_id, amount, status FROM topups WHERE id = $1")
            .bind(topup_id)
            .fetch_one(&mut *tx)
            .await?;
        let (user_id, amount, status): (String, i64, String) =
            (row.try_get("user_id")?, row.try_get("amount")?, row.try_get("status")?);
        let user = identity::user_by_id(&mut tx, &user_id)
            .await?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("top-up without user")))?;
        let answer = match (status.as_str(), &outcome) {
            ("pending", ChargeStatus::Succeeded { reference }) => {
                let funding = funding_account(&mut tx, now).await?;
                let entry = NewEntry::transfer(
                    EntryKind::Topup,
                    topup_id,
                    funding,
                    AccountId(user.wallet_account_id),
                    Yen(amount),
                );
                let posted = ledger::post(&mut tx, &entry, now).await?;
                sqlx::query(
                    "UPDATE topups SET status = 'succeeded', processor_ref = $1, settled_at = $2 WHERE id = $3",
                )
                .bind(reference)
                .bind(now)
                .bind(topup_id)
                .execute(&mut *tx)
                .await?;
                let balance = posted.balance_of(AccountId(user.wallet_account_id)).unwrap_or_default().0;
                notify::enqueue(
                    &mut tx,
                    &Message {
                        channel: Channel::Email,
                        to: user.email.clone(),
                        kind: "topup".into(),
                        subject: Some(format!("You topped up ¥{amount}")),
                        body: format!("¥{amount} was added to your Omamori wallet. Balance: ¥{balance}."),
                        code: None,
                    },
                    now,
                )
                .await?;
                Ok((StatusCode::CREATED, json!({"topup_id": topup_id, "amount": amount, "balance": balance})))
            }
            ("pending", ChargeStatus::Declined) => {
                sqlx::query("UPDATE topups SET status = 'declined', settled_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(topup_id)
                    .execute(&mut *tx)
                    .await?;
                Err(ApiError::decline(StatusCode::PAYMENT_REQUIRED, "card_declined", "the card was declined"))
            }
            ("succeeded", _) => {
                let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
                    .bind(user.wallet_account_id)
                    .fetch_one(&mut *tx)
                    .await?;
                Ok((StatusCode::CREATED, json!({"topup_id": topup_id, "amount": amount, "balance": balance})))
            }
            ("declined", _) => {
                Err(ApiError::decline(StatusCode::PAYMENT_REQUIRED, "card_declined", "the card was declined"))
            }
            ("abandoned", _) => Err(ApiError::decline(
                StatusCode::PAYMENT_REQUIRED,
                "card_declined",
                "the card was not charged; this top-up was abandoned",
            )),
            _ => Ok((StatusCode::ACCEPTED, json!({"topup_id": topup_id, "status": status}))),
        };
        // The request's answer is stored with the money, in this transaction.
        if let Some(claim) = claim {
            let stored = match &answer {
                Ok((status, body)) => {
                    Stored { status: status.as_u16(), content_type: "application/json".into(), body: body.to_string() }
                }
                Err(decline) => Stored {
                    status: decline.status.as_u16(),
                    content_type: crate::http::error::PROBLEM_JSON.into(),
                    body: decline.body().to_string(),
                },
            };
            idempotency::complete(&mut tx, claim, &stored).await?;
        }
        tx.commit().await?;
        Ok::<_, ApiError>(answer)
    })
    .await?
}

/// Settles top-ups that a crash left pending, by asking the processor how each charge ended.
pub async fn sweep(state: &AppState) -> Result<usize, ApiError> {
    let Some(processor) = state.processor.clone() else { return Ok(0) };
    let now = state.clock.now_ms();
    let rows = sqlx::query(
        "SELECT t.id, t.created_at, c.processor_token FROM topups t JOIN cards c ON c.id = t.card_id \
         WHERE t.status = 'pending' AND t.created_at < $1 ORDER BY t.created_at LIMIT 100",
    )
    .bind(now - SWEEP_AFTER_MS)
    .fetch_all(state.db.pool())
    .await?;
    let mut settled = 0;
    for r in rows {
        let (id, token, created_at): (String, String, i64) =
            (r.try_get("id")?, r.try_get("processor_token")?, r.try_get("created_at")?);
        match processor.charge_status(&token, &id).await {
            Ok(ChargeStatus::Unknown) => {
                // Never charged (the crash came before the charge): after an hour nobody will
                // charge it any more, so it stops counting against the caps.
                if now - created_at > ABANDON_AFTER_MS {
                    store::write_one(&state.db, || {
                        sqlx::query("UPDATE topups SET status = 'abandoned', settled_at = $1 WHERE id = $2 AND status = 'pending'")
                            .bind(now)
                            .bind(&id)
                    })
                    .await?;
                    settled += 1;
                }
            }
            Err(_) => continue,
            Ok(outcome) => {
                let _ = settle(state, &id, outcome, None).await;
                settled += 1;
            }
        }
    }
    Ok(settled)
}

/// Charges a held top-up that an operator approved, and credits it.
pub async fn charge_approved(state: &AppState, topup_id: &str) -> Result<(StatusCode, Value), ApiError> {
    let processor = state.processor.clone().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no card processor is configured")
    })?;
    let row = sqlx::query("SELECT t.amount, c.processor_token FROM topups t JOIN cards c ON c.id = t.card_id WHERE t.id = $1 AND t.status = 'pending'")
        .bind(topup_id)
        .fetch_one(state.db.pool())
        .await?;
    let (amount, token): (i64, String) = (row.try_get("amount")?, row.try_get("processor_token")?);
    let outcome = match processor.charge(&token, amount, topup_id).await {
        Ok(reference) => ChargeStatus::Succeeded { reference },
        Err(ProcessorError::Unavailable) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the card processor is unavailable; the sweeper will settle it",
            ));
        }
        Err(_) => ChargeStatus::Declined,
    };
    settle(state, topup_id, outcome, None).await
}

/// An operator's decision on a held top-up: rejected, it is declined; approved, it is back to
/// pending (the caller charges it at once, and the sweeper would settle it after a crash).
pub async fn decide_held(conn: &mut Conn, topup_id: &str, approve: bool, now: i64) -> Result<(), sqlx::Error> {
    let statement = if approve {
        sqlx::query("UPDATE topups SET status = 'pending' WHERE id = $1 AND status = 'held'").bind(topup_id)
    } else {
        sqlx::query("UPDATE topups SET status = 'declined', settled_at = $2 WHERE id = $1 AND status = 'held'")
            .bind(topup_id)
            .bind(now)
    };
    statement.execute(&mut *conn).await?;
    Ok(())
}
