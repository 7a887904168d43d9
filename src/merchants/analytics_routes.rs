//! The merchant's own routes of payments and analytics (API.md "Merchants' side"): the payments
//! list and its CSV, sales, customers and baskets. A staff member sees their stores alone; a store
//! outside what the caller may see is `404`, as one of another merchant is.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::analytics::{self, Baskets, Customers, Filter, GroupBy, Sales};
use super::analytics_cache::{self, Ask};
use super::settlement::day_bounds;
use crate::http::auth::MerchantStaff;
use crate::http::error::{ApiError, AuthErrors, NotFound404, Problem};
use crate::ids::StoreId;
use crate::payments::listing::{self, MerchantPayment};
use crate::state::AppState;
use crate::store::{self, clock};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_payments))
        .routes(routes!(payments_csv))
        .routes(routes!(sales))
        .routes(routes!(customers))
        .routes(routes!(baskets))
}

/// The longest period analytics answer for: a year, and a leap day.
pub const MAX_DAYS: i64 = 366;
/// Without `from` and `to`, analytics cover the last this many days, today included.
pub const DEFAULT_DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;

fn bad(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, detail)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(|_| bad("invalid_query", "the query is not valid"))
}

/// A date's `[start, end)` in ms, or `400 invalid_date`.
fn day(name: &str, value: &str) -> Result<(i64, i64), ApiError> {
    day_bounds(value).ok_or_else(|| bad("invalid_date", format!("{name}: a date YYYY-MM-DD")))
}

/// The stores a question may cover: `store_id` if the caller may see it (else `404`), or all of
/// the caller's.
fn stores(who: &MerchantStaff, store_id: Option<&StoreId>) -> Result<Option<Vec<StoreId>>, ApiError> {
    match store_id.filter(|s| !s.as_str().is_empty()) {
        Some(s) => {
            who.require_store(s)?;
            Ok(Some(vec![s.clone()]))
        }
        None => Ok(who.store_ids().map(<[StoreId]>::to_vec)),
    }
}

/// An analytics period: `from` and `to` (Tokyo dates, both included), by default the last
/// [`DEFAULT_DAYS`] to today; `400 invalid_range` when `from` is after `to` or the period is
/// longer than [`MAX_DAYS`].
fn period(from: Option<&str>, to: Option<&str>, now_ms: i64) -> Result<(i64, i64), ApiError> {
    let end = match to.filter(|s| !s.is_empty()) {
        Some(t) => day("to", t)?.1,
        None => day("to", &clock::tokyo_date(now_ms))?.1,
    };
    let start = match from.filter(|s| !s.is_empty()) {
        Some(f) => day("from", f)?.0,
        None => end - DEFAULT_DAYS * DAY_MS,
    };
    if start >= end {
        return Err(bad("invalid_range", "from is after to"));
    }
    if end - start > MAX_DAYS * DAY_MS {
        return Err(bad("invalid_range", format!("at most {MAX_DAYS} days")));
    }
    Ok((start, end))
}

/// What the analytics routes take.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AnalyticsQuery {
    /// The first day, `YYYY-MM-DD` in Asia/Tokyo (default: 29 days before `to`).
    from: Option<String>,
    /// The last day, included (default: today in Asia/Tokyo).
    to: Option<String>,
    /// One store (default: every store the caller may see).
    store_id: Option<StoreId>,
}

impl AnalyticsQuery {
    fn filter(&self, who: &MerchantStaff, now_ms: i64) -> Result<Filter, ApiError> {
        let (start, end) = period(self.from.as_deref(), self.to.as_deref(), now_ms)?;
        let stores = stores(who, self.store_id.as_ref())?;
        Ok(Filter { merchant_id: who.merchant_id().clone(), stores, start, end })
    }
}

/// What `GET /v1/merchant/analytics/sales` takes.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SalesQuery {
    /// See `from` of the other analytics routes.
    from: Option<String>,
    to: Option<String>,
    store_id: Option<StoreId>,
    /// `hour` (of day, "00"–"23"), `day`, `weekday_hour` ("mon-09"), `store`, `category` or `sku` (default `day`).
    group_by: Option<String>,
}

const ANALYTICS_400: &str = "`invalid_query`: the query is not valid; `invalid_date`: `from` or `to` is not a date `YYYY-MM-DD`; `invalid_range`: `from` is after `to`, or the period is over 366 days";
const SALES_400: &str = "`invalid_query`: the query is not valid; `invalid_date`: `from` or `to` is not a date `YYYY-MM-DD`; `invalid_range`: `from` is after `to`, or the period is over 366 days; `invalid_group_by`: not `hour`, `day`, `weekday_hour`, `store`, `category` or `sku`";

