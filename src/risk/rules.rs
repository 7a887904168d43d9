//! Risk rules (ARCHITECTURE section 8): data in the database, seeded from `data/risk-rules.toml`,
//! changed through the audited admin API, read on every evaluation (so a change applies to the
//! next request, on every instance, without a restart).
//!
//! A rule names an event (`login`, `card_link`, `topup`, `payment`), conditions over signals that
//! all must hold, and an outcome (`allow`, `step_up`, `hold`, `decline`). The first enabled
//! matching rule by priority decides; no match allows.

use crate::ids::CardId;
use crate::ids::ReviewId;
use crate::ids::StoreId;
use crate::ids::TerminalId;
use crate::ids::UserId;
use serde::Deserialize;
use serde_json::json;
use sqlx::Row;

use super::RiskError;
use crate::store::{Conn, Db, clock};

const DEFAULTS: &str = include_str!("../../data/risk-rules.toml");
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, utoipa::ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_at_least: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_device: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topup_within_minutes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_change_within_hours: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcc_in: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_not_in: Option<Vec<String>>,
    /// This many events of the kind (logins, card links, top-ups, payments) by the user in the
    /// last hour, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_hour_at_least: Option<i64>,
    /// Faster than 500 km/h from the user's previous login (see [`crate::risk::travel`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impossible_travel: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    StepUp,
    Hold,
    Decline,
}

/// The outcomes a rule may name, as the API spells them.
pub const OUTCOMES: &[&str] = &["allow", "step_up", "hold", "decline"];

