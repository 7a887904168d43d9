//! Extractors that establish who is calling and from where. A handler that needs a shopper takes
//! a [`UserSession`]; one that needs an operator takes a [`RequireRole`] of the least role it
//! needs (`RequireRole<Viewer>`, `RequireRole<OperatorRole>`, `RequireRole<Admin>`); shopper routes
//! also take a [`ShopperClient`], which applies the country policy. Only these extractors make
//! those values (from what `identity::session::authenticate` found), so a handler cannot forget the
//! check. Declare the session before the client: authentication is checked before the country
//! (API.md).

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::error::ApiError;
pub use super::error::{forbidden, unauthenticated};
use crate::identity::operators::Role;
use crate::identity::session::{self, Live, Timeouts};
pub use crate::identity::session::{OperatorSession, UserSession};
use crate::risk::client;
pub use crate::risk::client::ClientInfo;
use crate::state::AppState;

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
        let info = ClientInfo::of(peer, &parts.headers, &state.config.trusted_proxies, &state.geo);
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
        client::country_policy(&state.config, &info)?;
        Ok(ShopperClient(info))
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    super::cookies::bearer_token(&parts.headers)
}

/// Which cookie a browser's session travels in: the shopper's, or the console's.
#[derive(Clone, Copy)]
enum Kind {
    Shopper,
    Operator,
    Merchant,
}

async fn live_session(parts: &Parts, state: &AppState, kind: Kind) -> Result<Live, ApiError> {
    // A bearer token wins; a browser's session travels in its cookie (see `cookies`). An operator
    // route reads the console's cookie first, then the shopper's (which gets `403`, as before).
    let headers = &parts.headers;
    let cookie = match kind {
        Kind::Shopper => super::cookies::session_token(headers),
        Kind::Operator => super::cookies::operator_token(headers).or_else(|| super::cookies::session_token(headers)),
        Kind::Merchant => super::cookies::merchant_token(headers).or_else(|| super::cookies::session_token(headers)),
    };
    let token = bearer(parts).or(cookie).ok_or_else(unauthenticated)?;
    let mut conn = state.db.pool().acquire().await?;
    let live = session::authenticate(&mut conn, token, Timeouts::from_config(&state.config), state.clock.now_ms())
        .await?
        .ok_or_else(unauthenticated)?;
    // A session is bound to its device: a request that names another device is not its owner.
    if let Some(device) = parts.headers.get("x-device-id").and_then(|v| v.to_str().ok())
        && device != live.device_id
    {
        tracing::warn!(session = %live.id, "session presented from another device; revoking it");
        let _ = session::revoke(&mut conn, &live.id, state.clock.now_ms()).await;
        return Err(unauthenticated());
    }
    Ok(live)
}

/// The caller's live session of any kind, when the request carries one (a bearer token, or the
/// shopper's cookie); `None` otherwise, never a refusal: for a route open to everyone whose
/// answer depends on whose session asks (a step-up challenge's `send`).
#[derive(Debug, Clone)]
pub struct AnySession(pub Option<crate::ids::SessionId>);

impl FromRequestParts<AppState> for AnySession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if bearer(parts).is_none() && super::cookies::session_token(&parts.headers).is_none() {
            return Ok(AnySession(None));
        }
        match live_session(parts, state, Kind::Shopper).await {
            Ok(live) => Ok(AnySession(Some(live.id))),
            // An expired or unknown token is no one's: the route decides what no one may do.
            Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => Ok(AnySession(None)),
            Err(e) => Err(e),
        }
    }
}

impl FromRequestParts<AppState> for UserSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        live_session(parts, state, Kind::Shopper).await?.into_user().ok_or_else(forbidden)
    }
}

impl FromRequestParts<AppState> for OperatorSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        live_session(parts, state, Kind::Operator).await?.into_operator().ok_or_else(forbidden)
    }
}

/// The least role a route needs, as a type (see [`RequireRole`]).
pub trait MinimumRole {
    const ROLE: Role;
}

/// Reads alerts, switches and the audit log.
pub struct Viewer;
/// Also engages switches, freezes users, decides review cases, manages merchants.
pub struct OperatorRole;
/// Also manages operators and rules.
pub struct Admin;

impl MinimumRole for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl MinimumRole for OperatorRole {
    const ROLE: Role = Role::Operator;
}
impl MinimumRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// An operator whose role is at least `R`: a handler that takes one cannot run for a shopper, a
/// terminal or a lesser operator (`401` without a session, `403 forbidden` otherwise).
#[derive(Debug, Clone)]
pub struct RequireRole<R> {
    operator: OperatorSession,
    role: PhantomData<R>,
}

