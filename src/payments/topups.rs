//! Top-ups: from a linked card to the wallet, in two phases (ARCHITECTURE section 6).
//!
//! The card charge happens outside the database, so a `pending` top-up row (unique per shopper
//! and `Idempotency-Key`) is committed first, the processor is charged with the top-up id as its
//! idempotency key, and then the wallet is credited from the funding-clearing account in one
//! transaction that also stores the answer. A crash in between leaves a pending row that a repeat
//! of the request, or the sweeper, settles by asking the processor: never a second charge.

use crate::ids::CardId;
use crate::ids::TopupId;
use crate::ids::UserId;
use serde::Serialize;
use sqlx::Row;

use super::{PaymentsError, wallet};
use crate::idempotency::{self, Claim, Stored};
use crate::identity::session::UserSession;
use crate::identity::{self, recovery};
use crate::ledger::{self, AccountId, AccountKind, EntryKind, NewEntry};
use crate::money::{Currency, Yen};
use crate::notify::{self, Channel, Message};
use crate::ports::processor::{CardProcessor, Charge, ChargeStatus, ProcessorError};
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

/// What a top-up request is answered: credited (`201`), or still waiting, held for review or
/// pending at the processor (`202`, with its status).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Topped {
    Credited { topup_id: TopupId, amount: i64, balance: i64 },
    Waiting { topup_id: TopupId, status: String },
}

/// How the answer of a top-up is stored for repeats: the route knows the statuses and the
/// problem documents, and the top-up stores the answer in the transaction that moves the money.
pub trait Answers: Send + Sync {
    fn answer(&self, topped: &Topped) -> Stored;
    fn decline(&self, declined: PaymentsError) -> Stored;
}

/// A top-up request under a claimed `Idempotency-Key`.
pub struct Request<'a> {
    pub session: &'a UserSession,
    pub client: &'a ClientInfo,
    pub idem_key: &'a str,
    pub card_id: &'a CardId,
    /// The amount as parsed, or why it is not one (refused only after the switches, as API.md
    /// orders the checks).
    pub amount: Result<Yen, String>,
    pub claim: &'a Claim,
    pub answers: &'a dyn Answers,
}

/// `POST /v1/topups`: the answer is stored with the money (the caller stores a decline found
/// before any row was written, and releases the key on any other error).
pub async fn run(state: &AppState, r: &Request<'_>) -> Result<Topped, PaymentsError> {
    check_switches(state, r).await?;
    let amount = r.amount.clone().map_err(PaymentsError::InvalidAmount)?;
    let processor = state.processor.clone().ok_or(PaymentsError::Unavailable("no card processor is configured"))?;
    let user = {
        let mut conn = state.db.pool().acquire().await?;
        identity::user_by_id(&mut conn, r.session.user_id())
            .await?
            .ok_or(PaymentsError::Identity(identity::IdentityError::Unauthenticated))?
    };
    // A repeat after a crash resumes the top-up it started (its own card and amount), never a
    // new one, and one that already ended answers as it ended without charging again.
    let topup_id = match resume(state, r, &user, amount).await? {
        Resume::Ended(id) => return settle(state, &id, ChargeStatus::Unknown, Some((r.claim, r.answers))).await,
        Resume::Pending(id) => id,
        Resume::New => match start(state, r, &user, amount).await? {
            Started::Pending(id) => id,
            Started::Held(topped) => return Ok(topped),
        },
    };
    let outcome = match charge_once(state, processor.as_ref(), &topup_id).await? {
        Charged::Ended(outcome) => outcome,
        Charged::NeverOpened => {
            // The processor never saw a charge it could confirm: nothing of the top-up stays.
            forget(state, &topup_id).await?;
            return Err(PaymentsError::ProcessorUnavailable("the card processor is unavailable; repeat the request"));
        }
        // Still pending: the sweeper, the processor's event or a repeat settles it.
        Charged::Unanswered => {
            return Err(PaymentsError::ProcessorUnavailable("the card processor is unavailable; repeat the request"));
        }
        // Pending until the shopper authenticates and repeats (or the sweeper gives it up).
        Charged::NeedsAuthentication(client_secret) => {
            return Err(PaymentsError::AuthenticationRequired { topup_id, client_secret });
        }
    };
    settle(state, &topup_id, outcome, Some((r.claim, r.answers))).await
}