impl Outcome {
    fn parse(s: &str) -> Option<Outcome> {
        match s {
            "allow" => Some(Outcome::Allow),
            "step_up" => Some(Outcome::StepUp),
            "hold" => Some(Outcome::Hold),
            "decline" => Some(Outcome::Decline),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct SeedFile {
    rule: Vec<SeedRule>,
}

#[derive(Deserialize)]
struct SeedRule {
    id: String,
    event: String,
    priority: i64,
    outcome: String,
    conditions: Conditions,
}

/// The signals of one event.
#[derive(Debug, Clone)]
pub struct Signals {
    pub amount: i64,
    pub new_device: bool,
    pub minutes_since_topup: Option<i64>,
    pub hours_since_credential_change: Option<i64>,
    pub mcc: Option<String>,
    pub country: Option<String>,
    pub per_hour: i64,
    pub impossible_travel: bool,
}

/// The events rules are evaluated on.
pub const EVENTS: &[&str] = &["login", "card_link", "topup", "payment"];

/// What a rule is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleEvent {
    Login,
    CardLink,
    Topup,
    Payment,
}

impl RuleEvent {
    /// The name rules are stored under (`risk_rules.event`).
    pub fn as_str(self) -> &'static str {
        match self {
            RuleEvent::Login => "login",
            RuleEvent::CardLink => "card_link",
            RuleEvent::Topup => "topup",
            RuleEvent::Payment => "payment",
        }
    }
}

impl Conditions {
    pub fn matches(&self, s: &Signals) -> bool {
        self.amount_at_least.is_none_or(|a| s.amount >= a)
            && self.new_device.is_none_or(|n| s.new_device == n)
            && self.topup_within_minutes.is_none_or(|m| s.minutes_since_topup.is_some_and(|t| t <= m))
            && self
                .credential_change_within_hours
                .is_none_or(|h| s.hours_since_credential_change.is_some_and(|c| c <= h))
            && self.mcc_in.as_ref().is_none_or(|list| s.mcc.as_ref().is_some_and(|m| list.contains(m)))
            && self.country_not_in.as_ref().is_none_or(|list| s.country.as_ref().is_none_or(|c| !list.contains(c)))
            && self.per_hour_at_least.is_none_or(|n| s.per_hour >= n)
            && self.impossible_travel.is_none_or(|t| s.impossible_travel == t)
    }
}

/// Seeds the default rules that the table does not have yet (every default on the first start; a
/// default added in a later release on the first start of that release). A rule an admin changed
/// or disabled keeps its row, so it is never put back.
pub async fn seed(db: &Db, now: i64) -> anyhow::Result<()> {
    let file: SeedFile = toml::from_str(DEFAULTS)?;
    let present: Vec<String> = sqlx::query_scalar("SELECT id FROM risk_rules").fetch_all(db.pool()).await?;
    if file.rule.iter().all(|r| present.contains(&r.id)) {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    tx.lock("risk_rules", "seed").await?;
    let present: Vec<String> = sqlx::query_scalar("SELECT id FROM risk_rules").fetch_all(&mut *tx).await?;
    {
        for r in file.rule.into_iter().filter(|r| !present.contains(&r.id)) {
            anyhow::ensure!(Outcome::parse(&r.outcome).is_some(), "rule {}: unknown outcome {}", r.id, r.outcome);
            anyhow::ensure!(EVENTS.contains(&r.event.as_str()), "rule {}: unknown event {}", r.id, r.event);
            let conditions = conditions_text(&r.conditions);
            sqlx::query("INSERT INTO risk_rules (id, event, priority, conditions, outcome, enabled, updated_at) VALUES ($1, $2, $3, $4, $5, 1, $6)")
                .bind(&r.id)
                .bind(&r.event)
                .bind(r.priority)
                .bind(conditions)
                .bind(&r.outcome)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

fn conditions_text(c: &Conditions) -> String {
    serde_json::to_string(c).expect("conditions serialise")
}

/// What a rule is evaluated on: an event of a user on a device.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    pub kind: RuleEvent,
    pub user_id: &'a UserId,
    pub device_id: &'a str,
    /// Yen; 0 for an event without an amount.
    pub amount: i64,
    /// The merchant category of a payment.
    pub mcc: Option<&'a str>,
    /// The country the request comes from, when the shopper is at hand.
    pub country: Option<&'a str>,
}

/// What the owners of the data know about a user, for the signals of an event: sessions and
/// credentials are identity's, top-ups, cards and payments are payments'. Risk never reads their
/// tables; the owners answer through this port (implemented by `payments::risk_facts::Owners`).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// When the user first opened a session on this device.
    pub first_seen_on_device: Option<i64>,
    /// When the user's newest successful top-up was settled.
    pub last_topup_at: Option<i64>,
    pub credentials_changed_at: i64,
    pub created_at: i64,
    /// Events of this kind by the user in the last hour, this one not included.
    pub events_last_hour: i64,
    /// The country and time of the user's newest session that has a country.
    pub previous_session: Option<(String, i64)>,
}

/// The owners' answer to "what do you know of this user, for this event".
pub trait FactSource: Send + Sync {
    fn facts<'a>(
        &'a self,
        conn: &'a mut Conn,
        e: &'a Event<'a>,
        now: i64,
    ) -> crate::ports::BoxFuture<'a, Result<Facts, sqlx::Error>>;
}

/// Gathers the signals of an event from what the owners know.
pub async fn signals(
    conn: &mut Conn,
    source: &dyn FactSource,
    e: &Event<'_>,
    now: i64,
) -> Result<Signals, sqlx::Error> {
    let f = source.facts(conn, e, now).await?;
    let impossible_travel = match (&f.previous_session, e.country) {
        (Some((there, at)), Some(here)) => crate::risk::travel::impossible(there, *at, here, now),
        _ => false,
    };
    let (amount, mcc, country) = (e.amount, e.mcc, e.country);
    let (changed, created, earlier) = (f.credentials_changed_at, f.created_at, f.events_last_hour);
    let (first_seen, last_topup) = (f.first_seen_on_device, f.last_topup_at);
    Ok(Signals {
        amount,
        new_device: first_seen.is_none_or(|t| t > now - DAY_MS),
        minutes_since_topup: last_topup.map(|t| (now - t) / 60_000),
        // The sign-up itself is not a credential change.
        hours_since_credential_change: (changed > created).then_some((now - changed) / 3_600_000),
        mcc: mcc.map(str::to_string),
        country: country.map(str::to_string),
        per_hour: earlier + 1,
        impossible_travel,
    })
}

/// The decision for an event: the outcome and the rule that gave it.
pub async fn evaluate(
    conn: &mut Conn,
    event: RuleEvent,
    s: &Signals,
) -> Result<(Outcome, Option<String>), sqlx::Error> {
    Ok(first_match(&enabled_rules(conn, event).await?, s))
}

/// The enabled rules of an event, in order (a rule whose conditions do not parse is left out and
/// logged).
type EventRules = Vec<(String, Conditions, Outcome)>;

async fn enabled_rules(conn: &mut Conn, event: RuleEvent) -> Result<EventRules, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, conditions, outcome FROM risk_rules WHERE event = $1 AND enabled = 1 ORDER BY priority, id",
    )
    .bind(event.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let mut rules: EventRules = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get("id")?;
        let Ok(conditions) = serde_json::from_str::<Conditions>(&r.try_get::<String, _>("conditions")?) else {
            tracing::error!(rule = %id, "a risk rule's conditions do not parse; skipping it");
            continue;
        };
        let outcome = Outcome::parse(&r.try_get::<String, _>("outcome")?).unwrap_or(Outcome::Allow);
        rules.push((id, conditions, outcome));
    }
    Ok(rules)
}

