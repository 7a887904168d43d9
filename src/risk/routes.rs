//! Operator routes of risk: kill switches and freezes.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::switches;
use crate::http::auth::{Admin, OperatorRole, RequireRole, Viewer};
use crate::http::error::ApiError;
use crate::http::error::Problem;
use crate::http::extract::ApiJson;
use crate::merchants::routes::path_id;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_switches, engage_switch))
        .routes(routes!(release_switch))
        .routes(routes!(freeze_user))
        .routes(routes!(audit_log))
        .routes(routes!(audit_head))
        .routes(routes!(list_notifications))
        .routes(routes!(propose_correction))
        .routes(routes!(approve_correction))
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(update_rule))
        .routes(routes!(list_reviews))
        .routes(routes!(decide_review))
}

/// The switches and freezes in force.
#[utoipa::path(get, path = "/v1/admin/switches", tag = "operator",
    responses((status = 200, description = "{items:[{id, name, scope, engaged, reason, engaged_at, engaged_by}]}")))]
async fn list_switches(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    Ok(axum::Json(json!({"items": switches::list(&state.db).await?})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Scope {
    /// `global`, `merchant`, `user`, `card` or `country`
    kind: String,
    id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EngageBody {
    /// `signups`, `logins`, `card_linking`, `topups`, `payments` or `refunds`
    name: String,
    scope: Option<Scope>,
    reason: String,
}

/// Engages a switch at once (operator role).
#[utoipa::path(post, path = "/v1/admin/switches", tag = "operator", request_body = EngageBody, responses(
    (status = 201, description = "{id, name, scope, engaged: true}"),
    (status = 422, body = Problem, content_type = "application/problem+json")))]
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
    reason: String,
}

/// Asks for, or (from a second operator) confirms, a switch's release.
#[utoipa::path(post, path = "/v1/admin/switches/{switch_id}/release", tag = "operator", request_body = ReasonBody,
    params(("switch_id" = String, Path)), responses(
    (status = 202, description = "{released: false} when a second operator must confirm; {released: true} when it took effect"),
    (status = 409, description = "second_operator_required", body = Problem, content_type = "application/problem+json")))]
async fn release_switch(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    id: Result<Path<String>, PathRejection>,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let id = path_id(id, "switch")?;
    let by = op.actor();
    let released = switches::release(&state.db, &id, &by, &body.value.reason, state.clock.now_ms()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"id": id, "released": released}))).into_response())
}

/// Freezes a user: every money action refused, every session revoked.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/freeze", tag = "operator", request_body = ReasonBody,
    params(("user_id" = String, Path)), responses(
    (status = 204, description = "frozen"),
    (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn freeze_user(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    id: Result<Path<String>, PathRejection>,
    body: ApiJson<ReasonBody>,
) -> Result<Response, ApiError> {
    let user = path_id(id, "user")?;
    let by = op.actor();
    crate::identity::freeze::freeze(&state.db, &user, &body.value.reason, &by, state.clock.now_ms()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
struct AuditQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The audit chain's head: keep `anchor` outside Omamori, and `omamori admin audit verify --anchor`
/// later proves that no entry up to it was removed or rewritten.
#[utoipa::path(get, path = "/v1/admin/audit/head", tag = "operator",
    responses((status = 200, description = "{id, hash, at, anchor} (all null for an empty log)")))]
async fn audit_head(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    let body = match crate::audit::head(&state.db).await? {
        Some((id, hash, at)) => {
            json!({"id": id, "hash": hash, "at": crate::store::clock::rfc3339_ms(at), "anchor": format!("{id}:{hash}")})
        }
        None => json!({"id": null, "hash": null, "at": null, "anchor": null}),
    };
    Ok(axum::Json(body).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
struct NotificationQuery {
    /// `failed` (default), `pending` or `delivered`.
    status: Option<String>,
}

/// Where notifications stand (the newest 200 of a status), so that operators see deliveries that
/// keep failing: channel, masked recipient, kind, attempts and the last error, never the text.
#[utoipa::path(get, path = "/v1/admin/notifications", tag = "operator", params(NotificationQuery),
    responses((status = 200, description = "{items:[{id, channel, recipient, kind, status, attempts, last_error, delivered_via, event_id, created_at, next_attempt_at, delivered_at}]}"),
    (status = 400, description = "invalid_query", body = Problem, content_type = "application/problem+json")))]
async fn list_notifications(
    State(state): State<AppState>,
    _viewer: RequireRole<Viewer>,
    q: Result<axum::extract::Query<NotificationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let invalid =
        || ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "status must be failed, pending or delivered");
    let axum::extract::Query(q) = q.map_err(|_| invalid())?;
    let status = q.status.unwrap_or_else(|| "failed".into());
    if !["failed", "pending", "delivered"].contains(&status.as_str()) {
        return Err(invalid());
    }
    let items = crate::notify::for_operators(&state.db, &status, 200).await?;
    Ok(axum::Json(json!({"items": items})).into_response())
}

/// The audit log, newest first, each entry with its hash and the previous entry's.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "operator", params(AuditQuery),
    responses((status = 200, description = "{items:[{id, at, actor, action, subject, detail, hash, prev_hash}], next_cursor}")))]
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
    let next = (items.len() as i64 == PAGE).then(|| items.last().map(|i| i.id.to_string())).flatten();
    Ok(axum::Json(json!({"items": items, "next_cursor": next})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CorrectionBody {
    /// `payment` or `topup`
    kind: String,
    /// The payment's or top-up's id.
    id: String,
    reason: String,
}

/// Proposes undoing a fraudulent payment or top-up; a second operator must approve.
#[utoipa::path(post, path = "/v1/admin/corrections", tag = "operator", request_body = CorrectionBody, responses(
    (status = 202, description = "{correction_id, status: proposed}"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "not_reversible", body = Problem, content_type = "application/problem+json")))]