/// What asking the processor to charge a pending top-up came to.
enum Charged {
    Ended(ChargeStatus),
    /// The charge could not even be opened: no money can have moved.
    NeverOpened,
    /// Opened, but the confirmation went unanswered: it may or may not have been charged.
    Unanswered,
    /// The issuer asks the shopper to authenticate the payment (with this client secret).
    NeedsAuthentication(crate::secret::Secret<String>),
}

/// Charges a pending top-up once: opens the charge at the processor and records its reference
/// (unless an earlier attempt did), then confirms it under the top-up id as idempotency key.
async fn charge_once(
    state: &AppState,
    processor: &dyn CardProcessor,
    topup_id: &TopupId,
) -> Result<Charged, PaymentsError> {
    let (token, amount, mut reference) = charge_details(state, topup_id).await?;
    if reference.is_none() {
        match processor.prepare_charge(&token, amount, topup_id.as_str()).await {
            Ok(Some(opened)) => reference = Some(record_reference(state, topup_id, &opened).await?),
            Ok(None) => {}
            Err(ProcessorError::Unavailable) => return Ok(Charged::NeverOpened),
            Err(_) => return Ok(Charged::Ended(ChargeStatus::Declined)),
        }
    }
    let charge = Charge {
        token: &token,
        amount_yen: amount,
        idempotency_key: topup_id.as_str(),
        reference: reference.as_deref(),
    };
    Ok(match processor.charge(&charge).await {
        Ok(reference) => Charged::Ended(ChargeStatus::Succeeded { reference }),
        Err(ProcessorError::Declined) | Err(ProcessorError::InvalidCard) => Charged::Ended(ChargeStatus::Declined),
        Err(ProcessorError::Unavailable) => Charged::Unanswered,
        Err(ProcessorError::AuthenticationRequired(secret)) => Charged::NeedsAuthentication(secret),
    })
}

/// Keeps the processor's reference of a pending top-up's charge before it is confirmed; answers
/// the one recorded (an earlier attempt's, if it was first).
async fn record_reference(state: &AppState, topup_id: &TopupId, reference: &str) -> Result<String, PaymentsError> {
    store::write_one(&state.db, || {
        sqlx::query(
            "UPDATE topups SET processor_ref = $1 WHERE id = $2 AND status = 'pending' AND processor_ref IS NULL",
        )
        .bind(reference)
        .bind(topup_id)
    })
    .await?;
    let recorded: Option<String> = sqlx::query_scalar("SELECT processor_ref FROM topups WHERE id = $1")
        .bind(topup_id)
        .fetch_one(state.db.pool())
        .await?;
    recorded.ok_or_else(|| PaymentsError::Internal(anyhow::anyhow!("top-up {topup_id} lost its processor reference")))
}

/// Removes a pending top-up whose charge was never opened (no reference: nothing to confirm, so
/// nothing charged), so that a failed request leaves no row counting against the caps.
async fn forget(state: &AppState, topup_id: &TopupId) -> Result<(), PaymentsError> {
    store::write_one(&state.db, || {
        sqlx::query("DELETE FROM topups WHERE id = $1 AND status = 'pending' AND processor_ref IS NULL").bind(topup_id)
    })
    .await?;
    Ok(())
}

