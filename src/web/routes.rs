//! Serves the embedded pages. Every answer carries a strict Content-Security-Policy (our own
//! scripts, styles and images only: no inline script, no other origin, no framing) and the other
//! headers of API.md's "Web pages". The shell is revalidated on every load (`no-cache`), so a new
//! binary's pages are seen at once; the service worker keeps a copy for offline use. Text assets
//! go gzip-compressed (made once per process) to a browser that takes gzip, with
//! `Vary: Accept-Encoding`; API answers are never compressed.

use axum::Router;
use axum::extract::Path;
use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
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
    asset!("js/boot.js", JS),
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
    asset!("js/screens/reset.js", JS),
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

/// Every page's assets, by the path they are served under.
const SITES: &[(&str, &[Asset])] = &[("app", APP), ("pos", POS), ("console", CONSOLE), ("merchant", MERCHANT)];

/// The gzip form of each text asset, made once per process on first use (at the best level: a
/// phone's download matters more than a few milliseconds once). Only these embedded files are
/// ever compressed, never an API answer: see docs/decisions.md on BREACH.
static GZIPPED: LazyLock<HashMap<(&'static str, &'static str), Vec<u8>>> = LazyLock::new(|| {
    SITES
        .iter()
        .flat_map(|&(site, assets)| assets.iter().map(move |a| (site, a)))
        .filter(|(_, a)| compressible(a.content_type))
        .filter_map(|(site, a)| {
            let packed = gzip(a.body)?;
            (packed.len() < a.body.len()).then_some(((site, a.path), packed))
        })
        .collect()
});

/// Text shrinks; PNG images are compressed already.
fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/") || content_type.contains("json") || content_type.contains("svg")
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

/// Whether the client's `Accept-Encoding` takes gzip: named (or `x-gzip`) with a weight above 0, or
/// not named while `*` has one. Anything unreadable means no: the plain bytes always work.
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let mut star = false;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        let weight = parts.find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")));
        let accepted = weight.is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0));
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            return accepted;
        }
        if coding == "*" {
            star = accepted;
        }
    }
    star
}

pub fn routes(config: &crate::config::Config) -> Router<AppState> {
    // Compressed before the first visitor waits for it.
    LazyLock::force(&GZIPPED);
    let policy: std::sync::Arc<str> = content_security_policy(config).into();
    let page = |site: &'static str, path: &'static str| {
        let policy = policy.clone();
        get(move |headers: HeaderMap| async move { file(site, path, &headers, &policy) })
    };
    let under = |site: &'static str| {
        let policy = policy.clone();
        get(move |Path(path): Path<String>, headers: HeaderMap| async move { file(site, &path, &headers, &policy) })
    };
    let mut router = Router::new();
    for &(site, _) in SITES {
        router = router
            .route(&format!("/{site}"), page(site, "index.html"))
            .route(&format!("/{site}/"), page(site, "index.html"))
            .route(&format!("/{site}/{{*path}}"), under(site));
    }
    router
}

fn file(site: &'static str, path: &str, request: &HeaderMap, policy: &str) -> Response {
    let asset = SITES.iter().find(|(s, _)| *s == site).and_then(|(_, assets)| assets.iter().find(|a| a.path == path));
    let Some(asset) = asset else {
        return with_page_headers(
            crate::http::error::problem_for_status(StatusCode::NOT_FOUND).into_response(),
            policy,
        );
    };
    let packed = GZIPPED.get(&(site, asset.path));
    let wants_gzip =
        request.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let mut response = match packed {
        Some(gz) if accepts_gzip(&wants_gzip) => {
            let mut r = (StatusCode::OK, gz.as_slice()).into_response();
            r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        _ => (StatusCode::OK, asset.body).into_response(),
    };
    let headers = response.headers_mut();
    if packed.is_some() {
        // Caches must keep the two forms apart.
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_only_when_the_client_gives_it_a_weight_above_zero() {
        for yes in
            ["gzip", "gzip, deflate, br, zstd", "br;q=1.0, GZIP;q=0.5", "x-gzip", "*", "br, *;q=0.1", " gzip ; q=1"]
        {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in ["", "identity", "br, deflate", "gzip;q=0", "gzip;q=0.0, *", "*;q=0", "gzip;q=nonsense", "gzipx"] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }

    #[test]
    fn every_text_asset_has_a_smaller_gzip_form_that_unpacks_to_it() {
        use std::io::Read;
        let mut texts = 0;
        for &(site, assets) in SITES {
            for a in assets.iter().filter(|a| compressible(a.content_type) && a.body.len() > 400) {
                let packed =
                    GZIPPED.get(&(site, a.path)).unwrap_or_else(|| panic!("{site}/{} is not compressed", a.path));
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(packed.as_slice()).read_to_end(&mut plain).unwrap();
                assert!(plain == a.body && packed.len() < a.body.len(), "{site}/{}", a.path);
                texts += 1;
            }
        }
        assert!(texts > 20, "{texts}");
        assert!(!GZIPPED.contains_key(&("app", "icon-512.png")), "a PNG is compressed already");
    }
}
