//! Operator routes of risk: kill switches and freezes (and unfreezes), the audit log and its chain
//! check, corrections, rules and reviews.

use crate::http::extract::PathId;
use crate::ids::CorrectionId;
use crate::ids::ReviewId;
use crate::ids::SwitchId;
use crate::ids::UserId;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::rules::{Conditions, Review, Rule};
use super::switches::{self, Active, Engaged};
use crate::audit::Entry;
use crate::http::auth::{Admin, OperatorRole, RequireRole, Viewer};
use crate::http::error::{ApiError, AuthErrors, Invalid422, JsonBodyErrors, NotFound404, Problem};
use crate::http::extract::ApiJson;
use crate::ids::{SwitchName, one_of_schema};
use crate::notify::Delivery;
use crate::payments::corrections::Correction;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_switches, engage_switch))
        .routes(routes!(release_switch))
        .routes(routes!(freeze_user))
        .routes(routes!(unfreeze_user))
        .routes(routes!(audit_log))
        .routes(routes!(audit_head))
        .routes(routes!(audit_verify))
        .routes(routes!(list_notifications))
        .routes(routes!(list_corrections, propose_correction))
        .routes(routes!(approve_correction))
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(update_rule))
        .routes(routes!(list_reviews))
        .routes(routes!(decide_review))
}

/// The switches and freezes in force, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct SwitchList {
    items: Vec<Active>,
}

/// The switches and freezes in force.
#[utoipa::path(get, path = "/v1/admin/switches", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = SwitchList, description = "At most 500, newest first"), AuthErrors))]
async fn list_switches(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    Ok(axum::Json(SwitchList { items: switches::list(&state.db).await? }).into_response())
}

/// What a switch covers: `global` (any `id` is ignored), a merchant, user or card by its id (it
/// must exist), or a country by its ISO 3166 alpha-2 code.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeBody {
    kind: String,
    id: Option<String>,
}

/// The schema says per kind what `id` must be, as `switches::engage` checks it (ids are trimmed,
/// countries upper-cased).
impl utoipa::PartialSchema for ScopeBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let variant = |kinds: &[&str], id: ObjectBuilder, id_required: bool| {
            let mut v = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("kind", one_of_schema(kinds, "The kind of scope."))
                .property("id", id)
                .required("kind")
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            if id_required {
                v = v.required("id");
            }
            v
        };
        let any = ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]));
        let id = ObjectBuilder::new().schema_type(Type::String).max_length(Some(64)).pattern(Some("\\S"));
        let country = ObjectBuilder::new().schema_type(Type::String).pattern(Some("^\\s*[A-Za-z]{2}\\s*$"));
        OneOfBuilder::new()
            .item(variant(&["global"], any, false))
            .item(variant(&["merchant", "user", "card"], id.description(Some("The id; it must exist.")), true))
            .item(variant(&["country"], country.description(Some("ISO 3166 alpha-2, either case.")), true))
            .description(Some("What the switch covers."))
            .into()
    }
}

impl utoipa::ToSchema for ScopeBody {}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EngageBody {
    #[schema(value_type = SwitchName)]
    name: String,
    /// Everything (`global`) when left out.
    scope: Option<ScopeBody>,
    /// 1 to 500 characters (after trimming).
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    reason: String,
}

/// Engages a switch at once (operator role).
#[utoipa::path(post, path = "/v1/admin/switches", tag = "operator", request_body = EngageBody,
    security(("bearer" = [])), responses(
    (status = 201, body = Engaged, description = "Engaged"),
    AuthErrors, JsonBodyErrors, Invalid422,
    (status = 404, description = "`not_found`: the scope's merchant, user or card does not exist", body = Problem, content_type = "application/problem+json")))]
async fn engage_switch(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    body: ApiJson<EngageBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let (kind, id) = match &b.scope {
        Some(s) => (s.kind.as_str(), s.id.as_deref().unwrap_or("")),
        None => ("global", ""),
    };
    let by = op.actor();
    let request = switches::Engage { name: &b.name, scope_kind: kind, scope_id: id, reason: &b.reason, by: &by };
    let view = switches::engage(&state.db, request, state.clock.now_ms()).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    /// 1 to 500 characters (after trimming).
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    reason: String,
}