/// The `topups` switches, for the shopper, the card (its fingerprint on every wallet) and the country.
async fn check_switches(state: &AppState, r: &Request<'_>) -> Result<(), PaymentsError> {
    let mut conn = state.db.pool().acquire().await?;
    let fingerprint: Option<String> =
        sqlx::query_scalar("SELECT fingerprint FROM cards WHERE id = $1 AND user_id = $2")
            .bind(r.card_id)
            .bind(r.session.user_id())
            .fetch_optional(&mut *conn)
            .await?;
    let subject = crate::risk::switches::Subject {
        user_id: Some(r.session.user_id()),
        card_fingerprint: fingerprint.as_deref(),
        country: r.client.country.as_deref(),
        ..Default::default()
    };
    Ok(crate::risk::switches::check(&mut conn, crate::ids::SwitchName::Topups, subject).await?)
}

enum Resume {
    /// No top-up under this key yet.
    New,
    /// One is pending: charge it (the processor's idempotency key makes a second charge impossible).
    Pending(TopupId),
    /// One ended: answer as it ended.
    Ended(TopupId),
}

/// The top-up an earlier request under this key started, if any; `409` when its card or amount differ.
async fn resume(
    state: &AppState,
    r: &Request<'_>,
    user: &identity::User,
    amount: Yen,
) -> Result<Resume, PaymentsError> {
    let existing = sqlx::query("SELECT id, card_id, amount, status FROM topups WHERE user_id = $1 AND idem_key = $2")
        .bind(&user.id)
        .bind(r.idem_key)
        .fetch_optional(state.db.pool())
        .await?;
    let Some(row) = existing else { return Ok(Resume::New) };
    let (id, card, row_amount, status): (TopupId, CardId, i64, String) =
        (row.try_get("id")?, row.try_get("card_id")?, row.try_get("amount")?, row.try_get("status")?);
    if card != *r.card_id || row_amount != amount.0 {
        return Err(idempotency::IdempotencyError::Conflict.into());
    }
    Ok(if status == "pending" { Resume::Pending(id) } else { Resume::Ended(id) })
}

enum Started {
    Pending(TopupId),
    Held(Topped),
}

/// A new top-up: step-up when large or the first on this device, then the rules and the pending
/// (or held) row in one transaction under the wallet's top-up lock, so parallel requests cannot
/// all slip under the same cap.
async fn start(
    state: &AppState,
    r: &Request<'_>,
    user: &identity::User,
    amount: Yen,
) -> Result<Started, PaymentsError> {
    let on_device: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM topups WHERE user_id = $1 AND device_id = $2 AND status = 'succeeded'",
    )
    .bind(&user.id)
    .bind(r.session.device_id())
    .fetch_one(state.db.pool())
    .await?;
    if amount.0 > wallet::TOPUP_STEP_UP_ABOVE || on_device == 0 {
        recovery::require_step_up(state, r.session, r.client).await?;
    }
    let id = TopupId::generate();
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("topups", user.id.as_str()).await?;
        let started = match admit(&mut tx, r, user, amount, now).await {
            Ok(held_by) => insert(&mut tx, r, user, (&id, amount), held_by, now).await?,
            Err(PaymentsError::Risk(declined @ crate::risk::RiskError::RiskDeclined { .. })) => {
                // Counted for the risk_declines detector, although the top-up itself is refused.
                crate::risk::alerts::record_risk_decline(&mut tx, &user.id, now).await?;
                tx.commit().await?;
                return Err(declined.into());
            }
            Err(e) => return Err(e),
        };
        tx.commit().await?;
        Ok(started)
    })
    .await
}

