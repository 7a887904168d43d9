//! Browser sessions (API.md, "Web pages"): in a browser, page script never reads a secret. A page
//! asks for the cookie form by sending `Omamori-Session: cookie` with its login and challenge
//! verify; the session token and the device token then travel only in `HttpOnly`,
//! `SameSite=Strict` cookies (`Secure` unless the page was opened on a loopback host), and the
//! answer's body holds no token. `auth` reads the session cookie where no bearer token is given,
//! and [`csrf_guard`] refuses a cookie-carrying change whose `Origin` is not the server's own
//! (`403 csrf_rejected`). Bearer tokens work as before for apps and tools.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use crate::identity::challenge::Verified;
use crate::identity::login::LoginAnswer;

/// The cookie that carries the session token.
pub const SESSION_COOKIE: &str = "omamori_session";
/// The cookie that carries the device token that makes this browser a recognised device.
pub const DEVICE_COOKIE: &str = "omamori_device";
/// The cookie that carries an operator's session (`/console`), sent only to `/v1/admin`, so that
/// an operator's and a shopper's session in one browser never take each other's place.
pub const OPERATOR_COOKIE: &str = "omamori_operator";
/// The cookie that carries a merchant user's dashboard session (`/merchant`), sent only to
/// `/v1/merchant`.
pub const MERCHANT_COOKIE: &str = "omamori_merchant";
/// The cookie that carries a paired till's terminal key (`/pos`), sent only to `/v1/pos`.
pub const TERMINAL_COOKIE: &str = "omamori_terminal";
/// A till stays paired until it unpairs or its key is revoked (400 days is the most browsers keep).
const TERMINAL_COOKIE_MAX_AGE_SECS: u32 = 400 * 24 * 3600;
/// The request header by which a page asks for cookies instead of tokens in the body.
pub const SESSION_MODE_HEADER: &str = "omamori-session";
/// A device token is worth keeping as long as it recognises the device (30 days after the last
/// two-step login, which sets it again).
const DEVICE_COOKIE_MAX_AGE_SECS: u32 = 30 * 24 * 3600;

/// The value of cookie `name` in the request, if any.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v.trim()))
        .filter(|v| !v.is_empty())
}

/// The session token of a browser request, when it carries the session cookie.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// The operator's session token of a browser request (the console's cookie), if any.
pub fn operator_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, OPERATOR_COOKIE)
}

/// The merchant user's session token of a browser request (the dashboard's cookie), if any.
pub fn merchant_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, MERCHANT_COOKIE)
}

/// What a browser sent with a login or a challenge verify: whether it wants cookies, and the
/// device token its cookie holds.
#[derive(Debug, Clone)]
pub struct Browser {
    wants_cookies: bool,
    secure: bool,
    had_session: bool,
    had_operator_session: bool,
    had_merchant_session: bool,
    device_token: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Browser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let wants_cookies = headers
            .get(SESSION_MODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("cookie"));
        Ok(Browser {
            wants_cookies,
            secure: !host_is_loopback(headers),
            had_session: session_token(headers).is_some(),
            had_operator_session: operator_token(headers).is_some(),
            had_merchant_session: merchant_token(headers).is_some(),
            device_token: cookie(headers, DEVICE_COOKIE).map(str::to_string),
        })
    }
}

/// The header as a route declares it: `params(Browser)`.
impl utoipa::IntoParams for Browser {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Required, Type};
        let schema = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["cookie"]));
        let parameter = ParameterBuilder::new()
            .name("Omamori-Session")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "`cookie` (web pages): the session and device tokens are set as `HttpOnly`, `SameSite=Strict` \
                 cookies and left out of the body; a login then also reads the device token from its cookie.",
            ))
            .schema(Some(schema))
            .build();
        vec![parameter]
    }
}

/// The body a page gets where an app would get tokens: they are in cookies instead.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CookieSession {
    /// Always `cookie`: the session token is in the `omamori_session` cookie.
    pub session: &'static str,
    pub expires_at: String,
}

