//! Risk: client address and country, throttles, alerts.

pub mod client;
pub mod geo;
