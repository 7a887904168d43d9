//! Kill switches and account freezes (ARCHITECTURE section 8).
//!
//! A switch refuses one kind of action (`signups`, `logins`, `card_linking`, `topups`, `payments`,
//! `refunds`) in a scope: everywhere, for one merchant, one user, one card (its fingerprint on
//! every wallet) or one country. Engaging is immediate; a release takes effect only when a second,
//! different operator confirms it. A guarded request reads the active switches from the database
//! (one indexed query, [`check`]), or, on the payment path, from memory ([`check_cached`],
//! `store::cache`): the instance that engages or releases a switch applies it to its very next
//! request, every other instance within a second. A freeze is the same for every money action of
//! one user, and answers `403 account_frozen`.

use crate::ids::MerchantId;
use crate::ids::SwitchId;
use crate::ids::UserId;
use serde_json::json;
use sqlx::Row;

use super::RiskError;
use crate::ids::SwitchName;
use crate::store::{self, Conn, Db, clock};

pub const SCOPES: &[&str] = &["global", "merchant", "user", "card", "country"];

/// Who and what a guarded action concerns; each switch scope matches one of these.
#[derive(Debug, Default, Clone, Copy)]
pub struct Subject<'a> {
    pub user_id: Option<&'a UserId>,
    pub merchant_id: Option<&'a MerchantId>,
    /// The card's fingerprint (a card switch covers that card on every wallet).
    pub card_fingerprint: Option<&'a str>,
    pub country: Option<&'a str>,
}

/// An operator's reason for an action: 1 to 500 characters after trimming.
pub fn check_reason(text: &str) -> Result<&str, RiskError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 500 {
        return Err(RiskError::invalid("give a reason of 1 to 500 characters"));
    }
    Ok(text)
}

/// Refuses `name` for `subject` when a switch or a freeze covers it.
pub async fn check(conn: &mut Conn, name: SwitchName, s: Subject<'_>) -> Result<(), RiskError> {
    let row = sqlx::query(
        "SELECT kind, scope_kind FROM switches WHERE released_at IS NULL AND name = $1 AND ( \
             scope_kind = 'global' \
             OR (scope_kind = 'user' AND scope_id = $2) \
             OR (scope_kind = 'merchant' AND scope_id = $3) \
             OR (scope_kind = 'country' AND scope_id = $4) \
             OR (scope_kind = 'card' AND scope_id IN (SELECT c.id FROM cards c WHERE c.fingerprint = $5)) \
         ) ORDER BY kind LIMIT 1",
    )
    .bind(name.as_str())
    .bind(s.user_id.map_or("", UserId::as_str))
    .bind(s.merchant_id.map_or("", MerchantId::as_str))
    .bind(s.country.unwrap_or(""))
    .bind(s.card_fingerprint.unwrap_or(""))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(()) };
    Err(refusal(name, &row.try_get::<String, _>("kind")?, row.try_get("scope_kind")?))
}

/// What an engaged switch (or freeze) of `kind` answers. Not a final answer: the same request may
/// go through once the switch is released.
fn refusal(name: SwitchName, kind: &str, scope: String) -> RiskError {
    if kind == "freeze" {
        return RiskError::AccountFrozen;
    }
    metrics::counter!("omamori_switch_refusals_total", "switch" => name.as_str()).increment(1);
    RiskError::SwitchEngaged { name, scope }
}

/// An engaged switch or freeze, as [`check_cached`] keeps it.
#[derive(Debug)]
struct Live {
    kind: String,
    name: String,
    scope_kind: String,
    scope_id: String,
}

