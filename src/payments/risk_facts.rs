//! What the owners of the data tell the risk rules (`risk::rules::FactSource`): identity answers for
//! sessions and credentials through its functions, payments for its own top-ups, cards and payments.

use crate::identity;
use crate::ids::UserId;
use crate::ports::BoxFuture;
use crate::risk::rules::{Event, FactSource, Facts, RuleEvent};
use crate::store::Conn;

const HOUR_MS: i64 = 3_600_000;

/// The owners, as one fact source.
pub struct Owners;

impl FactSource for Owners {
    fn facts<'a>(
        &'a self,
        conn: &'a mut Conn,
        e: &'a Event<'a>,
        now: i64,
    ) -> BoxFuture<'a, Result<Facts, sqlx::Error>> {
        Box::pin(async move {
            let first_seen_on_device = identity::session::first_seen_on_device(conn, e.user_id, e.device_id).await?;
            let (credentials_changed_at, created_at) = identity::credential_times(conn, e.user_id).await?;
            let events_last_hour = match e.kind {
                RuleEvent::Login => identity::session::opened_since(conn, e.user_id, now - HOUR_MS).await?,
                kind => made_since(conn, kind, e.user_id, now - HOUR_MS).await?,
            };
            Ok(Facts {
                first_seen_on_device,
                last_topup_at: last_topup_at(conn, e.user_id).await?,
                credentials_changed_at,
                created_at,
                events_last_hour,
                previous_session: identity::session::newest_located(conn, e.user_id).await?,
            })
        })
    }
}

/// When the user's newest successful top-up was settled.
async fn last_topup_at(conn: &mut Conn, user_id: &UserId) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MAX(settled_at) FROM topups WHERE user_id = $1 AND status = 'succeeded'")
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await
}

/// How many cards, top-ups or payments the user made since `since`.
async fn made_since(conn: &mut Conn, kind: RuleEvent, user_id: &UserId, since: i64) -> Result<i64, sqlx::Error> {
    let sql = match kind {
        RuleEvent::CardLink => "SELECT COUNT(*) FROM cards WHERE user_id = $1 AND created_at > $2",
        RuleEvent::Topup => "SELECT COUNT(*) FROM topups WHERE user_id = $1 AND created_at > $2",
        RuleEvent::Payment | RuleEvent::Login => "SELECT COUNT(*) FROM payments WHERE user_id = $1 AND created_at > $2",
    };
    sqlx::query_scalar(sql).bind(user_id).bind(since).fetch_one(&mut *conn).await
}
