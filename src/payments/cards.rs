//! Linking cards (ARCHITECTURE section 6): step-up first; the issuer's challenge when it asks for
//! one; only the token, brand, last four digits and a keyed fingerprint are kept. A fingerprint
//! belongs to one wallet for good. Failed checks are limited per card (3 a day across all
//! wallets) and per wallet (5 a day); a wallet holds at most 5 cards and adds at most 2 a day;
//! nothing is linked during cooling-off.

use crate::ids::CardId;
use crate::ids::ChallengeId;
use crate::ids::ReviewId;
use crate::ids::UserId;
use serde::Serialize;
use sqlx::Row;

use super::PaymentsError;
use crate::identity::session::UserSession;
use crate::identity::{self, challenge, recovery};
use crate::ports::processor::{self, CardInfo, IssuerChallenge, ProcessorError, RawCard};
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

/// A card as its owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Card {
    pub card_id: CardId,
    pub brand: String,
    pub last4: String,
    /// `active`, `pending_challenge` or `held`.
    pub status: String,
}

/// What linking a card ended in: `active` (with brand and last four digits), `held` for an
/// operator's review (with `review_id`), or `pending_challenge` (with the issuer's `challenge_id`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Linked {
    pub card_id: CardId,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_id: Option<ReviewId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge_id: Option<ChallengeId>,
    /// With a `three_d_secure` challenge: the processor's client secret that the app hands to its
    /// SDK (Stripe.js `confirmCardSetup`) to run the issuer's 3-D Secure; then it verifies the
    /// challenge with `{"method": "three_d_secure"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl Linked {
    fn new(card_id: &CardId, status: &'static str) -> Linked {
        Linked {
            card_id: card_id.clone(),
            status,
            brand: None,
            last4: None,
            review_id: None,
            challenge_id: None,
            client_secret: None,
        }
    }
}

/// Who links the card, from where.
pub struct Linker<'a> {
    pub session: &'a UserSession,
    pub client: &'a ClientInfo,
}

/// `POST /v1/cards`: the checks before the processor is asked (switches, step-up, cooling-off,
/// card-testing limits), the processor's check, then the card itself.
pub async fn link(state: &AppState, who: &Linker<'_>, input: CardInput) -> Result<Linked, PaymentsError> {
    let processor = state.processor.clone().ok_or(PaymentsError::Unavailable("no card processor is configured"))?;
    let key = state
        .config
        .keys
        .card_fingerprint
        .clone()
        .ok_or_else(|| PaymentsError::Internal(anyhow::anyhow!("no fingerprint key")))?;
    if matches!(input, CardInput::Raw(_)) && !processor.takes_raw_cards() {
        return Err(PaymentsError::Invalid(
            "this service takes cards through the processor's own page: send processor_token".into(),
        ));
    }
    let user = may_link(state, who).await?;
    let now = state.clock.now_ms();
    // A raw number, or a token the processor describes, is fingerprinted before the card is checked.
    let early_fingerprint = match &input {
        CardInput::Raw(card) if processor::luhn_valid(card.number.expose()) => {
            Some(processor::fingerprint(&key, &format!("pan:{}", card.number.expose())))
        }
        CardInput::Raw(_) => None,
        CardInput::Token(token) => match processor.token_fingerprint(token).await {
            Ok(source) => source.map(|s| processor::fingerprint(&key, s.expose())),
            Err(e) => return Err(refused_by_processor(state, e, now).await),
        },
    };
    let provisional = count_attempt(state, &user, early_fingerprint.as_deref(), now).await?;
    if let Some(fp) = &early_fingerprint
        && owned_elsewhere(state, &user.id, fp).await?
    {
        // Another wallet's card: refused before its issuer is asked (the failed attempt stands).
        return Err(PaymentsError::CardNotAllowed);
    }
    let checked = match &input {
        CardInput::Raw(card) => processor.tokenize(card).await,
        CardInput::Token(token) => processor.lookup(token).await,
    };
    let info = match checked {
        Ok(info) => info,
        Err(e) => return Err(refused_by_processor(state, e, now).await),
    };
    // Written under the newest key; looked up under every key still in the ring, so that rotating
    // the key keeps one card, one wallet.
    let mut fingerprints: Vec<String> =
        key.all().iter().map(|k| processor::fingerprint(k, info.fingerprint_source.expose())).collect();
    let fingerprint = fingerprints.remove(0);
    let card = NewCard { id: CardId::generate(), info: &info, fingerprint: &fingerprint, older: &fingerprints };
    let attempt = Attempt { state, who, user: &user, provisional: &provisional, now };
    store::retry(|| keep_card(&attempt, &card)).await
}

