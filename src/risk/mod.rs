//! Risk: the client address and its country, throttles on failed authentication, alerts, kill
//! switches and freezes.

pub mod alerts;
pub mod client;
pub mod routes;
pub mod rules;
pub mod switches;
pub mod throttle;
pub mod travel;
