//! The scheduler as an API client: watchers keep the node cache and the
//! queue current; one loop takes pods off the queue, places them, and binds
//! them asynchronously (the pod counts on its node as "assumed" meanwhile).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Event, EventSource, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::Client;
use skiff_runtime::events::SeriesSink;
use skiff_runtime::lean::ForScheduler;
use skiff_runtime::watch::{self, Change};
use tokio::sync::Notify;

use crate::framework::{reserve, unreserve, Bind, CycleState, Existing, Profile, Status};
use crate::metrics::{Outcome, SchedulerMetrics};
use crate::node_info::{NodeInfo, PlacedPod};
use crate::plugins::{profile, DefaultBinder, Kept, Volumes};
use crate::queue::{Key, Queue};
use crate::schedule::{preempt, schedule};

pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Scheduler settings.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Score every feasible node instead of an adaptive share.
    pub score_all_nodes: bool,
    /// Lease timings of the leader election.
    pub election: skiff_runtime::leader::Timing,
    /// The process's Prometheus registry, which the scheduler adds to.
    pub metrics: skiff_core::metrics::Registry,
}

/// What the watchers know, shared with the scheduling loop.
#[derive(Default)]
struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Pods counted on a node (bound, or assumed while binding), by key:
    /// their node and what is counted of them (not the whole pod).
    placed: HashMap<Key, (String, Arc<PlacedPod>)>,
    /// How many of `placed` carry required anti-affinity terms: while
    /// none does, no cycle looks for them node by node.
    placed_anti_affinity: usize,
    /// How many nodes list images: while none does, no cycle looks for
    /// them node by node.
    nodes_with_images: usize,
    /// Unbound pods waiting for a node, by key.
    pending: HashMap<Key, Pod>,
    /// The failure message last set on each waiting pod's condition, to
    /// write the condition on a change only.
    reported: HashMap<Key, String>,
    queue: Queue,
    start: usize,
    /// When each pending pod was first queued.
    queued_at: HashMap<Key, std::time::Instant>,
}