/// Where a release stands.
#[derive(Serialize, utoipa::ToSchema)]
struct Release {
    /// The switch's id.
    id: SwitchId,
    /// `false`: asked for, waiting for a second operator; `true`: the release took effect.
    released: bool,
}

/// Asks for, or (from a second operator) confirms, a switch's release.
#[utoipa::path(post, path = "/v1/admin/switches/{switch_id}/release", tag = "operator", request_body = ReasonBody,
    params(("switch_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 202, body = Release, description = "Asked for, or (second operator) released"),
    AuthErrors, JsonBodyErrors, Invalid422, NotFound404,
    (status = 409, description = "`second_operator_required`: the operator who asked cannot confirm; `already_released`", body = Problem, content_type = "application/problem+json")))]
async fn release_switch(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(id): PathId<SwitchId>,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let by = op.actor();
    let released = switches::release(&state.db, &id, &by, &body.value.reason, state.clock.now_ms()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Release { id, released })).into_response())
}

/// Freezes a user: every money action refused, every session revoked.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/freeze", tag = "operator", request_body = ReasonBody,
    params(("user_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "Frozen"),
    AuthErrors, JsonBodyErrors, Invalid422, NotFound404))]
async fn freeze_user(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(user): PathId<UserId>,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let by = op.actor();
    crate::identity::freeze::freeze(&state.db, &user, &body.value.reason, &by, state.clock.now_ms()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Where an unfreeze stands.
#[derive(Serialize, utoipa::ToSchema)]
struct Unfreeze {
    user_id: UserId,
    /// `false`: asked for, waiting for a second operator; `true`: the freeze is released.
    unfrozen: bool,
}

/// Asks for, or (from a second, different operator) confirms, the end of a user's freeze: the
/// four-eyes rule of a switch release, for every switch of the freeze at once.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/unfreeze", tag = "operator", request_body = ReasonBody,
    params(("user_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 202, body = Unfreeze, description = "Asked for, or (second operator) unfrozen"),
    AuthErrors, JsonBodyErrors, Invalid422,
    (status = 404, description = "`not_found`: no such user, or the user is not frozen", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "`second_operator_required`: the operator who asked cannot confirm", body = Problem, content_type = "application/problem+json")))]
async fn unfreeze_user(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(user): PathId<UserId>,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let by = op.actor();
    let unfrozen = switches::release_freeze(&state.db, &user, &by, &body.value.reason, state.clock.now_ms()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Unfreeze { user_id: user, unfrozen })).into_response())
}

/// The result of walking the whole audit chain.
#[derive(Serialize, utoipa::ToSchema)]
struct ChainCheck {
    /// `true` when every entry's hash and link hold.
    intact: bool,
    /// The first entry that does not hold; null when intact.
    broken_id: Option<i64>,
    /// Why it does not hold; null when intact.
    problem: Option<String>,
    /// The newest entry's id (null for an empty log).
    head_id: Option<i64>,
    checked_at: String,
}

/// Walks the audit log's hash chain from its first entry, as `omamori admin audit verify` does
/// (without the anchor: keep `/v1/admin/audit/head` outside Omamori for that).
#[utoipa::path(get, path = "/v1/admin/audit/verify", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = ChainCheck, description = "Intact, or the first broken entry"), AuthErrors))]
async fn audit_verify(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    let head_id = crate::audit::head(&state.db).await?.map(|(id, _, _)| id);
    let broken = crate::audit::verify(&state.db).await?;
    let checked_at = crate::store::clock::rfc3339_ms(state.clock.now_ms());
    let (broken_id, problem) = broken.map_or((None, None), |(id, why)| (Some(id), Some(why)));
    Ok(axum::Json(ChainCheck { intact: broken_id.is_none(), broken_id, problem, head_id, checked_at }).into_response())
}

/// Corrections, those waiting for a second operator first.
#[derive(Serialize, utoipa::ToSchema)]
struct CorrectionList {
    items: Vec<crate::payments::corrections::Listed>,
}

