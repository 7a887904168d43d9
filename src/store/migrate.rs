//! Numbered migrations, one folder per backend (`migrations/sqlite`, `migrations/postgres`),
//! numbered alike and compiled into the binary. Applied at start and by `omamori migrate`; each
//! runs in its own transaction, and concurrent starts on PostgreSQL serialise on an advisory lock.

use super::db::{Backend, Db};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sqlite: include_str!("../../migrations/sqlite/0001_foundation.sql"),
        postgres: include_str!("../../migrations/postgres/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "identity",
        sqlite: include_str!("../../migrations/sqlite/0002_identity.sql"),
        postgres: include_str!("../../migrations/postgres/0002_identity.sql"),
    },
    Migration {
        version: 3,
        name: "money",
        sqlite: include_str!("../../migrations/sqlite/0003_money.sql"),
        postgres: include_str!("../../migrations/postgres/0003_money.sql"),
    },
    Migration {
        version: 4,
        name: "operations",
        sqlite: include_str!("../../migrations/sqlite/0004_operations.sql"),
        postgres: include_str!("../../migrations/postgres/0004_operations.sql"),
    },
    Migration {
        version: 5,
        name: "notifications",
        sqlite: include_str!("../../migrations/sqlite/0005_notifications.sql"),
        postgres: include_str!("../../migrations/postgres/0005_notifications.sql"),
    },
    Migration {
        version: 6,
        name: "login_rules",
        sqlite: include_str!("../../migrations/sqlite/0006_login_rules.sql"),
        postgres: include_str!("../../migrations/postgres/0006_login_rules.sql"),
    },
    Migration {
        version: 7,
        name: "passkeys",
        sqlite: include_str!("../../migrations/sqlite/0007_passkeys.sql"),
        postgres: include_str!("../../migrations/postgres/0007_passkeys.sql"),
    },
    Migration {
        version: 8,
        name: "cache_generations",
        sqlite: include_str!("../../migrations/sqlite/0008_cache_generations.sql"),
        postgres: include_str!("../../migrations/postgres/0008_cache_generations.sql"),
    },
    Migration {
        version: 9,
        name: "processor",
        sqlite: include_str!("../../migrations/sqlite/0009_processor.sql"),
        postgres: include_str!("../../migrations/postgres/0009_processor.sql"),
    },
    Migration {
        version: 10,
        name: "payments_by_store",
        sqlite: include_str!("../../migrations/sqlite/0010_payments_by_store.sql"),
        postgres: include_str!("../../migrations/postgres/0010_payments_by_store.sql"),
    },
    Migration {
        version: 11,
        name: "merchant_staff",
        sqlite: include_str!("../../migrations/sqlite/0011_merchant_staff.sql"),
        postgres: include_str!("../../migrations/postgres/0011_merchant_staff.sql"),
    },
    Migration {
        version: 12,
        name: "baskets",
        sqlite: include_str!("../../migrations/sqlite/0012_baskets.sql"),
        postgres: include_str!("../../migrations/postgres/0012_baskets.sql"),
    },
    Migration {
        version: 13,
        name: "settlement",
        sqlite: include_str!("../../migrations/sqlite/0013_settlement.sql"),
        postgres: include_str!("../../migrations/postgres/0013_settlement.sql"),
    },
    Migration {
        version: 14,
        name: "merchant_passkeys",
        sqlite: include_str!("../../migrations/sqlite/0014_merchant_passkeys.sql"),
        postgres: include_str!("../../migrations/postgres/0014_merchant_passkeys.sql"),
    },
    Migration {
        version: 15,
        name: "customer_firsts",
        sqlite: include_str!("../../migrations/sqlite/0015_customer_firsts.sql"),
        postgres: include_str!("../../migrations/postgres/0015_customer_firsts.sql"),
    },
    // 0016 is reserved for a change on another branch.
    Migration {
        version: 17,
        name: "passkey_hardening",
        sqlite: include_str!("../../migrations/sqlite/0017_passkey_hardening.sql"),
        postgres: include_str!("../../migrations/postgres/0017_passkey_hardening.sql"),
    },
    Migration {
        version: 18,
        name: "settlement_reversals",
        sqlite: include_str!("../../migrations/sqlite/0018_settlement_reversals.sql"),
        postgres: include_str!("../../migrations/postgres/0018_settlement_reversals.sql"),
    },
    Migration {
        version: 19,
        name: "analytics_generations",
        sqlite: include_str!("../../migrations/sqlite/0019_analytics_generations.sql"),
        postgres: include_str!("../../migrations/postgres/0019_analytics_generations.sql"),
    },
];

/// An arbitrary constant that names Omamori's migration lock among PostgreSQL advisory locks.
const PG_MIGRATION_LOCK: i64 = 0x006f_6d61_6d6f_7269;

/// Applies every migration not yet applied; returns the versions it applied.
pub async fn run(db: &Db) -> anyhow::Result<Vec<i64>> {
    let mut conn = db.pool().acquire().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)").bind(PG_MIGRATION_LOCK).execute(&mut *conn).await?;
    }
    let result = apply(db, &mut conn).await;
    let unlocked = match db.backend() {
        Backend::Postgres => {
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(PG_MIGRATION_LOCK).execute(&mut *conn).await.is_ok()
        }
        Backend::Sqlite => true,
    };
    if result.is_err() || !unlocked {
        // Never hand back to the pool a connection that may still hold a transaction or the lock.
        conn.close_on_drop();
    }
    result
}

async fn apply(db: &Db, conn: &mut sqlx::AnyConnection) -> anyhow::Result<Vec<i64>> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&mut *conn).await?;
    let newest_known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    if let Some(v) = applied.iter().find(|v| **v > newest_known) {
        anyhow::bail!("the database has migration {v}, newer than this binary knows ({newest_known}); upgrade omamori");
    }
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let (sql, begin) = match db.backend() {
            Backend::Sqlite => (m.sqlite, "BEGIN IMMEDIATE"),
            Backend::Postgres => (m.postgres, "BEGIN"),
        };
        sqlx::raw_sql(begin).execute(&mut *conn).await?;
        let step = async {
            // Looked at again under the lock: another process starting at the same moment (SQLite has
            // no advisory lock) may have applied it since the list above was read.
            let present: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations WHERE version = $1")
                .bind(m.version)
                .fetch_one(&mut *conn)
                .await?;
            if present > 0 {
                sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
                return Ok(false);
            }
            sqlx::raw_sql(sql).execute(&mut *conn).await?;
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(super::clock::to_ms(time::OffsetDateTime::now_utc()))
                .execute(&mut *conn)
                .await?;
            sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
            Ok::<_, sqlx::Error>(true)
        }
        .await;
        match step {
            Ok(true) => {
                tracing::info!(version = m.version, name = m.name, "applied migration");
                done.push(m.version);
            }
            Ok(false) => {}
            Err(e) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                anyhow::bail!("migration {} ({}) failed: {e}", m.version, m.name);
            }
        }
    }
    Ok(done)
}