fn key(pod: &Pod) -> Key {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a waiting pod changed in a way that could change where it fits,
/// as upstream's `isPodUpdated`: in anything but its status,
/// resourceVersion, generation, managed fields and finalizers (its own
/// `PodScheduled=False` does not send it round again).
fn fit_changed(old: &Pod, new: &Pod) -> bool {
    let meta = |p: &Pod| ObjectMeta {
        resource_version: None,
        generation: None,
        managed_fields: None,
        finalizers: None,
        ..p.metadata.clone()
    };
    old.spec != new.spec || meta(old) != meta(new)
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Cache {
    fn unplace(&mut self, key: &str) {
        if let Some((node, placed)) = self.placed.remove(key) {
            self.placed_anti_affinity -= usize::from(!placed.anti_affinity.is_empty());
            if let Some(&i) = self.index.get(&node) {
                self.nodes[i].forget(&placed.namespace, &placed.name);
            }
        }
    }

    fn place(&mut self, key: Key, node: &str, pod: &Pod) {
        self.unplace(&key);
        let placed = Arc::new(PlacedPod::of(pod));
        if let Some(&i) = self.index.get(node) {
            self.nodes[i].restore(placed.clone());
        }
        self.placed_anti_affinity += usize::from(!placed.anti_affinity.is_empty());
        self.placed.insert(key, (node.to_owned(), placed));
    }

    fn apply_pod(&mut self, pod: Pod) {
        let k = key(&pod);
        let deleting = pod.metadata.deletion_timestamp.is_some();
        match node_of(&pod).map(str::to_owned) {
            Some(node) if !is_terminal(&pod) => {
                self.pending.remove(&k);
                // A pod this scheduler assumed keeps its queueing time
                // for its binder.
                if !self.placed.contains_key(&k) {
                    self.queued_at.remove(&k);
                }
                self.queue.forget(&k);
                self.reported.remove(&k);
                self.place(k, &node, &pod);
            }
            Some(_) => {
                self.unplace(&k);
                self.queue.wake_all();
            }
            None if deleting || is_terminal(&pod) => self.delete_pod(&k),
            None => {
                let ours = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.scheduler_name.as_deref())
                    .unwrap_or(SCHEDULER_NAME)
                    == SCHEDULER_NAME;
                // A gated pod waits, unqueued, until its gates are gone.
                let gated = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.scheduling_gates.as_ref())
                    .is_some_and(|g| !g.is_empty());
                if ours && !gated && !self.placed.contains_key(&k) {
                    let priority = priority(&pod);
                    self.queued_at
                        .entry(k.clone())
                        .or_insert_with(std::time::Instant::now);
                    let moved = self
                        .pending
                        .get(&k)
                        .is_none_or(|old| fit_changed(old, &pod));
                    self.pending.insert(k.clone(), pod);
                    if moved {
                        self.queue.push(k, priority);
                    }
                }
            }
        }
    }

    fn delete_pod(&mut self, key: &str) {
        self.pending.remove(key);
        self.queued_at.remove(key);
        self.reported.remove(key);
        self.queue.forget(key);
        if self.placed.contains_key(key) {
            self.unplace(key);
            self.queue.wake_all();
        }
    }

    fn apply_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.index.get(&name) {
            // As upstream, parked pods get another try only when the node
            // changed in a way that could make one fit, not at each status
            // heartbeat.
            Some(&i) => {
                let had = !self.nodes[i].images.is_empty();
                let changed = self.nodes[i].set_node(node);
                let has = !self.nodes[i].images.is_empty();
                self.nodes_with_images =
                    self.nodes_with_images + usize::from(has) - usize::from(had);
                if !changed {
                    return;
                }
            }
            None => {
                // Pods bound to it may have been seen before it was.
                let mut info = NodeInfo::new(node);
                self.nodes_with_images += usize::from(!info.images.is_empty());
                for (n, placed) in self.placed.values() {
                    if *n == name {
                        info.restore(placed.clone());
                    }
                }
                self.index.insert(name, self.nodes.len());
                self.nodes.push(info);
            }
        }
        self.queue.wake_all();
    }

    /// A relist of the nodes: those it does not show are gone (deleted
    /// while the watch was down).
    fn replace_nodes(&mut self, nodes: Vec<Node>) {
        let seen: std::collections::HashSet<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let gone: Vec<String> = self
            .index
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.delete_node(&name);
        }
        for node in nodes {
            self.apply_node(node);
        }
    }

    /// A relist of the pods: those it does not show are gone.
    fn replace_pods(&mut self, pods: Vec<Pod>) {
        let seen: std::collections::HashSet<Key> = pods.iter().map(key).collect();
        let gone: Vec<Key> = self
            .pending
            .keys()
            .chain(self.placed.keys())
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.delete_pod(&k);
        }
        for pod in pods {
            self.apply_pod(pod);
        }
    }

    fn delete_node(&mut self, name: &str) {
        if let Some(i) = self.index.remove(name) {
            let gone = self.nodes.swap_remove(i);
            self.nodes_with_images -= usize::from(!gone.images.is_empty());
            if let Some(moved) = self.nodes.get(i) {
                self.index.insert(moved.name().to_owned(), i);
            }
        }
    }
}

/// The Lease that decides which scheduler instance schedules.
pub const LEASE: (&str, &str) = ("kube-system", "kube-scheduler");

