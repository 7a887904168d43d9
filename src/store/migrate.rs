//! Numbered migrations, one folder per backend (`migrations/sqlite`, `migrations/postgres`),
//! numbered alike and compiled into the binary. Applied at start and by `omamori migrate`; each
//! runs in its own transaction, and concurrent starts on PostgreSQL serialise on an advisory lock.

use super::{Backend, Db};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "foundation",
    sqlite: include_str!("../../migrations/sqlite/0001_foundation.sql"),
    postgres: include_str!("../../migrations/postgres/0001_foundation.sql"),
}];

/// An arbitrary constant that names Omamori's migration lock among PostgreSQL advisory locks.
const PG_MIGRATION_LOCK: i64 = 0x006f_6d61_6d6f_7269;

/// Applies every migration not yet applied; returns the versions it applied.
pub async fn run(db: &Db) -> anyhow::Result<Vec<i64>> {
    let mut conn = db.pool().acquire().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let result = apply(db, &mut conn).await;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    result
}

async fn apply(db: &Db, conn: &mut sqlx::AnyConnection) -> anyhow::Result<Vec<i64>> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await?;
    let newest_known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    if let Some(v) = applied.iter().find(|v| **v > newest_known) {
        anyhow::bail!(
            "the database has migration {v}, newer than this binary knows ({newest_known}); upgrade omamori"
        );
    }
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = match db.backend() {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        let begin = match db.backend() {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        sqlx::raw_sql(begin).execute(&mut *conn).await?;
        let step = async {
            sqlx::raw_sql(sql).execute(&mut *conn).await?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(super::clock::to_ms(time::OffsetDateTime::now_utc()))
            .execute(&mut *conn)
            .await?;
            Ok::<_, sqlx::Error>(())
        }
        .await;
        match step {
            Ok(()) => {
                sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
                tracing::info!(version = m.version, name = m.name, "applied migration");
                done.push(m.version);
            }
            Err(e) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                anyhow::bail!("migration {} ({}) failed: {e}", m.version, m.name);
            }
        }
    }
    Ok(done)
}