/// A login's or a verify's answer: tokens in the body (`Authorization: Bearer` clients), or, for a
/// page that sent `Omamori-Session: cookie`, in cookies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SessionReply<T> {
    Tokens(T),
    Cookie(CookieSession),
}

impl Browser {
    /// The device token of the cookie, for a login whose body named none.
    pub fn device_token(&self) -> Option<&str> {
        self.device_token.as_deref()
    }

    /// `POST /v1/login`'s answer: a session on a recognised device goes into the cookie.
    pub fn login(&self, answer: LoginAnswer) -> Response {
        match answer {
            LoginAnswer::Session(s) if self.wants_cookies => {
                let cookies = [self.set(SESSION_COOKIE, &s.session_token, None)];
                self.cookie_reply(&cookies, s.expires_at)
            }
            other => axum::Json(SessionReply::<LoginAnswer>::Tokens(other)).into_response(),
        }
    }

    /// A challenge verify's answer: a login's session and device token go into cookies.
    pub fn verified<C: Serialize>(&self, answer: Verified<C>) -> Response {
        match answer {
            Verified::Login(s) if self.wants_cookies => {
                let cookies = [
                    self.set(SESSION_COOKIE, &s.session_token, None),
                    self.set(DEVICE_COOKIE, &s.device_token, Some(DEVICE_COOKIE_MAX_AGE_SECS)),
                ];
                self.cookie_reply(&cookies, s.expires_at)
            }
            Verified::OperatorLogin(s) if self.wants_cookies => {
                let cookies = [self.set_for(OPERATOR_COOKIE, "/v1/admin", &s.session_token, None)];
                self.cookie_reply(&cookies, s.expires_at)
            }
            Verified::MerchantLogin(s) if self.wants_cookies => {
                let cookies = [self.set_for(MERCHANT_COOKIE, "/v1/merchant", &s.session_token, None)];
                self.cookie_reply(&cookies, s.expires_at)
            }
            other => axum::Json(SessionReply::<Verified<C>>::Tokens(other)).into_response(),
        }
    }

