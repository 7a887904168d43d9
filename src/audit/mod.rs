//! The audit log: operator actions and security events, append-only, each entry carrying the hash
//! of the one before it (ARCHITECTURE section 8), so that altering or removing a row breaks the
//! chain where it happened. Money movements are not chained here: the immutable journal is their
//! record, and payments never queue behind this one global chain.
//!
//! A chain proves nothing about its own end: deleting the newest entries leaves a shorter chain that
//! still holds. So the head (the newest entry's id and hash) is published outside the database
//! every hour ([`publish_anchor`], to the on-call webhook), and `omamori admin audit verify --anchor
//! ID:HASH` checks that a head seen earlier is still there, unchanged.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::{Conn, Db, clock};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn link_hash(prev: &str, at: i64, actor: &str, action: &str, subject: &str, detail: &str) -> String {
    let mut h = Sha256::new();
    for part in [prev, &at.to_string(), actor, action, subject, detail] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Appends an entry in the caller's transaction, so that it commits with the action it records.
pub async fn append(
    conn: &mut Conn,
    actor: &str,
    action: &str,
    subject: impl AsRef<str>,
    detail: &Value,
    now: i64,
) -> Result<(), sqlx::Error> {
    let subject = subject.as_ref();
    // Appends serialise on the chain, so two cannot link to the same predecessor.
    crate::store::lock_conn(conn, "audit", "chain").await?;
    let prev: Option<String> =
        sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetch_optional(&mut *conn).await?;
    let prev = prev.unwrap_or_else(|| GENESIS.to_string());
    let detail = detail.to_string();
    let hash = link_hash(&prev, now, actor, action, subject, &detail);
    sqlx::query("INSERT INTO audit_log (at, actor, action, subject, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(now)
        .bind(actor)
        .bind(action)
        .bind(subject)
        .bind(&detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An entry as operators read it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub id: i64,
    pub at: String,
    /// `operator:<id>`, `user:<id>`, `system:<job>` or `processor`.
    pub actor: String,
    /// What was done, e.g. `switch.engage`.
    pub action: String,
    /// The id of what it was done to.
    pub subject: String,
    /// The action's details as recorded (usually an object).
    pub detail: Value,
    pub hash: String,
    /// The previous entry's hash (all zeros for the first).
    pub prev_hash: String,
}

/// Newest first, before entry id `before`.
pub async fn list(db: &Db, before: Option<i64>, limit: i64) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let detail: String = r.try_get("detail")?;
            Ok(Entry {
                id: r.try_get("id")?,
                at: clock::rfc3339_ms(r.try_get("at")?),
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                subject: r.try_get("subject")?,
                detail: serde_json::from_str::<Value>(&detail).unwrap_or(Value::String(detail)),
                hash: r.try_get("hash")?,
                prev_hash: r.try_get("prev_hash")?,
            })
        })
        .collect()
}

/// The newest entry: its id, hash and time.
pub async fn head(db: &Db) -> Result<Option<(i64, String, i64)>, sqlx::Error> {
    let row =
        sqlx::query("SELECT id, hash, at FROM audit_log ORDER BY id DESC LIMIT 1").fetch_optional(db.pool()).await?;
    row.map(|r| Ok((r.try_get("id")?, r.try_get("hash")?, r.try_get("at")?))).transpose()
}

/// Checks that entry `id` still exists with `hash` (a head published earlier); answers why it
/// does not, if it does not.
pub async fn check_anchor(db: &Db, id: i64, hash: &str) -> Result<Option<String>, sqlx::Error> {
    let stored: Option<String> =
        sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1").bind(id).fetch_optional(db.pool()).await?;
    Ok(match stored {
        None => Some(format!("the anchored entry {id} is gone: entries were removed from the end of the log")),
        Some(h) if !crate::secret::constant_time_eq(h.as_bytes(), hash.as_bytes()) => {
            Some(format!("the anchored entry {id} has another hash now: the log was rewritten"))
        }
        Some(_) => None,
    })
}

/// How often the head is published.
pub const ANCHOR_EVERY_MS: i64 = 3_600_000;

/// Publishes the head to the on-call webhook through the outbox, unless one was published in the
/// last [`ANCHOR_EVERY_MS`] or the log is empty. Answers whether it did.
pub async fn publish_anchor(db: &Db, now: i64) -> Result<bool, sqlx::Error> {
    let Some((id, hash, at)) = head(db).await? else { return Ok(false) };
    let mut tx = db.begin().await?;
    crate::store::lock_conn(&mut tx, "audit", "anchor").await?;
    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(created_at) FROM outbox WHERE kind = 'audit_anchor'")
        .fetch_one(&mut *tx)
        .await?;
    if last.is_some_and(|t| t > now - ANCHOR_EVERY_MS) {
        return Ok(false);
    }
    let message = crate::notify::Message {
        channel: crate::notify::Channel::Webhook,
        to: crate::notify::dispatch::ONCALL.into(),
        kind: "audit_anchor".into(),
        subject: None,
        body: json!({"kind": "audit_anchor", "anchor": format!("{id}:{hash}"), "entry_at": clock::rfc3339_ms(at),
            "published_at": clock::rfc3339_ms(now)})
        .to_string(),
        code: None,
    };
    crate::notify::enqueue(&mut tx, &message, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Walks the chain from the start; answers the id of the first entry that does not hold, and why.
pub async fn verify(db: &Db) -> Result<Option<(i64, String)>, sqlx::Error> {
    let mut prev = GENESIS.to_string();
    let mut last_id = 0i64;
    loop {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit_log WHERE id > $1 ORDER BY id LIMIT 1000",
        )
        .bind(last_id)
        .fetch_all(db.pool())
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let (at, actor, action, subject, detail, prev_hash, hash): (
                i64,
                String,
                String,
                String,
                String,
                String,
                String,
            ) = (
                r.try_get("at")?,
                r.try_get("actor")?,
                r.try_get("action")?,
                r.try_get("subject")?,
                r.try_get("detail")?,
                r.try_get("prev_hash")?,
                r.try_get("hash")?,
            );
            if prev_hash != prev {
                return Ok(Some((
                    id,
                    "its prev_hash does not match the entry before it (an entry was removed or altered)".into(),
                )));
            }
            if link_hash(&prev, at, &actor, &action, &subject, &detail) != hash {
                return Ok(Some((id, "its contents do not match its hash (the entry was altered)".into())));
            }
            prev = hash;
            last_id = id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_every_field_unambiguously() {
        let base = link_hash(GENESIS, 1, "operator:a", "switch.engage", "swt_1", "{}");
        assert_ne!(base, link_hash(GENESIS, 2, "operator:a", "switch.engage", "swt_1", "{}"));
        assert_ne!(base, link_hash(GENESIS, 1, "operator:b", "switch.engage", "swt_1", "{}"));
        // Moving a character from one field to the next changes the hash.
        assert_ne!(link_hash(GENESIS, 1, "ab", "c", "", ""), link_hash(GENESIS, 1, "a", "bc", "", ""));
    }
}