/// [`check`] on the engaged switches kept in memory (`store::cache`, group `switches`): a switch
/// engaged or released applies at once on the instance that did it and within a second on the
/// others. A card's switches need the card table, so a subject with a card fingerprint is checked
/// in the database as [`check`] does.
pub async fn check_cached(db: &Db, conn: &mut Conn, name: SwitchName, s: Subject<'_>) -> Result<(), RiskError> {
    use crate::store::cache::{Group, cached};
    if s.card_fingerprint.is_some() {
        return check(conn, name, s).await;
    }
    let live = cached(db, conn, Group::Switches, "engaged", |conn| {
        Box::pin(async move {
            let rows = sqlx::query("SELECT kind, name, scope_kind, scope_id FROM switches WHERE released_at IS NULL")
                .fetch_all(&mut *conn)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Live {
                        kind: r.try_get("kind")?,
                        name: r.try_get("name")?,
                        scope_kind: r.try_get("scope_kind")?,
                        scope_id: r.try_get("scope_id")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        })
    })
    .await?;
    let covers = |l: &&Live| {
        l.name == name.as_str()
            && match l.scope_kind.as_str() {
                "global" => true,
                "user" => s.user_id.is_some_and(|u| u.as_str() == l.scope_id),
                "merchant" => s.merchant_id.is_some_and(|m| m.as_str() == l.scope_id),
                "country" => s.country.is_some_and(|c| c == l.scope_id),
                _ => false,
            }
    };
    // As `check` orders them: a freeze answers before a switch.
    let Some(hit) = live.iter().filter(covers).min_by(|a, b| a.kind.cmp(&b.kind)) else { return Ok(()) };
    Err(refusal(name, &hit.kind, hit.scope_kind.clone()))
}

/// What an operator asks to stop, and why.
pub struct Engage<'a> {
    pub name: &'a str,
    /// `global`, `merchant`, `user`, `card` or `country`.
    pub scope_kind: &'a str,
    pub scope_id: &'a str,
    pub reason: &'a str,
    pub by: &'a str,
}

/// A switch's scope: `global`, or a kind and the id of what it covers.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Scope {
    #[schema(schema_with = scope_kind)]
    pub kind: String,
    /// The merchant's, user's or card's id, or the ISO 3166 alpha-2 country; empty for `global`.
    pub id: String,
}

fn scope_kind() -> utoipa::openapi::Object {
    crate::ids::one_of_schema(SCOPES, "What the switch covers: everything, or one merchant, user, card or country.")
}

fn switch_kind() -> utoipa::openapi::Object {
    crate::ids::one_of_schema(&["switch", "freeze"], "`switch`, or `freeze` (one of the switches a freeze engages).")
}

/// An engaged switch, as `POST /v1/admin/switches` answers it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Engaged {
    pub id: SwitchId,
    pub name: SwitchName,
    pub scope: Scope,
    pub engaged: bool,
}

/// Engages a switch at once; answers its view.
pub async fn engage(db: &Db, request: Engage<'_>, now: i64) -> Result<Engaged, RiskError> {
    let Some(name) = SwitchName::parse(request.name) else {
        return Err(RiskError::invalid(format!("name must be one of {}", SwitchName::names())));
    };
    let scope = check_scope(db, request.scope_kind, request.scope_id).await?;
    let reason = check_reason(request.reason)?;
    let id = SwitchId::generate();
    let row = NewSwitch { id: &id, kind: "switch", name, scope: &scope, reason, by: request.by };
    store::retry(|| async {
        let mut tx = db.begin().await?;
        insert(&mut tx, &row, now).await?;
        tx.commit().await
    })
    .await?;
    Ok(Engaged { id, name, scope, engaged: true })
}

/// A scope as stored: its kind known, its id trimmed (a country upper-cased) and naming something
/// that exists (a mistyped id would match nothing while the operator believes the fraud contained).
async fn check_scope(db: &Db, kind: &str, id: &str) -> Result<Scope, RiskError> {
    if !SCOPES.contains(&kind) {
        return Err(RiskError::invalid(format!("scope kind must be one of {}", SCOPES.join(", "))));
    }
    let id = if kind == "global" { "" } else { id.trim() };
    if kind != "global" && (id.is_empty() || id.len() > 64) {
        return Err(RiskError::invalid("a scoped switch needs the scope's id"));
    }
    let id = if kind == "country" { id.to_ascii_uppercase() } else { id.to_string() };
    let table = match kind {
        "user" => Some("users"),
        "merchant" => Some("merchants"),
        "card" => Some("cards"),
        _ => None,
    };
    if let Some(table) = table {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table} WHERE id = $1"));
        let n: i64 = sqlx::query_scalar(sql).bind(&id).fetch_one(db.pool()).await?;
        if n == 0 {
            return Err(RiskError::NotFound(format!("there is no {kind} {id}")));
        }
    }
    if kind == "country" && (id.len() != 2 || !id.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(RiskError::invalid("a country scope needs an ISO 3166 alpha-2 code"));
    }
    Ok(Scope { kind: kind.to_string(), id })
}

