//! HTTP routes of payments: the wallet's (cards, top-ups, codes, store-QR payments, limits,
//! history, notices) and the POS's (charges, refunds, reversals).

use crate::http::extract::PathId;
use crate::ids::CardId;
use crate::ids::PaymentId;
use crate::ids::TerminalId;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{cards, pos, topups, wallet};
use crate::http::auth::{ShopperClient, TerminalAuth, UserSession};
use crate::http::error::{
    ApiError, AuthErrors, IdempotentBodyErrors, Invalid422, JsonBodyErrors, NotFound404, Problem, ShopperAuth,
    TooMany429, Unauthenticated401, Unavailable503,
};
use crate::http::extract::{ApiJson, IdempotentJson};
use crate::http::idempotent::{self as idempotency, IdempotencyKey, Outcome};
use crate::idempotency::{self as claims, IdempotencyError};
use crate::identity;
use crate::merchants;
use crate::money::{Currency, Yen, parse_amount};
use crate::ports::processor::RawCard;
use crate::risk::client::ClientInfo;
use crate::secret::Secret;
use crate::state::AppState;
use crate::store::{self, clock};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(link_card, list_cards))
        .routes(routes!(remove_card))
        .routes(routes!(topup))
        .routes(routes!(get_wallet))
        .routes(routes!(set_limits))
        .routes(routes!(payment_code))
        .routes(routes!(payment_code_qr))
        .routes(routes!(pay_store_qr))
        .routes(routes!(transactions))
        .routes(routes!(transactions_csv))
        .routes(routes!(notifications))
        .routes(routes!(pos_charge, pos_list))
        .routes(routes!(pos_get))
        .routes(routes!(pos_refund))
        .routes(routes!(pos_reversal))
}

fn amount(state: &AppState, v: &Value) -> Result<Yen, ApiError> {
    parse_amount(v, state.config.amount_ceiling_yen).map_err(|e| ApiError::invalid_amount(e.to_string()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CardBody {
    number: Option<String>,
    exp_month: Option<u32>,
    exp_year: Option<u32>,
    cvc: Option<String>,
    /// A token from the card processor (preferred: the number never reaches Omamori).
    processor_token: Option<String>,
}

/// Links a card (needs step-up); the issuer may ask for a challenge first.
#[utoipa::path(post, path = "/v1/cards", tag = "shopper", request_body = CardBody, security(("bearer" = [])), responses(
    (status = 201, body = cards::Linked, description = "Linked: `status` is `active`, with `brand` and `last4`"),
    (status = 202, body = cards::Linked, description = "Not linked yet: `pending_challenge` with the issuer's `challenge_id`, or held for review with `review_id`"),
    Unauthenticated401, JsonBodyErrors, TooMany429, Unavailable503,
    (status = 402, description = "`card_declined`: the processor refused the card; `risk_declined`: a risk rule refused it", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`forbidden`: not a shopper's session token; `region_blocked`; `step_up_required`: with `challenge_id` and `methods`; `cooling_off`: with `retry_after`; `switch_engaged`; `account_frozen`", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "`card_already_linked`: this card is in the wallet already", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`card_not_allowed`: the card belongs to another wallet; `card_limit_reached`; `invalid_card`; `invalid_body`: send either a card number (with `exp_month`, `exp_year`, `cvc`) or a `processor_token`", body = Problem, content_type = "application/problem+json")))]
async fn link_card(
    State(state): State<AppState>,
    s: UserSession,
    client: ShopperClient,
    body: ApiJson<CardBody>,
) -> Result<Response, ApiError> {
    let b = body.value;
    let input = match (b.processor_token, b.number) {
        (Some(token), None) if (1..=200).contains(&token.len()) => cards::CardInput::Token(token),
        (None, Some(number)) => {
            let (Some(exp_month), Some(exp_year), Some(cvc)) = (b.exp_month, b.exp_year, b.cvc) else {
                return Err(ApiError::invalid_body("a card number needs exp_month, exp_year and cvc"));
            };
            let number: String = number.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
            if number.len() > 19 || cvc.len() > 4 {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_card",
                    "the card details are not valid",
                ));
            }
            cards::CardInput::Raw(RawCard { number: Secret::new(number), exp_month, exp_year, cvc: Secret::new(cvc) })
        }
        _ => {
            return Err(ApiError::invalid_body(
                "send either a card number (with exp_month, exp_year, cvc) or a processor_token",
            ));
        }
    };
    let linked = cards::link(&state, &cards::Linker { session: &s, client: &client.0 }, input).await?;
    let status = if linked.status == "active" { StatusCode::CREATED } else { StatusCode::ACCEPTED };
    Ok((status, axum::Json(linked)).into_response())
}

/// The wallet's cards.
#[derive(Serialize, utoipa::ToSchema)]
struct CardList {
    items: Vec<cards::Card>,
}

/// The wallet's cards.
#[utoipa::path(get, path = "/v1/cards", tag = "shopper", security(("bearer" = [])),
    responses((status = 200, body = CardList, description = "The wallet's cards"), ShopperAuth))]
