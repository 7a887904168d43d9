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
}
