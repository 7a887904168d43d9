//! Omamori: a stored-value smartphone payment service in yen.
//!
//! The crate is arranged by capability (ARCHITECTURE.md section 3). Each module owns its tables,
//! its service functions and, where it has any, its HTTP routes. `main.rs` only calls [`cli::run`].

pub mod app;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod config;
pub mod http;
pub mod idempotency;
pub mod identity;
pub mod ids;
pub mod ledger;
pub mod merchants;
pub mod money;
pub mod notify;
pub mod payments;
pub mod ports;
pub mod risk;
pub mod sandbox;
pub mod secret;
pub mod state;
pub mod store;
pub mod web;