async fn list_cards(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
) -> Result<Response, ApiError> {
    let mut conn = state.db.pool().acquire().await?;
    Ok(axum::Json(CardList { items: cards::list(&mut conn, s.user_id()).await? }).into_response())
}

/// Removes a card from the wallet.
#[utoipa::path(delete, path = "/v1/cards/{card_id}", tag = "shopper", params(("card_id" = String, Path)),
    security(("bearer" = [])), responses((status = 204, description = "Removed"), ShopperAuth, NotFound404))]
async fn remove_card(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
    PathId(id): PathId<CardId>,
) -> Result<Response, ApiError> {
    cards::remove(&state, s.user_id(), &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TopupBody {
    card_id: CardId,
    #[schema(value_type = i64)]
    amount: Value,
}

/// Tops the wallet up from a linked card (needs `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/topups", tag = "shopper", request_body = TopupBody,
    params(IdempotencyKey), security(("bearer" = [])), responses(
    (status = 201, body = topups::Topped, description = "Credited: `{topup_id, amount, balance}` (a repeat with the same key and body gets the same answer)"),
    (status = 202, body = topups::Topped, description = "Not credited yet: `{topup_id, status}`, held for review or pending at the processor"),
    Unauthenticated401, IdempotentBodyErrors, TooMany429,
    (status = 402, description = "`card_declined`: the processor refused the charge (stored); `risk_declined`: with `review_id`", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`forbidden`: not a shopper's session token; `region_blocked`; `step_up_required`: with `challenge_id` and `methods`; `cooling_off`: with `retry_after`; `switch_engaged`; `account_frozen`", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`limit_exceeded`: over a top-up limit (stored); `invalid_amount`; `card_not_found`: no such active card of yours; `invalid_body`", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "`unavailable`: the database or the card processor did not answer in time; try again", body = Problem, content_type = "application/problem+json")))]
async fn topup(
    State(state): State<AppState>,
    s: UserSession,
    client: ClientInfo,
    headers: HeaderMap,
    body: IdempotentJson<TopupBody>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    crate::risk::client::country_policy(&state.config, &client)?;
    let caller = format!("user:{}", s.user_id());
    let fingerprint = idempotency::fingerprint("POST /v1/topups", &body.raw);
    let claim = match idempotency::begin(&state.db, &state.clock, &caller, key.as_str(), &fingerprint).await? {
        claims::Begin::Replay(stored) => return Ok(idempotency::replay(stored)),
        claims::Begin::Fresh(claim) => claim,
    };
    let input = match body.value {
        Ok(input) => input,
        Err(invalid) => {
            claims::release(&state.db, &claim).await;
            return Err(invalid.into());
        }
    };
    let amount = crate::money::parse_amount(&input.amount, state.config.amount_ceiling_yen).map_err(|e| e.to_string());
    let request = topups::Request {
        session: &s,
        client: &client,
        idem_key: key.as_str(),
        card_id: &input.card_id,
        amount,
        claim: &claim,
        answers: &TopupAnswers,
    };
    match topups::run(&state, &request).await.map_err(ApiError::from) {
        // The answer was stored with the money.
        Ok(topped) => Ok((topup_status(&topped), axum::Json(topped)).into_response()),
        Err(e) if e.is_final => {
            // A decline found before any row was written (a limit): store it on its own. A
            // decline from the processor was stored with the top-up; storing again finds no claim.
            let _ = idempotency::store_decline(&state.db, &claim, &e).await;
            Err(e)
        }
        Err(e) => {
            claims::release(&state.db, &claim).await;
            Err(e)
        }
    }
}

/// `201` for a credited top-up, `202` for one still waiting.
fn topup_status(topped: &topups::Topped) -> StatusCode {
    match topped {
        topups::Topped::Credited { .. } => StatusCode::CREATED,
        topups::Topped::Waiting { .. } => StatusCode::ACCEPTED,
    }
}

/// How a top-up's answer is stored for repeats: as this route sends it.
struct TopupAnswers;

impl topups::Answers for TopupAnswers {
    fn answer(&self, topped: &topups::Topped) -> claims::Stored {
        Outcome { status: topup_status(topped), body: json!(topped), content_type: "application/json" }.stored()
    }

    fn decline(&self, declined: crate::payments::PaymentsError) -> claims::Stored {
        idempotency::stored_problem(&declined.into())
    }
}

/// Balance, limits and what was spent today and this month (Tokyo time).
#[utoipa::path(get, path = "/v1/wallet", tag = "shopper", security(("bearer" = [])),
    responses((status = 200, body = wallet::Summary, description = "The wallet"), ShopperAuth))]
async fn get_wallet(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
) -> Result<Response, ApiError> {
    let mut conn = state.db.pool().acquire().await?;
    let user = identity::user_by_id(&mut conn, s.user_id()).await?.ok_or_else(crate::http::auth::unauthenticated)?;
    Ok(axum::Json(wallet::summary(&mut conn, &user.id, user.wallet_account_id, state.clock.now_ms()).await?)
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    per_payment: Option<i64>,
    daily: Option<i64>,
    monthly: Option<i64>,
}

/// Sets spending limits: lowering is immediate, raising needs step-up.
#[utoipa::path(put, path = "/v1/wallet/limits", tag = "shopper", request_body = Option<LimitsBody>,
    security(("bearer" = [])), responses(
    (status = 200, body = wallet::Limits, description = "The limits now in force"),
    Unauthenticated401, JsonBodyErrors,
    (status = 403, description = "`forbidden`: not a shopper's session token; `region_blocked`; `step_up_required`: raising a limit needs a fresh step-up (with `challenge_id` and `methods`); `cooling_off`: with `retry_after`", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`invalid_amount`: a limit under 1 or over its ceiling; `invalid_body`", body = Problem, content_type = "application/problem+json")))]
async fn set_limits(
    State(state): State<AppState>,
    s: UserSession,
    client: ShopperClient,
    body: ApiJson<LimitsBody>,
) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    let user = {
        let mut conn = state.db.pool().acquire().await?;
        identity::user_by_id(&mut conn, s.user_id()).await?.ok_or_else(crate::http::auth::unauthenticated)?
    };
    let b = body.value;
    let stepped_up = s.step_up_at() + identity::STEP_UP_TTL_MS > now;
    // Read, compare and write under the wallet's lock, changing only the fields sent, so that a
    // concurrent change cannot undo a lowering without a step-up.
    let outcome = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        tx.lock("wallet", user.id.as_str()).await?;
        let old = wallet::limits(&mut tx, &user.id).await?;
        let new = wallet::Limits {
            per_payment: b.per_payment.unwrap_or(old.per_payment),
            daily: b.daily.unwrap_or(old.daily),
            monthly: b.monthly.unwrap_or(old.monthly),
        };
        wallet::validate(new)?;
        if wallet::raises(old, new) {
            if !stepped_up {
                return Ok::<_, ApiError>(None);
            }
            identity::ensure_not_cooling_off(&user, now)?;
        }
        wallet::set_limits(&mut tx, &user.id, new, now).await?;
        tx.commit().await?;
        Ok(Some(new))
    })
    .await?;
    let Some(new) = outcome else {
        // Raising needs a fresh step-up: this answers 403 with a challenge.
        identity::recovery::require_step_up(&state, &s, &client.0).await?;
        return Err(ApiError::internal(anyhow::anyhow!("a stale step-up was accepted")));
    };
    Ok(axum::Json(new).into_response())
}

/// A fresh payment code for this device (valid 60 s, single use).
#[utoipa::path(post, path = "/v1/payment-codes", tag = "shopper", security(("bearer" = [])),
    responses((status = 201, body = pos::NewCode, description = "A fresh code"), ShopperAuth))]