/// The first rule whose conditions the signals meet, or allow.
fn first_match(rules: &EventRules, s: &Signals) -> (Outcome, Option<String>) {
    match rules.iter().find(|(_, conditions, _)| conditions.matches(s)) {
        Some((id, _, outcome)) => {
            metrics::counter!("omamori_risk_matches_total", "rule" => id.clone()).increment(1);
            (*outcome, Some(id.clone()))
        }
        None => (Outcome::Allow, None),
    }
}

/// [`evaluate`] on the rules kept in memory (`store::cache`, group `risk_rules`): a changed rule
/// applies at once on the instance that changed it and within a second on the others.
pub async fn evaluate_cached(
    db: &crate::store::Db,
    conn: &mut Conn,
    event: RuleEvent,
    s: &Signals,
) -> Result<(Outcome, Option<String>), sqlx::Error> {
    use crate::store::cache::{Group, cached};
    let rules =
        cached(db, conn, Group::RiskRules, event.as_str(), move |conn| Box::pin(enabled_rules(conn, event))).await?;
    Ok(first_match(&rules, s))
}

/// Opens a review case; answers its id.
pub async fn open_review(
    conn: &mut Conn,
    kind: &str,
    subject: Option<&str>,
    user_id: &UserId,
    rule: &str,
    detail: &ReviewDetail,
    now: i64,
) -> Result<ReviewId, sqlx::Error> {
    let id = ReviewId::generate();
    sqlx::query("INSERT INTO reviews (id, kind, subject_id, user_id, rule_id, detail, state, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)")
        .bind(&id)
        .bind(kind)
        .bind(subject)
        .bind(user_id)
        .bind(rule)
        .bind(serde_json::to_string(detail).expect("a review detail serialises"))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    crate::risk::alerts::record_risk_decline(conn, user_id, now).await?;
    crate::risk::alerts::raise(conn, "risk_hold", "medium", &format!("risk rule {rule} opened review {id}"), now)
        .await?;
    Ok(id)
}

/// `402 risk_declined` with the review case.
pub fn risk_declined(review_id: Option<&ReviewId>) -> RiskError {
    RiskError::RiskDeclined { review_id: review_id.cloned() }
}