/// The shopper, when linking is allowed: no switch, a fresh step-up, no cooling-off.
async fn may_link(state: &AppState, who: &Linker<'_>) -> Result<identity::User, PaymentsError> {
    let mut conn = state.db.pool().acquire().await?;
    let subject = switches::Subject {
        user_id: Some(who.session.user_id()),
        country: who.client.country.as_deref(),
        ..Default::default()
    };
    switches::check(&mut conn, crate::ids::SwitchName::CardLinking, subject).await?;
    drop(conn);
    recovery::require_step_up(state, who.session, who.client).await?;
    let mut conn = state.db.pool().acquire().await?;
    let user = identity::user_by_id(&mut conn, who.session.user_id())
        .await?
        .ok_or(PaymentsError::Identity(identity::IdentityError::Unauthenticated))?;
    identity::ensure_not_cooling_off(&user, state.clock.now_ms())?;
    Ok(user)
}

/// The card-testing limits, and the attempt counted as a failure until the processor says
/// otherwise, in one transaction under the wallet's (and the card's) lock: parallel attempts meet
/// the limits as surely as sequential ones. Answers the provisional events.
async fn count_attempt(
    state: &AppState,
    user: &identity::User,
    raw_fingerprint: Option<&str>,
    now: i64,
) -> Result<Vec<i64>, PaymentsError> {
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("cards", user.id.as_str()).await?;
        if let Some(fp) = raw_fingerprint {
            tx.lock("card", fp).await?;
        }
        let wallet_spent = throttle::window(&mut tx, "card_fail_wallet", user.id.as_str(), now - DAY_MS).await?.0
            >= FAILED_CHECKS_PER_WALLET;
        let card_spent = match raw_fingerprint {
            Some(fp) => {
                throttle::window(&mut tx, "card_fail_card", fp, now - DAY_MS).await?.0 >= FAILED_CHECKS_PER_CARD
            }
            None => false,
        };
        if wallet_spent || card_spent {
            tx.commit().await?;
            return Ok(Err(throttle::too_many(DAY_MS).into()));
        }
        if let Err(e) = card_counts(&mut tx, &user.id, now).await {
            return Ok(Err(e));
        }
        let mut events = vec![throttle::record(&mut tx, "card_fail_wallet", user.id.as_str(), now).await?];
        if let Some(fp) = raw_fingerprint {
            events.push(throttle::record(&mut tx, "card_fail_card", fp, now).await?);
        }
        tx.commit().await?;
        Ok::<_, PaymentsError>(Ok(events))
    })
    .await?
}

/// A card the processor refused: the provisional failure stands (and may raise an alert).
async fn refused_by_processor(state: &AppState, e: ProcessorError, now: i64) -> PaymentsError {
    let evaluated = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let thresholds = crate::risk::alerts::Thresholds::from_config(&state.config);
        crate::risk::alerts::evaluate(&mut tx, &thresholds, now).await?;
        tx.commit().await
    })
    .await;
    if let Err(db) = evaluated {
        return db.into();
    }
    match e {
        ProcessorError::InvalidCard => PaymentsError::InvalidCard,
        // A card check never asks for a payment's authentication; should one, it is a decline.
        ProcessorError::Declined | ProcessorError::AuthenticationRequired(_) => PaymentsError::CardDeclined,
        ProcessorError::Unavailable => {
            PaymentsError::ProcessorUnavailable("the card processor is unavailable; try again")
        }
    }
}

