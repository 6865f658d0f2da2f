//! [`MemoryMetrics`]: sums and counts in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Metrics, Unit};

/// Sum, count and maximum of one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Stat {
    /// Sum of values.
    pub sum: f64,
    /// Number of values.
    pub count: u64,
    /// Largest value.
    pub max: f64,
}

/// Keeps every metric's sum, count and maximum.
#[derive(Debug, Default)]
pub struct MemoryMetrics {
    stats: Mutex<BTreeMap<String, Stat>>,
}

impl MemoryMetrics {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every metric so far.
    pub fn snapshot(&self) -> BTreeMap<String, Stat> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The sum of one metric (0 when never recorded).
    pub fn sum(&self, name: &str) -> f64 {
        self.snapshot().get(name).map_or(0.0, |s| s.sum)
    }
}

impl Metrics for MemoryMetrics {
    fn record(&self, _job: &str, name: &str, value: f64, _unit: Unit) {
        if let Ok(mut s) = self.stats.lock() {
            let e = s.entry(name.to_string()).or_default();
            e.sum += value;
            e.count += 1;
            e.max = if e.count == 1 {
                value
            } else {
                e.max.max(value)
            };
        }
    }
}