/// Runs the scheduler until the task is dropped. Only the instance holding
/// the `kube-system/kube-scheduler` Lease schedules; the others keep their
/// caches warm and wait.
pub async fn run(client: Client, config: Config) {
    let cache = Arc::new(Mutex::new(Cache::default()));
    let wake = Arc::new(Notify::new());
    tokio::spawn(watch_nodes(client.clone(), cache.clone(), wake.clone()));
    tokio::spawn(watch_pods(client.clone(), cache.clone(), wake.clone()));
    let volumes = Arc::new(Volumes::default());
    watch_volumes(&client, &volumes, &cache, &wake);
    let identity = skiff_runtime::leader::identity("scheduler");
    let (mut leading, _election) = skiff_runtime::leader::elect(
        client.clone(),
        LEASE.0,
        LEASE.1,
        identity,
        config.election.clone(),
    );
    let profile = Arc::new(profile(volumes, Some(client.clone())));
    let events = SeriesSink::new(client.clone());
    tokio::spawn(events.keep());
    let binder = Binder {
        bind: Arc::new(DefaultBinder {
            client: client.clone(),
        }),
        events,
        slots: Arc::new(tokio::sync::Semaphore::new(BINDS_IN_FLIGHT)),
        metrics: SchedulerMetrics::new(&config.metrics),
    };
    loop {
        if !*leading.borrow() {
            if leading.changed().await.is_err() {
                return;
            }
            continue;
        }
        let next = {
            let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
            let next = c.queue.pop();
            let (active, parked) = c.queue.sizes();
            binder.metrics.queues(active, parked);
            next
        };
        match next {
            // Placing a pod is CPU work: keep it off the async workers.
            Some(key) => tokio::task::block_in_place(|| {
                schedule_one(&client, &binder, &cache, &wake, &profile, &config, key)
            }),
            None => {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = leading.changed() => {}
                }
            }
        }
    }
}

async fn watch_nodes(client: Client, cache: Arc<Mutex<Cache>>, wake: Arc<Notify>) {
    let changes = watch::changes(Api::<Node>::all(client), watcher::Config::default());
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        match change {
            Change::Relisted(nodes) => c.replace_nodes(nodes),
            Change::Applied(node) => c.apply_node(node),
            Change::Deleted(node) => c.delete_node(node.metadata.name.as_deref().unwrap_or("")),
        }
        if !c.queue.is_empty() {
            wake.notify_one();
        }
    }
}

/// Keeps the claims, volumes and classes volume binding reads; any change
/// may let a waiting pod fit.
fn watch_volumes(
    client: &Client,
    volumes: &Arc<Volumes>,
    cache: &Arc<Mutex<Cache>>,
    wake: &Arc<Notify>,
) {
    fn follow<K: Kept>(
        client: &Client,
        volumes: &Arc<Volumes>,
        cache: &Arc<Mutex<Cache>>,
        wake: &Arc<Notify>,
    ) {
        let api = Api::<K>::all(client.clone());
        let (volumes, cache, wake) = (volumes.clone(), cache.clone(), wake.clone());
        tokio::spawn(async move {
            let changes = watch::changes(api, watcher::Config::default());
            let mut changes = std::pin::pin!(changes);
            while let Some(change) = changes.next().await {
                match change {
                    Change::Relisted(objs) => volumes.replace(objs),
                    Change::Applied(obj) => volumes.put(obj),
                    Change::Deleted(obj) => volumes.remove(&obj),
                }
                let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
                c.queue.wake_all();
                if !c.queue.is_empty() {
                    wake.notify_one();
                }
            }
        });
    }
    follow::<PersistentVolumeClaim>(client, volumes, cache, wake);
    follow::<PersistentVolume>(client, volumes, cache, wake);
    follow::<StorageClass>(client, volumes, cache, wake);
    follow::<CSINode>(client, volumes, cache, wake);
}

async fn watch_pods(client: Client, cache: Arc<Mutex<Cache>>, wake: Arc<Notify>) {
    let changes = watch::changes_without::<_, ForScheduler>(
        Api::<Pod>::all(client),
        watcher::Config::default(),
    );
    let mut changes = std::pin::pin!(changes);
    while let Some(change) = changes.next().await {
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        match change {
            Change::Relisted(pods) => c.replace_pods(pods),
            Change::Applied(pod) => c.apply_pod(pod),
            Change::Deleted(pod) => c.delete_pod(&key(&pod)),
        }
        if !c.queue.is_empty() {
            wake.notify_one();
        }
    }
}

