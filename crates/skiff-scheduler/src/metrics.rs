//! The scheduler's Prometheus metrics, as upstream names them: attempts
//! by result, the time from a pod's first queueing to its binding, and
//! the pods waiting in each queue.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use skiff_core::metrics::{latency, register, Registry};

use crate::run::SCHEDULER_NAME;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Attempt {
    result: &'static str,
    profile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueName {
    queue: &'static str,
}

/// How an attempt to place a pod ended.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Scheduled,
    Unschedulable,
    Error,
}

#[derive(Clone)]
pub struct SchedulerMetrics {
    attempts: Family<Attempt, Counter>,
    duration: Histogram,
    pending: Family<QueueName, Gauge>,
}

impl SchedulerMetrics {
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            attempts: Family::default(),
            duration: latency(),
            pending: Family::default(),
        };
        register(
            registry,
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            m.attempts.clone(),
        );
        register(
            registry,
            "scheduler_pod_scheduling_duration_seconds",
            "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue until it is bound.",
            m.duration.clone(),
        );
        register(
            registry,
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'unschedulable' means number of pods in unschedulablePods.",
            m.pending.clone(),
        );
        m
    }

    pub fn attempt(&self, outcome: Outcome) {
        let result = match outcome {
            Outcome::Scheduled => "scheduled",
            Outcome::Unschedulable => "unschedulable",
            Outcome::Error => "error",
        };
        let attempt = Attempt {
            result,
            profile: SCHEDULER_NAME,
        };
        self.attempts.get_or_create(&attempt).inc();
    }

    /// A pod bound `took` after it was first queued.
    pub fn bound(&self, took: Duration) {
        self.duration.observe(took.as_secs_f64());
    }

    /// The queues' sizes now.
    pub fn queues(&self, active: usize, unschedulable: usize) {
        for (queue, n) in [("active", active), ("unschedulable", unschedulable)] {
            let gauge = self.pending.get_or_create(&QueueName { queue });
            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
