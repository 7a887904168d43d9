//! The merchant dashboard's routes of money paid out (API.md "Merchants' side"): the merchant's
//! settlements, one settlement's statement (JSON or CSV), and the bank account payouts go to.
//!
//! Settlements are merchant-wide (they hold every store's lines), so every route here is for
//! owners: a staff member gets `403 forbidden`. Another merchant's settlement is `404`.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::payouts::{self, Changer, NewBankAccount};
use super::settlement::{self, Line, Settlement};
use crate::http::auth::MerchantStaff;
use crate::http::error::{ApiError, AuthErrors, JsonBodyErrors, NotFound404, Problem, TooMany429};
use crate::http::extract::{ApiJson, is_id};
use crate::ids::{SettlementId, StoreId};
use crate::state::AppState;
use crate::store::clock;

/// The `.csv` statement is served by the `{settlement_id}` route (the router cannot tell a
/// parameter from a suffix); this document describes it as its own operation.
#[derive(OpenApi)]
#[openapi(paths(settlement_csv))]
struct CsvDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(CsvDoc::openapi())
        .routes(routes!(list_settlements))
        .routes(routes!(get_settlement))
        .routes(routes!(set_bank_account))
}

/// A settlement: one merchant's closed day.
#[derive(Serialize, utoipa::ToSchema)]
struct SettlementSummary {
    settlement_id: SettlementId,
    /// The Asia/Tokyo day it closed (`YYYY-MM-DD`).
    date: String,
    /// How many payments.
    payments: i64,
    /// The payments' sum, in yen.
    gross: i64,
    /// The refunds' sum, in yen.
    refunds: i64,
    /// `max(0, floor((gross − refunds) × fee_bps / 10000))`.
    fee: i64,
    /// `gross − refunds − fee + carried_over`; paid out when positive.
    net: i64,
    /// The negative net of the day before, carried into this one (0 or less).
    carried_over: i64,
    /// `closed`, `carried` (a negative net, carried to the next day) or `paid`.
    status: String,
}

impl SettlementSummary {
    fn of(s: &Settlement) -> SettlementSummary {
        SettlementSummary {
            settlement_id: s.settlement_id.clone(),
            date: s.date.clone(),
            payments: s.payments,
            gross: s.gross,
            refunds: s.refunds,
            fee: s.fee,
            net: s.net,
            carried_over: s.carried_over,
            status: s.status.clone(),
        }
    }
}

/// The merchant's settlements.
#[derive(Serialize, utoipa::ToSchema)]
struct SettlementList {
    /// Newest first.
    items: Vec<SettlementSummary>,
}

/// One payment, refund or reversal of a settlement.
#[derive(Serialize, utoipa::ToSchema)]
struct StatementLine {
    /// `payment`, `refund`, or `reversal` (a till's reversal or an operators' correction of a
    /// payment: what it gave back, counted with the refunds).
    kind: String,
    /// The payment's or the refund's id (a reversal's is its payment's).
    id: String,
    store_id: StoreId,
    /// Positive for every kind, in yen.
    amount: i64,
    /// RFC 3339, UTC.
    created_at: String,
}

impl StatementLine {
    fn of(l: &Line) -> StatementLine {
        StatementLine {
            kind: l.kind.clone(),
            id: l.id.clone(),
            store_id: l.store_id.clone(),
            amount: l.amount,
            created_at: clock::rfc3339_ms(l.created_at),
        }
    }
}

/// A settlement with every line: the day's statement.
#[derive(Serialize, utoipa::ToSchema)]
struct Statement {
    #[serde(flatten)]
    summary: SettlementSummary,
    /// By time.
    lines: Vec<StatementLine>,
}

/// The merchant's settlements, newest first (owner only).
#[utoipa::path(get, path = "/v1/merchant/settlements", tag = "merchant", security(("bearer" = [])), responses(
    (status = 200, body = SettlementList, description = "Every settlement of the merchant, newest first"),
    AuthErrors))]
async fn list_settlements(State(state): State<AppState>, who: MerchantStaff) -> Result<Response, ApiError> {
    who.require_owner()?;
    let items = settlement::list(&state.db, who.merchant_id()).await?;
    Ok(axum::Json(SettlementList { items: items.iter().map(SettlementSummary::of).collect() }).into_response())
}

/// The merchant's settlement `raw` (an id, with `.csv` or without), with its lines.
async fn statement(state: &AppState, who: &MerchantStaff, raw: &str) -> Result<Settlement, ApiError> {
    who.require_owner()?;
    let not_found = || ApiError::not_found("there is no such settlement");
    if !is_id(raw) {
        return Err(not_found());
    }
    let id = SettlementId::from_raw(raw);
    settlement::get(&state.db, who.merchant_id(), &id).await?.ok_or_else(not_found)
}