async fn payment_code(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    let prefix = state.config.payment_code_prefix.clone();
    let answer = store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let v = pos::new_code(&mut tx, &prefix, s.user_id(), s.device_id(), now).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(v)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// The payment code drawn as a QR code (the code's owner only).
#[utoipa::path(get, path = "/v1/payment-codes/{code}/qr.svg", tag = "shopper", params(("code" = String, Path)),
    security(("bearer" = [])), responses(
    (status = 200, body = String, description = "The QR code as SVG", content_type = "image/svg+xml"),
    ShopperAuth,
    (status = 404, description = "`not_found`: there is no such payment code of yours (used, expired or another's)", body = Problem, content_type = "application/problem+json")))]
async fn payment_code_qr(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
    code: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("there is no such payment code of yours");
    let Path(code) = code.map_err(|_| not_found())?;
    let mut conn = state.db.pool().acquire().await?;
    let code = pos::owns_code(&mut conn, &state.config.payment_code_prefix, s.user_id(), &code)
        .await?
        .ok_or_else(not_found)?;
    let svg = super::code::qr_svg(code.as_str());
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response())
}

#[derive(Deserialize, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StorePayBody {
    /// The payload scanned from the store's QR code.
    store_qr: String,
    #[schema(value_type = i64)]
    amount: Value,
}

/// The stored answer of a charge: `201` with what was paid, or the risk decline, which commits.
fn charged<T: serde::Serialize>(answer: pos::Charged<T>) -> Result<Outcome, ApiError> {
    Ok(match answer {
        pos::Charged::Paid(paid) => Outcome::created(json!(paid)),
        pos::Charged::Declined(decline) => Outcome::problem(&decline.into()),
    })
}

