//! The database: one connection pool for SQLite or PostgreSQL, migrations per backend,
//! transactions, retries, and the service clock.
//!
//! Both backends are driven through sqlx's `Any` driver with plain runtime SQL and `$1`
//! placeholders, which both dialects accept. Where the dialects differ, the two statements stand
//! side by side in the capability's code, chosen by [`Db::backend`]. Timestamps are stored as
//! `BIGINT` milliseconds since the Unix epoch (UTC): the one time representation both backends
//! compare, index and decode the same way through `Any`.

pub mod cache;
pub mod clock;
pub mod csv;
mod db;
mod generations;
pub mod migrate;

pub use clock::Clock;
pub use db::*;