async fn propose_correction(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    body: ApiJson<CorrectionBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    if !crate::merchants::routes::is_id(&b.id) {
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
    params(("correction_id" = String, Path)), responses(
    (status = 200, description = "{correction_id, status: applied, result}"),
    (status = 409, description = "second_operator_required, already_applied", body = Problem, content_type = "application/problem+json")))]
async fn approve_correction(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id, "correction")?;
    let v = crate::payments::corrections::approve(&state.db, &id, &op.actor(), state.clock.now_ms()).await?;
    Ok(axum::Json(v).into_response())
}

/// The risk rules, by event and priority.
#[utoipa::path(get, path = "/v1/admin/rules", tag = "operator", responses((status = 200, description = "{items}")))]
async fn list_rules(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    Ok(axum::Json(json!({"items": super::rules::list(&state.db).await?})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    #[schema(value_type = Object)]
    conditions: Option<serde_json::Value>,
    /// allow, step_up, hold or decline
    outcome: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewRuleBody {
    /// Letters, digits, '-' and '_'.
    id: String,
    /// login, card_link, topup or payment
    event: String,
    /// Lower is evaluated first; the first matching rule decides.
    priority: i64,
    /// Signals that must all hold: amount_at_least, new_device, topup_within_minutes,
    /// credential_change_within_hours, mcc_in, country_not_in, per_hour_at_least, impossible_travel.
    #[schema(value_type = Object)]
    conditions: serde_json::Value,
    /// allow, step_up, hold or decline
    outcome: String,
}

/// Rule conditions from a request body: only the known signals, with their types.
fn parse_conditions(value: serde_json::Value) -> Result<super::rules::Conditions, ApiError> {
    serde_json::from_value(value)
        .map_err(|_| ApiError::invalid_body("conditions name unknown signals or have wrong types"))
}

/// Adds a risk rule (admin role; audited; applies to the next request, without a restart).
#[utoipa::path(post, path = "/v1/admin/rules", tag = "operator", request_body = NewRuleBody,
    responses((status = 201, description = "the rules"),
    (status = 409, description = "rule_exists", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "invalid_body", body = Problem, content_type = "application/problem+json")))]
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
    Ok((axum::http::StatusCode::CREATED, axum::Json(json!({"items": items}))).into_response())
}

/// Changes a risk rule (admin role; audited; applies to the next request, without a restart).
#[utoipa::path(put, path = "/v1/admin/rules/{rule_id}", tag = "operator", request_body = RuleBody,
    params(("rule_id" = String, Path)), responses((status = 200, description = "the rules"), (status = 404, body = Problem, content_type = "application/problem+json")))]
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
    Ok(axum::Json(json!({"items": super::rules::list(&state.db).await?})).into_response())
}

/// Review cases opened by risk holds, newest first.
#[utoipa::path(get, path = "/v1/admin/reviews", tag = "operator", responses((status = 200, description = "{items}")))]
async fn list_reviews(State(state): State<AppState>, _viewer: RequireRole<Viewer>) -> Result<Response, ApiError> {
    Ok(axum::Json(json!({"items": super::rules::reviews(&state.db).await?})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    /// approve or reject
    decision: String,
}

/// Decides a review case: an approved held top-up is charged and credited; a rejected one is declined.
#[utoipa::path(post, path = "/v1/admin/reviews/{review_id}/decide", tag = "operator", request_body = DecideBody,
    params(("review_id" = String, Path)), responses((status = 200, description = "{review_id, decision, result}"),
    (status = 409, description = "already_decided", body = Problem, content_type = "application/problem+json")))]
async fn decide_review(
    State(state): State<AppState>,
    op: RequireRole<OperatorRole>,
    id: Result<Path<String>, PathRejection>,
    body: ApiJson<DecideBody>,
) -> Result<Response, ApiError> {
    let id = path_id(id, "review")?;
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
            json!(crate::payments::topups::charge_approved(&state, &topup).await?)
        }
        _ => json!(null),
    };
    Ok(axum::Json(json!({"review_id": id, "decision": body.value.decision, "result": result})).into_response())
}