/// Tries one pod: on a fit it is assumed on the node and bound in the
/// background; otherwise it is parked and the reasons are reported.
fn schedule_one(
    client: &Client,
    binder: &Binder,
    cache: &Arc<Mutex<Cache>>,
    wake: &Arc<Notify>,
    profile: &Arc<Profile>,
    config: &Config,
    key: Key,
) {
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    // Taken out while it is tried (a placed pod goes to its binder, not
    // cloned), and put back if it stays pending.
    let Some(pod) = c.pending.remove(&key) else {
        return;
    };
    let start = c.start;
    c.start = c.start.wrapping_add(1);
    let existing = Existing {
        anti_affinity: c.placed_anti_affinity > 0,
        images: c.nodes_with_images > 0,
    };
    match schedule(
        profile,
        &pod,
        &c.nodes,
        existing,
        start,
        config.score_all_nodes,
    ) {
        Ok(placement) => {
            let chosen = &c.nodes[placement.node];
            let node = chosen.name().to_owned();
            let reserved = reserve(&profile.reserves, &placement.state, &pod, chosen);
            if !reserved.is_success() {
                c.pending.insert(key.clone(), pod);
                drop(c);
                binder.metrics.attempt(Outcome::Error);
                tracing::info!(pod = %key, %node, status = ?reserved, "reserving failed");
                tokio::spawn(retry_later(cache.clone(), wake.clone(), key));
                return;
            }
            c.place(key.clone(), &node, &pod);
            drop(c);
            tokio::spawn(bind(
                Binding {
                    events: binder.events.clone(),
                    binder: binder.bind.clone(),
                    slots: binder.slots.clone(),
                    metrics: binder.metrics.clone(),
                    profile: profile.clone(),
                    cache: cache.clone(),
                    wake: wake.clone(),
                },
                key,
                pod,
                node,
                placement.state,
            ));
        }
        Err(fit) => {
            // While earlier victims are still leaving, wait for them
            // rather than evicting more.
            let nominated = pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_deref());
            let waiting = nominated.and_then(|n| c.index.get(n)).is_some_and(|&i| {
                c.nodes[i]
                    .pods
                    .iter()
                    .any(|p| p.terminating && p.priority < priority(&pod))
            });
            if !waiting {
                if let Some(n) = preempt(profile, &pod, &c.nodes, existing, &fit) {
                    let node = c.nodes[n.node].name().to_owned();
                    let (client, events) = (client.clone(), binder.events.clone());
                    tokio::spawn(evict(client, events, pod.clone(), node, n.victims));
                }
            }
            let message = fit.message();
            let changed =
                c.reported.insert(key.clone(), message.clone()).as_ref() != Some(&message);
            let report = Unschedulable {
                pod: pod.clone(),
                message,
                changed,
            };
            c.pending.insert(key.clone(), pod);
            c.queue.park(key);
            drop(c);
            binder.metrics.attempt(Outcome::Unschedulable);
            let events = binder.events.clone();
            tokio::spawn(report.write(client.clone(), events));
        }
    }
}

/// What a binding task needs of the scheduler.
struct Binding {
    events: SeriesSink,
    binder: Arc<dyn Bind>,
    /// Shared by every binding task: how many may write at once.
    slots: Arc<tokio::sync::Semaphore>,
    metrics: SchedulerMetrics,
    profile: Arc<Profile>,
    cache: Arc<Mutex<Cache>>,
    wake: Arc<Notify>,
}

/// How many pods are bound (with their pre-bind writes) at once: a burst
/// of placements waits here instead of overrunning the API server's
/// in-flight cap.
const BINDS_IN_FLIGHT: usize = 64;

/// The binder and the slots binding tasks share.
struct Binder {
    bind: Arc<dyn Bind>,
    events: SeriesSink,
    slots: Arc<tokio::sync::Semaphore>,
    metrics: SchedulerMetrics,
}