/// The newest 200 corrections, proposed ones (waiting for a second operator's approval) first.
#[utoipa::path(get, path = "/v1/admin/corrections", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = CorrectionList, description = "At most 200"), AuthErrors))]
async fn list_corrections(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    let items = crate::payments::corrections::list(&state.db, 200).await?;
    Ok(axum::Json(CorrectionList { items }).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
// The handler takes `Result<Query<..>, _>`, which utoipa cannot see through: say where they are.
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
}

/// The audit chain's head; every member is null for an empty log.
#[derive(Serialize, utoipa::ToSchema)]
struct AuditHead {
    id: Option<i64>,
    hash: Option<String>,
    at: Option<String>,
    /// `id:hash`, to keep outside Omamori.
    anchor: Option<String>,
}

/// The audit chain's head: keep `anchor` outside Omamori, and `omamori admin audit verify --anchor`
/// later proves that no entry up to it was removed or rewritten.
#[utoipa::path(get, path = "/v1/admin/audit/head", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = AuditHead, description = "The newest entry (all null for an empty log)"), AuthErrors))]
async fn audit_head(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    let head = match crate::audit::head(&state.db).await? {
        Some((id, hash, at)) => AuditHead {
            id: Some(id),
            anchor: Some(format!("{id}:{hash}")),
            hash: Some(hash),
            at: Some(crate::store::clock::rfc3339_ms(at)),
        },
        None => AuditHead { id: None, hash: None, at: None, anchor: None },
    };
    Ok(axum::Json(head).into_response())
}

const NOTIFICATION_STATUSES: &[&str] = &["failed", "pending", "delivered"];

fn notification_status() -> utoipa::openapi::Object {
    one_of_schema(NOTIFICATION_STATUSES, "Which messages to list (default `failed`).")
}

#[derive(Deserialize, utoipa::IntoParams)]
// The handler takes `Result<Query<..>, _>`, which utoipa cannot see through: say where they are.
#[into_params(parameter_in = Query)]
struct NotificationQuery {
    #[param(schema_with = notification_status)]
    status: Option<String>,
}

/// The newest 200 messages of one status.
#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryList {
    items: Vec<Delivery>,
}

/// Where notifications stand (the newest 200 of a status), so that operators see deliveries that
/// keep failing: channel, masked recipient, kind, attempts and the last error, never the text.
#[utoipa::path(get, path = "/v1/admin/notifications", tag = "operator", params(NotificationQuery),
    security(("bearer" = [])), responses(
    (status = 200, body = DeliveryList, description = "Newest first"),
    AuthErrors,
    (status = 400, description = "`invalid_query`: `status` is not one of the three", body = Problem, content_type = "application/problem+json")))]
async fn list_notifications(
    State(state): State<AppState>,
    _viewer: RequireRole<Viewer>,
    q: Result<axum::extract::Query<NotificationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let invalid =
        || ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "status must be failed, pending or delivered");
    let axum::extract::Query(q) = q.map_err(|_| invalid())?;
    let status = q.status.unwrap_or_else(|| "failed".into());
    if !NOTIFICATION_STATUSES.contains(&status.as_str()) {
        return Err(invalid());
    }
    let items = crate::notify::for_operators(&state.db, &status, 200).await?;
    Ok(axum::Json(DeliveryList { items }).into_response())
}

/// A page of the audit log, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct AuditPage {
    items: Vec<Entry>,
    /// Give it as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// The audit log, newest first, each entry with its hash and the previous entry's.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "operator", params(AuditQuery), security(("bearer" = [])),
    responses(
    (status = 200, body = AuditPage, description = "At most 100 entries"),
    AuthErrors,
    (status = 400, description = "`invalid_cursor`: not a cursor this route gave; `invalid_query`", body = Problem, content_type = "application/problem+json")))]
async fn audit_log(
    State(state): State<AppState>,
    _viewer: RequireRole<Viewer>,
    q: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    const PAGE: i64 = 100;
    let axum::extract::Query(q) =
        q.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "the query is not valid"))?;
    let before = q
        .cursor
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor is not valid"))
        })
        .transpose()?;
    let items = crate::audit::list(&state.db, before, PAGE).await?;
    let next_cursor = (items.len() as i64 == PAGE).then(|| items.last().map(|i| i.id.to_string())).flatten();
    Ok(axum::Json(AuditPage { items, next_cursor }).into_response())
}

