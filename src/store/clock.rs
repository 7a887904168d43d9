//! The service clock: real time plus an offset that sandbox mode can move forward.
//!
//! Every time-based rule (codes, sessions, throttles, cooling-off, limits, alerts) reads this clock.
//! The offset lives in the database so that every instance on one database agrees; each instance
//! caches it and, in sandbox mode, reloads it every 250 ms (the staleness bound). Outside sandbox
//! mode the offset cannot change and is never reloaded.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use super::db::{Db, retry};

#[derive(Clone, Debug)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

/// The furthest the sandbox may move the clock ahead of real time: 100 years.
pub const MAX_OFFSET_MS: i64 = 100 * 366 * 24 * 3600 * 1000;

/// How often a sandbox instance reloads the shared offset.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(250);

impl Clock {
    /// A clock with the offset stored in `db`.
    pub async fn load(db: &Db) -> Result<Clock, sqlx::Error> {
        let offset = read_offset(db).await?;
        Ok(Clock { offset_ms: Arc::new(AtomicI64::new(offset)) })
    }

    /// A clock that is exactly real time (for tools that have no database).
    pub fn real() -> Clock {
        Clock { offset_ms: Arc::new(AtomicI64::new(0)) }
    }

    pub fn now(&self) -> OffsetDateTime {
        let real = OffsetDateTime::now_utc();
        real.checked_add(time::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))).unwrap_or(real)
    }

    /// Milliseconds since the Unix epoch, as stored in the database.
    pub fn now_ms(&self) -> i64 {
        to_ms(self.now())
    }

    /// Moves the shared clock forward by `seconds` and returns the new time, or `None` when that
    /// would put it more than [`MAX_OFFSET_MS`] ahead of real time.
    pub async fn advance(&self, db: &Db, seconds: i64) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        let delta = seconds.clamp(0, MAX_OFFSET_MS / 1000) * 1000;
        let offset: Option<i64> = retry(|| async {
            let mut tx = db.begin().await?;
            let offset: Option<i64> = sqlx::query_scalar(
                "UPDATE service_clock SET offset_ms = offset_ms + $1 WHERE id = 1 AND offset_ms + $1 <= $2 \
                 RETURNING offset_ms",
            )
            .bind(delta)
            .bind(MAX_OFFSET_MS)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(offset)
        })
        .await?;
        Ok(offset.map(|offset| {
            self.offset_ms.fetch_max(offset, Ordering::Relaxed);
            self.now()
        }))
    }

    /// Keeps this instance's copy of the offset within [`REFRESH_INTERVAL`] of the database's.
    pub fn spawn_refresh(&self, db: Db) -> tokio::task::JoinHandle<()> {
        let offset = self.offset_ms.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_INTERVAL);
            loop {
                tick.tick().await;
                match read_offset(&db).await {
                    // The clock only moves forward, so a late read never moves it back.
                    Ok(v) => {
                        offset.fetch_max(v, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot reload the service clock offset"),
                }
            }
        })
    }
}

async fn read_offset(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT offset_ms FROM service_clock WHERE id = 1").fetch_one(db.pool()).await
}

pub fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 UTC, as the API shows times.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339(from_ms(ms))
}

/// The calendar date in Asia/Tokyo (UTC+9 all year: Japan has no daylight saving) of instant
/// `ms`, as `YYYY-MM-DD`.
pub fn tokyo_date(ms: i64) -> String {
    let t = from_ms(ms + 9 * 3600 * 1000);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}