/// Pays a store by its QR code (needs `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/payments", tag = "shopper", request_body = StorePayBody,
    params(IdempotencyKey), security(("bearer" = [])), responses(
    (status = 201, body = pos::StorePaid, description = "Paid (a repeat with the same key and body gets the same answer)"),
    Unauthenticated401, IdempotentBodyErrors,
    (status = 402, description = "`insufficient_funds`; `limit_exceeded`: with `limit`; `risk_declined`: with `review_id` (each stored)", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`forbidden`: not a shopper's session token; `region_blocked`; `step_up_required`: a risk rule asks for a fresh step-up; `switch_engaged`; `account_frozen`", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`qr_bad_crc`, `qr_malformed`, `qr_not_omamori`, `qr_invalid_field`: the QR payload; `unknown_store`; `qr_mismatch`; `invalid_amount`; `invalid_body`", body = Problem, content_type = "application/problem+json")))]
async fn pay_store_qr(
    State(state): State<AppState>,
    s: UserSession,
    client: ClientInfo,
    headers: HeaderMap,
    body: IdempotentJson<StorePayBody>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let fingerprint = idempotency::fingerprint("POST /v1/payments", &body.raw);
    let input = body.value;
    let (state2, s2) = (state.clone(), s.clone());
    let caller = format!("user:{}", s.user_id());
    let key_text = key.as_str().to_string();
    Ok(idempotency::run(&state.db, &state.clock, &caller, &key, &fingerprint, move |conn| {
        let (state, s, input, client, key_text) =
            (state2.clone(), s2.clone(), input.clone(), client.clone(), key_text.clone());
        Box::pin(async move {
            crate::risk::client::country_policy(&state.config, &client)?;
            let input = input?;
            let payment = pos::StorePayment {
                db: &state.db,
                payer: pos::Payer {
                    user_id: s.user_id(),
                    device_id: s.device_id(),
                    country: client.country.as_deref(),
                    fresh_step_up: Some(s.step_up_at()),
                },
                store_qr: input.store_qr.trim(),
                amount: amount(&state, &input.amount)?,
                idem_key: &key_text,
                analytics_key: analytics_key(&state)?,
            };
            charged(pos::pay_store_qr(conn, &payment, state.clock.now_ms()).await?)
        })
    })
    .await)
}

#[derive(Deserialize, utoipa::IntoParams)]
// The handler takes `Result<Query<..>, _>`, which utoipa cannot see through: say where they are.
#[into_params(parameter_in = Query)]
struct CursorQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn cursor(q: Result<Query<CursorQuery>, QueryRejection>) -> Result<Option<i64>, ApiError> {
    let Query(q) = q.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "the query is not valid"))?;
    q.cursor
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor is not valid"))
        })
        .transpose()
}

/// One line of the wallet's history.
#[derive(Serialize, utoipa::ToSchema)]
struct Transaction {
    /// The journal entry.
    id: i64,
    kind: String,
    /// Signed: negative for money leaving the wallet.
    amount: i64,
    currency: Currency,
    balance_after: i64,
    counterparty: Option<String>,
    created_at: String,
}

impl From<&wallet::HistoryLine> for Transaction {
    fn from(l: &wallet::HistoryLine) -> Self {
        Transaction {
            id: l.entry_id,
            kind: l.kind.clone(),
            amount: l.amount,
            currency: Currency::Jpy,
            balance_after: l.balance_after,
            counterparty: l.counterparty.clone(),
            created_at: clock::rfc3339_ms(l.created_at),
        }
    }
}

/// A page of history, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct TransactionPage {
    items: Vec<Transaction>,
    /// The `cursor` of the next page; null on the last.
    next_cursor: Option<String>,
}

/// The wallet's history, newest first, with the balance after each line.
#[utoipa::path(get, path = "/v1/transactions", tag = "shopper", params(CursorQuery), security(("bearer" = [])),
    responses(
    (status = 200, body = TransactionPage, description = "At most 50 lines, newest first"),
    ShopperAuth,
    (status = 400, description = "`invalid_query`: the query is not valid; `invalid_cursor`: not a `next_cursor`", body = Problem, content_type = "application/problem+json")))]
async fn transactions(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
    q: Result<Query<CursorQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    const PAGE: i64 = 50;
    let before = cursor(q)?;
    let mut conn = state.db.pool().acquire().await?;
    let user = identity::user_by_id(&mut conn, s.user_id()).await?.ok_or_else(crate::http::auth::unauthenticated)?;
    let lines = wallet::history(&mut conn, user.wallet_account_id, before, PAGE).await?;
    let next = (lines.len() as i64 == PAGE).then(|| lines.last().map(|l| l.posting_id.to_string())).flatten();
    let items = lines.iter().map(Transaction::from).collect();
    Ok(axum::Json(TransactionPage { items, next_cursor: next }).into_response())
}

/// The most lines the CSV carries: the newest (years of daily use fit many times over).
pub const CSV_MAX_LINES: usize = 100_000;
/// Lines read per query while streaming.
const CSV_PAGE: i64 = 500;