fn correction_kind() -> utoipa::openapi::Object {
    one_of_schema(&["payment", "topup"], "What to undo.")
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CorrectionBody {
    #[schema(schema_with = correction_kind)]
    kind: String,
    /// The payment's or top-up's id.
    id: String,
    /// 1 to 500 characters (after trimming).
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    reason: String,
}

/// Proposes undoing a fraudulent payment or top-up; a second operator must approve.
#[utoipa::path(post, path = "/v1/admin/corrections", tag = "operator", request_body = CorrectionBody,
    security(("bearer" = [])), responses(
    (status = 202, body = Correction, description = "Proposed (`status: proposed`)"),
    AuthErrors, JsonBodyErrors, Invalid422, NotFound404,
    (status = 409, description = "`not_reversible`: the payment or top-up did not succeed, or was undone already", body = Problem, content_type = "application/problem+json")))]
async fn propose_correction(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    body: ApiJson<CorrectionBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    if !crate::http::extract::is_id(&b.id) {
        return Err(ApiError::not_found(format!(
            "there is no such {}",
            if b.kind == "topup" { "top-up" } else { "payment" }
        )));
    }
    let v =
        crate::payments::corrections::propose(&state.db, &b.kind, &b.id, &b.reason, &op.actor(), state.clock.now_ms())
            .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(v)).into_response())
}

/// Approves and applies a proposed correction (a second, different operator).
#[utoipa::path(post, path = "/v1/admin/corrections/{correction_id}/approve", tag = "operator",
    params(("correction_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = Correction, description = "Applied (`status: applied`, with `result`)"),
    AuthErrors, NotFound404,
    (status = 409, description = "`second_operator_required`: the proposer cannot approve; `already_applied`; `not_reversible`: the top-up is no longer succeeded", body = Problem, content_type = "application/problem+json")))]
async fn approve_correction(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(id): PathId<CorrectionId>,
) -> Result<Response, ApiError> {
    let v = crate::payments::corrections::approve(&state.db, &id, &op.actor(), state.clock.now_ms()).await?;
    Ok(axum::Json(v).into_response())
}

/// Every rule, by event and priority (the order they are evaluated in).
#[derive(Serialize, utoipa::ToSchema)]
struct RuleList {
    items: Vec<Rule>,
}

/// The risk rules, by event and priority.
#[utoipa::path(get, path = "/v1/admin/rules", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = RuleList, description = "Every rule"), AuthErrors))]
async fn list_rules(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    Ok(axum::Json(RuleList { items: super::rules::list(&state.db).await? }).into_response())
}

/// A change to a rule: the fields given replace the rule's, the others stay.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    /// Replaces every condition of the rule.
    #[schema(value_type = Option<Conditions>)]
    conditions: Option<serde_json::Value>,
    #[schema(schema_with = outcome_or_null)]
    outcome: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRuleBody {
    /// Letters, digits, '-' and '_'.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    id: String,
    #[schema(schema_with = super::rules::rule_event)]
    event: String,
    /// Lower is evaluated first; the first matching rule decides.
    #[schema(minimum = 0, maximum = 1_000_000)]
    priority: i64,
    /// Signals that must all hold (no signal: the rule always matches).
    #[schema(value_type = Conditions)]
    conditions: serde_json::Value,
    #[schema(schema_with = super::rules::rule_outcome)]
    outcome: String,
}

fn outcome_or_null() -> utoipa::openapi::Object {
    crate::ids::or_null(super::rules::rule_outcome())
}

/// Rule conditions from a request body: only the known signals, with their types.
fn parse_conditions(value: serde_json::Value) -> Result<Conditions, ApiError> {
    serde_json::from_value(value)
        .map_err(|_| ApiError::invalid_body("conditions name unknown signals or have wrong types"))
}

/// Adds a risk rule (admin role; audited; applies to the next request, without a restart).
#[utoipa::path(post, path = "/v1/admin/rules", tag = "operator", request_body = NewRuleBody,
    security(("bearer" = [])), responses(
    (status = 201, body = RuleList, description = "Added; every rule"),
    AuthErrors, JsonBodyErrors, Invalid422,
    (status = 409, description = "`rule_exists`: a rule has this id", body = Problem, content_type = "application/problem+json")))]
async fn create_rule(
    State(state): State<AppState>,
    op: RequireRole<Admin>,
    body: ApiJson<NewRuleBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let conditions = parse_conditions(b.conditions)?;
    let rule = super::rules::NewRule {
        id: &b.id,
        event: &b.event,
        priority: b.priority,
        conditions: &conditions,
        outcome: &b.outcome,
    };
    super::rules::create(&state.db, rule, &op.actor(), state.clock.now_ms()).await?;
    let items = super::rules::list(&state.db).await?;
    Ok((StatusCode::CREATED, axum::Json(RuleList { items })).into_response())
}

