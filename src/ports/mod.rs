//! The seams to the world outside that the shared state holds: the card processor port and the
//! country database. Adapters implement them (the sandbox processor lives in `payments`); the
//! decisions taken with them belong to the capabilities.

pub mod geo;
pub mod processor;
