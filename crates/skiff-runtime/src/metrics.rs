//! The work queues' Prometheus metrics, as upstream's workqueue names
//! them: depth, adds, retries, and how long keys wait and are worked on,
//! by queue name (the controller's).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use skiff_core::metrics::{latency, register, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Name {
    name: String,
}

/// Every queue's metrics, one series per queue.
#[derive(Clone)]
pub struct WorkQueueMetrics {
    depth: Family<Name, Gauge>,
    adds: Family<Name, Counter>,
    retries: Family<Name, Counter>,
    queued: Family<Name, Histogram>,
    work: Family<Name, Histogram>,
}

/// One queue's series.
pub struct Instruments {
    pub depth: Gauge,
    pub adds: Counter,
    pub retries: Counter,
    queued: Histogram,
    work: Histogram,
}

impl Instruments {
    pub fn waited(&self, d: Duration) {
        self.queued.observe(d.as_secs_f64());
    }

    pub fn worked(&self, d: Duration) {
        self.work.observe(d.as_secs_f64());
    }
}

impl WorkQueueMetrics {
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            depth: Family::default(),
            adds: Family::default(),
            retries: Family::default(),
            queued: Family::new_with_constructor(latency),
            work: Family::new_with_constructor(latency),
        };
        register(
            registry,
            "workqueue_depth",
            "Current depth of workqueue",
            m.depth.clone(),
        );
        register(
            registry,
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            m.adds.clone(),
        );
        register(
            registry,
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            m.retries.clone(),
        );
        register(
            registry,
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested.",
            m.queued.clone(),
        );
        register(
            registry,
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            m.work.clone(),
        );
        m
    }

    /// The series of the queue called `name`.
    pub fn of(&self, name: &str) -> Instruments {
        let n = Name {
            name: name.to_owned(),
        };
        Instruments {
            depth: self.depth.get_or_create(&n).clone(),
            adds: self.adds.get_or_create(&n).clone(),
            retries: self.retries.get_or_create(&n).clone(),
            queued: self.queued.get_or_create(&n).clone(),
            work: self.work.get_or_create(&n).clone(),
        }
    }
}
