//! What every handler and service can reach: the database, the configuration, the service clock,
//! the metrics handle and the ports to the outside (the card processor, the country database, the
//! password hashing pool). Plumbing only: no capability's types live here, so every layer may
//! depend on it. `app::state` assembles it.

use std::sync::Arc;

use crate::config::Config;
use crate::ports::geo::GeoIp;
use crate::ports::processor::CardProcessor;
use crate::secret::HashPool;
use crate::store::{Clock, Db};

/// Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub clock: Clock,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Where password hashes are computed, off the async runtime.
    pub hasher: HashPool,
    pub geo: Arc<GeoIp>,
    /// The card processor; the sandbox one in sandbox mode, none otherwise until a real one is
    /// configured (card linking and top-ups then answer 503).
    pub processor: Option<Arc<dyn CardProcessor>>,
    /// Set once the server has been told to stop; `/readyz` then answers 503.
    pub draining: Draining,
}

/// Whether the server is draining: told to stop, still serving for `OMAMORI_SHUTDOWN_DRAIN_SECS`
/// so that a load balancer sees `/readyz` fail and sends no new requests, then finishing the
/// requests in flight.
#[derive(Clone, Default)]
pub struct Draining(Arc<std::sync::atomic::AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
