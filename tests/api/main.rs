//! Omamori's black-box tests: one integration-test binary (so that it links once), one module per
//! capability. Each test starts the real server (see `helpers`) and drives it as a client would.

mod helpers;

mod analytics;
mod analytics_cache;
mod architecture;
mod attacks;
mod bad_input;
mod browser;
mod cli;
mod code_shape;
mod console;
mod durability;
mod fuzz;
mod idempotency;
mod identity;
mod ledger;
mod merchant_analytics;
mod merchant_page;
mod merchant_passkeys;
mod merchant_settlements;
mod merchant_staff;
mod money;
mod notifications;
mod openapi;
mod operations;
mod pages;
mod passkey_hardening;
mod passkeys;
mod receivers;
mod sandbox;
mod schema_parity;
mod settlement;
mod stripe;
mod switches;
mod table_owners;
mod till;