/// The history as CSV, newest first, streamed page by page (never built whole in memory) and
/// capped at [`CSV_MAX_LINES`] lines.
#[utoipa::path(get, path = "/v1/transactions.csv", tag = "shopper", security(("bearer" = [])), responses(
    (status = 200, body = String, description = "`id,created_at,kind,amount,currency,balance_after,counterparty`, newest first, at most the newest 100,000 lines", content_type = "text/csv"),
    ShopperAuth))]
async fn transactions_csv(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
) -> Result<Response, ApiError> {
    let wallet_account = {
        let mut conn = state.db.pool().acquire().await?;
        identity::user_by_id(&mut conn, s.user_id()).await?.ok_or_else(crate::http::auth::unauthenticated)?
    }
    .wallet_account_id;
    let head = futures::stream::once(async {
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(
            b"id,created_at,kind,amount,currency,balance_after,counterparty\r\n",
        ))
    });
    // (where the next page starts, or None when done; lines sent so far)
    let pages =
        futures::stream::try_unfold((state, Some(None::<i64>), 0usize), move |(state, next, sent)| async move {
            let Some(before) = next.filter(|_| sent < CSV_MAX_LINES) else { return Ok(None) };
            let limit = CSV_PAGE.min((CSV_MAX_LINES - sent) as i64);
            let lines = async {
                let mut conn = state.db.pool().acquire().await?;
                wallet::history(&mut conn, wallet_account, before, limit).await
            }
            .await
            .map_err(|e| {
                // The status is sent already: the client sees a cut transfer, the log says why.
                tracing::warn!(error = %store::describe_error(&e), "the CSV history could not be read");
                std::io::Error::other("the history could not be read")
            })?;
            let next = match lines.last() {
                Some(last) if lines.len() as i64 == limit => Some(Some(last.posting_id)),
                _ => None,
            };
            let sent = sent + lines.len();
            Ok(Some((axum::body::Bytes::from(csv_lines(&lines)), (state, next, sent))))
        });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"omamori-transactions.csv\""),
        ],
        axum::body::Body::from_stream(futures::StreamExt::chain(head, pages)),
    )
        .into_response())
}

fn csv_lines(lines: &[wallet::HistoryLine]) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(&format!(
            "{},{},{},{},JPY,{},{}\r\n",
            l.entry_id,
            clock::rfc3339_ms(l.created_at),
            l.kind,
            l.amount,
            l.balance_after,
            store::csv::field(l.counterparty.as_deref().unwrap_or(""))
        ));
    }
    out
}

/// A notice sent to the shopper.
#[derive(Serialize, utoipa::ToSchema)]
struct Notice {
    id: i64,
    kind: String,
    /// The e-mail's subject (null for an SMS).
    title: Option<String>,
    body: String,
    created_at: String,
}

/// The newest 100 notices.
#[derive(Serialize, utoipa::ToSchema)]
struct NoticeList {
    items: Vec<Notice>,
}

/// The notices sent to the shopper (by e-mail and SMS), newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "shopper", security(("bearer" = [])),
    responses((status = 200, body = NoticeList, description = "At most 100, newest first; none that carry a one-time code"), ShopperAuth))]
async fn notifications(
    State(state): State<AppState>,
    s: UserSession,
    _client: ShopperClient,
) -> Result<Response, ApiError> {
    let mut conn = state.db.pool().acquire().await?;
    let user = identity::user_by_id(&mut conn, s.user_id()).await?.ok_or_else(crate::http::auth::unauthenticated)?;
    // Messages that carry a one-time code are left out: the notice list is not a second inbox for codes.
    let rows = sqlx::query(
        "SELECT id, kind, subject, body, created_at FROM outbox WHERE recipient IN ($1, $2) AND code IS NULL \
         AND body <> $3 ORDER BY id DESC LIMIT 100",
    )
    .bind(&user.phone)
    .bind(&user.email)
    .bind(crate::notify::dispatch::REDACTED)
    .fetch_all(&mut *conn)
    .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok::<_, sqlx::Error>(Notice {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                title: r.try_get("subject")?,
                body: r.try_get("body")?,
                created_at: clock::rfc3339_ms(r.try_get("created_at")?),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(axum::Json(NoticeList { items }).into_response())
}

#[derive(Deserialize, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PosChargeBody {
    /// The code the shopper's phone shows.
    code: String,
    #[schema(value_type = i64)]
    amount: Value,
    order_ref: Option<String>,
    /// The basket: Σ quantity × unit_amount must equal `amount` (`422 items_mismatch`).
    items: Option<Vec<crate::payments::baskets::Item>>,
}

/// The configured `customer_ref` key (generated outside production, demanded in production).
fn analytics_key(state: &AppState) -> Result<&[u8], ApiError> {
    let ring = state.config.keys.analytics.as_ref();
    ring.map(|k| k.bytes.expose().as_slice())
        .ok_or_else(|| ApiError::from(anyhow::anyhow!("no analytics key configured")))
}

/// Checks a till's basket against the amount.
fn check_items(items: &[crate::payments::baskets::Item], amount: i64) -> Result<(), ApiError> {
    use crate::payments::baskets::{BasketError, check};
    match check(items, amount) {
        Ok(()) => Ok(()),
        Err(BasketError::Invalid(detail)) => {
            Err(ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid_items", detail))
        }
        Err(BasketError::Mismatch { .. }) => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "items_mismatch",
            "the items' quantity × unit_amount do not add up to amount",
        )),
    }
}

