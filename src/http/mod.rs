//! The HTTP layer: the axum router, the middleware every request passes through, operational
//! routes (`/healthz`, `/readyz`, `/metrics`, `/v1/openapi.json`) and error mapping.
//!
//! Handlers stay thin: parse, call one service function, map the result. Whatever goes wrong below
//! them (an unknown route, a method a route does not take, a body over 64 KiB, a panic) still
//! reaches the client as `application/problem+json` with a stable `code`, and every response
//! carries an `x-request-id` that also tags its log lines.

pub mod auth;
pub mod cookies;
pub mod error;
pub mod extract;
pub mod idempotent;
pub mod wire;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
pub use cookies::SESSION_COOKIE;
use error::Unavailable503;
pub use error::{ApiError, Problem};

/// The largest request body accepted (API.md).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;
/// The longest a request may run.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Omamori API",
        version = "1",
        description = "Stored-value smartphone payments in yen. Errors are application/problem+json with a stable `code` \
            (the `Problem` schema). Every route may also answer `500 internal_error`, `503 unavailable` (a busy \
            database, with `Retry-After`, or a request over 30 s), `408 request_timeout` (a body that took over 10 s) \
            and `413 payload_too_large` (a body over 64 KiB); a change made with the browser's session cookie and no \
            same-origin `Origin` gets `403 csrf_rejected`. No text in a JSON body may contain NUL (`422 \
            invalid_body`); an empty body counts as `{}`."
    ),
    components(schemas(Problem)),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

/// Declares how callers authenticate: `bearer` (a session token or a terminal key in
/// `Authorization: Bearer`) and `session` (the browser cookie of API.md's "Web pages").
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A shopper's or operator's session token (from a verified challenge), or a POS terminal's key \
                 (`tk_...`). Which of them a route takes is part of the route: another kind gets `403 forbidden`.",
            ))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let cookie = ApiKeyValue::with_description(
            SESSION_COOKIE,
            "The session token in an `HttpOnly`, `SameSite=Strict` cookie, for the web pages; a request that \
             changes anything must carry a same-origin `Origin` (else `403 csrf_rejected`). A page gets it by \
             sending `Omamori-Session: cookie` with `POST /v1/login` and the login challenge's verify; every route \
             that takes `bearer` for a shopper takes this cookie too.",
        );
        components.add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(cookie)));
        let till = ApiKeyValue::with_description(
            cookies::TERMINAL_COOKIE,
            "A paired till's terminal key in an `HttpOnly`, `SameSite=Strict` cookie (`Path=/v1/pos`), set by \
             `POST /v1/pos/pair`; every `/v1/pos` route that takes a terminal's `bearer` key takes it too, and a \
             change made with it must carry a same-origin `Origin` (else `403 csrf_rejected`).",
        );
        components.add_security_scheme("terminal", SecurityScheme::ApiKey(ApiKey::Cookie(till)));
        let console = ApiKeyValue::with_description(
            cookies::OPERATOR_COOKIE,
            "An operator's session token in an `HttpOnly`, `SameSite=Strict` cookie (`Path=/v1/admin`), for the \
             console at `/console`: set by the operator login challenge's verify when it carries \
             `Omamori-Session: cookie`, cleared by `POST /v1/admin/logout`; every `/v1/admin` route that takes an \
             operator's `bearer` token takes it too, and a change made with it must carry a same-origin `Origin` \
             (else `403 csrf_rejected`).",
        );
        components.add_security_scheme("operator_session", SecurityScheme::ApiKey(ApiKey::Cookie(console)));
    }
}

/// The API routes with their OpenAPI description.
fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .merge(crate::identity::routes::routes())
        .merge(crate::identity::passkey_routes::routes())
        .merge(crate::identity::operator_routes::routes())
        .merge(crate::identity::staff_routes::routes())
        .merge(crate::merchants::routes::routes())
        .merge(crate::merchants::till_routes::routes())
        .merge(crate::merchants::analytics_routes::routes())
        .merge(crate::merchants::settlement_routes::routes())
        .merge(crate::merchants::dashboard_routes::routes())
        .merge(crate::payments::routes::routes())
        .merge(crate::payments::chargeback_routes::routes())
        .merge(crate::payments::stripe_routes::routes())
        .merge(crate::risk::routes::routes());
    if state.config.sandbox {
        api = api.merge(crate::sandbox::routes::routes());
    }
    api
}

/// The OpenAPI document for a server with this configuration.
pub fn openapi(state: &AppState) -> utoipa::openapi::OpenApi {
    let mut doc = api(state).into_openapi();
    optional_bodies(&mut doc);
    doc
}

/// A route declares `request_body = Option<T>` when every field of `T` is optional: the body may
/// then be left out (`ApiJson` reads an empty body as `{}`). utoipa writes that as "`T` or `null`",
/// but a `null` body is refused: say "`T`, not required" instead.
fn optional_bodies(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    use utoipa::openapi::{RefOr, Required};
    let is_null =
        |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for body in operations.into_iter().flatten().filter_map(|op| op.request_body.as_mut()) {
            let mut optional = false;
            for content in body.content.values_mut() {
                if let Some(RefOr::T(Schema::OneOf(one))) = &content.schema
                    && one.items.len() == 2
                    && one.items.iter().any(is_null)
                {
                    content.schema = one.items.iter().find(|s| !is_null(s)).cloned();
                    optional = true;
                }
            }
            if optional {
                body.required = Some(Required::False);
            }
        }
    }
}