/// One settlement with its payment and refund lines (owner only). A settlement never changes
/// once closed. `{settlement_id}.csv` answers the same as CSV.
#[utoipa::path(get, path = "/v1/merchant/settlements/{settlement_id}", tag = "merchant",
    params(("settlement_id" = SettlementId, Path)), security(("bearer" = [])), responses(
    (status = 200, body = Statement, description = "The settlement and its lines"),
    AuthErrors, NotFound404))]
async fn get_settlement(
    State(state): State<AppState>,
    who: MerchantStaff,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(id) = raw.strip_suffix(".csv") {
        return settlement_csv(State(state), who, Path(id.to_string())).await;
    }
    let s = statement(&state, &who, &raw).await?;
    let lines = s.lines.iter().flatten().map(StatementLine::of).collect();
    Ok(axum::Json(Statement { summary: SettlementSummary::of(&s), lines }).into_response())
}

/// One settlement as CSV (owner only): a header and the summary row, a blank line, then a header
/// and one row per payment or refund (`kind,id,store_id,amount,created_at`, RFC 3339).
#[utoipa::path(get, path = "/v1/merchant/settlements/{settlement_id}.csv", tag = "merchant",
    params(("settlement_id" = SettlementId, Path)), security(("bearer" = [])), responses(
    (status = 200, body = String, content_type = "text/csv", description = "The statement, as an attachment"),
    AuthErrors, NotFound404))]
async fn settlement_csv(
    State(state): State<AppState>,
    who: MerchantStaff,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let s = statement(&state, &who, &raw).await?;
    let disposition = format!("attachment; filename=\"omamori-settlement-{}.csv\"", s.date);
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        settlement::csv(&s),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BankAccountBody {
    /// The bank's 4-digit code (統一金融機関コード).
    #[schema(pattern = "^[0-9]{4}$", example = "0005")]
    bank_code: String,
    /// The branch's 3-digit code.
    #[schema(pattern = "^[0-9]{3}$", example = "123")]
    branch_code: String,
    /// `ordinary` (普通) or `current` (当座).
    #[schema(pattern = "^(ordinary|current)$", example = "ordinary")]
    account_type: String,
    /// 7 digits.
    #[schema(pattern = "^[0-9]{7}$", example = "0012345")]
    account_number: String,
    /// The holder's name in full- or half-width katakana (the Zengin file has it half-width).
    #[schema(example = "オマモリ（カ")]
    holder_kana: String,
    /// A fresh code of the owner's authenticator app (a code is accepted once).
    #[schema(example = "123456")]
    totp_code: String,
}

/// When a new bank account takes effect.
#[derive(Serialize, utoipa::ToSchema)]
struct BankAccountSet {
    /// RFC 3339: 72 hours after it was set; until then payouts go to the account in effect before.
    effective_at: String,
}

const BANK_422: &str = "`invalid_body`: a code or the number is not its digits, or the account type is neither `ordinary` nor `current`; `holder_kana_not_writable`: the name cannot be written in single-byte katakana (JIS X 0201)";

/// Sets the bank account payouts go to (owner only, with a fresh authenticator code). Audited;
/// every owner of the merchant is e-mailed and the operators get an alert; it takes effect 72
/// hours later.
#[utoipa::path(put, path = "/v1/merchant/bank-account", tag = "merchant", request_body = BankAccountBody,
    security(("bearer" = [])), responses(
    (status = 200, body = BankAccountSet, description = "Set; in effect from `effective_at`"),
    (status = 401, description = "`unauthenticated`: no live session; `invalid_credentials`: the authenticator code is wrong or was used already (nothing is written)", body = Problem, content_type = "application/problem+json"),
    (status = 403, description = "`forbidden`: only an owner sets the bank account; `csrf_rejected`", body = Problem, content_type = "application/problem+json"),
    JsonBodyErrors,
    (status = 422, description = BANK_422, body = Problem, content_type = "application/problem+json"),
    TooMany429))]
async fn set_bank_account(
    State(state): State<AppState>,
    who: MerchantStaff,
    body: ApiJson<BankAccountBody>,
) -> Result<Response, ApiError> {
    who.require_owner()?;
    let b = body.value;
    let account = NewBankAccount {
        bank_code: &b.bank_code,
        branch_code: &b.branch_code,
        account_type: &b.account_type,
        account_number: &b.account_number,
        holder_kana: &b.holder_kana,
    };
    let actor = who.actor();
    let changer = Changer { merchant: who.merchant_id(), user_id: who.user_id(), actor: &actor };
    let effective_at = payouts::change_bank_account(&state, &changer, &account, &b.totp_code).await?;
    Ok(axum::Json(BankAccountSet { effective_at: clock::rfc3339_ms(effective_at) }).into_response())
}