    /// `204` for a logout; a browser's session cookie is cleared (its device cookie stays, so that
    /// the browser remains a recognised device).
    pub fn logged_out(&self) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if self.had_session {
            response.headers_mut().append(header::SET_COOKIE, self.set(SESSION_COOKIE, "", Some(0)));
        }
        response
    }

    /// `204` for an operator's logout; the console's cookie is cleared.
    pub fn operator_logged_out(&self) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if self.had_operator_session {
            response.headers_mut().append(header::SET_COOKIE, self.set_for(OPERATOR_COOKIE, "/v1/admin", "", Some(0)));
        }
        response
    }

    /// `POST /v1/merchant/login`'s answer: the token in the body, or in the dashboard's cookie.
    pub fn merchant_login(&self, opened: crate::identity::session::Opened) -> Response {
        let expires_at = crate::store::clock::rfc3339_ms(opened.expires_at);
        if self.wants_cookies {
            let cookies = [self.set_for(MERCHANT_COOKIE, "/v1/merchant", &opened.token, None)];
            return self.cookie_reply(&cookies, expires_at);
        }
        let body = crate::identity::login::DeviceSession { session_token: opened.token, expires_at };
        let mut response = axum::Json(body).into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// `204` for a dashboard logout; the dashboard's cookie is cleared.
    pub fn merchant_logged_out(&self) -> Response {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if self.had_merchant_session {
            let cleared = self.set_for(MERCHANT_COOKIE, "/v1/merchant", "", Some(0));
            response.headers_mut().append(header::SET_COOKIE, cleared);
        }
        response
    }

    fn cookie_reply(&self, cookies: &[HeaderValue], expires_at: String) -> Response {
        let body = SessionReply::<()>::Cookie(CookieSession { session: "cookie", expires_at });
        let mut response = axum::Json(body).into_response();
        for c in cookies {
            response.headers_mut().append(header::SET_COOKIE, c.clone());
        }
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn set(&self, name: &str, value: &str, max_age_secs: Option<u32>) -> HeaderValue {
        self.set_for(name, "/", value, max_age_secs)
    }

    fn set_for(&self, name: &str, path: &str, value: &str, max_age_secs: Option<u32>) -> HeaderValue {
        let mut text = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
        if let Some(secs) = max_age_secs {
            text.push_str(&format!("; Max-Age={secs}"));
        }
        if self.secure {
            text.push_str("; Secure");
        }
        // Tokens are URL-safe base64: always a valid header value.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("omamori_invalid=; Max-Age=0"))
    }
}

/// The `Set-Cookie` of a till's pairing (`Some(key)`) or unpairing (`None`): `HttpOnly`,
/// `SameSite=Strict`, `Path=/v1/pos`, `Secure` unless the page was opened on a loopback host.
pub fn terminal_cookie(headers: &HeaderMap, key: Option<&str>) -> HeaderValue {
    let (value, max_age) = key.map_or(("", 0), |k| (k, TERMINAL_COOKIE_MAX_AGE_SECS));
    let secure = if host_is_loopback(headers) { "" } else { "; Secure" };
    let text = format!("{TERMINAL_COOKIE}={value}; Path=/v1/pos; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    // Terminal keys are URL-safe base64 after `tk_` (checked before pairing): a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("omamori_invalid=; Max-Age=0"))
}

/// Whether the page was opened on `localhost` or a loopback address (plain http is allowed there,
/// so cookies cannot be `Secure`).
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a request that changes something, carries one of our cookies and no bearer token,
/// unless its `Origin` is this server (`http(s)://` and the request's own `Host`). A cross-site
/// page's request carries no `SameSite=Strict` cookie at all; this also stops a same-site page of
/// another origin (another port of the same host, a sibling subdomain).
pub async fn csrf_guard(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let headers = req.headers();
    // What authenticates the request decides: a bearer token (never sent by a browser on its own),
    // or else the cookie, even beside an `Authorization` header of another scheme.
    let by_cookie = bearer_token(headers).is_none()
        && [SESSION_COOKIE, DEVICE_COOKIE, TERMINAL_COOKIE, OPERATOR_COOKIE, MERCHANT_COOKIE]
            .iter()
            .any(|name| cookie(headers, name).is_some());
    if !safe && by_cookie && !same_origin(headers) {
        return csrf_rejected().into_response();
    }
    next.run(req).await
}

/// The token of an `Authorization: Bearer` header, if there is one (any other scheme is none).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// Whether the request's `Origin` is this server (`http(s)://` and its own `Host`).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            rest.is_some_and(|h| h.eq_ignore_ascii_case(host))
        }
        _ => false,
    }
}

pub fn csrf_rejected() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_rejected",
        "a request made with the session cookie must come from this site's own pages",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[("cookie", "a=1; omamori_session_x=2; omamori_session=tok"), ("cookie", "omamori_device=d")]);
        assert_eq!(session_token(&h), Some("tok"));
        assert_eq!(cookie(&h, DEVICE_COOKIE), Some("d"));
        assert_eq!(cookie(&headers(&[("cookie", "omamori_session=")]), SESSION_COOKIE), None);
    }

    #[test]
    fn the_origin_must_be_the_host() {
        let same = headers(&[("host", "localhost:8080"), ("origin", "http://localhost:8080")]);
        assert!(same_origin(&same));
        let other_port = headers(&[("host", "localhost:8080"), ("origin", "http://localhost:9999")]);
        assert!(!same_origin(&other_port));
        assert!(!same_origin(&headers(&[("host", "localhost:8080"), ("origin", "null")])));
        assert!(!same_origin(&headers(&[("host", "localhost:8080")])));
    }

    #[test]
    fn loopback_hosts_get_cookies_without_secure() {
        for host in ["localhost:8080", "127.0.0.1:1", "[::1]:8080", "LOCALHOST"] {
            assert!(host_is_loopback(&headers(&[("host", host)])), "{host}");
        }
        for host in ["pay.example.jp", "pay.example.jp:443", "10.0.0.1:80", "localhost.example.jp"] {
            assert!(!host_is_loopback(&headers(&[("host", host)])), "{host}");
        }
    }
}