/// A switch or freeze row to write.
struct NewSwitch<'a> {
    id: &'a SwitchId,
    /// `switch` or `freeze`.
    kind: &'a str,
    name: SwitchName,
    scope: &'a Scope,
    reason: &'a str,
    by: &'a str,
}

/// Writes an engaged switch and its audit entry in the caller's transaction.
async fn insert(conn: &mut Conn, row: &NewSwitch<'_>, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO switches (id, kind, name, scope_kind, scope_id, reason, engaged_at, engaged_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.id)
    .bind(row.kind)
    .bind(row.name.as_str())
    .bind(&row.scope.kind)
    .bind(&row.scope.id)
    .bind(row.reason)
    .bind(now)
    .bind(row.by)
    .execute(&mut *conn)
    .await?;
    let detail = json!({"kind": row.kind, "name": row.name, "scope": {"kind": row.scope.kind, "id": row.scope.id}, "reason": row.reason});
    crate::audit::append(conn, row.by, "switch.engage", row.id, &detail, now).await?;
    tracing::warn!(switch = row.name.as_str(), scope = %row.scope.kind, by = row.by, "switch engaged");
    Ok(())
}

/// Automatic containment: engages a global switch unless one of that name is in force already.
/// Answers whether it engaged one.
pub async fn contain(conn: &mut Conn, name: SwitchName, reason: &str, now: i64) -> Result<bool, sqlx::Error> {
    // Two floods at once must not engage two switches (each would need its own release).
    store::lock_conn(conn, "containment", name.as_str()).await?;
    let engaged: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM switches WHERE name = $1 AND scope_kind = 'global' AND kind = 'switch' AND released_at IS NULL",
    )
    .bind(name.as_str())
    .fetch_one(&mut *conn)
    .await?;
    if engaged > 0 {
        return Ok(false);
    }
    let scope = Scope { kind: "global".into(), id: String::new() };
    let id = SwitchId::generate();
    let row = NewSwitch { id: &id, kind: "switch", name, scope: &scope, reason, by: "system:containment" };
    insert(conn, &row, now).await?;
    Ok(true)
}

/// Asks for (first operator) or confirms (a second, different operator) a release.
pub async fn release(db: &Db, id: &SwitchId, by: &str, reason: &str, now: i64) -> Result<bool, RiskError> {
    let reason = check_reason(reason)?;
    store::retry(|| async {
        let mut tx = db.begin().await?;
        let released = release_in(&mut tx, id, by, reason, now).await?;
        tx.commit().await?;
        Ok(released)
    })
    .await
}

/// One switch's release step, in the caller's transaction (the switch's row lock taken here).
async fn release_in(conn: &mut Conn, id: &SwitchId, by: &str, reason: &str, now: i64) -> Result<bool, RiskError> {
    store::lock_conn(conn, "switch", id.as_str()).await?;
    let row = sqlx::query("SELECT release_requested_by, released_at FROM switches WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| RiskError::NotFound("there is no such switch".into()))?;
    let (requested_by, released_at): (Option<String>, Option<i64>) =
        (row.try_get("release_requested_by")?, row.try_get("released_at")?);
    if released_at.is_some() {
        return Err(RiskError::AlreadyReleased);
    }
    match requested_by {
        None => {
            sqlx::query(
                "UPDATE switches SET release_requested_by = $1, release_requested_at = $2, release_reason = $3 WHERE id = $4",
            )
            .bind(by)
            .bind(now)
            .bind(reason)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            crate::audit::append(conn, by, "switch.release_requested", id, &json!({"reason": reason}), now).await?;
            Ok(false)
        }
        Some(first) if first == by => Err(RiskError::SecondOperatorRequired),
        Some(_) => {
            sqlx::query("UPDATE switches SET released_at = $1, released_by = $2 WHERE id = $3")
                .bind(now)
                .bind(by)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            crate::audit::append(conn, by, "switch.released", id, &json!({"reason": reason}), now).await?;
            Ok(true)
        }
    }
}

/// Where a user's freeze stands: frozen or not, and the operator who asked for the unfreeze that
/// waits for a second one.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FreezeState {
    pub frozen: bool,
    pub unfreeze_requested_by: Option<String>,
}

