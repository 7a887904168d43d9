//! Kill switches and account freezes (ARCHITECTURE section 8).
//!
//! A switch refuses one kind of action (`signups`, `logins`, `card_linking`, `topups`, `payments`,
//! `refunds`) in a scope: everywhere, for one merchant, one user, one card (its fingerprint on
//! every wallet) or one country. Engaging is immediate; a release takes effect only when a second,
//! different operator confirms it. Every guarded request reads the active switches from the
//! database (one indexed query), so a switch engaged on one instance refuses the very next
//! request on every instance. A freeze is the same for every money action of one user, and
//! answers `403 account_frozen`.

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

use crate::http::error::ApiError;
use crate::ids::{SwitchName, new_id};
use crate::store::{self, Conn, Db, clock};

pub const SCOPES: &[&str] = &["global", "merchant", "user", "card", "country"];

/// Who and what a guarded action concerns; each switch scope matches one of these.
#[derive(Debug, Default, Clone, Copy)]
pub struct Subject<'a> {
    pub user_id: Option<&'a str>,
    pub merchant_id: Option<&'a str>,
    /// The card's fingerprint (a card switch covers that card on every wallet).
    pub card_fingerprint: Option<&'a str>,
    pub country: Option<&'a str>,
}

/// An operator's reason for an action: 1 to 500 characters after trimming.
pub fn check_reason(text: &str) -> Result<&str, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 500 {
        return Err(ApiError::invalid_body("give a reason of 1 to 500 characters"));
    }
    Ok(text)
}

/// Refuses `name` for `subject` when a switch or a freeze covers it.
pub async fn check(conn: &mut Conn, name: SwitchName, s: Subject<'_>) -> Result<(), ApiError> {
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
    .bind(s.user_id.unwrap_or(""))
    .bind(s.merchant_id.unwrap_or(""))
    .bind(s.country.unwrap_or(""))
    .bind(s.card_fingerprint.unwrap_or(""))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(()) };
    let kind: String = row.try_get("kind")?;
    if kind == "freeze" {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "account_frozen", "this account is frozen; contact support"));
    }
    let scope: String = row.try_get("scope_kind")?;
    metrics::counter!("omamori_switch_refusals_total", "switch" => name.as_str()).increment(1);
    // Not a final answer: the same request may go through once the switch is released.
    Err(ApiError::new(StatusCode::FORBIDDEN, "switch_engaged", format!("{name} are stopped for now"))
        .with("switch", name.as_str())
        .with("scope", scope))
}

/// Engages a switch at once; answers its view.
#[allow(clippy::too_many_arguments)]
pub async fn engage(
    db: &Db,
    kind: &str,
    name: &str,
    scope_kind: &str,
    scope_id: &str,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<Value, ApiError> {
    let Some(name) = SwitchName::parse(name) else {
        return Err(ApiError::invalid_body(format!("name must be one of {}", SwitchName::names())));
    };
    if !SCOPES.contains(&scope_kind) {
        return Err(ApiError::invalid_body(format!("scope kind must be one of {}", SCOPES.join(", "))));
    }
    let scope_id = if scope_kind == "global" { "" } else { scope_id.trim() };
    if scope_kind != "global" && (scope_id.is_empty() || scope_id.len() > 64) {
        return Err(ApiError::invalid_body("a scoped switch needs the scope's id"));
    }
    let scope_id = if scope_kind == "country" { scope_id.to_ascii_uppercase() } else { scope_id.to_string() };
    // A mistyped id would match nothing while the operator believes the fraud contained.
    let table = match scope_kind {
        "user" => Some("users"),
        "merchant" => Some("merchants"),
        "card" => Some("cards"),
        _ => None,
    };
    if let Some(table) = table {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table} WHERE id = $1"));
        let n: i64 = sqlx::query_scalar(sql).bind(&scope_id).fetch_one(db.pool()).await?;
        if n == 0 {
            return Err(ApiError::not_found(format!("there is no {scope_kind} {scope_id}")));
        }
    }
    if scope_kind == "country" && (scope_id.len() != 2 || !scope_id.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(ApiError::invalid_body("a country scope needs an ISO 3166 alpha-2 code"));
    }
    let reason = check_reason(reason)?;
    let id = new_id("swt");
    store::retry(|| async {
        let mut tx = db.begin().await?;
        insert(&mut tx, &id, kind, name, scope_kind, &scope_id, reason, by, now).await?;
        tx.commit().await
    })
    .await?;
    Ok(json!({"id": id, "name": name, "scope": {"kind": scope_kind, "id": scope_id}, "engaged": true}))
}