/// The card, the caps and the risk rules; answers the rule that holds the top-up, if one does.
async fn admit(
    conn: &mut Conn,
    r: &Request<'_>,
    user: &identity::User,
    amount: Yen,
    now: i64,
) -> Result<Option<String>, PaymentsError> {
    let card_ok: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM cards WHERE id = $1 AND user_id = $2 AND status = 'active'")
            .bind(r.card_id)
            .bind(&user.id)
            .fetch_one(&mut *conn)
            .await?;
    if card_ok == 0 {
        return Err(PaymentsError::CardNotFound);
    }
    check_rules(conn, user, amount.0, now).await?;
    // The risk rules: a hold keeps the top-up uncharged until an operator decides.
    let country = r.client.country.as_deref();
    let signals = rules::signals(
        conn,
        &super::risk_facts::Owners,
        &rules::Event {
            kind: rules::RuleEvent::Topup,
            user_id: &user.id,
            device_id: r.session.device_id(),
            amount: amount.0,
            mcc: None,
            country,
        },
        now,
    )
    .await?;
    let rule = match rules::evaluate(conn, rules::RuleEvent::Topup, &signals).await? {
        (rules::Outcome::Decline, _) => return Err(rules::risk_declined(None).into()),
        (rules::Outcome::Hold | rules::Outcome::StepUp, rule) => rule.unwrap_or_default(),
        (rules::Outcome::Allow, _) => return Ok(None),
    };
    // One open case per shopper: a flood of held top-ups waits behind the first (not final).
    if rules::open_reviews(conn, "topup", &user.id).await? > 0 {
        return Err(throttle::too_many(TEN_MINUTES_MS).into());
    }
    Ok(Some(rule))
}

/// Writes the top-up `pending`, or `held` with its review case and its stored `202` answer.
async fn insert(
    conn: &mut Conn,
    r: &Request<'_>,
    user: &identity::User,
    (id, amount): (&TopupId, Yen),
    held_by: Option<String>,
    now: i64,
) -> Result<Started, PaymentsError> {
    sqlx::query(
        "INSERT INTO topups (id, user_id, card_id, amount, currency, status, idem_key, device_id, created_at) \
         VALUES ($1, $2, $3, $4, 'JPY', $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(&user.id)
    .bind(r.card_id)
    .bind(amount.0)
    .bind(if held_by.is_some() { "held" } else { "pending" })
    .bind(r.idem_key)
    .bind(r.session.device_id())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let Some(rule) = held_by else { return Ok(Started::Pending(id.clone())) };
    let detail = rules::ReviewDetail { amount: Some(amount.0), card_id: Some(r.card_id.clone()), ..Default::default() };
    rules::open_review(conn, "topup", Some(id.as_str()), &user.id, &rule, &detail, now).await?;
    let topped = Topped::Waiting { topup_id: id.clone(), status: "held".into() };
    idempotency::complete(conn, r.claim, &r.answers.answer(&topped)).await?;
    Ok(Started::Held(topped))
}

/// The card token, the amount and the processor's reference (once opened) of a top-up's charge.
async fn charge_details(state: &AppState, topup_id: &TopupId) -> Result<(String, i64, Option<String>), sqlx::Error> {
    let row = sqlx::query(
        "SELECT c.processor_token, t.amount, t.processor_ref FROM topups t JOIN cards c ON c.id = t.card_id WHERE t.id = $1",
    )
    .bind(topup_id)
    .fetch_one(state.db.pool())
    .await?;
    Ok((row.try_get("processor_token")?, row.try_get("amount")?, row.try_get("processor_ref")?))
}

/// The limits of section 6: per top-up, per Tokyo day (¥10,000 during cooling-off), the balance
/// ceiling, and at most 2 top-ups in 10 minutes. Pending and held top-ups count: they may yet succeed.
async fn check_rules(conn: &mut Conn, user: &identity::User, amount: i64, now: i64) -> Result<(), PaymentsError> {
    if let Some(why) = over_cap(conn, user, &Capped { amount, held: None }, now).await? {
        return Err(PaymentsError::TopupLimit(why));
    }
    let recent: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM topups WHERE user_id = $1 AND status IN ('pending', 'held', 'succeeded') AND created_at > $2",
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

/// A top-up measured against the caps: a new one, or (`held`: its id and creation time) a held
/// one an operator approves, which the sums already hold and which counts on the day it was made.
struct Capped<'a> {
    amount: i64,
    held: Option<(&'a TopupId, i64)>,
}

/// Which cap the top-up would break, if any: per top-up, per Tokyo day, the balance ceiling.
async fn over_cap(
    conn: &mut Conn,
    user: &identity::User,
    t: &Capped<'_>,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    if t.amount > wallet::TOPUP_MAX {
        return Ok(Some(format!("a top-up is at most ¥{}", wallet::TOPUP_MAX)));
    }
    let (except, made_at) = t.held.map_or(("", now), |(id, at)| (id.as_str(), at));
    let day = wallet::tokyo_day_start(made_at);
    let that_day: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM topups WHERE user_id = $1 \
         AND status IN ('pending', 'held', 'succeeded') AND created_at >= $2 AND created_at < $3 AND id <> $4",
    )
    .bind(&user.id)
    .bind(day)
    .bind(day + 24 * 3600 * 1000)
    .bind(except)
    .fetch_one(&mut *conn)
    .await?;
    let daily =
        if user.cooling_off_until > now { wallet::TOPUP_DAILY_MAX_COOLING_OFF } else { wallet::TOPUP_DAILY_MAX };
    if that_day + t.amount > daily {
        return Ok(Some(format!("top-ups are at most ¥{daily} a day")));
    }
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
        .bind(user.wallet_account_id)
        .fetch_one(&mut *conn)
        .await?;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM topups \
         WHERE user_id = $1 AND status IN ('pending', 'held') AND id <> $2",
    )
    .bind(&user.id)
    .bind(except)
    .fetch_one(&mut *conn)
    .await?;
    if balance + waiting + t.amount > wallet::BALANCE_MAX {
        return Ok(Some(format!("a wallet holds at most ¥{}", wallet::BALANCE_MAX)));
    }
    Ok(None)
}

