//! The Prometheus registry the components of one process add their
//! metrics to, served as text at `/metrics` (upstream's names where they
//! exist).

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Metric;

/// A process's metrics, shared by its components.
pub type Registry = Arc<Mutex<prometheus_client::registry::Registry>>;

/// The media type of [`encode`]'s text (OpenMetrics).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Adds a metric under `name` (counters gain `_total` when written).
pub fn register(registry: &Registry, name: &str, help: &str, metric: impl Metric) {
    registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .register(name, help, metric);
}

/// The registry in the text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

/// Upstream's buckets for request and operation latencies, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0,
    8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// A latency histogram with [`LATENCY_BUCKETS`].
pub fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn counters_are_written_with_their_total() {
        let registry = Registry::default();
        let c: Counter = Counter::default();
        register(&registry, "skiff_things", "Things.", c.clone());
        c.inc_by(3);
        let text = encode(&registry);
        assert!(text.contains("# TYPE skiff_things counter"), "{text}");
        assert!(text.contains("skiff_things_total 3"), "{text}");
        let h = latency();
        register(&registry, "skiff_wait_seconds", "Waits.", h.clone());
        h.observe(0.3);
        assert!(encode(&registry).contains("skiff_wait_seconds_bucket{le=\"0.4\"} 1"));
    }
}
