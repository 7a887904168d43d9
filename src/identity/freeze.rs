//! Freezing a user (ARCHITECTURE section 8): risk's switches for every money action, and the end
//! of every session, in one transaction.

use crate::ids::UserId;
use crate::store::{Conn, Db};

/// Freezes a user: every money action refused, every session revoked. Audited.
pub async fn freeze(db: &Db, user_id: &UserId, reason: &str, by: &str, now: i64) -> Result<(), super::IdentityError> {
    let reason = crate::risk::switches::check_reason(reason)?;
    crate::store::retry(|| async {
        let mut tx = db.begin().await?;
        if super::user_by_id(&mut tx, user_id).await?.is_none() {
            return Err(super::IdentityError::UserNotFound);
        }
        freeze_in(&mut tx, user_id, reason, by, now).await?;
        tx.commit().await?;
        Ok(())
    })
    .await
}

/// The freeze, in the caller's transaction (a chargeback freezes with the money it takes back).
pub async fn freeze_in(conn: &mut Conn, user_id: &UserId, reason: &str, by: &str, now: i64) -> Result<(), sqlx::Error> {
    crate::risk::switches::engage_freeze(conn, user_id, reason, by, now).await?;
    super::session::revoke_all(conn, user_id, None, now).await?;
    crate::audit::append(conn, by, "user.freeze", user_id.as_str(), &serde_json::json!({"reason": reason}), now).await
}