/// How many review cases of `kind` are open for `user_id` (a shopper has one at a time, so that
/// nobody can flood the queue).
pub async fn open_reviews(conn: &mut Conn, kind: &str, user_id: &UserId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM reviews WHERE state = 'open' AND kind = $1 AND user_id = $2")
        .bind(kind)
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await
}

/// What the owner of a review's subject made of the decision: applied, or refused because
/// approving it now would break one of the shopper's caps (the case then stays open).
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    OverLimit(String),
}

/// What a decision does to the held subject of a review: cards and top-ups belong to payments,
/// which implements this. It runs in the decision's transaction.
pub trait ReviewSubjects: Send + Sync {
    fn decided<'a>(
        &'a self,
        conn: &'a mut crate::store::Conn,
        kind: &'a str,
        subject: &'a str,
        approve: bool,
        now: i64,
    ) -> crate::ports::BoxFuture<'a, Result<Applied, sqlx::Error>>;
}

/// Decides an open review case (operator); answers its kind and subject. Audited.
pub async fn decide(
    db: &Db,
    id: &ReviewId,
    approve: bool,
    by: &str,
    subjects: &dyn ReviewSubjects,
    now: i64,
) -> Result<(String, Option<String>), RiskError> {
    crate::store::retry(|| async {
        let mut tx = db.begin().await?;
        tx.lock("review", id).await?;
        let row = sqlx::query("SELECT kind, subject_id, state FROM reviews WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| RiskError::NotFound("there is no such review".into()))?;
        let (kind, subject, state): (String, Option<String>, String) =
            (row.try_get("kind")?, row.try_get("subject_id")?, row.try_get("state")?);
        if state != "open" {
            return Err(RiskError::AlreadyDecided);
        }
        let decision = if approve { "approved" } else { "rejected" };
        sqlx::query("UPDATE reviews SET state = $1, decided_by = $2, decided_at = $3 WHERE id = $4")
            .bind(decision)
            .bind(by)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if let Some(subject) = &subject
            && let Applied::OverLimit(why) = subjects.decided(&mut tx, &kind, subject, approve, now).await?
        {
            // Rolled back: the case stays open for another decision.
            return Err(RiskError::LimitExceeded(why));
        }
        crate::audit::append(
            &mut tx,
            by,
            "review.decide",
            id,
            &json!({"decision": decision, "kind": kind, "subject": subject}),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok((kind, subject))
    })
    .await
}

/// A review case as operators see it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Review {
    pub id: ReviewId,
    #[schema(schema_with = review_kind)]
    pub kind: String,
    pub subject_id: Option<String>,
    pub user_id: UserId,
    pub rule_id: String,
    pub detail: ReviewDetail,
    #[schema(schema_with = review_state)]
    pub state: String,
    pub created_at: String,
}

/// What the held action was.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ReviewDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<StoreId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<TerminalId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_id: Option<CardId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last4: Option<String>,
}

/// The newest 200 review cases.
pub async fn reviews(db: &Db) -> Result<Vec<Review>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, kind, subject_id, user_id, rule_id, detail, state, created_at FROM reviews ORDER BY created_at DESC, id DESC LIMIT 200")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            let detail: String = r.try_get("detail")?;
            Ok(Review {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                subject_id: r.try_get("subject_id")?,
                user_id: r.try_get("user_id")?,
                rule_id: r.try_get("rule_id")?,
                detail: serde_json::from_str(&detail).unwrap_or_default(),
                state: r.try_get("state")?,
                created_at: clock::rfc3339_ms(r.try_get("created_at")?),
            })
        })
        .collect()
}

/// A rule as admins see it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Rule {
    pub id: String,
    #[schema(schema_with = rule_event)]
    pub event: String,
    /// Lower is evaluated first; the first enabled matching rule decides.
    pub priority: i64,
    pub conditions: Conditions,
    #[schema(schema_with = rule_outcome)]
    pub outcome: String,
    pub enabled: bool,
    pub updated_at: String,
}