/// A card the processor accepted, to keep.
struct NewCard<'a> {
    id: CardId,
    info: &'a CardInfo,
    fingerprint: &'a str,
    /// The same card's fingerprints under the older keys of the ring.
    older: &'a [String],
}

/// One linking attempt, past the processor.
struct Attempt<'a> {
    state: &'a AppState,
    who: &'a Linker<'a>,
    user: &'a identity::User,
    provisional: &'a [i64],
    now: i64,
}

/// Keeps a checked card, in one transaction under the wallet's and the card's locks: the card
/// switch, one card one wallet, the limits again, the risk rules, then the row and what follows.
async fn keep_card(a: &Attempt<'_>, card: &NewCard<'_>) -> Result<Linked, PaymentsError> {
    let (user, now) = (a.user, a.now);
    let mut tx = a.state.db.begin().await?;
    tx.lock("cards", user.id.as_str()).await?;
    tx.lock("card", card.fingerprint).await?;
    // A switch on this very card (by id, covering its fingerprint on every wallet).
    let subject = switches::Subject { card_fingerprint: Some(card.fingerprint), ..Default::default() };
    switches::check(&mut tx, crate::ids::SwitchName::CardLinking, subject).await?;
    // The check passed: it was not a failure.
    throttle::unrecord(&mut tx, a.provisional).await?;
    if let Err(e) = card_counts(&mut tx, &user.id, now).await {
        tx.commit().await?;
        return Err(e);
    }
    claim_fingerprint(&mut tx, &user.id, card, now).await?;
    let signals = rules::signals(
        &mut tx,
        &super::risk_facts::Owners,
        &rules::Event {
            kind: rules::RuleEvent::CardLink,
            user_id: &user.id,
            device_id: a.who.session.device_id(),
            amount: 0,
            mcc: None,
            country: a.who.client.country.as_deref(),
        },
        now,
    )
    .await?;
    let (outcome, rule) = rules::evaluate(&mut tx, rules::RuleEvent::CardLink, &signals).await?;
    if outcome == rules::Outcome::Decline {
        // Nothing of the link is kept, but the decline counts for the risk_declines detector.
        tx.rollback().await?;
        let mut counted = a.state.db.begin().await?;
        crate::risk::alerts::record_risk_decline(&mut counted, &user.id, now).await?;
        counted.commit().await?;
        return Err(PaymentsError::CardRiskDeclined);
    }
    let held = matches!(outcome, rules::Outcome::Hold | rules::Outcome::StepUp).then(|| rule.unwrap_or_default());
    let linked = insert_card(&mut tx, a, card, held.as_deref()).await?;
    tx.commit().await?;
    Ok(linked)
}

/// Whether the card of `fingerprint` is bound to another wallet already.
async fn owned_elsewhere(state: &AppState, user_id: &UserId, fingerprint: &str) -> Result<bool, sqlx::Error> {
    let owner: Option<UserId> = sqlx::query_scalar("SELECT user_id FROM card_fingerprints WHERE fingerprint = $1")
        .bind(fingerprint)
        .fetch_optional(state.db.pool())
        .await?;
    Ok(owner.is_some_and(|o| o != *user_id))
}