impl<R> std::ops::Deref for RequireRole<R> {
    type Target = OperatorSession;

    fn deref(&self) -> &OperatorSession {
        &self.operator
    }
}

impl<R: MinimumRole + Send + Sync> FromRequestParts<AppState> for RequireRole<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let operator = OperatorSession::from_request_parts(parts, state).await?;
        if !operator.has(R::ROLE) {
            return Err(forbidden());
        }
        Ok(RequireRole { operator, role: PhantomData })
    }
}

/// A POS terminal, authenticated by its key (`Authorization: Bearer tk_...`, or a paired till's
/// `omamori_terminal` cookie).
#[derive(Debug, Clone)]
pub struct TerminalAuth(pub crate::merchants::Terminal);

impl FromRequestParts<AppState> for TerminalAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // A bearer key wins; a paired till's key travels in its cookie (see `cookies`).
        let key = bearer(parts)
            .or_else(|| super::cookies::cookie(&parts.headers, super::cookies::TERMINAL_COOKIE))
            .ok_or_else(unauthenticated)?;
        // A key seen lately is answered from memory, without a pooled connection.
        if let Some(terminal) = crate::merchants::terminal_in_memory(&state.db, key) {
            return Ok(TerminalAuth(terminal));
        }
        let mut conn = state.db.pool().acquire().await?;
        if !key.starts_with("tk_") {
            // A shopper or operator session on a POS route.
            let timeouts = Timeouts::from_config(&state.config);
            return match session::authenticate(&mut conn, key, timeouts, state.clock.now_ms()).await? {
                Some(_) => Err(forbidden()),
                None => Err(unauthenticated()),
            };
        }
        let terminal = crate::merchants::authenticate_terminal_cached(&state.db, &mut conn, key)
            .await?
            .ok_or_else(unauthenticated)?;
        Ok(TerminalAuth(terminal))
    }
}

/// A merchant's owner or staff member at the dashboard, with what they may see, read afresh on
/// every request (a staff member's stores or a removed account apply at once). A shopper's or an
/// operator's session gets `403 forbidden`.
#[derive(Debug, Clone)]
pub struct MerchantStaff {
    session: crate::identity::session::MerchantSession,
    scope: crate::identity::staff::Scope,
    store_ids: Vec<crate::ids::StoreId>,
}

impl FromRequestParts<AppState> for MerchantStaff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let session = live_session(parts, state, Kind::Merchant).await?.into_merchant().ok_or_else(forbidden)?;
        let mut conn = state.db.pool().acquire().await?;
        let scope =
            crate::identity::staff::scope(&mut conn, session.merchant_user_id()).await?.ok_or_else(unauthenticated)?;
        let store_ids = scope.stores.iter().map(|s| s.store_id.clone()).collect();
        Ok(MerchantStaff { session, scope, store_ids })
    }
}

impl MerchantStaff {
    pub fn session(&self) -> &crate::identity::session::MerchantSession {
        &self.session
    }

    pub fn scope(&self) -> &crate::identity::staff::Scope {
        &self.scope
    }

    pub fn merchant_id(&self) -> &crate::ids::MerchantId {
        &self.scope.merchant_id
    }

    pub fn user_id(&self) -> &crate::ids::MerchantUserId {
        &self.scope.user_id
    }

    pub fn is_owner(&self) -> bool {
        self.scope.role == crate::identity::staff::StaffRole::Owner
    }

    /// `403 forbidden` unless an owner calls.
    pub fn require_owner(&self) -> Result<(), ApiError> {
        if self.is_owner() { Ok(()) } else { Err(forbidden()) }
    }

    /// The stores a staff member is given; `None` for an owner, who sees every store of the
    /// merchant (also one opened after this request began).
    pub fn store_ids(&self) -> Option<&[crate::ids::StoreId]> {
        (!self.is_owner()).then_some(self.store_ids.as_slice())
    }

    /// `404 not_found` unless the caller may see `store` (one of the merchant's stores for an
    /// owner, one of theirs for staff): another merchant's store is not told apart from none.
    pub fn require_store(&self, store: &crate::ids::StoreId) -> Result<(), ApiError> {
        if self.scope.stores.iter().any(|s| &s.store_id == store) {
            Ok(())
        } else {
            Err(ApiError::not_found("there is no such store"))
        }
    }

    /// Who acts, for the audit log.
    pub fn actor(&self) -> String {
        format!("merchant_user:{}", self.scope.user_id)
    }
}
