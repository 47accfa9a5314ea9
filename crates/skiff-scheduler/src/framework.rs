//! The plugin framework: one small trait per extension point and an
//! explicit status, as upstream's scheduling framework has.

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::node_info::{pod_requests, HostPort, NodeInfo, PlacedPod, Resources};

/// What the scheduler knows of the placed pods and the nodes, beyond the
/// nodes' own records: what lets a plugin skip looking node by node.
#[derive(Clone, Copy, Debug)]
pub struct Existing {
    /// Whether any placed pod carries required anti-affinity terms.
    pub anti_affinity: bool,
    /// Whether any node lists images in its status.
    pub images: bool,
}

impl Default for Existing {
    /// Nothing known: every node is looked at.
    fn default() -> Self {
        Self {
            anti_affinity: true,
            images: true,
        }
    }
}

/// What one scheduling cycle computed once: the pod's requests, what is
/// known of the placed pods, and each plugin's own pre-filter results by
/// plugin name.
/// A plugin's entry is looked up for every node a pod is tried on, so the
/// few entries sit in a vector searched by name rather than a hash map.
#[derive(Default)]
pub struct CycleState {
    pub requests: Resources,
    /// The node's ports the pod asks for.
    pub host_ports: Vec<HostPort>,
    pub existing: Existing,
    plugins: Vec<(&'static str, Box<dyn Any + Send + Sync>)>,
}

impl CycleState {
    pub fn for_pod(pod: &Pod) -> Self {
        Self {
            requests: pod_requests(pod),
            host_ports: HostPort::of(pod),
            existing: Existing::default(),
            plugins: Vec::new(),
        }
    }

    pub fn put<T: Any + Send + Sync>(&mut self, plugin: &'static str, value: T) {
        self.plugins.retain(|(name, _)| *name != plugin);
        self.plugins.push((plugin, Box::new(value)));
    }

    pub fn get<T: Any>(&self, plugin: &'static str) -> Option<&T> {
        self.plugins
            .iter()
            .find(|(name, _)| *name == plugin)?
            .1
            .downcast_ref()
    }
}

/// Computes, once per pod, what filtering and scoring it on each node needs.
pub trait PreFilter: Send + Sync {
    fn name(&self) -> &'static str;
    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]);
}

/// Why a pod does not fit a node: most reasons are fixed words, given
/// without a copy (a cycle can turn thousands of nodes down).
pub type Reason = Cow<'static, str>;

/// What a plugin decided about a pod on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    /// The pod does not fit now; it might after the cluster changes.
    Unschedulable(Vec<Reason>),
    /// The pod cannot fit this node whatever else changes.
    UnschedulableAndUnresolvable(Vec<Reason>),
    Error(String),
}

impl Status {
    pub fn unschedulable(reason: impl Into<Reason>) -> Self {
        Self::Unschedulable(vec![reason.into()])
    }

    pub fn unresolvable(reason: impl Into<Reason>) -> Self {
        Self::UnschedulableAndUnresolvable(vec![reason.into()])
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success)
    }

    /// The reasons, counted in the "0/N nodes are available" message.
    pub fn reasons(&self) -> &[Reason] {
        match self {
            Self::Unschedulable(r) | Self::UnschedulableAndUnresolvable(r) => r,
            _ => &[],
        }
    }
}

/// Decides whether a pod may run on a node.
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
}

/// The highest score a plugin gives after normalizing.
pub const MAX_SCORE: i64 = 100;

/// Ranks the nodes a pod fits on.
pub trait Score: Send + Sync {
    fn name(&self) -> &'static str;
    /// How much this plugin's normalized score counts.
    fn weight(&self) -> i64;
    fn score(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> i64;
    /// Maps raw scores to 0..=MAX_SCORE; the default keeps them.
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// Scales scores linearly onto 0..=MAX_SCORE, lowest to highest.
pub fn normalize_min_max(scores: &mut [i64]) {
    let (min, max) = (
        scores.iter().copied().min().unwrap_or(0),
        scores.iter().copied().max().unwrap_or(0),
    );
    for s in scores.iter_mut() {
        *s = if max == min {
            MAX_SCORE
        } else {
            (*s - min) * MAX_SCORE / (max - min)
        };
    }
}

/// Scales scores so the highest becomes MAX_SCORE (or the lowest, when
/// `reverse`, for plugins where less is better).
pub fn normalize_to_max(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let scaled = *s * MAX_SCORE / max;
        *s = if reverse { MAX_SCORE - scaled } else { scaled };
    }
}

/// Computes, once per pod and only when there is a choice to make, what
/// scoring needs.
pub trait PreScore: Send + Sync {
    fn name(&self) -> &'static str;
    fn pre_score(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]);
}

/// A node chosen for a pod that fits nowhere, and the pods to evict there
/// so that it fits.
#[derive(Clone, Debug)]
pub struct Nomination {
    pub node: usize,
    pub victims: Vec<Arc<PlacedPod>>,
}

