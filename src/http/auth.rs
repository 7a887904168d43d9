//! Extractors that establish who is calling and from where. A handler that needs a shopper takes
//! a [`UserSession`]; one that needs an operator takes an [`OperatorSession`] (and checks its
//! role); shopper routes also take a [`ShopperClient`], which applies the country policy. Only
//! these extractors make those values, so a handler cannot forget the check. Declare the session
//! before the client: authentication is checked before the country (API.md).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::error::ApiError;
use crate::app::AppState;
use crate::identity::session::{self, Live};
use crate::risk::{client, geo};

/// Where the request comes from (the client address behind trusted proxies) and its country.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub ip_text: String,
    pub subnet: String,
    pub country: Option<String>,
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(info) = parts.extensions.get::<ClientInfo>() {
            return Ok(info.clone());
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let ip = client::client_ip(peer, &parts.headers, &state.config.trusted_proxies);
        let info =
            ClientInfo { ip, ip_text: ip.to_string(), subnet: client::subnet_key(ip), country: state.geo.country(ip) };
        parts.extensions.insert(info.clone());
        Ok(info)
    }
}

/// A client that passed the country policy of shopper routes (`403 region_blocked` otherwise).
#[derive(Debug, Clone)]
pub struct ShopperClient(pub ClientInfo);

impl FromRequestParts<AppState> for ShopperClient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let info = ClientInfo::from_request_parts(parts, state).await?;
        country_policy(state, &info)?;
        Ok(ShopperClient(info))
    }
}

/// Refuses a shopper whose country is not allowed; the decision is logged and counted.
pub fn country_policy(state: &AppState, info: &ClientInfo) -> Result<(), ApiError> {
    let config = &state.config;
    if geo::country_allowed(info.country.as_deref(), &config.allowed_countries, config.unknown_country) {
        return Ok(());
    }
    let country = info.country.clone().unwrap_or_else(|| "unknown".into());
    tracing::warn!(country = %country, "refused by the country policy");
    metrics::counter!("omamori_region_blocked_total", "country" => country).increment(1);
    Err(ApiError::new(StatusCode::FORBIDDEN, "region_blocked", "Omamori is available only in Japan"))
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

pub fn unauthenticated() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "a valid session token is required")
        .with_header(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"))
}

pub fn forbidden() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token may not do that")
}

async fn live_session(parts: &Parts, state: &AppState) -> Result<Live, ApiError> {
    let token = bearer(parts).ok_or_else(unauthenticated)?;
    let mut conn = state.db.pool().acquire().await?;
    let live = session::authenticate(&mut conn, token, state.session_timeouts(), state.clock.now_ms())
        .await?
        .ok_or_else(unauthenticated)?;
    // A session is bound to its device: a request that names another device is not its owner.
    if let Some(device) = parts.headers.get("x-device-id").and_then(|v| v.to_str().ok())
        && device != live.device_id
    {
        tracing::warn!(session = %live.id, "session presented from another device; revoking it");
        let _ = crate::store::write_one(&state.db, || {
            sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2").bind(state.clock.now_ms()).bind(&live.id)
        })
        .await;
        return Err(unauthenticated());
    }
    Ok(live)
}

/// A shopper's live session.
#[derive(Debug, Clone)]
pub struct UserSession {
    pub session_id: String,
    pub user_id: String,
    pub device_id: String,
    pub step_up_at: i64,
}

impl FromRequestParts<AppState> for UserSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let live = live_session(parts, state).await?;
        match (live.kind.as_str(), live.user_id) {
            ("user", Some(user_id)) => {
                Ok(UserSession { session_id: live.id, user_id, device_id: live.device_id, step_up_at: live.step_up_at })
            }
            _ => Err(forbidden()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// An operator's live session and role.
#[derive(Debug, Clone)]
pub struct OperatorSession {
    pub session_id: String,
    pub operator_id: String,
    pub role: Role,
}

impl OperatorSession {
    /// Who acts, for the audit log.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.operator_id)
    }

    /// `403 forbidden` unless the operator's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role { Ok(()) } else { Err(forbidden()) }
    }
}

impl FromRequestParts<AppState> for OperatorSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let live = live_session(parts, state).await?;
        match (live.kind.as_str(), live.operator_id, live.role.as_deref().and_then(Role::parse)) {
            ("operator", Some(operator_id), Some(role)) => {
                Ok(OperatorSession { session_id: live.id, operator_id, role })
            }
            _ => Err(forbidden()),
        }
    }
}

/// A POS terminal, authenticated by its key (`Authorization: Bearer tk_...`).
#[derive(Debug, Clone)]
pub struct TerminalAuth(pub crate::merchants::Terminal);

impl FromRequestParts<AppState> for TerminalAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = bearer(parts).ok_or_else(unauthenticated)?;
        if !key.starts_with("tk_") {
            // A shopper or operator session on a POS route.
            let mut conn = state.db.pool().acquire().await?;
            return match session::authenticate(&mut conn, key, state.session_timeouts(), state.clock.now_ms()).await? {
                Some(_) => Err(forbidden()),
                None => Err(unauthenticated()),
            };
        }
        let mut conn = state.db.pool().acquire().await?;
        let terminal = crate::merchants::authenticate_terminal(&mut conn, key).await?.ok_or_else(unauthenticated)?;
        Ok(TerminalAuth(terminal))
    }
}