/// Charges a shopper's payment code (terminal key; needs `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/pos/payments", tag = "pos", request_body = PosChargeBody,
    params(IdempotencyKey), security(("bearer" = []), ("terminal" = [])), responses(
    (status = 201, body = pos::Paid, description = "Paid (a repeat with the same key and body gets the same answer)"),
    Unauthenticated401, IdempotentBodyErrors, TooMany429,
    (status = 402, description = "`insufficient_funds`; `limit_exceeded`: with `limit`; `risk_declined`: with `review_id` (each stored)", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`forbidden`: not a terminal's key; `switch_engaged`; `account_frozen`", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "`idempotency_conflict`: the key was used with another body; `idempotency_in_progress`: the first request with this key is still running; `payment_reversed`: the terminal reversed this charge", body = Problem, content_type = "application/problem+json"),
    (status = 410, description = "`code_expired`: the code was used, replaced or has expired", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`code_invalid`: no such code (counted against the terminal); `invalid_amount`; `invalid_body`; `invalid_items`: a bad basket line (`detail` names it); `items_mismatch`: the items do not add up to `amount`", body = Problem, content_type = "application/problem+json")))]
async fn pos_charge(
    State(state): State<AppState>,
    t: TerminalAuth,
    headers: HeaderMap,
    body: IdempotentJson<PosChargeBody>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let fingerprint = idempotency::fingerprint("POST /v1/pos/payments", &body.raw);
    let input = body.value;
    let terminal = t.0;
    let caller = format!("terminal:{}", terminal.id);
    let key_text = key.as_str().to_string();
    let state2 = state.clone();
    let terminal2 = terminal.clone();
    // Set when the work met an unknown code (a replayed answer runs no work and counts nothing).
    let unknown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let unknown2 = unknown.clone();
    let response = idempotency::run(&state.db, &state.clock, &caller, &key, &fingerprint, move |conn| {
        let (state, terminal, input, key_text) = (state2.clone(), terminal2.clone(), input.clone(), key_text.clone());
        let unknown = unknown2.clone();
        Box::pin(async move {
            let now = state.clock.now_ms();
            pos::check_terminal(conn, &terminal.id, now).await?;
            let input = input?;
            let amount = amount(&state, &input.amount)?;
            if input.order_ref.as_ref().is_some_and(|r| r.chars().count() > 100) {
                return Err(ApiError::invalid_body("order_ref is at most 100 characters"));
            }
            let items = input.items.as_deref().unwrap_or_default();
            check_items(items, amount.0)?;
            let charge = pos::CodeCharge {
                db: &state.db,
                prefix: &state.config.payment_code_prefix,
                terminal: &terminal,
                code: &input.code,
                amount,
                order_ref: input.order_ref.as_deref(),
                idem_key: &key_text,
                items,
                analytics_key: analytics_key(&state)?,
            };
            match pos::charge_code(conn, &charge, now).await {
                Err(crate::payments::PaymentsError::CodeInvalid) => {
                    unknown.store(true, std::sync::atomic::Ordering::Relaxed);
                    Err(crate::payments::PaymentsError::CodeInvalid.into())
                }
                answer => charged(answer?),
            }
        })
    })
    .await;
    // An unknown code is counted against the terminal on its own (the payment rolled back).
    if unknown.load(std::sync::atomic::Ordering::Relaxed) {
        let now = state.clock.now_ms();
        store::retry(|| async {
            let mut tx = state.db.begin().await?;
            pos::record_unknown_code(&mut tx, &terminal.id, now).await?;
            tx.commit().await
        })
        .await?;
    }
    Ok(response)
}

/// A page of the merchant's payments, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct PaymentPage {
    items: Vec<pos::PaymentView>,
    /// The `cursor` of the next page; null on the last.
    next_cursor: Option<String>,
}

/// What `GET /v1/pos/payments` takes.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PosListQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `true`: only the payments this terminal charged (a till's own list).
    this_terminal: Option<bool>,
}

/// The payments of the terminal's store, newest first (terminal key), or this terminal's alone.
#[utoipa::path(get, path = "/v1/pos/payments", tag = "pos", params(PosListQuery), security(("bearer" = []), ("terminal" = [])),
    responses(
    (status = 200, body = PaymentPage, description = "At most 50, newest first"),
    AuthErrors,
    (status = 400, description = "`invalid_query`: the query is not valid; `invalid_cursor`: not a `next_cursor`", body = Problem, content_type = "application/problem+json")))]
