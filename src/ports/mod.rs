//! The seams to the world outside that the shared state holds: the card processor port and the
//! country database. Adapters implement them (the sandbox processor lives in `payments`); the
//! decisions taken with them belong to the capabilities.

use std::future::Future;
use std::pin::Pin;

pub mod geo;
pub mod processor;

/// A boxed future, for the async methods of a port (a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