/// Applies a charge's outcome to a pending top-up, once (later calls find it settled); with a
/// claim, the request's answer is stored with the money, in the same transaction.
pub async fn settle(
    state: &AppState,
    topup_id: &TopupId,
    outcome: ChargeStatus,
    answering: Option<(&Claim, &dyn Answers)>,
) -> Result<Topped, PaymentsError> {
    let now = state.clock.now_ms();
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("topup", topup_id).await?;
        let answer = apply(&mut tx, topup_id, &outcome, now).await?;
        if let Some((claim, answers)) = answering {
            let stored = match &answer {
                Applied::Topped(topped) => answers.answer(topped),
                Applied::Declined(detail) => answers.decline(PaymentsError::ChargeDeclined(detail)),
            };
            idempotency::complete(&mut tx, claim, &stored).await?;
        }
        tx.commit().await?;
        match answer {
            Applied::Topped(topped) => Ok(topped),
            Applied::Declined(detail) => Err(PaymentsError::ChargeDeclined(detail)),
        }
    })
    .await
}

/// What applying a charge's outcome left: the answer, or a decline to commit before answering
/// `card_declined` (with this detail).
enum Applied {
    Topped(Topped),
    Declined(&'static str),
}

/// What the outcome does to the top-up: credits the wallet, declines it, or finds it settled.
async fn apply(
    conn: &mut Conn,
    topup_id: &TopupId,
    outcome: &ChargeStatus,
    now: i64,
) -> Result<Applied, PaymentsError> {
    let row = sqlx::query("SELECT user_id, amount, status FROM topups WHERE id = $1")
        .bind(topup_id)
        .fetch_one(&mut *conn)
        .await?;
    let (user_id, amount, status): (UserId, i64, String) =
        (row.try_get("user_id")?, row.try_get("amount")?, row.try_get("status")?);
    let user = identity::user_by_id(conn, &user_id)
        .await?
        .ok_or_else(|| PaymentsError::Internal(anyhow::anyhow!("top-up without user")))?;
    let credited = |balance| Topped::Credited { topup_id: topup_id.clone(), amount, balance };
    Ok(match (status.as_str(), outcome) {
        ("pending", ChargeStatus::Succeeded { reference }) => {
            Applied::Topped(credited(credit(conn, topup_id, &user, amount, reference, now).await?))
        }
        ("pending", ChargeStatus::Declined) => {
            sqlx::query("UPDATE topups SET status = 'declined', settled_at = $1 WHERE id = $2")
                .bind(now)
                .bind(topup_id)
                .execute(&mut *conn)
                .await?;
            Applied::Declined("the card was declined")
        }
        ("succeeded", _) => {
            let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
                .bind(user.wallet_account_id)
                .fetch_one(&mut *conn)
                .await?;
            Applied::Topped(credited(balance))
        }
        ("declined", _) => Applied::Declined("the card was declined"),
        ("abandoned", _) => Applied::Declined("the card was not charged; this top-up was abandoned"),
        _ => Applied::Topped(Topped::Waiting { topup_id: topup_id.clone(), status }),
    })
}

/// Credits a charged top-up to the wallet from the funding account, and tells the owner; answers
/// the new balance.
async fn credit(
    conn: &mut Conn,
    topup_id: &TopupId,
    user: &identity::User,
    amount: i64,
    reference: &str,
    now: i64,
) -> Result<i64, PaymentsError> {
    let funding = funding_account(conn, now).await?;
    let entry = NewEntry::transfer(EntryKind::Topup, topup_id, funding, AccountId(user.wallet_account_id), Yen(amount));
    let posted = ledger::post(conn, &entry, now).await?;
    sqlx::query("UPDATE topups SET status = 'succeeded', processor_ref = $1, settled_at = $2 WHERE id = $3")
        .bind(reference)
        .bind(now)
        .bind(topup_id)
        .execute(&mut *conn)
        .await?;
    let balance = posted.balance_of(AccountId(user.wallet_account_id)).unwrap_or_default().0;
    let message = Message {
        channel: Channel::Email,
        to: user.email.clone(),
        kind: "topup".into(),
        subject: Some(format!("You topped up ¥{amount}")),
        body: format!("¥{amount} was added to your Omamori wallet. Balance: ¥{balance}."),
        code: None,
    };
    notify::enqueue(conn, &message, now).await?;
    Ok(balance)
}

/// Settles top-ups that a crash left pending, by asking the processor how each charge ended.
pub async fn sweep(state: &AppState) -> Result<usize, PaymentsError> {
    let Some(processor) = state.processor.clone() else { return Ok(0) };
    let now = state.clock.now_ms();
    let rows = sqlx::query(
        "SELECT t.id, t.created_at, t.amount, t.processor_ref, c.processor_token FROM topups t \
         JOIN cards c ON c.id = t.card_id \
         WHERE t.status = 'pending' AND t.created_at < $1 ORDER BY t.created_at LIMIT 100",
    )
    .bind(now - SWEEP_AFTER_MS)
    .fetch_all(state.db.pool())
    .await?;
    let mut settled = 0;
    for r in rows {
        let (id, token, created_at): (TopupId, String, i64) =
            (r.try_get("id")?, r.try_get("processor_token")?, r.try_get("created_at")?);
        let reference: Option<String> = r.try_get("processor_ref")?;
        let charge = Charge {
            token: &token,
            amount_yen: r.try_get("amount")?,
            idempotency_key: id.as_str(),
            reference: reference.as_deref(),
        };
        match processor.charge_status(&charge).await {
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
            // Waiting for the shopper's authentication: given up after an hour (declined).
            Ok(ChargeStatus::Pending) if now - created_at > ABANDON_AFTER_MS => {
                if let Ok(_) | Err(PaymentsError::ChargeDeclined(_)) = give_up(state, processor.as_ref(), &id).await {
                    settled += 1;
                }
            }
            Ok(ChargeStatus::Pending) => {}
            Ok(outcome) => {
                let _ = settle(state, &id, outcome, None).await;
                settled += 1;
            }
        }
    }
    Ok(settled)
}

/// Charges a held top-up that an operator approved, and credits it.
pub async fn charge_approved(state: &AppState, topup_id: &TopupId) -> Result<Topped, PaymentsError> {
    let processor = state.processor.clone().ok_or(PaymentsError::Unavailable("no card processor is configured"))?;
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM topups WHERE id = $1 AND status = 'pending'")
        .bind(topup_id)
        .fetch_one(state.db.pool())
        .await?;
    if pending == 0 {
        return Err(PaymentsError::NotFound("there is no such pending top-up".into()));
    }
    match charge_once(state, processor.as_ref(), topup_id).await? {
        Charged::Ended(outcome) => settle(state, topup_id, outcome, None).await,
        Charged::NeverOpened | Charged::Unanswered => {
            Err(PaymentsError::ProcessorUnavailable("the card processor is unavailable; the sweeper will settle it"))
        }
        // The shopper is not there to authenticate an operator's approval: the charge is given up.
        Charged::NeedsAuthentication(_) => give_up(state, processor.as_ref(), topup_id).await,
    }
}

/// Cancels a pending top-up's charge that cannot end (its authentication was abandoned), then
/// declines the top-up.
async fn give_up(state: &AppState, processor: &dyn CardProcessor, topup_id: &TopupId) -> Result<Topped, PaymentsError> {
    let (token, amount, reference) = charge_details(state, topup_id).await?;
    let charge = Charge {
        token: &token,
        amount_yen: amount,
        idempotency_key: topup_id.as_str(),
        reference: reference.as_deref(),
    };
    if processor.cancel_charge(&charge).await.is_err() {
        return Err(PaymentsError::ProcessorUnavailable(
            "the card processor is unavailable; the sweeper will settle it",
        ));
    }
    settle(state, topup_id, ChargeStatus::Declined, None).await
}

/// Settles the pending top-up whose charge the processor names (its event said how it ended);
/// `None` when no pending top-up has that reference (settled already, or not ours).
pub async fn settle_by_reference(
    state: &AppState,
    reference: &str,
    outcome: ChargeStatus,
) -> Result<Option<Topped>, PaymentsError> {
    let id: Option<TopupId> =
        sqlx::query_scalar("SELECT id FROM topups WHERE processor_ref = $1 AND status = 'pending'")
            .bind(reference)
            .fetch_optional(state.db.pool())
            .await?;
    let Some(id) = id else { return Ok(None) };
    match settle(state, &id, outcome, None).await {
        Ok(topped) => Ok(Some(topped)),
        Err(PaymentsError::ChargeDeclined(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An operator's decision on a held top-up: rejected, it is declined; approved, it is back to
/// pending (the caller charges it at once, and the sweeper would settle it after a crash), unless
/// it would now take the wallet over a cap (money refunded to it since, a cooling-off begun).
pub async fn decide_held(
    conn: &mut Conn,
    topup_id: &TopupId,
    approve: bool,
    now: i64,
) -> Result<rules::Applied, sqlx::Error> {
    if approve && let Some(why) = approval_over_cap(conn, topup_id, now).await? {
        return Ok(rules::Applied::OverLimit(format!(
            "approving this top-up would break a cap ({why}); reject it, or decide later"
        )));
    }
    let statement = if approve {
        sqlx::query("UPDATE topups SET status = 'pending' WHERE id = $1 AND status = 'held'").bind(topup_id)
    } else {
        sqlx::query("UPDATE topups SET status = 'declined', settled_at = $2 WHERE id = $1 AND status = 'held'")
            .bind(topup_id)
            .bind(now)
    };
    statement.execute(&mut *conn).await?;
    Ok(rules::Applied::Done)
}

/// The cap a held top-up would break if approved now, under its wallet's top-up lock.
async fn approval_over_cap(conn: &mut Conn, topup_id: &TopupId, now: i64) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query("SELECT user_id, amount, created_at FROM topups WHERE id = $1 AND status = 'held'")
        .bind(topup_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (user_id, amount, created_at): (UserId, i64, i64) =
        (row.try_get("user_id")?, row.try_get("amount")?, row.try_get("created_at")?);
    store::lock_conn(conn, "topups", &user_id).await?;
    let Some(user) = identity::user_by_id(conn, &user_id).await? else { return Ok(None) };
    over_cap(conn, &user, &Capped { amount, held: Some((topup_id, created_at)) }, now).await
}