async fn pos_list(
    State(state): State<AppState>,
    t: TerminalAuth,
    q: Result<Query<PosListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    const PAGE: i64 = 50;
    let Query(q) = q.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "the query is not valid"))?;
    // The cursor is `created_at.id` of the last payment seen: payments in one millisecond are not skipped.
    let (before_at, before_id) = match q.cursor.as_deref() {
        None => (i64::MAX, String::new()),
        Some(c) => c
            .split_once('.')
            .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
            .filter(|(_, id)| id.len() <= 64)
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor is not valid"))?,
    };
    let mut conn = state.db.pool().acquire().await?;
    let store = merchants::store_by_id_cached(&state.db, &mut conn, &t.0.store_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("terminal without store")))?;
    let rows = sqlx::query(
        "SELECT id, created_at FROM payments WHERE store_id = $1 AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
         AND ($5 = 0 OR terminal_id = $6) ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(&store.id)
    .bind(before_at)
    .bind(if before_id.is_empty() { "~".to_string() } else { before_id })
    .bind(PAGE)
    .bind(i64::from(q.this_terminal == Some(true)))
    .bind(&t.0.id)
    .fetch_all(&mut *conn)
    .await?;
    let mut items = Vec::new();
    let mut last = None;
    for r in &rows {
        let id: PaymentId = r.try_get("id")?;
        last = Some(format!("{}.{id}", r.try_get::<i64, _>("created_at")?));
        if let Some(v) = pos::payment_view(&mut conn, &id, &store.merchant_id).await? {
            items.push(v);
        }
    }
    let next = if rows.len() as i64 == PAGE { last } else { None };
    Ok(axum::Json(PaymentPage { items, next_cursor: next }).into_response())
}

/// One payment of this merchant, with its refunds (terminal key).
#[utoipa::path(get, path = "/v1/pos/payments/{payment_id}", tag = "pos", params(("payment_id" = String, Path)),
    security(("bearer" = []), ("terminal" = [])),
    responses((status = 200, body = pos::PaymentView, description = "The payment"), AuthErrors, NotFound404))]
async fn pos_get(
    State(state): State<AppState>,
    t: TerminalAuth,
    PathId(id): PathId<PaymentId>,
) -> Result<Response, ApiError> {
    let mut conn = state.db.pool().acquire().await?;
    let store = merchants::store_by_id_cached(&state.db, &mut conn, &t.0.store_id)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("terminal without store")))?;
    // A terminal reads the payments of its own store (API.md), not those of the merchant's others.
    let view = pos::payment_view(&mut conn, &id, &store.merchant_id)
        .await?
        .filter(|v| v.store_id == t.0.store_id)
        .ok_or_else(|| ApiError::not_found("there is no such payment"))?;
    Ok(axum::Json(view).into_response())
}

#[derive(Deserialize, Clone, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    #[schema(value_type = i64)]
    amount: Value,
    /// The items returned: each sku once, from the payment's basket, together worth `amount`
    /// (`422 items_mismatch`); counted against those items in the merchant's analytics.
    items: Option<Vec<crate::payments::baskets::ReturnedItem>>,
}

/// Refunds part or all of a payment (needs `Idempotency-Key`).
#[utoipa::path(post, path = "/v1/pos/payments/{payment_id}/refunds", tag = "pos", request_body = RefundBody,
    params(("payment_id" = String, Path), IdempotencyKey), security(("bearer" = []), ("terminal" = [])), responses(
    (status = 201, body = pos::Refunded, description = "Refunded (a repeat with the same key and body gets the same answer)"),
    Unauthenticated401, IdempotentBodyErrors, NotFound404,
    (status = 403, description = "`forbidden`: not a terminal's key; `switch_engaged`; `account_frozen`", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "`refund_exceeds_payment`: more than is left to refund (stored); `invalid_amount`; `invalid_body`; `invalid_items`: an item not in the basket, named twice or more than is left to return (`detail` says which); `items_mismatch`: the items are not worth `amount`", body = Problem, content_type = "application/problem+json")))]
async fn pos_refund(
    State(state): State<AppState>,
    t: TerminalAuth,
    PathId(payment_id): PathId<PaymentId>,
    headers: HeaderMap,
    body: IdempotentJson<RefundBody>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let fingerprint = idempotency::fingerprint(&format!("POST /v1/pos/payments/{payment_id}/refunds"), &body.raw);
    let input = body.value;
    let caller = format!("terminal:{}", t.0.id);
    let (state2, terminal) = (state.clone(), t.0.clone());
    Ok(idempotency::run(&state.db, &state.clock, &caller, &key, &fingerprint, move |conn| {
        let (state, terminal, input, payment_id) =
            (state2.clone(), terminal.clone(), input.clone(), payment_id.clone());
        Box::pin(async move {
            let input = input?;
            let amount = amount(&state, &input.amount)?;
            let store = merchants::store_by_id_cached(&state.db, conn, &terminal.store_id)
                .await?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("terminal without store")))?;
            pos::lock_payment(conn, &payment_id).await?;
            let answer = pos::refund(
                conn,
                &payment_id,
                &store.merchant_id,
                amount,
                input.items.as_deref().unwrap_or_default(),
                state.clock.now_ms(),
            )
            .await?;
            Ok(Outcome::created(json!(answer)))
        })
    })
    .await)
}

