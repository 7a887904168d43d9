//! The connection pool for SQLite or PostgreSQL, transactions, locks and retries (the store's
//! plumbing; `store` re-exports all of it).

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions};

/// A read-write transaction on either backend. It derefs to the connection, so service functions
/// take `&mut Conn` and callers pass `&mut tx`. On SQLite it also holds this process's writer
/// turn (see [`Db::begin`]).
pub struct Tx {
    tx: sqlx::Transaction<'static, Any>,
    backend: Backend,
    _writer: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Tx {
    /// Serialises this transaction with every other that takes the same `key`, until commit or
    /// rollback (for check-then-insert work that no row lock covers). On PostgreSQL a
    /// transaction-scoped advisory lock; on SQLite nothing is needed, as a writer holds the
    /// whole database.
    pub async fn serialize_on(&mut self, key: i64) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Serialises this transaction with every other that locks the same named row (a challenge,
    /// a reset, a throttle key): a read-check-write of that row then cannot interleave with another.
    pub async fn lock(&mut self, namespace: &str, id: impl AsRef<str>) -> Result<(), sqlx::Error> {
        lock_conn(&mut self.tx, namespace, id).await
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for Tx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.tx
    }
}
/// A connection on either backend; service functions that work inside the caller's transaction
/// take `&mut Conn` (pass `&mut *tx`).
pub type Conn = sqlx::AnyConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite admits one writer at a time. Writers of this process queue here, first come first
    /// served, instead of polling SQLite's lock (whose busy handler is unfair: under load one
    /// writer could wait seconds while later ones went ahead).
    writer: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// Read-mostly tables in memory (`store::cache`).
    caches: std::sync::Arc<super::generations::Caches>,
}

impl Db {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`). A SQLite file and its folder are
    /// created when missing and put in WAL mode.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL scheme (expected sqlite:// or postgres://)");
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| anyhow::anyhow!("invalid database URL: {}", describe_error(&e)))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let max = match backend {
            // SQLite has one writer at a time; more connections only queue on its lock.
            Backend::Sqlite => max_connections.min(8),
            Backend::Postgres => max_connections,
        };
        let mut pool_options = AnyPoolOptions::new().max_connections(max).acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Postgres {
            pool_options = pool_options.after_connect(|conn, _| {
                Box::pin(async move {
                    // No JIT: the service's statements are short, and on the few long ones (merchants'
                    // analytics over a month) compiling cost more than it saved (300 ms of a 2.3 s
                    // category breakdown over 1,000,000 payments; docs/decisions.md 2026-12-07).
                    sqlx::raw_sql("SET jit = off").execute(&mut *conn).await?;
                    Ok(())
                })
            });
        }
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(|conn, _| {
                Box::pin(async move {
                    // Wait for the writer lock instead of failing at once; WAL lets readers go on.
                    sqlx::raw_sql("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;").execute(&mut *conn).await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect_with(options).await.map_err(|e| {
            anyhow::anyhow!("cannot connect to the {} database: {}", backend.name(), describe_error(&e))
        })?;
        if backend == Backend::Sqlite {
            sqlx::raw_sql("PRAGMA journal_mode = WAL;").execute(&pool).await?;
        }
        let writer = (backend == Backend::Sqlite).then(|| std::sync::Arc::new(tokio::sync::Mutex::new(())));
        Ok(Db { pool, backend, writer, caches: Default::default() })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This instance's cached tables (`store::cache`).
    pub fn caches(&self) -> &super::generations::Caches {
        &self.caches
    }

    /// Begins a read-write transaction. On SQLite it waits for this process's writer turn, then
    /// takes the write lock at once (`BEGIN IMMEDIATE`), so that two transactions that read and
    /// then write never fail trying to upgrade (another process on the same file still waits on
    /// the busy timeout). PostgreSQL runs at READ COMMITTED; money code
    /// relies on conditional updates and row locks, not on snapshot isolation.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let writer = match &self.writer {
            Some(lock) => Some(
                tokio::time::timeout(WRITER_WAIT, lock.clone().lock_owned())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?,
            ),
            None => None,
        };
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx { tx, backend: self.backend, _writer: writer })
    }

    /// Whether the database answers a trivial query (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Adds `mode=rwc` so that the file is created on first start, and creates its folder.
fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    // Each pooled connection would get its own empty in-memory database.
    anyhow::ensure!(
        !path.is_empty() && !path.contains(":memory:") && !query.is_some_and(|q| q.contains("memory")),
        "in-memory SQLite is not supported: give a file path (sqlite://PATH)"
    );
    if let Some(parent) = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create the data directory {}: {e}", parent.display()))?;
    }
    Ok(match query {
        Some(q) if q.contains("mode=") => url.to_string(),
        Some(q) => format!("sqlite://{path}?{q}&mode=rwc"),
        None => format!("sqlite://{path}?mode=rwc"),
    })
}

/// Database errors can carry connection details; keep only the kind of failure.
pub fn describe_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "bad configuration".to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string().split(" for url").next().unwrap_or_default().to_string(),
    }
}

/// [`Tx::lock`] for code that holds only the connection of a transaction: serialises with every
/// other transaction locking the same name (PostgreSQL advisory lock; SQLite's writer lock already
/// serialises writers).
pub async fn lock_conn(conn: &mut Conn, namespace: &str, id: impl AsRef<str>) -> Result<(), sqlx::Error> {
    if conn.backend_name() == "PostgreSQL" {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{namespace}\0{}", id.as_ref()).as_bytes());
        let key = i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"));
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Errors that may succeed when the whole transaction is tried again.
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

impl Retryable for sqlx::Error {
    fn is_retryable(&self) -> bool {
        match self {
            sqlx::Error::Database(db) => {
                if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    // serialization_failure, deadlock_detected
                    matches!(pg.code(), "40001" | "40P01")
                } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // BUSY, LOCKED and their extended codes (the primary code is the low byte).
                    db.code().and_then(|c| c.parse::<i64>().ok()).is_some_and(|c| matches!(c & 0xff, 5 | 6))
                } else {
                    false
                }
            }
            sqlx::Error::PoolTimedOut => false,
            _ => false,
        }
    }
}

/// Runs one write statement in its own short transaction, retried; returns the rows it touched.
/// `statement` builds the query afresh for each try.
pub async fn write_one<'q, F>(db: &Db, statement: F) -> Result<u64, sqlx::Error>
where
    F: Fn() -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
{
    retry(|| async {
        let mut tx = db.begin().await?;
        let n = statement().execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok::<_, sqlx::Error>(n)
    })
    .await
}

/// The longest a SQLite writer waits for its turn before the request is answered `503`.
pub const WRITER_WAIT: Duration = Duration::from_secs(10);

/// How many times a transaction is tried before its error is returned.
pub const MAX_ATTEMPTS: u32 = 8;

/// Runs `attempt` until it succeeds, fails with an error that is not retryable, or has been tried
/// [`MAX_ATTEMPTS`] times; waits a little longer, with jitter, before each new try.
pub async fn retry<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await {
            Err(e) if e.is_retryable() && n < MAX_ATTEMPTS => {
                metrics::counter!("omamori_db_retries_total").increment(1);
                let base = 2u64.pow(n.min(6));
                let jitter = rand::random_range(0..=base);
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
            other => return other,
        }
    }
}
/// Writes a file that only its owner can read.
pub fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    // A leftover temporary file could carry wider permissions than the mode given at creation.
    let _ = std::fs::remove_file(&tmp);
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