/// Folds the merchant's newest payments into the first visits before an answer (so that a
/// payment a moment old counts its customer as new or returning).
async fn fold(state: &AppState, who: &MerchantStaff) -> Result<(), ApiError> {
    Ok(analytics::fold(&state.db, who.merchant_id(), state.clock.now_ms()).await?)
}

/// A question for the analytics: from this instance's cache of closed days where it can answer.
fn ask<'a>(state: &'a AppState, f: &'a Filter) -> Ask<'a> {
    Ask {
        db: &state.db,
        filter: f,
        min: i64::from(state.config.analytics_min_customers),
        now: state.clock.now_ms(),
        cache_mib: state.config.analytics_cache_mib,
    }
}

/// Sales of a period, broken down by hour, day, weekday and hour, store, category or item.
#[utoipa::path(get, path = "/v1/merchant/analytics/sales", tag = "merchant", params(SalesQuery),
    security(("bearer" = [])), responses(
    (status = 200, body = Sales, description = "The breakdown and the period's totals; customer figures `null` under `min_customers`"),
    AuthErrors, NotFound404,
    (status = 400, description = SALES_400, body = Problem, content_type = "application/problem+json")))]
async fn sales(
    State(state): State<AppState>,
    who: MerchantStaff,
    q: Result<Query<SalesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let group = match q.group_by.as_deref().filter(|g| !g.is_empty()) {
        None => GroupBy::Day,
        Some(g) => GroupBy::parse(g)
            .ok_or_else(|| bad("invalid_group_by", format!("group_by: one of {}", GroupBy::NAMES.join(", "))))?,
    };
    let range = AnalyticsQuery { from: q.from, to: q.to, store_id: q.store_id };
    let f = range.filter(&who, state.clock.now_ms())?;
    fold(&state, &who).await?;
    Ok(axum::Json(analytics_cache::sales(&ask(&state, &f), group).await?).into_response())
}

/// The period's customers: new and returning, repeat rate, visits and the days between them.
#[utoipa::path(get, path = "/v1/merchant/analytics/customers", tag = "merchant", params(AnalyticsQuery),
    security(("bearer" = [])), responses(
    (status = 200, body = Customers, description = "Each figure or bucket that rests on fewer than `min_customers` customers (more than none) is `null`"),
    AuthErrors, NotFound404,
    (status = 400, description = ANALYTICS_400, body = Problem, content_type = "application/problem+json")))]
async fn customers(
    State(state): State<AppState>,
    who: MerchantStaff,
    q: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let f = query(q)?.filter(&who, state.clock.now_ms())?;
    fold(&state, &who).await?;
    Ok(axum::Json(analytics_cache::customers(&ask(&state, &f)).await?).into_response())
}

/// Items bought together: pairs bought by at least `min_customers` customers, with their lift.
#[utoipa::path(get, path = "/v1/merchant/analytics/baskets", tag = "merchant", params(AnalyticsQuery),
    security(("bearer" = [])), responses(
    (status = 200, body = Baskets, description = "At most 50 pairs, the most frequent first"),
    AuthErrors, NotFound404,
    (status = 400, description = ANALYTICS_400, body = Problem, content_type = "application/problem+json")))]
async fn baskets(
    State(state): State<AppState>,
    who: MerchantStaff,
    q: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let f = query(q)?.filter(&who, state.clock.now_ms())?;
    fold(&state, &who).await?;
    Ok(axum::Json(analytics_cache::baskets(&ask(&state, &f)).await?).into_response())
}

/// What `GET /v1/merchant/payments` takes.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PaymentsQuery {
    /// The first day, `YYYY-MM-DD` in Asia/Tokyo (default: the first payment).
    from: Option<String>,
    /// The last day, included (default: now).
    to: Option<String>,
    /// One store (default: every store the caller may see).
    store_id: Option<StoreId>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Payments per page, 1 to 200 (default 50).
    limit: Option<i64>,
}