/// What a reversal answers: the charge is reversed, or none happened and none will.
#[derive(Serialize, utoipa::ToSchema)]
struct Reversed {
    /// The payment reversed; left out when no charge happened under the key.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_id: Option<PaymentId>,
    /// Always `reversed`.
    #[schema(value_type = String, example = "reversed")]
    status: &'static str,
}

impl Reversed {
    const NOTHING: Reversed = Reversed { payment_id: None, status: "reversed" };
}

/// Reverses the payment a terminal made under `key`, if there is one.
async fn reverse_charge(
    state: &AppState,
    terminal_id: &TerminalId,
    key: &str,
    now: i64,
) -> Result<Option<Reversed>, ApiError> {
    store::retry(|| async {
        let mut tx = state.db.begin().await?;
        let payment: Option<PaymentId> =
            sqlx::query_scalar("SELECT id FROM payments WHERE terminal_id = $1 AND idem_key = $2")
                .bind(terminal_id)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(payment_id) = payment else { return Ok::<_, ApiError>(None) };
        pos::lock_payment(&mut tx, &payment_id).await?;
        pos::reverse_at_till(&mut tx, &payment_id, now).await?;
        tx.commit().await?;
        Ok(Some(Reversed { payment_id: Some(payment_id), status: "reversed" }))
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReversalBody {
    /// The `Idempotency-Key` of the charge whose answer never arrived.
    idempotency_key: String,
}

/// Undoes a charge whose answer the POS never received (a no-op when none happened), within 24
/// hours of the charge; the `refunds` switches and freezes stop it as they stop a refund.
#[utoipa::path(post, path = "/v1/pos/reversals", tag = "pos", request_body = ReversalBody, security(("bearer" = []), ("terminal" = [])),
    responses(
    (status = 200, body = Reversed, description = "Reversed, or nothing happened under the key (and a late charge will be answered `payment_reversed`)"),
    Unauthenticated401, JsonBodyErrors, Invalid422,
    (status = 403, description = "`forbidden`: not a terminal's key; `switch_engaged`: a `refunds` switch covers the merchant, the shopper or everything; `account_frozen`: the shopper is frozen", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "`idempotency_in_progress`: the charge is still running; repeat shortly; `reversal_window_closed`: the charge is 24 hours old or more, refund it instead (`POST /v1/pos/payments/{payment_id}/refunds`)", body = Problem, content_type = "application/problem+json")))]
async fn pos_reversal(
    State(state): State<AppState>,
    t: TerminalAuth,
    body: ApiJson<ReversalBody>,
) -> Result<Response, ApiError> {
    let key = body.value.idempotency_key;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::invalid_body("idempotency_key must be 1 to 255 characters"));
    }
    let caller = format!("terminal:{}", t.0.id);
    let now = state.clock.now_ms();
    let tombstone =
        ApiError::decline(StatusCode::CONFLICT, "payment_reversed", "this charge was reversed by the terminal");
    let answer = 'reversal: {
        // A charge that happened under the key: reverse it (a second reversal finds it reversed).
        if let Some(answer) = reverse_charge(&state, &t.0.id, &key, now).await? {
            break 'reversal answer;
        }
        // None happened: claim the key as a tombstone, so that a charge arriving late is
        // answered as reversed instead of moving money.
        match claims::begin(&state.db, &state.clock, &caller, &key, claims::TOMBSTONE).await {
            Ok(claims::Begin::Fresh(claim)) => {
                idempotency::store_decline(&state.db, &claim, &tombstone).await?;
                break 'reversal Reversed::NOTHING;
            }
            Ok(claims::Begin::Replay(_)) => break 'reversal Reversed::NOTHING,
            Err(IdempotencyError::Conflict) => {
                // The key holds a charge's answer. Still running: ask the POS to repeat. Finished:
                // either a payment exists now (loop to reverse it) or it was declined and moved nothing.
                if claims::running(&state.db, &caller, &key, now).await? {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_in_progress",
                        "the charge is still being processed; repeat the reversal shortly",
                    ));
                }
                match reverse_charge(&state, &t.0.id, &key, now).await? {
                    Some(answer) => break 'reversal answer,
                    None => {
                        // A claimant that died holding the key is replaced by the tombstone.
                        claims::entomb(&state.db, &caller, &key, &idempotency::stored_problem(&tombstone), now).await?;
                        break 'reversal Reversed::NOTHING;
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(axum::Json(answer).into_response())
}