/// Changes a risk rule (admin role; audited; applies to the next request, without a restart). Any
/// of the fields may be left out (an empty body only touches `updated_at`).
#[utoipa::path(put, path = "/v1/admin/rules/{rule_id}", tag = "operator", request_body = Option<RuleBody>,
    params(("rule_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = RuleList, description = "Changed; every rule"),
    AuthErrors, JsonBodyErrors, Invalid422, NotFound404))]
async fn update_rule(
    State(state): State<AppState>,
    op: RequireRole<Admin>,
    id: Result<Path<String>, PathRejection>,
    body: ApiJson<RuleBody>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::not_found("there is no such rule"))?;
    // Rule ids are words joined by '-'; anything else (a NUL, which PostgreSQL cannot store) is not found.
    if !super::rules::is_rule_id(&id) {
        return Err(ApiError::not_found("there is no such rule"));
    }
    let b = body.value;
    let conditions = b.conditions.map(parse_conditions).transpose()?;
    super::rules::update(
        &state.db,
        &id,
        conditions.as_ref(),
        b.outcome.as_deref(),
        b.enabled,
        &op.actor(),
        state.clock.now_ms(),
    )
    .await?;
    Ok(axum::Json(RuleList { items: super::rules::list(&state.db).await? }).into_response())
}

/// The newest 200 review cases.
#[derive(Serialize, utoipa::ToSchema)]
struct ReviewList {
    items: Vec<Review>,
}

/// Review cases opened by risk holds, newest first.
#[utoipa::path(get, path = "/v1/admin/reviews", tag = "operator", security(("bearer" = [])),
    responses((status = 200, body = ReviewList, description = "At most 200, newest first"), AuthErrors))]
async fn list_reviews(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    Ok(axum::Json(ReviewList { items: super::rules::reviews(&state.db).await? }).into_response())
}

fn decision() -> utoipa::openapi::Object {
    one_of_schema(&["approve", "reject"], "The decision.")
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    #[schema(schema_with = decision)]
    decision: String,
}

/// A decided review case.
#[derive(Serialize, utoipa::ToSchema)]
struct Decided {
    review_id: ReviewId,
    #[schema(schema_with = decision)]
    decision: String,
    /// The charged top-up when a held top-up was approved; null otherwise.
    result: Option<crate::payments::topups::Topped>,
}

/// Decides a review case: an approved held top-up is charged and credited; a rejected one is declined.
#[utoipa::path(post, path = "/v1/admin/reviews/{review_id}/decide", tag = "operator", request_body = DecideBody,
    params(("review_id" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = Decided, description = "Decided"),
    AuthErrors, JsonBodyErrors, NotFound404,
    (status = 422, description = "`invalid_body`: a field is missing, unknown or wrong; `limit_exceeded`: approving the held top-up would break one of the shopper's top-up caps now (the case stays open: reject it, or decide later)", body = Problem, content_type = "application/problem+json"),
    (status = 402, description = "`card_declined`: the approved top-up's card was declined (the case stays decided)", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "`already_decided`", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "`unavailable`: the card processor did not answer; the sweeper settles the approved top-up later", body = Problem, content_type = "application/problem+json")))]
async fn decide_review(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    PathId(id): PathId<ReviewId>,
    body: ApiJson<DecideBody>,
) -> Result<Response, ApiError> {
    let approve = match body.value.decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(ApiError::invalid_body("decision must be approve or reject")),
    };
    let (kind, subject) = super::rules::decide(
        &state.db,
        &id,
        approve,
        &op.actor(),
        &crate::payments::reviews::ReviewHook,
        state.clock.now_ms(),
    )
    .await?;
    let result = match (kind.as_str(), subject, approve) {
        ("topup", Some(topup), true) => {
            let topup = crate::ids::TopupId::from_raw(topup);
            Some(crate::payments::topups::charge_approved(&state, &topup).await?)
        }
        _ => None,
    };
    Ok(axum::Json(Decided { review_id: id, decision: body.value.decision, result }).into_response())
}
