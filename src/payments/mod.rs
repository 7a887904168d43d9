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
