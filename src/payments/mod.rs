//! Payments: cards and the processor port, top-ups, payment codes, POS charges, refunds,
//! reversals, store-QR payments, limits and history (ARCHITECTURE sections 5 and 6).

pub mod cards;
pub mod chargeback_routes;
pub mod code;
pub mod corrections;
pub mod pos;
pub mod processor;
pub mod routes;
pub mod topups;
pub mod wallet;

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
    ) -> crate::ports::BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            match kind {
                "card" => cards::decide_held(conn, subject, approve).await,
                "topup" => topups::decide_held(conn, subject, approve, now).await,
                _ => Ok(()),
            }
        })
    }
}
