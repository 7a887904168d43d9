//! The sandbox's own routes (API.md "Sandbox"): the messages sent, the service clock, test ledger
//! accounts and transfers, and a reported chargeback. Mounted only when `sandbox = true`.

use crate::ids::TopupId;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::{ApiError, IdempotentBodyErrors, Invalid422, JsonBodyErrors, NotFound404, Problem};
use crate::http::extract::{ApiJson, IdempotentJson};
use crate::http::idempotent::{self as idempotency, IdempotencyKey, Outcome};
use crate::ledger::{self, AccountId, AccountKind, EntryKind, NewEntry};
use crate::money::Currency;
use crate::notify::{self, Channel, Message, SandboxMessage};
use crate::payments::corrections::Reversed as Chargeback;
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
// The handler takes `Result<Query<..>, _>`, which utoipa cannot see through: say where they are.
#[into_params(parameter_in = Query)]
struct MessagesQuery {
    /// The phone number (E.164) or e-mail address the messages went to.
    #[param(min_length = 1, max_length = 320)]
    to: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MessageList {
    items: Vec<SandboxMessage>,
}

/// The SMS and e-mail messages sent to one recipient, newest first (at most 100).
#[utoipa::path(get, path = "/v1/sandbox/messages", tag = "sandbox", params(MessagesQuery),
    responses((status = 200, body = MessageList, description = "Newest first, at most 100"),
    (status = 400, description = "`invalid_query`: no `to`, or one that is empty, over 320 characters or holds a NUL", body = Problem, content_type = "application/problem+json")))]
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
    /// Seconds to move the service clock forward (0 reads it), at most ten years.
    #[schema(minimum = 0, maximum = 316_224_000)]
    advance_seconds: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ClockNow {
    /// The service clock after the move.
    #[schema(format = DateTime)]
    now: String,
}

/// Moves the shared service clock forward, for expiry and cooling-off tests.
#[utoipa::path(post, path = "/v1/sandbox/clock", tag = "sandbox", request_body = ClockAdvance,
    responses((status = 200, body = ClockNow, description = "Moved"), JsonBodyErrors,
    (status = 422, description = "`invalid_body`: `advance_seconds` missing or out of range; `clock_limit`: the clock would run more than 100 years ahead", body = Problem, content_type = "application/problem+json")))]
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
    #[schema(format = Email, max_length = 254)]
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
    responses((status = 201, body = AccountView, description = "Opened"), JsonBodyErrors, Invalid422))]
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
    responses((status = 200, body = AccountView, description = "The account"), NotFound404))]
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
    /// Whole yen, from 1 to the configured ceiling (default 1,000,000).
    #[schema(value_type = i64, minimum = 1)]
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
    params(IdempotencyKey),
    responses(
        (status = 201, body = TransferView, description = "Moved (a repeat with the same key and body gets the same answer)"),
        IdempotentBodyErrors,
        (status = 402, description = "`insufficient_funds`: a wallet would go below zero (stored: a repeat gets it again)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_amount`: not an integer from 1 to the ceiling; `unknown_account`; `invalid_body`: the accounts are the same, or a field is wrong", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: IdempotentJson<NewTransfer>,
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
            let input = input?;
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
            let view = TransferView {
                entry_id: posted.entry.0,
                amount: amount.0,
                currency: Currency::Jpy,
                from_balance: from_balance.0,
                to_balance: to_balance.0,
            };
            Ok(Outcome::created(serde_json::to_value(view).map_err(ApiError::internal)?))
        })
    })
    .await)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ChargebackBody {
    topup_id: TopupId,
}

/// Plays the card processor reporting a chargeback of a top-up: the wallet pays back what it
/// can, the rest is booked to losses, and the wallet is frozen for review.
#[utoipa::path(post, path = "/v1/sandbox/chargebacks", tag = "sandbox", request_body = ChargebackBody,
    responses((status = 200, body = Chargeback, description = "Charged back"), JsonBodyErrors, Invalid422, NotFound404,
    (status = 409, description = "`already_charged_back`; `not_reversible`: the top-up did not succeed", body = Problem, content_type = "application/problem+json")))]
async fn report_chargeback(State(state): State<AppState>, body: ApiJson<ChargebackBody>) -> Result<Response, ApiError> {
    let id = body.value.topup_id;
    if !crate::http::extract::is_id(id.as_str()) {
        return Err(ApiError::not_found("there is no such top-up"));
    }
    let v = crate::payments::corrections::chargeback(&state.db, &id, state.clock.now_ms()).await?;
    Ok(axum::Json(v).into_response())
}