async fn bind(b: Binding, key: Key, pod: Pod, node: String, state: CycleState) {
    let slot = b.slots.clone().acquire_owned().await;
    let mut readied = Status::Success;
    for p in &b.profile.pre_binds {
        readied = p.pre_bind(&state, &pod, &node).await;
        if !readied.is_success() {
            break;
        }
    }
    let bound = match readied {
        Status::Success => b.binder.bind(&pod, &node).await,
        failed => failed,
    };
    match bound {
        Status::Success => {
            b.metrics.attempt(Outcome::Scheduled);
            let since = b
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .queued_at
                .remove(&key);
            if let Some(since) = since {
                b.metrics.bound(since.elapsed());
            }
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let message = format!("Successfully assigned {ns}/{name} to {node}");
            record(&b.events, &pod, "Normal", "Scheduled", &message).await;
        }
        failed => {
            drop(slot);
            b.metrics.attempt(Outcome::Error);
            tracing::info!(pod = %key, %node, status = ?failed, "binding failed");
            unreserve(&b.profile.reserves, &state, &pod, &node);
            {
                let mut c = b.cache.lock().unwrap_or_else(|e| e.into_inner());
                c.unplace(&key);
                if matches!(failed, Status::UnschedulableAndUnresolvable(_)) {
                    return;
                }
                c.pending.insert(key.clone(), pod);
            }
            retry_later(b.cache, b.wake, key).await;
        }
    }
}

/// Puts a pending pod back in the queue after its back-off.
async fn retry_later(cache: Arc<Mutex<Cache>>, wake: Arc<Notify>, key: Key) {
    let wait = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .queue
        .back_off(&key);
    tokio::time::sleep(wait).await;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = c.pending.get(&key).map(priority) {
        c.queue.push(key, p);
        wake.notify_one();
    }
}

/// Evicts the victims of a preemption and nominates the node for the pod.
async fn evict(
    client: Client,
    events: SeriesSink,
    pod: Pod,
    node: String,
    victims: Vec<Arc<PlacedPod>>,
) {
    let preemptor = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    for v in victims {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &v.namespace);
        match pods.delete(&v.name, &Default::default()).await {
            Ok(either) => {
                if let Some(victim) = either.left() {
                    let message = format!("Preempted by pod {preemptor} on node {node}");
                    record(&events, &victim, "Normal", "Preempted", &message).await;
                }
            }
            Err(e) => tracing::debug!(victim = %v.name, error = %e, "could not preempt"),
        }
    }
    let pods: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let patch = serde_json::json!({"status": {"nominatedNodeName": node}});
    if let Err(e) = pods
        .patch_status(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(pod = %preemptor, error = %e, "could not nominate a node");
    }
}

/// A failed attempt to place a pod, as upstream reports it.
struct Unschedulable {
    pod: Pod,
    message: String,
    /// Whether the message differs from the one on the pod's condition.
    changed: bool,
}