/// The schema of a rule's event.
pub fn rule_event() -> utoipa::openapi::Object {
    crate::ids::one_of_schema(EVENTS, "The event the rule is evaluated on.")
}

/// The schema of a rule's outcome.
pub fn rule_outcome() -> utoipa::openapi::Object {
    crate::ids::one_of_schema(OUTCOMES, "What a match decides.")
}

fn review_kind() -> utoipa::openapi::Object {
    crate::ids::one_of_schema(&["payment", "topup", "card"], "What was held.")
}

fn review_state() -> utoipa::openapi::Object {
    crate::ids::one_of_schema(&["open", "approved", "rejected"], "Where the case stands.")
}

/// Every rule, in the order they are evaluated.
pub async fn list(db: &Db) -> Result<Vec<Rule>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, event, priority, conditions, outcome, enabled, updated_at FROM risk_rules ORDER BY event, priority, id")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|r| {
            let text: String = r.try_get("conditions")?;
            Ok(Rule {
                id: r.try_get("id")?,
                event: r.try_get("event")?,
                priority: r.try_get("priority")?,
                conditions: serde_json::from_str(&text).unwrap_or_default(),
                outcome: r.try_get("outcome")?,
                enabled: r.try_get::<i64, _>("enabled")? == 1,
                updated_at: clock::rfc3339_ms(r.try_get("updated_at")?),
            })
        })
        .collect()
}

/// Whether `id` has the shape of a rule id: 1 to 64 letters, digits, '-' or '_' (anything else,
/// a NUL say, which PostgreSQL cannot store, never reaches the database).
pub fn is_rule_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A rule an admin adds.
pub struct NewRule<'a> {
    pub id: &'a str,
    pub event: &'a str,
    pub priority: i64,
    pub conditions: &'a Conditions,
    pub outcome: &'a str,
}

