//! The agent's Prometheus metrics, as upstream's kubelet names them: pod
//! start latency, runtime operations' latency and errors, what runs, the
//! images garbage collected and the pods evicted.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use skiff_core::metrics::{latency, register, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Operation {
    operation_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    container_state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Collected {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Evicted {
    eviction_signal: &'static str,
}

#[derive(Clone)]
pub struct AgentMetrics {
    pod_start: Histogram,
    operations: Family<Operation, Histogram>,
    errors: Family<Operation, Counter>,
    running_pods: Gauge,
    containers: Family<State, Gauge>,
    images_collected: Family<Collected, Counter>,
    evictions: Family<Evicted, Counter>,
}

impl AgentMetrics {
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            pod_start: latency(),
            operations: Family::new_with_constructor(latency),
            errors: Family::default(),
            running_pods: Gauge::default(),
            containers: Family::default(),
            images_collected: Family::default(),
            evictions: Family::default(),
        };
        register(
            registry,
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            m.pod_start.clone(),
        );
        register(
            registry,
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations. Broken down by operation type.",
            m.operations.clone(),
        );
        register(
            registry,
            "kubelet_runtime_operations_errors",
            "Cumulative number of runtime operation errors by operation type.",
            m.errors.clone(),
        );
        register(
            registry,
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            m.running_pods.clone(),
        );
        register(
            registry,
            "kubelet_running_containers",
            "Number of containers currently running",
            m.containers.clone(),
        );
        register(
            registry,
            "kubelet_image_garbage_collected",
            "Total number of images garbage collected by the kubelet, whether through disk usage or image age.",
            m.images_collected.clone(),
        );
        register(
            registry,
            "kubelet_evictions",
            "Cumulative number of pod evictions by eviction signal",
            m.evictions.clone(),
        );
        m
    }

    /// A pod was evicted for node pressure on `signal`.
    pub fn evicted(&self, signal: &'static str) {
        self.evictions
            .get_or_create(&Evicted {
                eviction_signal: signal,
            })
            .inc();
    }

    /// An image was garbage collected, for its age or for space.
    pub fn image_collected(&self, reason: &'static str) {
        self.images_collected
            .get_or_create(&Collected { reason })
            .inc();
    }

    /// A pod ran `took` after the agent first saw it.
    pub fn pod_started(&self, took: Duration) {
        self.pod_start.observe(took.as_secs_f64());
    }

    /// A runtime call of `operation` took `took`, and failed or not.
    pub fn operation(&self, operation: &'static str, took: Duration, failed: bool) {
        let op = Operation {
            operation_type: operation,
        };
        self.operations
            .get_or_create(&op)
            .observe(took.as_secs_f64());
        if failed {
            self.errors.get_or_create(&op).inc();
        }
    }

    /// What runs now: ready sandboxes, and containers by state.
    pub fn running(&self, pods: usize, containers: &[(&'static str, usize)]) {
        self.running_pods
            .set(i64::try_from(pods).unwrap_or(i64::MAX));
        for (state, n) in containers {
            let s = State {
                container_state: state,
            };
            self.containers
                .get_or_create(&s)
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }
}
