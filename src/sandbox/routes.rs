//! The sandbox's own routes (API.md "Sandbox"): the messages sent, the service clock, test ledger
//! accounts and transfers, and a reported chargeback. Mounted only when `sandbox = true`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::ApiError;
use crate::http::extract::ApiJson;
use crate::http::idempotent::{self as idempotency, IdempotencyKey, Outcome};
use crate::ledger::{self, AccountId, AccountKind, EntryKind, NewEntry};
use crate::money::Currency;
use crate::notify::{self, Channel, Message, SandboxMessage};
use crate::state::AppState;
use crate::store::{self, clock};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_messages))
        .routes(routes!(advance_clock))
        .routes(routes!(create_account))
        .routes(routes!(get_account))
        .routes(routes!(create_transfer))
        .routes(routes!(report_chargeback))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct MessagesQuery {
    /// The phone number (E.164) or e-mail address the messages went to.
    to: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MessageList {
    items: Vec<SandboxMessage>,
}

/// The SMS and e-mail messages sent to one recipient, newest first (at most 100).
#[utoipa::path(get, path = "/v1/sandbox/messages", tag = "sandbox", params(MessagesQuery),
    responses((status = 200, body = MessageList)))]
async fn list_messages(
    State(state): State<AppState>,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "give the recipient as ?to=<phone or e-mail>")
    })?;
    let to = query.to.trim();
    if to.is_empty() || to.len() > 320 || to.contains('\0') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "give the recipient as ?to=<phone or e-mail>",
        ));
    }
    let items = notify::messages_to(&state.db, to, 100).await?;
    Ok(axum::Json(MessageList { items }).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ClockAdvance {
    /// Seconds to move the service clock forward (0 reads it).
    advance_seconds: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ClockNow {
    now: String,
}

/// Moves the shared service clock forward, for expiry and cooling-off tests.
#[utoipa::path(post, path = "/v1/sandbox/clock", tag = "sandbox", request_body = ClockAdvance,
    responses((status = 200, body = ClockNow), (status = 422, body = crate::http::error::Problem, content_type = "application/problem+json")))]
async fn advance_clock(State(state): State<AppState>, body: ApiJson<ClockAdvance>) -> Result<Response, ApiError> {
    const TEN_YEARS_SECS: i64 = 10 * 366 * 24 * 3600;
    let seconds = body.value.advance_seconds;
    if !(0..=TEN_YEARS_SECS).contains(&seconds) {
        return Err(ApiError::invalid_body("advance_seconds must be from 0 to 316224000 (ten years)"));
    }
    let now = state.clock.advance(&state.db, seconds).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "clock_limit",
            "the sandbox clock cannot run more than 100 years ahead",
        )
    })?;
    Ok(axum::Json(ClockNow { now: clock::rfc3339(now) }).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    /// `wallet` (never below zero) or another ledger account kind.
    kind: AccountKind,
    /// An e-mail address that receives a notice when money arrives (wallets only).
    owner: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AccountView {
    account_id: i64,
    kind: AccountKind,
    owner: Option<String>,
    balance: i64,
    currency: Currency,
}

impl From<ledger::Account> for AccountView {
    fn from(a: ledger::Account) -> Self {
        AccountView { account_id: a.id.0, kind: a.kind, owner: a.owner_ref, balance: a.balance.0, currency: a.currency }
    }
}

/// Opens a test account with a zero balance.
#[utoipa::path(post, path = "/v1/sandbox/accounts", tag = "sandbox", request_body = NewAccount,
    responses((status = 201, body = AccountView), (status = 422, body = crate::http::error::Problem, content_type = "application/problem+json")))]
async fn create_account(State(state): State<AppState>, body: ApiJson<NewAccount>) -> Result<Response, ApiError> {
    let NewAccount { kind, owner } = body.value;
    if let Some(owner) = &owner
        && (owner.len() > 254 || !owner.contains('@') || owner.trim() != owner)
    {
        return Err(ApiError::invalid_body("owner must be an e-mail address"));
    }
    let now = state.clock.now_ms();
    let account = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let id = ledger::create_account(&mut tx, kind, Currency::Jpy, owner.as_deref(), now).await?;
        let account = ledger::account(&mut tx, id).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(account)
    })
    .await?
    .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a created account was not found")))?;
    Ok((StatusCode::CREATED, axum::Json(AccountView::from(account))).into_response())
}

/// A test account and its balance.
#[utoipa::path(get, path = "/v1/sandbox/accounts/{id}", tag = "sandbox", params(("id" = i64, Path)),
    responses((status = 200, body = AccountView), (status = 404, body = crate::http::error::Problem, content_type = "application/problem+json")))]
