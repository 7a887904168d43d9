//! Payments: cards, top-ups, payment codes, POS charges, refunds, limits, history.

pub mod code;