/// Writes an engaged switch and its audit entry in the caller's transaction.
#[allow(clippy::too_many_arguments)]
async fn insert(
    conn: &mut Conn,
    id: &str,
    kind: &str,
    name: SwitchName,
    scope_kind: &str,
    scope_id: &str,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO switches (id, kind, name, scope_kind, scope_id, reason, engaged_at, engaged_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(kind)
    .bind(name.as_str())
    .bind(scope_kind)
    .bind(scope_id)
    .bind(reason)
    .bind(now)
    .bind(by)
    .execute(&mut *conn)
    .await?;
    let detail = json!({"kind": kind, "name": name, "scope": {"kind": scope_kind, "id": scope_id}, "reason": reason});
    crate::audit::append(conn, by, "switch.engage", id, &detail, now).await?;
    tracing::warn!(switch = name.as_str(), scope = scope_kind, by, "switch engaged");
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
    insert(conn, &new_id("swt"), "switch", name, "global", "", reason, "system:containment", now).await?;
    Ok(true)
}

/// Asks for (first operator) or confirms (a second, different operator) a release.
pub async fn release(db: &Db, id: &str, by: &str, reason: &str, now: i64) -> Result<bool, ApiError> {
    let reason = check_reason(reason)?;
    store::retry(|| async {
        let mut tx = db.begin().await?;
        tx.lock("switch", id).await?;
        let row = sqlx::query("SELECT release_requested_by, released_at FROM switches WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::not_found("there is no such switch"))?;
        let (requested_by, released_at): (Option<String>, Option<i64>) =
            (row.try_get("release_requested_by")?, row.try_get("released_at")?);
        if released_at.is_some() {
            return Err(ApiError::new(StatusCode::CONFLICT, "already_released", "this switch is released already"));
        }
        let released = match requested_by {
            None => {
                sqlx::query("UPDATE switches SET release_requested_by = $1, release_requested_at = $2, release_reason = $3 WHERE id = $4")
                    .bind(by)
                    .bind(now)
                    .bind(reason)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                crate::audit::append(&mut tx, by, "switch.release_requested", id, &json!({"reason": reason}), now).await?;
                false
            }
            Some(first) if first == by => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "second_operator_required",
                    "a release takes a second, different operator",
                ));
            }
            Some(_) => {
                sqlx::query("UPDATE switches SET released_at = $1, released_by = $2 WHERE id = $3")
                    .bind(now)
                    .bind(by)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                crate::audit::append(&mut tx, by, "switch.released", id, &json!({"reason": reason}), now).await?;
                true
            }
        };
        tx.commit().await?;
        Ok(released)
    })
    .await
}

/// Active switches and freezes, newest first.
pub async fn list(db: &Db) -> Result<Vec<Value>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, kind, name, scope_kind, scope_id, reason, engaged_at, engaged_by, release_requested_by FROM switches \
         WHERE released_at IS NULL ORDER BY engaged_at DESC, id DESC LIMIT 500",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(json!({
                "id": r.try_get::<String, _>("id")?,
                "kind": r.try_get::<String, _>("kind")?,
                "name": r.try_get::<String, _>("name")?,
                "scope": {"kind": r.try_get::<String, _>("scope_kind")?, "id": r.try_get::<String, _>("scope_id")?},
                "engaged": true,
                "reason": r.try_get::<String, _>("reason")?,
                "engaged_at": clock::rfc3339_ms(r.try_get("engaged_at")?),
                "engaged_by": r.try_get::<String, _>("engaged_by")?,
                "release_requested_by": r.try_get::<Option<String>, _>("release_requested_by")?,
            }))
        })
        .collect()
}

/// The switches of a freeze (every money action of the user), in the caller's transaction. The
/// whole freeze, sessions included, is `identity::freeze`.
pub async fn engage_freeze(
    conn: &mut Conn,
    user_id: &str,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    for name in SwitchName::MONEY {
        insert(conn, &new_id("swt"), "freeze", name, "user", user_id, reason, by, now).await?;
    }
    Ok(())
}