/// Whether `user_id` is frozen (any of the freeze's switches still in force).
pub async fn freeze_state(conn: &mut Conn, user_id: &UserId) -> Result<FreezeState, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT release_requested_by FROM switches WHERE kind = 'freeze' AND scope_kind = 'user' AND scope_id = $1 \
         AND released_at IS NULL",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let requested: Option<String> = match rows.first() {
        Some(r) => r.try_get("release_requested_by")?,
        None => None,
    };
    Ok(FreezeState { frozen: !rows.is_empty(), unfreeze_requested_by: requested })
}

/// Unfreezing is releasing every switch of the user's freeze, with the same four eyes as any
/// release: the first operator asks (`false`), a second, different one confirms (`true`).
pub async fn release_freeze(db: &Db, user_id: &UserId, by: &str, reason: &str, now: i64) -> Result<bool, RiskError> {
    let reason = check_reason(reason)?;
    store::retry(|| async {
        let mut tx = db.begin().await?;
        let ids: Vec<SwitchId> = sqlx::query_scalar(
            "SELECT id FROM switches WHERE kind = 'freeze' AND scope_kind = 'user' AND scope_id = $1 \
             AND released_at IS NULL ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Err(RiskError::NotFound("this user is not frozen".into()));
        }
        let mut released = false;
        for id in &ids {
            released = release_in(&mut tx, id, by, reason, now).await?;
        }
        tx.commit().await?;
        Ok(released)
    })
    .await
}

/// An active switch or freeze, as operators see it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Active {
    pub id: SwitchId,
    #[schema(schema_with = switch_kind)]
    pub kind: String,
    #[schema(value_type = SwitchName)]
    pub name: String,
    pub scope: Scope,
    pub engaged: bool,
    pub reason: String,
    pub engaged_at: String,
    pub engaged_by: String,
    /// The first operator of a release waiting for a second one.
    pub release_requested_by: Option<String>,
}

/// Active switches and freezes, newest first.
pub async fn list(db: &Db) -> Result<Vec<Active>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, kind, name, scope_kind, scope_id, reason, engaged_at, engaged_by, release_requested_by FROM switches \
         WHERE released_at IS NULL ORDER BY engaged_at DESC, id DESC LIMIT 500",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Active {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                name: r.try_get("name")?,
                scope: Scope { kind: r.try_get("scope_kind")?, id: r.try_get("scope_id")? },
                engaged: true,
                reason: r.try_get("reason")?,
                engaged_at: clock::rfc3339_ms(r.try_get("engaged_at")?),
                engaged_by: r.try_get("engaged_by")?,
                release_requested_by: r.try_get("release_requested_by")?,
            })
        })
        .collect()
}

/// The switches of a freeze (every money action of the user), in the caller's transaction. The
/// whole freeze, sessions included, is `identity::freeze`.
pub async fn engage_freeze(
    conn: &mut Conn,
    user_id: &UserId,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let scope = Scope { kind: "user".into(), id: user_id.to_string() };
    for name in SwitchName::MONEY {
        let id = SwitchId::generate();
        insert(conn, &NewSwitch { id: &id, kind: "freeze", name, scope: &scope, reason, by }, now).await?;
    }
    Ok(())
}
