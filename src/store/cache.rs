//! Read-mostly tables kept in memory, with a stated staleness bound (issue 14).
//!
//! A payment reads the engaged switches, the risk rules, its store and the merchant's webhook
//! endpoints, which change a few times a day. Each of those tables belongs to a [`Group`] whose
//! generation (a row of `cache_generations`) a trigger moves on every insert, update or delete, in
//! the writer's own transaction: no writer, not even an operator at `psql`, can change one without
//! it. A cached value carries the generation read before it was loaded, and is used only while
//! that is still the newest generation this instance knows of. The instance learns of a new
//! generation
//! - at once, when it made the change: the writer calls [`refresh`] after its commit and before it
//!   answers, so the instance that engages a switch or changes a rule refuses the very next request;
//! - within [`POLL_MS`] otherwise: a background task reads the generations (one tiny query) that
//!   often, so every other instance, and the command line's changes, apply within a second.
//!
//! Reading the generation before the data means a value can only be older than its tag claims if
//! a change committed between the two reads, in which case the tag is already old and the value is
//! loaded again next time. Loads run on the caller's connection (inside its transaction), never on
//! a second pooled one, so a full pool cannot deadlock on them.

use std::sync::Arc;

use super::db::{Conn, Db};
pub use super::generations::{Caches, Group};

/// How often every instance reads the generations.
pub const POLL_MS: u64 = 200;

/// What a loader returns: the value, read on the connection it was given.
pub type Load<'c, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// A value of `group` under `key`: from memory while its generation is the newest known, or
/// loaded by `load` on `conn` (after reading the generation) and kept.
pub async fn cached<T, F>(db: &Db, conn: &mut Conn, group: Group, key: &str, load: F) -> Result<Arc<T>, sqlx::Error>
where
    T: Send + Sync + 'static,
    F: for<'c> FnOnce(&'c mut Conn) -> Load<'c, T>,
{
    if let Some(value) = db.caches().lookup::<T>(group, key) {
        return Ok(value);
    }
    let generation = generation(conn, group).await?;
    let value = Arc::new(load(conn).await?);
    keep(db, group, key, generation, value.clone());
    Ok(value)
}

/// As [`cached`] for a lookup that may find nothing: only what is found is kept (a flood of
/// unknown keys costs queries, never memory).
pub async fn cached_found<T, F>(
    db: &Db,
    conn: &mut Conn,
    group: Group,
    key: &str,
    load: F,
) -> Result<Option<T>, sqlx::Error>
where
    T: Clone + Send + Sync + 'static,
    F: for<'c> FnOnce(&'c mut Conn) -> Load<'c, Option<T>>,
{
    if let Some(value) = peek(db, group, key) {
        return Ok(Some(value));
    }
    let generation = generation(conn, group).await?;
    let Some(value) = load(conn).await? else { return Ok(None) };
    keep(db, group, key, generation, Arc::new(value.clone()));
    Ok(Some(value))
}

/// What [`cached`] or [`cached_found`] would answer from memory, without a connection (`None`:
/// not kept, or kept under an older generation).
pub fn peek<T: Clone + Send + Sync + 'static>(db: &Db, group: Group, key: &str) -> Option<T> {
    db.caches().lookup::<T>(group, key).map(|v| v.as_ref().clone())
}

/// A cache that a capability keeps per instance (one per type `T`), made by `make` on first use:
/// merchants' analytics keep closed days in one, with a staleness rule of their own.
pub fn per_instance<T: Send + Sync + 'static>(db: &Db, make: impl FnOnce() -> T) -> Arc<T> {
    db.caches().instance(make)
}

/// This instance's cache of type `T`, if [`per_instance`] made one.
pub fn peek_instance<T: Send + Sync + 'static>(db: &Db) -> Option<Arc<T>> {
    db.caches().instance_if()
}

/// Keeps a value loaded after reading `generation` (which this instance then knows of too).
fn keep<T: Send + Sync + 'static>(db: &Db, group: Group, key: &str, generation: i64, value: Arc<T>) {
    db.caches().learn(group, generation);
    db.caches().keep(group, key, generation, value);
}

async fn generation(conn: &mut Conn, group: Group) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT generation FROM cache_generations WHERE name = $1")
        .bind(group.as_str())
        .fetch_one(&mut *conn)
        .await
}

/// Reads every group's generation: a writer calls this after its commit, before it answers, and
/// the poller every [`POLL_MS`].
pub async fn refresh(db: &Db) -> Result<(), sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT name, generation FROM cache_generations").fetch_all(db.pool()).await?;
    for row in rows {
        let name: String = row.try_get("name")?;
        if let Some(group) = Group::ALL.into_iter().find(|g| g.as_str() == name) {
            db.caches().learn(group, row.try_get("generation")?);
        }
    }
    Ok(())
}

/// [`refresh`] for a writer that has committed: a failure is logged, and the poller catches up.
pub async fn after_change(db: &Db) {
    if let Err(e) = refresh(db).await {
        tracing::warn!(error = %e, "could not read the cache generations after a change; the poller will");
    }
}

/// Reads the generations every [`POLL_MS`] (a server's background task; aborting it stops it).
pub fn spawn_poller(db: Db) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(POLL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = refresh(&db).await {
                tracing::warn!(error = %e, "could not read the cache generations");
            }
        }
    })
}
