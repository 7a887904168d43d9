//! What an operator's review decision does to a held card or top-up (the hook risk calls).

use crate::risk::rules::Applied;

/// Applies an operator's review decision to a held card or top-up (see `risk::rules::decide`).
pub struct ReviewHook;

impl crate::risk::rules::ReviewSubjects for ReviewHook {
    fn decided<'a>(
        &'a self,
        conn: &'a mut crate::store::Conn,
        kind: &'a str,
        subject: &'a str,
        approve: bool,
        now: i64,
    ) -> crate::ports::BoxFuture<'a, Result<Applied, sqlx::Error>> {
        Box::pin(async move {
            match kind {
                "card" => super::cards::decide_held(conn, &crate::ids::CardId::from_raw(subject), approve)
                    .await
                    .map(|()| Applied::Done),
                "topup" => {
                    super::topups::decide_held(conn, &crate::ids::TopupId::from_raw(subject), approve, now).await
                }
                _ => Ok(Applied::Done),
            }
        })
    }
}
