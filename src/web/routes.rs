//! Serves the embedded pages. Every answer carries a strict Content-Security-Policy (our own
//! scripts, styles and images only: no inline script, no other origin, no framing) and the other
//! headers of API.md's "Web pages". The shell is revalidated on every load (`no-cache`), so a new
//! binary's pages are seen at once; the service worker keeps a copy for offline use.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

/// The policy of every page: everything from this origin, nothing inline, nothing framed. Images
/// may also be `data:` (the barcode is drawn in the page) and `blob:`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; manifest-src 'self'; worker-src 'self'; font-src 'self'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The policy in force: [`CONTENT_SECURITY_POLICY`], or, with the Stripe processor, the same with
/// Stripe's own origins as Stripe documents them for Stripe.js (its script and frames, and the API
/// it calls), and no one else's.
pub fn content_security_policy(config: &crate::config::Config) -> String {
    if config.processor_kind() != Some(crate::config::ProcessorKind::Stripe) {
        return CONTENT_SECURITY_POLICY.to_string();
    }
    let js = config.stripe.js_origin().unwrap_or_else(|| "https://js.stripe.com".into());
    let api = url::Url::parse(&config.stripe.api_base)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "https://api.stripe.com".into());
    // 3-D Secure pages are framed from hooks.stripe.com when the real Stripe is used.
    let hooks = if js == "https://js.stripe.com" { " https://hooks.stripe.com" } else { "" };
    format!(
        "default-src 'none'; script-src 'self' {js}; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self' {api}; frame-src {js}{hooks}; manifest-src 'self'; worker-src 'self'; font-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// One embedded file of the wallet: its path under `/app/`, its type and its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset { path: $path, content_type: $type, body: include_bytes!(concat!("../../web/app/", $path)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The wallet's files. The service worker (`sw.js`) lists the same shell.
const APP: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("manifest.webmanifest", "application/manifest+json"),
    asset!("sw.js", JS),
    asset!("icon.svg", "image/svg+xml"),
    asset!("icon-192.png", "image/png"),
    asset!("icon-512.png", "image/png"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/i18n.js", JS),
    asset!("js/code128.js", JS),
    asset!("js/emvqr.js", JS),
    asset!("js/camera.js", JS),
    asset!("js/challenge.js", JS),
    asset!("js/passkey.js", JS),
    asset!("js/stripe.js", JS),
    asset!("js/screens/welcome.js", JS),
    asset!("js/screens/home.js", JS),
    asset!("js/screens/pay.js", JS),
    asset!("js/screens/scan.js", JS),
    asset!("js/screens/topup.js", JS),
    asset!("js/screens/cards.js", JS),
    asset!("js/screens/history.js", JS),
    asset!("js/screens/limits.js", JS),
    asset!("js/screens/notices.js", JS),
    asset!("js/screens/security.js", JS),
];

/// The till's files (`web/pos/`); it also loads the wallet's `dom.js`, `i18n.js` and `api.js`.
const POS: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/pos/index.html"),
    },
    Asset { path: "till.css", content_type: "text/css; charset=utf-8", body: include_bytes!("../../web/pos/till.css") },
    Asset { path: "js/till.js", content_type: JS, body: include_bytes!("../../web/pos/js/till.js") },
    Asset { path: "js/charge.js", content_type: JS, body: include_bytes!("../../web/pos/js/charge.js") },
    Asset { path: "js/texts.js", content_type: JS, body: include_bytes!("../../web/pos/js/texts.js") },
];

macro_rules! console_asset {
    ($path:literal, $type:expr) => {
        Asset { path: $path, content_type: $type, body: include_bytes!(concat!("../../web/console/", $path)) }
    };
}

/// The operators' console (`web/console/`); it also loads the wallet's `dom.js`, `i18n.js`,
/// `api.js` and `passkey.js`, and its `style.css`.
const CONSOLE: &[Asset] = &[
    console_asset!("index.html", "text/html; charset=utf-8"),
    console_asset!("console.css", "text/css; charset=utf-8"),
    console_asset!("js/console.js", JS),
    console_asset!("js/texts.js", JS),
    console_asset!("js/ui.js", JS),
    console_asset!("js/screens/alerts.js", JS),
    console_asset!("js/screens/switches.js", JS),
    console_asset!("js/screens/reviews.js", JS),
    console_asset!("js/screens/users.js", JS),
    console_asset!("js/screens/audit.js", JS),
    console_asset!("js/screens/notifications.js", JS),
    console_asset!("js/screens/rules.js", JS),
    console_asset!("js/screens/account.js", JS),
];

macro_rules! merchant_asset {
    ($path:literal, $type:expr) => {
        Asset { path: $path, content_type: $type, body: include_bytes!(concat!("../../web/merchant/", $path)) }
    };
}

/// The store owners' dashboard (`web/merchant/`); it also loads the wallet's `dom.js`, `i18n.js`
/// and `api.js`, the wallet's `style.css` and the console's layout (`console.css`).
const MERCHANT: &[Asset] = &[
    merchant_asset!("index.html", "text/html; charset=utf-8"),
    merchant_asset!("merchant.css", "text/css; charset=utf-8"),
    merchant_asset!("js/merchant.js", JS),
    merchant_asset!("js/texts.js", JS),
    merchant_asset!("js/ui.js", JS),
    merchant_asset!("js/chart.js", JS),
    merchant_asset!("js/screens/sales.js", JS),
    merchant_asset!("js/screens/items.js", JS),
    merchant_asset!("js/screens/customers.js", JS),
    merchant_asset!("js/screens/payments.js", JS),
    merchant_asset!("js/screens/settlements.js", JS),
    merchant_asset!("js/screens/staff.js", JS),
    merchant_asset!("js/screens/bank.js", JS),
];

pub fn routes(config: &crate::config::Config) -> Router<AppState> {
    let policy: std::sync::Arc<str> = content_security_policy(config).into();
    let page = |assets: &'static [Asset], path: &'static str| {
        let policy = policy.clone();
        get(move || async move { file(assets, path, &policy) })
    };
    let under = |assets: &'static [Asset]| {
        let policy = policy.clone();
        get(move |Path(path): Path<String>| async move { file(assets, &path, &policy) })
    };
    Router::new()
        .route("/app", page(APP, "index.html"))
        .route("/app/", page(APP, "index.html"))
        .route("/app/{*path}", under(APP))
        .route("/pos", page(POS, "index.html"))
        .route("/pos/", page(POS, "index.html"))
        .route("/pos/{*path}", under(POS))
        .route("/console", page(CONSOLE, "index.html"))
        .route("/console/", page(CONSOLE, "index.html"))
        .route("/console/{*path}", under(CONSOLE))
        .route("/merchant", page(MERCHANT, "index.html"))
        .route("/merchant/", page(MERCHANT, "index.html"))
        .route("/merchant/{*path}", under(MERCHANT))
}

fn file(assets: &[Asset], path: &str, policy: &str) -> Response {
    let Some(asset) = assets.iter().find(|a| a.path == path) else {
        return with_page_headers(
            crate::http::error::problem_for_status(StatusCode::NOT_FOUND).into_response(),
            policy,
        );
    };
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if path == "sw.js" {
        // The worker at /app/sw.js may control `/app` itself, not only what is under `/app/`.
        headers.insert(HeaderName::from_static("service-worker-allowed"), HeaderValue::from_static("/app"));
    }
    with_page_headers(response, policy)
}

fn with_page_headers(mut response: Response, policy: &str) -> Response {
    let headers = response.headers_mut();
    let policy = HeaderValue::from_str(policy).unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