impl Unschedulable {
    /// Records a `FailedScheduling` event (each attempt: repeats count in
    /// its series) and, if the message changed, sets `PodScheduled=False`
    /// with reason `Unschedulable`.
    async fn write(self, client: Client, events: SeriesSink) {
        let Self {
            pod,
            message,
            changed,
        } = self;
        record(&events, &pod, "Warning", "FailedScheduling", &message).await;
        if !changed {
            return;
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null, "lastTransitionTime": Time(now()),
            "observedGeneration": pod.metadata.generation,
        }]}});
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client, ns);
        if let Err(e) = pods
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::debug!(pod = %name, error = %e, "could not set PodScheduled=False");
        }
    }
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// Records an event about a pod, as `default-scheduler`.
async fn record(events: &SeriesSink, pod: &Pod, kind: &str, reason: &str, message: &str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let now = now();
    let event = Event {
        metadata: ObjectMeta {
            // Named by the recorder, as upstream's, so that a series can be
            // written to it before the server has answered.
            name: Some(format!(
                "{}.{:x}",
                pod.metadata.name.as_deref().unwrap_or("pod"),
                now.as_nanosecond()
            )),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(kind.into()),
        // As upstream's scheduler, which records through the events API:
        // only a microsecond `eventTime`, no legacy timestamps or count (so
        // `kubectl describe` lists it before the kubelet's events).
        event_time: Some(MicroTime(now)),
        reporting_component: Some(SCHEDULER_NAME.into()),
        reporting_instance: Some(SCHEDULER_NAME.into()),
        action: Some(if kind == "Normal" {
            "Binding".into()
        } else {
            "Scheduling".into()
        }),
        source: Some(EventSource {
            component: Some(SCHEDULER_NAME.into()),
            host: None,
        }),
        ..Default::default()
    };
    match serde_json::to_value(&event) {
        Ok(event) => events.record(event).await,
        Err(e) => tracing::debug!(error = %e, "could not encode an event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "namespace": "d"},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]}}),
        )
        .unwrap()
    }

    #[test]
    fn a_relist_forgets_nodes_and_pods_deleted_while_the_watch_was_down() {
        let mut c = Cache::default();
        c.apply_node(node("a"));
        c.apply_node(node("b"));
        c.apply_pod(pod("bound", Some("b")));
        c.apply_pod(pod("waiting", None));
        c.apply_pod(pod("gone", None));
        // The watch breaks; b and two pods are deleted meanwhile.
        c.replace_nodes(vec![node("a")]);
        c.replace_pods(vec![pod("waiting", None)]);
        let names: Vec<&str> = c.nodes.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["a"], "no pod can be bound to b any more");
        assert_eq!(c.index.len(), 1);
        assert!(c.placed.is_empty());
        assert_eq!(c.pending.keys().collect::<Vec<_>>(), ["d/waiting"]);
        assert_eq!(c.queue.pop().as_deref(), Some("d/waiting"));
        assert_eq!(c.queue.pop(), None, "the deleted pod left the queue");
    }

    #[test]
    fn a_node_update_keeps_its_pods_and_a_late_node_finds_them() {
        let mut c = Cache::default();
        c.apply_pod(pod("early", Some("late")));
        c.apply_node(node("a"));
        c.apply_pod(pod("p", Some("a")));
        let before = c.nodes[0].generation;
        let mut bigger = node("a");
        let allocatable = bigger
            .status
            .as_mut()
            .unwrap()
            .allocatable
            .as_mut()
            .unwrap();
        allocatable.insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("8".into()),
        );
        c.apply_node(bigger);
        let a = &c.nodes[c.index["a"]];
        assert_eq!((a.pod_count, a.pods.len()), (1, 1));
        assert_eq!(a.allocatable.cpu, 8000);
        assert!(a.node.status.is_none(), "parsed, not kept");
        assert_ne!(a.generation, before, "plugins' memos see the change");
        // The pod and the node's count are one record, not two copies.
        assert!(Arc::ptr_eq(&a.pods[0], &c.placed["d/p"].1));

        c.apply_node(node("late"));
        let late = &c.nodes[c.index["late"]];
        assert_eq!(
            late.pods
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["early"]
        );
    }

    #[test]
    fn parked_pods_wake_on_a_change_that_could_fit_them_not_on_a_heartbeat() {
        let mut c = Cache::default();
        c.apply_node(node("a"));
        c.apply_pod(pod("waiting", None));
        assert_eq!(c.queue.pop().as_deref(), Some("d/waiting"));
        c.queue.park("d/waiting".into());
        let beat = |c: &mut Cache, n: Node| {
            c.apply_node(n);
            c.queue.sizes()
        };
        let mut heartbeat = node("a");
        heartbeat.metadata.resource_version = Some("7".into());
        heartbeat.status.as_mut().unwrap().conditions = Some(vec![serde_json::from_value(
            serde_json::json!({"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-07T10:00:00Z"}),
        )
        .unwrap()]);
        assert_eq!(beat(&mut c, heartbeat.clone()), (0, 1), "still parked");
        let mut labelled = heartbeat.clone();
        labelled.metadata.labels = Some([("disk".to_owned(), "ssd".to_owned())].into());
        assert_eq!(
            beat(&mut c, labelled.clone()),
            (1, 0),
            "a new label wakes it"
        );
        c.queue.pop();
        c.queue.park("d/waiting".into());
        let mut tainted = labelled;
        tainted.spec = Some(
            serde_json::from_value(
                serde_json::json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}),
            )
            .unwrap(),
        );
        assert_eq!(beat(&mut c, tainted.clone()), (1, 0), "so does a taint");
        c.queue.pop();
        c.queue.park("d/waiting".into());
        let mut bigger = tainted;
        bigger
            .status
            .as_mut()
            .unwrap()
            .allocatable
            .as_mut()
            .unwrap()
            .insert(
                "cpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("16".into()),
            );
        assert_eq!(beat(&mut c, bigger), (1, 0), "and more room");
        c.queue.pop();
        c.queue.park("d/waiting".into());
        assert_eq!(beat(&mut c, node("b")), (1, 0), "and a new node");
    }

    #[test]
    fn a_waiting_pod_goes_round_again_on_a_change_of_its_own_not_of_its_status() {
        let mut c = Cache::default();
        c.apply_pod(pod("waiting", None));
        assert_eq!(c.queue.pop().as_deref(), Some("d/waiting"));
        c.queue.park("d/waiting".into());
        let mut reported = pod("waiting", None);
        reported.metadata.resource_version = Some("8".into());
        reported.status = Some(
            serde_json::from_value(serde_json::json!({"conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}))
            .unwrap(),
        );
        c.apply_pod(reported.clone());
        assert_eq!(c.queue.sizes(), (0, 1), "still parked");
        assert!(
            c.pending["d/waiting"].status.is_some(),
            "the newer pod is kept"
        );
        let mut relabelled = reported;
        relabelled.metadata.labels = Some([("tier".to_owned(), "x".to_owned())].into());
        c.apply_pod(relabelled);
        assert_eq!(c.queue.sizes(), (1, 0), "a new label is another try");
    }

    #[test]
    fn nodes_listing_images_are_counted_through_updates_and_deletions() {
        let with_images = |name: &str, images: serde_json::Value| {
            let mut n = node(name);
            n.status = serde_json::from_value(serde_json::json!({"images": images})).unwrap();
            n
        };
        let busybox = serde_json::json!([{"names": ["r/busybox:1"], "sizeBytes": 2_000_000}]);
        let mut c = Cache::default();
        c.apply_node(node("a"));
        assert_eq!(c.nodes_with_images, 0);
        c.apply_node(with_images("b", busybox.clone()));
        c.apply_node(with_images("b", busybox.clone()));
        assert_eq!(c.nodes_with_images, 1, "updated, counted once");
        c.apply_node(with_images("a", busybox));
        assert_eq!(c.nodes_with_images, 2);
        c.apply_node(with_images("a", serde_json::json!([])));
        assert_eq!(c.nodes_with_images, 1, "a lists none any more");
        c.delete_node("b");
        assert_eq!(c.nodes_with_images, 0);
    }

    #[test]
    fn placed_anti_affinity_is_counted_and_still_keeps_newcomers_away() {
        let lonely = |name: &str, node: Option<&str>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "d", "labels": {"app": "x"}},
                "spec": {"nodeName": node, "containers": [{"name": "c"}],
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}]}}},
            }))
            .unwrap()
        };
        let labelled = |name: &str| {
            let mut n = node(name);
            n.metadata.labels =
                Some([("kubernetes.io/hostname".to_owned(), name.to_owned())].into());
            n
        };
        let mut c = Cache::default();
        c.apply_node(labelled("a"));
        c.apply_node(labelled("b"));
        // b is the busier node: only first's terms send a newcomer there.
        for name in ["plain-1", "plain-2", "plain-3"] {
            c.apply_pod(pod(name, Some("b")));
        }
        assert_eq!(c.placed_anti_affinity, 0);
        c.apply_pod(lonely("first", Some("a")));
        c.apply_pod(lonely("first", Some("a")));
        assert_eq!(c.placed_anti_affinity, 1, "placed again, counted once");
        // A newcomer without terms of its own is kept off a by first's.
        let existing = Existing {
            anti_affinity: c.placed_anti_affinity > 0,
            images: c.nodes_with_images > 0,
        };
        let profile = crate::plugins::default_profile();
        let mut newcomer = pod("second", None);
        newcomer.metadata.labels = Some([("app".to_owned(), "x".to_owned())].into());
        for start in 0..2 {
            let chosen = schedule(&profile, &newcomer, &c.nodes, existing, start, false);
            assert_eq!(
                chosen
                    .ok()
                    .map(|p| c.nodes[p.node].name().to_owned())
                    .as_deref(),
                Some("b")
            );
        }
        c.delete_pod("d/first");
        c.apply_pod(lonely("first", None));
        assert_eq!(c.placed_anti_affinity, 0, "no longer placed");
    }
}