/// Adds a rule (admin); audited; applies to the next evaluation.
pub async fn create(db: &Db, rule: NewRule<'_>, by: &str, now: i64) -> Result<(), RiskError> {
    let NewRule { id, event, priority, conditions, outcome } = rule;
    if !is_rule_id(id) {
        return Err(RiskError::invalid("id must be 1 to 64 letters, digits, '-' or '_'"));
    }
    if !EVENTS.contains(&event) {
        return Err(RiskError::invalid(format!("event must be one of {}", EVENTS.join(", "))));
    }
    if !(0..=1_000_000).contains(&priority) {
        return Err(RiskError::invalid("priority must be from 0 to 1000000 (lower is evaluated first)"));
    }
    let parsed = conditions;
    if Outcome::parse(outcome).is_none() {
        return Err(RiskError::invalid("outcome must be allow, step_up, hold or decline"));
    }
    let stored = conditions_text(parsed);
    crate::store::retry(|| async {
        let mut tx = db.begin().await?;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM risk_rules WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
        if n > 0 {
            return Err(RiskError::RuleExists);
        }
        sqlx::query(
            "INSERT INTO risk_rules (id, event, priority, conditions, outcome, enabled, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6)",
        )
        .bind(id)
        .bind(event)
        .bind(priority)
        .bind(&stored)
        .bind(outcome)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let detail = json!({"event": event, "priority": priority, "conditions": parsed, "outcome": outcome});
        crate::audit::append(&mut tx, by, "rule.create", id, &detail, now).await?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

/// Changes a rule (admin); audited; applies to the next evaluation.
pub async fn update(
    db: &Db,
    id: &str,
    conditions: Option<&Conditions>,
    outcome: Option<&str>,
    enabled: Option<bool>,
    by: &str,
    now: i64,
) -> Result<(), RiskError> {
    if let Some(o) = outcome
        && Outcome::parse(o).is_none()
    {
        return Err(RiskError::invalid("outcome must be allow, step_up, hold or decline"));
    }
    crate::store::retry(|| async {
        let mut tx = db.begin().await?;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM risk_rules WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
        if n == 0 {
            return Err(RiskError::NotFound("there is no such rule".into()));
        }
        if let Some(c) = conditions {
            sqlx::query("UPDATE risk_rules SET conditions = $1 WHERE id = $2")
                .bind(conditions_text(c))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(o) = outcome {
            sqlx::query("UPDATE risk_rules SET outcome = $1 WHERE id = $2").bind(o).bind(id).execute(&mut *tx).await?;
        }
        if let Some(e) = enabled {
            sqlx::query("UPDATE risk_rules SET enabled = $1 WHERE id = $2")
                .bind(e as i64)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE risk_rules SET updated_at = $1 WHERE id = $2").bind(now).bind(id).execute(&mut *tx).await?;
        let detail = json!({"conditions": conditions, "outcome": outcome, "enabled": enabled});
        crate::audit::append(&mut tx, by, "rule.update", id, &detail, now).await?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals() -> Signals {
        Signals {
            amount: 5000,
            new_device: true,
            minutes_since_topup: Some(5),
            hours_since_credential_change: None,
            mcc: Some("5732".into()),
            country: Some("JP".into()),
            per_hour: 1,
            impossible_travel: false,
        }
    }

    #[test]
    fn the_outcomes_the_api_lists_are_the_ones_it_parses() {
        assert!(OUTCOMES.iter().all(|o| Outcome::parse(o).is_some()));
        assert_eq!(Outcome::parse("block"), None);
    }

    #[test]
    fn the_defaults_parse_and_match_only_combinations() {
        let file: SeedFile = toml::from_str(DEFAULTS).unwrap();
        let resale = &file.rule.iter().find(|r| r.id == "resale-spend-from-new-device").unwrap().conditions;
        assert!(resale.matches(&signals()));
        assert!(!resale.matches(&Signals { new_device: false, ..signals() }));
        assert!(!resale.matches(&Signals { mcc: Some("5411".into()), ..signals() }));
        assert!(!resale.matches(&Signals { minutes_since_topup: Some(31), ..signals() }));
        assert!(!resale.matches(&Signals { minutes_since_topup: None, ..signals() }));
        let large = &file.rule.iter().find(|r| r.id == "large-spend-after-credential-change").unwrap().conditions;
        assert!(!large.matches(&Signals { amount: 50_000, ..signals() }), "a sign-up is not a credential change");
        assert!(large.matches(&Signals { amount: 50_000, hours_since_credential_change: Some(1), ..signals() }));
        assert!(Conditions::default().matches(&signals()), "no condition matches everything");
        let abroad = Conditions { country_not_in: Some(vec!["JP".into()]), ..Default::default() };
        assert!(!abroad.matches(&signals()));
        let rule = |id: &str| file.rule.iter().find(|r| r.id == id).unwrap().conditions.clone();
        let travel = rule("impossible-travel-login");
        assert!(!travel.matches(&signals()));
        assert!(travel.matches(&Signals { impossible_travel: true, ..signals() }));
        let takeover = rule("impossible-travel-new-device-after-reset");
        let jumped = Signals { impossible_travel: true, ..signals() };
        assert!(!takeover.matches(&jumped), "a traveller who did not reset is only stepped up");
        assert!(takeover.matches(&Signals { hours_since_credential_change: Some(5), ..jumped.clone() }));
        let velocity = rule("topup-velocity-new-device");
        assert!(!velocity.matches(&Signals { per_hour: 9, ..signals() }));
        assert!(velocity.matches(&Signals { per_hour: 10, ..signals() }));
        assert!(!velocity.matches(&Signals { per_hour: 10, new_device: false, ..signals() }));
        for r in &file.rule {
            assert!(EVENTS.contains(&r.event.as_str()), "{}", r.id);
            assert!(Outcome::parse(&r.outcome).is_some(), "{}", r.id);
        }
    }
}
