//! The ports a use case runs with, chosen once at start-up.

use std::sync::Arc;

use crate::Result;
use crate::location::Location;
use crate::metrics::{MemoryMetrics, Metrics};
use crate::store::DynStore;

/// Opens the store rooted at a location.
pub type OpenStore = Arc<dyn Fn(&Location) -> Result<DynStore> + Send + Sync>;

/// Ports for planner, worker and reducer.
#[derive(Clone)]
pub struct Env {
    /// Store factory (by URL scheme).
    pub open_store: OpenStore,
    /// Metrics sink.
    pub metrics: Arc<dyn Metrics>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Env {
    /// The embedded default: local directories, in-memory metrics.
    pub fn embedded(metrics: Arc<MemoryMetrics>) -> Env {
        Env {
            open_store: Arc::new(crate::store::open),
            metrics,
        }
    }

    /// Opens a store.
    pub fn store(&self, location: &Location) -> Result<DynStore> {
        (self.open_store)(location)
    }
}