async fn get_account(
    State(state): State<AppState>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::not_found("there is no such account"))?;
    let mut conn = state.db.pool().acquire().await?;
    let account = ledger::account(&mut conn, AccountId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("there is no such account"))?;
    Ok(axum::Json(AccountView::from(account)).into_response())
}

#[derive(Deserialize, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTransfer {
    from_account: i64,
    to_account: i64,
    /// Whole yen, from 1 to the configured ceiling.
    #[schema(value_type = i64)]
    amount: serde_json::Value,
}

#[derive(Serialize, utoipa::ToSchema)]
struct TransferView {
    entry_id: i64,
    amount: i64,
    currency: Currency,
    from_balance: i64,
    to_balance: i64,
}

/// Moves money between two test accounts as one journal entry (needs `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/sandbox/transfers", tag = "sandbox", request_body = NewTransfer,
    params(("Idempotency-Key" = String, Header, description = "A unique key per transfer, at most 255 characters")),
    responses(
        (status = 201, body = TransferView),
        (status = 400, description = "Idempotency-Key missing", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 402, description = "insufficient_funds", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_conflict or idempotency_in_progress", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "invalid_amount or invalid_body", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ))]
async fn create_transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: ApiJson<NewTransfer>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let fingerprint = idempotency::fingerprint("POST /v1/sandbox/transfers", &body.raw);
    let input = body.value;
    let ceiling = state.config.amount_ceiling_yen;
    let clock = state.clock.clone();
    Ok(idempotency::run(&state.db, &state.clock, "sandbox", &key, &fingerprint, move |conn| {
        let input = input.clone();
        let clock = clock.clone();
        Box::pin(async move {
            let amount = crate::money::parse_amount(&input.amount, ceiling)
                .map_err(|e| ApiError::invalid_amount(e.to_string()))?;
            if input.from_account == input.to_account {
                return Err(ApiError::invalid_body("from_account and to_account must differ"));
            }
            let now = clock.now_ms();
            let (from, to) = (AccountId(input.from_account), AccountId(input.to_account));
            let mut owners = Vec::new();
            for id in [from, to] {
                let account = ledger::account(conn, id).await?.ok_or_else(|| {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_account", format!("{id} does not exist"))
                })?;
                owners.push(account.owner_ref.filter(|_| account.kind == AccountKind::Wallet));
            }
            let reference = format!("sandbox-transfer:{}", uuid::Uuid::now_v7());
            let posted =
                ledger::post(conn, &NewEntry::transfer(EntryKind::SandboxTransfer, reference, from, to, amount), now)
                    .await?;
            let (from_balance, to_balance) =
                (posted.balance_of(from).unwrap_or_default(), posted.balance_of(to).unwrap_or_default());
            // The notice commits with the money, or neither does.
            if let Some(owner) = &owners[1] {
                let message = Message {
                    channel: Channel::Email,
                    to: owner.clone(),
                    kind: "money_received".into(),
                    subject: Some(format!("You received {amount}")),
                    body: format!("{amount} arrived in your Omamori sandbox wallet. Balance: {to_balance}."),
                    code: None,
                };
                notify::enqueue(conn, &message, now).await?;
            }
            Ok(Outcome::created(json!({
                "entry_id": posted.entry.0,
                "amount": amount.0,
                "currency": Currency::Jpy,
                "from_balance": from_balance.0,
                "to_balance": to_balance.0,
            })))
        })
    })
    .await)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ChargebackBody {
    topup_id: String,
}

/// Plays the card processor reporting a chargeback of a top-up: the wallet pays back what it
/// can, the rest is booked to losses, and the wallet is frozen for review.
#[utoipa::path(post, path = "/v1/sandbox/chargebacks", tag = "sandbox", request_body = ChargebackBody,
    responses((status = 200, description = "{topup_id, status: charged_back, from_wallet, to_losses}"),
    (status = 404, body = crate::http::error::Problem, content_type = "application/problem+json")))]
async fn report_chargeback(State(state): State<AppState>, body: ApiJson<ChargebackBody>) -> Result<Response, ApiError> {
    let id = body.value.topup_id;
    if !crate::merchants::routes::is_id(&id) {
        return Err(ApiError::not_found("there is no such top-up"));
    }
    let v = crate::payments::corrections::chargeback(&state.db, &id, state.clock.now_ms()).await?;
    Ok(axum::Json(v).into_response())
}