/// Runs when no node fits: may make room (preemption).
pub trait PostFilter: Send + Sync {
    fn name(&self) -> &'static str;
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Pod,
        nodes: &[NodeInfo],
        filters: &[Box<dyn Filter>],
        statuses: &[Status],
    ) -> Option<Nomination>;
}

/// Claims what a pod needs on its chosen node before it is bound, and gives
/// it back (`unreserve`) if a later Reserve plugin or the binding fails.
pub trait Reserve: Send + Sync {
    fn name(&self) -> &'static str;
    fn reserve(&self, state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status;
    fn unreserve(&self, state: &CycleState, pod: &Pod, node: &str);
}

/// Runs every Reserve plugin in order; when one fails, unreserves all of
/// them in reverse order (as upstream does) and returns its status.
pub fn reserve(
    plugins: &[Box<dyn Reserve>],
    state: &CycleState,
    pod: &Pod,
    node: &NodeInfo,
) -> Status {
    for p in plugins {
        let status = p.reserve(state, pod, node);
        if !status.is_success() {
            unreserve(plugins, state, pod, node.name());
            return status;
        }
    }
    Status::Success
}

/// Gives back what the Reserve plugins claimed, in reverse order.
pub fn unreserve(plugins: &[Box<dyn Reserve>], state: &CycleState, pod: &Pod, node: &str) {
    for p in plugins.iter().rev() {
        p.unreserve(state, pod, node);
    }
}

/// Readies what the pod needs on its chosen node just before it is bound
/// (claims told the node their volumes go on).
#[async_trait::async_trait]
pub trait PreBind: Send + Sync {
    fn name(&self) -> &'static str;
    async fn pre_bind(&self, state: &CycleState, pod: &Pod, node: &str) -> Status;
}

/// Binds a pod to its node: the last step of a scheduling cycle.
#[async_trait::async_trait]
pub trait Bind: Send + Sync {
    fn name(&self) -> &'static str;
    async fn bind(&self, pod: &Pod, node: &str) -> Status;
}

/// Whether `pod` passes every filter on `node`.
pub fn fits(filters: &[Box<dyn Filter>], state: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
    for f in filters {
        match f.filter(state, pod, node) {
            Status::Success => {}
            refused => return refused,
        }
    }
    Status::Success
}

/// The plugins one scheduler runs.
pub struct Profile {
    pub pre_filters: Vec<Box<dyn PreFilter>>,
    pub filters: Vec<Box<dyn Filter>>,
    pub post_filters: Vec<Box<dyn PostFilter>>,
    pub pre_scores: Vec<Box<dyn PreScore>>,
    pub scores: Vec<Box<dyn Score>>,
    pub reserves: Vec<Box<dyn Reserve>>,
    pub pre_binds: Vec<Box<dyn PreBind>>,
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::plugins::test_util::{node, pod};
    use serde_json::json;

    /// Records its calls in a shared log; refuses when `refuse` is set.
    struct Recorder {
        name: &'static str,
        refuse: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Reserve for Recorder {
        fn name(&self) -> &'static str {
            self.name
        }

        fn reserve(&self, _: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
            self.log
                .lock()
                .unwrap()
                .push(format!("reserve {} on {}", self.name, node.name()));
            if self.refuse {
                Status::unschedulable("no room")
            } else {
                Status::Success
            }
        }

        fn unreserve(&self, _: &CycleState, _: &Pod, node: &str) {
            self.log
                .lock()
                .unwrap()
                .push(format!("unreserve {} on {node}", self.name));
        }
    }

    #[test]
    fn reserve_runs_in_order_and_unwinds_in_reverse() {
        let p = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
        let n = node("n1", json!({}), json!({}), json!({"cpu": "1"}));
        let state = CycleState::for_pod(&p);
        let cases: [(bool, Vec<&str>, bool); 2] = [
            (false, vec!["reserve a on n1", "reserve b on n1"], true),
            (
                true,
                vec![
                    "reserve a on n1",
                    "reserve b on n1",
                    "unreserve b on n1",
                    "unreserve a on n1",
                ],
                false,
            ),
        ];
        for (b_refuses, want, ok) in cases {
            let log = Arc::new(Mutex::new(Vec::new()));
            let plugins: Vec<Box<dyn Reserve>> = vec![
                Box::new(Recorder {
                    name: "a",
                    refuse: false,
                    log: log.clone(),
                }),
                Box::new(Recorder {
                    name: "b",
                    refuse: b_refuses,
                    log: log.clone(),
                }),
            ];
            assert_eq!(reserve(&plugins, &state, &p, &n).is_success(), ok);
            assert_eq!(*log.lock().unwrap(), want);
            if ok {
                // A failed binding gives everything back.
                unreserve(&plugins, &state, &p, "n1");
                assert_eq!(
                    log.lock().unwrap()[2..],
                    ["unreserve b on n1", "unreserve a on n1"]
                );
            }
        }
    }
}
