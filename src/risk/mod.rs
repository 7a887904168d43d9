//! Risk: the client address and its country, throttles on failed authentication, alerts.

pub mod alerts;
pub mod client;
pub mod geo;
pub mod throttle;