pub fn router(state: AppState) -> Router {
    let (router, mut doc) = api(&state).split_for_parts();
    optional_bodies(&mut doc);
    let doc = serde_json::to_string(&doc).expect("the OpenAPI document serialises");
    let router = router
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .merge(crate::web::routes::routes(&state.config))
        .fallback(|| async { error::problem_for_status(StatusCode::NOT_FOUND) })
        .layer(middleware::from_fn(cookies::csrf_guard))
        .layer(middleware::from_fn_with_state(state.clone(), apply_changes))
        .with_state(state);
    with_layers(router)
}

/// Where the changes to cached tables come from: operators, the sandbox's helpers (a chargeback
/// freezes), the card processor's events (a dispute freezes) and merchant staff.
const CHANGING_PREFIXES: &[&str] = &["/v1/admin/", "/v1/sandbox/", "/v1/processor/", "/v1/merchant/"];

/// After a change (any request under [`CHANGING_PREFIXES`] but a read), this instance learns
/// the new generations of its cached tables before the answer leaves (`store::cache`), so the
/// switch just engaged, the rule just edited or the terminal just revoked holds for the very next
/// request here; other instances learn it within a poll.
async fn apply_changes(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let path = req.uri().path();
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && CHANGING_PREFIXES.iter().any(|p| path.starts_with(p));
    let response = next.run(req).await;
    if changes {
        crate::store::cache::after_change(&state.db).await;
    }
    response
}

/// Wraps routes in the middleware every request passes through: request ids, tracing, metrics,
/// problem documents for bare errors, panic recovery and the body limit.
pub fn with_layers(router: Router) -> Router {
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<Body>| {
            // The route pattern, never the raw path: paths can carry codes and ids.
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("unmatched");
            tracing::info_span!("request", request_id = %id, method = method_label(req.method()), route = %route)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn(problem_for_bare_errors))
        // Bounds on how long one request may hold a worker and a connection: a client that drips
        // its body gets 408 (below), a request that runs too long 503 (its transaction rolls back).
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        .layer(middleware::from_fn(read_whole_body))
        .layer(CatchPanicLayer::custom(|_panic: Box<dyn std::any::Any + Send>| {
            // The panic message may hold request data: it goes nowhere but the log.
            tracing::error!("a handler panicked");
            error::problem_for_status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }));
    // Bodies are read only by the extractors, which stop at the limit. (A layer that refuses on
    // `Content-Length` before reading answers so early that clients still sending see a broken
    // pipe instead of the 413.)
    router.layer(layers).layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT_BYTES))
}

/// Reads the whole body (at most 64 KiB) before any handler runs. A handler that refuses a
/// request without reading its body (unauthenticated, say) would otherwise answer while the client
/// is still sending, and the client would see a broken connection instead of the problem.
async fn read_whole_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT_BYTES)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        // Over the limit (or a broken body): the 413 is the precise answer for the former.
        Ok(Err(e)) => {
            let too_large = format!("{e:?}").contains("LengthLimit");
            error::problem_for_status(if too_large { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST })
                .into_response()
        }
        Err(_) => error::problem_for_status(StatusCode::REQUEST_TIMEOUT).into_response(),
    }
}

/// Turns any error response that is not already a problem document into one, keeping its status
/// and headers (such as `Allow` on a 405).
async fn problem_for_bare_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(error::PROBLEM_JSON.as_bytes()));
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let (parts, _) = response.into_parts();
        let mut replaced = error::problem_for_status(status).into_response();
        for (name, value) in parts.headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                replaced.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return replaced;
    }
    response
}

/// A bounded label for a method: clients may send any token as a method.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    // The route pattern, not the raw path, so that ids do not explode the label set.
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("omamori_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("omamori_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// One Prometheus recorder per process (the `metrics` facade is global).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); then ours stays empty
            // rather than failing start-up.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            handle
        })
        .clone()
}

/// What `/healthz` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
}

/// What `/readyz` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Ready {
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    /// The database backend.
    #[schema(value_type = String, example = "sqlite")]
    database: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive", body = Health)))]
async fn healthz() -> impl IntoResponse {
    axum::Json(Health { status: "ok" })
}

/// Readiness: the database answers, and the server is not draining (told to stop).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready to serve", body = Ready),
    Unavailable503,
))]
async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if state.draining.is_draining() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the server is shutting down"));
    }
    let ping = tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await;
    if matches!(ping, Ok(true)) {
        Ok(axum::Json(Ready { status: "ready", database: state.db.backend().name() }))
    } else {
        Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database is not reachable"))
    }
}

/// Prometheus metrics in the text exposition format. On the main listener: open in development;
/// with `OMAMORI_METRICS_TOKEN` set, only with that bearer token; in production without a token,
/// not there at all (`404`: serve it on `OMAMORI_METRICS_LISTEN`).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
async fn metrics_text(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    match &state.config.metrics_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !crate::secret::constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "the metrics token is missing or wrong",
                )
                .into_response();
            }
        }
        None if state.config.environment == crate::config::Environment::Production => {
            return error::problem_for_status(StatusCode::NOT_FOUND).into_response();
        }
        None => {}
    }
    render_metrics(&state)
}

fn render_metrics(state: &AppState) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], state.metrics.render())
        .into_response()
}

/// The router of `OMAMORI_METRICS_LISTEN`: `/metrics`, open (the listener is the operators' own),
/// and problems for everything else.
pub fn metrics_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/metrics", get(|State(state): State<AppState>| async move { render_metrics(&state) }))
        .fallback(|| async { error::problem_for_status(StatusCode::NOT_FOUND) })
        .with_state(state);
    with_layers(router)
}