/// One card, one wallet: a fingerprint first seen is bound to this wallet; one bound to another
/// wallet, or already in this one, is refused. The card is looked up under every key of the ring
/// (newest first), and a card known only under an older key is bound again under the newest.
async fn claim_fingerprint(
    conn: &mut Conn,
    user_id: &UserId,
    card: &NewCard<'_>,
    now: i64,
) -> Result<(), PaymentsError> {
    let mut known = Vec::new();
    for fp in std::iter::once(card.fingerprint).chain(card.older.iter().map(String::as_str)) {
        let owner: Option<UserId> = sqlx::query_scalar("SELECT user_id FROM card_fingerprints WHERE fingerprint = $1")
            .bind(fp)
            .fetch_optional(&mut *conn)
            .await?;
        match owner {
            Some(owner) if owner != *user_id => return Err(PaymentsError::CardNotAllowed),
            Some(_) => known.push(fp),
            None => {}
        }
    }
    for fp in &known {
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM cards WHERE user_id = $1 AND fingerprint = $2 AND status <> 'removed'",
        )
        .bind(user_id)
        .bind(fp)
        .fetch_one(&mut *conn)
        .await?;
        if active > 0 {
            return Err(PaymentsError::CardAlreadyLinked);
        }
    }
    if !known.contains(&card.fingerprint) {
        sqlx::query("INSERT INTO card_fingerprints (fingerprint, user_id, created_at) VALUES ($1, $2, $3)")
            .bind(card.fingerprint)
            .bind(user_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes the card `held` (with a review case for `held_by` rule), `pending_challenge` (with the
/// issuer's challenge) or `active` (and tells the owner).
async fn insert_card(
    conn: &mut Conn,
    a: &Attempt<'_>,
    card: &NewCard<'_>,
    held_by: Option<&str>,
) -> Result<Linked, PaymentsError> {
    let (user, info, now) = (a.user, card.info, a.now);
    let status = match (held_by, &info.challenge) {
        (Some(_), _) => "held",
        (None, Some(_)) => "pending_challenge",
        (None, None) => "active",
    };
    let setup = match &info.challenge {
        Some(IssuerChallenge::ThreeDSecure { reference, .. }) => Some(reference.as_str()),
        _ => None,
    };
    sqlx::query(
        "INSERT INTO cards (id, user_id, processor_token, brand, last4, fingerprint, status, created_at, processor_setup) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&card.id)
    .bind(&user.id)
    .bind(&info.token)
    .bind(&info.brand)
    .bind(&info.last4)
    .bind(card.fingerprint)
    .bind(status)
    .bind(now)
    .bind(setup)
    .execute(&mut *conn)
    .await?;
    let mut linked = Linked::new(&card.id, status);
    if let Some(rule) = held_by {
        let detail = rules::ReviewDetail {
            card_id: Some(card.id.clone()),
            last4: Some(info.last4.clone()),
            ..Default::default()
        };
        linked.review_id =
            Some(rules::open_review(conn, "card", Some(card.id.as_str()), &user.id, rule, &detail, now).await?);
    } else if let Some(challenge) = &info.challenge {
        let methods: &[&'static str] = match challenge {
            IssuerChallenge::Sms => &["sms"],
            IssuerChallenge::ThreeDSecure { client_secret, .. } => {
                linked.client_secret = Some(client_secret.expose().clone());
                &["three_d_secure"]
            }
        };
        linked.challenge_id = Some(issuer_challenge(conn, a, &card.id, methods).await?);
    } else {
        let text = format!("A card ending {} was added to your wallet.", info.last4);
        identity::notify_all(conn, user, "card_linked", &text, now).await?;
        (linked.brand, linked.last4) = (Some(info.brand.clone()), Some(info.last4.clone()));
    }
    Ok(linked)
}

/// The issuer's challenge: in the sandbox, a code by SMS to the wallet's phone; with a real
/// processor, its 3-D Secure, which the app runs and the processor confirms.
async fn issuer_challenge(
    conn: &mut Conn,
    a: &Attempt<'_>,
    card_id: &CardId,
    methods: &[&'static str],
) -> Result<ChallengeId, PaymentsError> {
    let c = challenge::NewChallenge {
        purpose: challenge::Purpose::Card,
        user_id: Some(&a.user.id),
        operator_id: None,
        merchant_user_id: None,
        session_id: Some(a.who.session.session_id()),
        device_id: Some(a.who.session.device_id()),
        subject_id: Some(card_id.as_str()),
        methods,
        client: a.who.client,
    };
    let created = challenge::create(conn, &c, a.now).await?;
    sqlx::query("UPDATE cards SET challenge_id = $1 WHERE id = $2")
        .bind(&created.challenge_id)
        .bind(card_id)
        .execute(&mut *conn)
        .await?;
    Ok(created.challenge_id)
}

/// Whether the processor says the issuer's 3-D Secure of the card waiting on `challenge` passed
/// (asked before the challenge's own transaction, which then activates the card).
pub async fn issuer_confirmed(state: &AppState, challenge: &ChallengeId) -> Result<bool, PaymentsError> {
    let setup: Option<Option<String>> = sqlx::query_scalar(
        "SELECT processor_setup FROM cards WHERE challenge_id = $1 AND status = 'pending_challenge'",
    )
    .bind(challenge)
    .fetch_optional(state.db.pool())
    .await?;
    let (Some(Some(reference)), Some(processor)) = (setup, state.processor.clone()) else { return Ok(false) };
    match processor.challenge_passed(&reference).await {
        Ok(passed) => Ok(passed),
        Err(_) => Err(PaymentsError::ProcessorUnavailable("the card processor is unavailable; try again")),
    }
}

/// At most 5 cards in a wallet and 2 new ones a day.
async fn card_counts(conn: &mut Conn, user_id: &UserId, now: i64) -> Result<(), PaymentsError> {
    let cards: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cards WHERE user_id = $1 AND status <> 'removed'")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    if cards >= MAX_CARDS {
        return Err(PaymentsError::CardLimitReached("a wallet holds at most 5 cards"));
    }
    let recent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cards WHERE user_id = $1 AND created_at > $2")
        .bind(user_id)
        .bind(now - DAY_MS)
        .fetch_one(&mut *conn)
        .await?;
    if recent >= NEW_CARDS_PER_DAY {
        return Err(PaymentsError::CardLimitReached("at most 2 new cards a day"));
    }
    Ok(())
}

/// Completes a card whose issuer challenge was verified (called inside the challenge's transaction);
/// `None` when no such card of the user waits for a challenge.
pub async fn activate(
    conn: &mut Conn,
    user: &identity::User,
    card_id: &CardId,
    now: i64,
) -> Result<Option<Card>, sqlx::Error> {
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
    Ok(Some(Card { card_id: card_id.clone(), brand, last4, status: "active".into() }))
}

/// An operator's decision on a held card: approved, it becomes usable; rejected, it is removed.
pub async fn decide_held(conn: &mut Conn, card_id: &CardId, approve: bool) -> Result<(), sqlx::Error> {
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
    type Card = Card;

    fn activate<'a>(
        &'a self,
        conn: &'a mut Conn,
        user: &'a identity::User,
        card_id: &'a CardId,
        now: i64,
    ) -> crate::ports::BoxFuture<'a, Result<Option<Card>, sqlx::Error>> {
        Box::pin(activate(conn, user, card_id, now))
    }
}

/// `GET /v1/cards`.
pub async fn list(conn: &mut Conn, user_id: &UserId) -> Result<Vec<Card>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, brand, last4, status FROM cards WHERE user_id = $1 AND status <> 'removed' ORDER BY created_at DESC, id DESC",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Card {
                card_id: r.try_get("id")?,
                brand: r.try_get("brand")?,
                last4: r.try_get("last4")?,
                status: r.try_get("status")?,
            })
        })
        .collect()
}

/// `DELETE /v1/cards/{id}`.
pub async fn remove(state: &AppState, user_id: &UserId, card_id: &CardId) -> Result<(), PaymentsError> {
    let now = state.clock.now_ms();
    let n = store::write_one(&state.db, || {
        sqlx::query("UPDATE cards SET status = 'removed', removed_at = $1 WHERE id = $2 AND user_id = $3 AND status <> 'removed'")
            .bind(now)
            .bind(card_id)
            .bind(user_id)
    })
    .await?;
    if n == 0 {
        return Err(PaymentsError::NotFound("there is no such card".into()));
    }
    Ok(())
}