impl PaymentsQuery {
    fn filter(&self, who: &MerchantStaff) -> Result<Filter, ApiError> {
        let start = self.from.as_deref().filter(|s| !s.is_empty()).map(|f| day("from", f)).transpose()?;
        let end = self.to.as_deref().filter(|s| !s.is_empty()).map(|t| day("to", t)).transpose()?;
        let (start, end) = (start.map_or(0, |d| d.0), end.map_or(i64::MAX, |d| d.1));
        if start >= end {
            return Err(bad("invalid_range", "from is after to"));
        }
        Ok(Filter { merchant_id: who.merchant_id().clone(), stores: stores(who, self.store_id.as_ref())?, start, end })
    }
}

/// A page of the merchant's payments, newest first.
#[derive(Serialize, utoipa::ToSchema)]
struct MerchantPaymentPage {
    items: Vec<MerchantPayment>,
    /// The `cursor` of the next page; null on the last.
    next_cursor: Option<String>,
}

const PAYMENTS_400: &str = "`invalid_query`: the query is not valid (`limit` not 1 to 200 included); `invalid_cursor`: not a `next_cursor`; `invalid_date`: `from` or `to` is not a date `YYYY-MM-DD`; `invalid_range`: `from` is after `to`";

/// The merchant's payments (a staff member's: of their stores), newest first, with baskets.
#[utoipa::path(get, path = "/v1/merchant/payments", tag = "merchant", params(PaymentsQuery),
    security(("bearer" = [])), responses(
    (status = 200, body = MerchantPaymentPage, description = "A page, newest first"),
    AuthErrors, NotFound404,
    (status = 400, description = PAYMENTS_400, body = Problem, content_type = "application/problem+json")))]
async fn list_payments(
    State(state): State<AppState>,
    who: MerchantStaff,
    q: Result<Query<PaymentsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(bad("invalid_query", "limit: 1 to 200"));
    }
    let cursor = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(listing::parse_cursor(c).ok_or_else(|| bad("invalid_cursor", "the cursor is not valid"))?),
    };
    let f = q.filter(&who)?;
    let mut conn = state.db.pool().acquire().await?;
    let (items, next_cursor) = listing::page(&mut conn, &f, cursor.as_ref(), limit).await?;
    Ok(axum::Json(MerchantPaymentPage { items, next_cursor }).into_response())
}

/// The most lines the payments CSV carries (the newest).
pub const CSV_MAX_LINES: usize = 100_000;
const CSV_PAGE: i64 = 500;

/// The payments list as CSV (same filters, no cursor), streamed page by page.
#[utoipa::path(get, path = "/v1/merchant/payments.csv", tag = "merchant", params(AnalyticsQuery),
    security(("bearer" = [])), responses(
    (status = 200, body = String, description = "`payment_id,created_at,store_id,terminal_id,amount,refunded,currency,status,customer_ref,items`, newest first, at most the newest 100,000 lines", content_type = "text/csv"),
    AuthErrors, NotFound404,
    (status = 400, description = "`invalid_query`: the query is not valid; `invalid_date`: `from` or `to` is not a date `YYYY-MM-DD`; `invalid_range`: `from` is after `to`", body = Problem, content_type = "application/problem+json")))]
async fn payments_csv(
    State(state): State<AppState>,
    who: MerchantStaff,
    q: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let f = PaymentsQuery { from: q.from, to: q.to, store_id: q.store_id, cursor: None, limit: None }.filter(&who)?;
    let head = futures::stream::once(async {
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(listing::CSV_HEADER.as_bytes()))
    });
    // (the cursor of the next page, or None when done; lines sent so far)
    let start: Option<Option<listing::Cursor>> = Some(None);
    let pages = futures::stream::try_unfold((state, f, start, 0usize), |(state, f, next, sent)| async move {
        let Some(before) = next.filter(|_| sent < CSV_MAX_LINES) else { return Ok(None) };
        let limit = CSV_PAGE.min((CSV_MAX_LINES - sent) as i64);
        let page = async {
            let mut conn = state.db.pool().acquire().await?;
            listing::page(&mut conn, &f, before.as_ref(), limit).await
        }
        .await
        .map_err(|e| {
            // The status is sent already: the client sees a cut transfer, the log says why.
            tracing::warn!(error = %store::describe_error(&e), "the payments CSV could not be read");
            std::io::Error::other("the payments could not be read")
        })?;
        let (items, cursor) = page;
        let next = cursor.and_then(|c| listing::parse_cursor(&c)).map(Some);
        let sent = sent + items.len();
        Ok(Some((axum::body::Bytes::from(listing::csv_lines(&items)), (state, f, next, sent))))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"omamori-payments.csv\""),
        ],
        axum::body::Body::from_stream(futures::StreamExt::chain(head, pages)),
    )
        .into_response())
}
