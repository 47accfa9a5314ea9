//! Pods on a node: one worker per pod, woken by its pod's changes and by
//! its own timers (back-off, probes, a periodic look at the runtime), so
//! that a slow pod never delays another. Each wake-up compares the spec
//! with what the runtime reports ([`plan`]), takes the next steps and
//! reports the status ([`pod_status`]). The runtime's state is the truth,
//! so a restarted agent picks up where it was.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, PodStatus};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, Preconditions};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::json;
use skiff_runtime::lean::ForAdmission;
use skiff_runtime::watch::Change;
use tokio::sync::watch;

use crate::admission::{self, Rejection};
use crate::cri::Error;
use crate::cri_config::{self, ContainerInputs, NAME_LABEL, UID_LABEL};
use crate::events::{container_path, Recorder, Type};
use crate::eviction;
use crate::hosts_file;
use crate::image_volumes::ImageVolumes;
use crate::local_path::LocalPath;
use crate::local_storage;
use crate::plan::{self, running, Init, Observed, SandboxStep};
use crate::pod_inputs;
use crate::pod_status::{self, pod_status, status_patch, Exits, Facts, Waiting};
use crate::probes::Prober;
use crate::pulls::Pulls;
use crate::resize;
use crate::runtime::ContainerRuntime;
use crate::security;
use crate::termination;
use skiff_core::node_fit::pod_requests;
use skiff_core::pod_containers::long_running;

/// How often a pod's worker looks at the runtime when nothing else wakes
/// it: the fallback that notices exits, and the probes' tick.
const RESYNC: Duration = Duration::from_secs(1);
/// The same for a pod without probes while container changes wake its
/// worker (the runtime's events, or one look at every container each
/// [`RESYNC`]): this look only refreshes its ConfigMap and Secret volumes.
const TOLD_RESYNC: Duration = Duration::from_secs(10);
/// The same on a simulated node, whose fake runtime changes only through
/// its worker.
const SIMULATED_RESYNC: Duration = Duration::from_secs(10);
/// How soon a status that could not be written is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How often size-limited emptyDirs are measured, as upstream's eviction
/// manager does.
const USAGE_CHECK: Duration = Duration::from_secs(10);

/// The pod's name for a container the runtime runs for it.
fn name_of(c: &cri::Container) -> Option<&str> {
    c.labels.get(NAME_LABEL).map(String::as_str)
}

pub(crate) fn attempt_of_container(c: &cri::Container) -> u32 {
    c.metadata.as_ref().map_or(0, |m| m.attempt)
}

/// What one pod's worker remembers between wake-ups.
#[derive(Default)]
struct PodState {
    /// The status last written.
    reported: Option<PodStatus>,
    /// Failed pulls by container: when to try again, and how many failed.
    pull_backoff: HashMap<String, (Instant, u32)>,
    /// The directories of the pod's claims once found (a bound claim's
    /// volume, and where it is, never change).
    claimed: pod_inputs::Claimed,
    /// When the usage of the pod's size-limited emptyDirs was last measured.
    usage_checked: Option<Instant>,
    /// When this agent first synced the pod, until it was seen running.
    first_seen: Option<Instant>,
    started: bool,
    /// Why the node refused the pod at admission (it never runs), and
    /// whether its failure is written.
    rejection: Option<(Rejection, bool)>,
    /// Stopped, its end written and its deletion asked for: what is left
    /// is the finalizers of others.
    finished: bool,
    /// What the node allocated to the pod's containers, once synced.
    allocated: Option<resize::ByContainer>,
    /// What each running container was given: its id and resources.
    applied: resize::ByName<(String, resize::Size)>,
    /// Why the latest resize waits, if it does.
    pending: Option<resize::Pending>,
    /// Why applying the allocation to a container failed, if it did.
    resize_error: Option<String>,
}

/// The node's pod workers and what they share.
pub struct Worker {
    pub client: Client,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub node: String,
    pub node_ip: String,
    pub log_dir: std::path::PathBuf,
    /// What pods with `dnsPolicy: ClusterFirst` resolve with.
    dns: Option<crate::agent::Dns>,
    prober: Prober,
    pulls: Pulls,
    /// Service account tokens projected into pods.
    tokens: pod_inputs::Tokens,
    /// What the pods use, sampled at each housekeeping.
    usage: Arc<crate::usage::Usage>,
    /// None on simulated nodes, which record no events.
    events: Option<Recorder>,
    /// Simulated nodes run on the fake runtime: no files, volumes,
    /// environment lookups or probes, and a slower look at the runtime,
    /// which changes only through the worker.
    simulated: bool,
    /// Bounds how many pods sync at once: simulated nodes share one, so
    /// that thousands of pods created together do not all hold their
    /// sync's memory at the same moment.
    syncs: Option<Arc<tokio::sync::Semaphore>>,
    /// Whether the runtime's container events reach the workers now.
    told: std::sync::atomic::AtomicBool,
    /// Where this node keeps local-path volumes (none when simulated).
    local_path: Option<Arc<LocalPath>>,
    /// The agent's Prometheus metrics (none when simulated).
    metrics: Option<crate::metrics::AgentMetrics>,
    /// The node as the API shows it, which admission reads.
    node_object: std::sync::RwLock<Option<Arc<Node>>>,
    /// What each active pod was allocated, by uid: what a resize must
    /// fit beside.
    allocations: std::sync::Mutex<HashMap<String, skiff_core::node_fit::Resources>>,
    /// Why this node cannot enforce AppArmor, if it cannot (a simulated
    /// node can).
    app_armor: Option<String>,
    /// Where the node keeps its own seccomp profiles (`Localhost`), if it
    /// offers any.
    seccomp_root: Option<std::path::PathBuf>,
    /// Told when an allocation shrinks or goes: resizes waiting for room
    /// try again then, as upstream's kubelet retries them.
    freed: tokio::sync::Notify,
    /// The node's pressure, which admission reads (none when simulated).
    pressure: Option<Arc<eviction::Pressure>>,
    /// The eviction manager's asks, taken by [`Worker::run`].
    asks: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<eviction::Ask>>>,
    /// Evictions a pod's worker carries out at its next sync, by uid.
    evictions: std::sync::Mutex<HashMap<String, eviction::Eviction>>,
    /// The pods' image volumes (none: this node mounts no images).
    image_volumes: Option<Arc<ImageVolumes>>,
}

/// One pod's worker, as the dispatcher sees it: the latest pod (`None`
/// once the pod is gone from the API).
type Slot = watch::Sender<Option<Arc<Pod>>>;

impl Worker {
    pub fn new(
        client: Client,
        runtime: Arc<dyn ContainerRuntime>,
        node: String,
        node_ip: String,
        log_dir: std::path::PathBuf,
        dns: Option<crate::agent::Dns>,
        usage: Arc<crate::usage::Usage>,
    ) -> Self {
        let events = Some(Recorder::new(client.clone(), &node));
        Self {
            local_path: None,
            metrics: None,
            usage,
            dns,
            client,
            runtime,
            node,
            node_ip,
            log_dir,
            prober: Prober::default(),
            pulls: Pulls::default(),
            tokens: pod_inputs::Tokens::default(),
            events,
            simulated: false,
            told: Default::default(),
            syncs: None,
            node_object: Default::default(),
            allocations: Default::default(),
            app_armor: crate::app_armor::host_problem(),
            seccomp_root: None,
            freed: Default::default(),
            pressure: None,
            asks: Default::default(),
            evictions: Default::default(),
            image_volumes: None,
        }
    }

    /// Admits pods under the node's `pressure` and evicts as the eviction
    /// manager `asks`.
    pub fn with_eviction(
        mut self,
        pressure: Arc<eviction::Pressure>,
        asks: tokio::sync::mpsc::Receiver<eviction::Ask>,
    ) -> Self {
        self.pressure = Some(pressure);
        self.asks = std::sync::Mutex::new(Some(asks));
        self
    }

    /// Mounts pods' image volumes through `volumes`.
    pub fn with_image_volumes(mut self, volumes: Arc<ImageVolumes>) -> Self {
        self.image_volumes = Some(volumes);
        self
    }

    /// Mounts local-path volumes from `local_path`.
    pub fn with_local_path(mut self, local_path: Arc<LocalPath>) -> Self {
        self.local_path = Some(local_path);
        self
    }

    /// Runs pods with the seccomp profiles in `dir` (`Localhost`).
    pub fn with_seccomp_root(mut self, dir: std::path::PathBuf) -> Self {
        self.seccomp_root = Some(dir);
        self
    }

    /// Reports pod starts and what runs in these metrics.
    pub fn with_metrics(mut self, metrics: crate::metrics::AgentMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The worker of a simulated node, on a fake runtime.
    pub fn simulated(
        client: Client,
        runtime: Arc<dyn ContainerRuntime>,
        node: String,
        node_ip: String,
        syncs: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Self {
            syncs: Some(syncs),
            local_path: None,
            metrics: None,
            usage: Arc::default(),
            dns: None,
            client,
            runtime,
            node,
            node_ip,
            log_dir: std::path::PathBuf::new(),
            prober: Prober::default(),
            pulls: Pulls::default(),
            tokens: pod_inputs::Tokens::default(),
            events: None,
            simulated: true,
            told: Default::default(),
            node_object: Default::default(),
            allocations: Default::default(),
            app_armor: None,
            seccomp_root: None,
            freed: Default::default(),
            pressure: None,
            asks: Default::default(),
            evictions: Default::default(),
            image_volumes: None,
        }
    }

    /// Takes the node as the API shows it now (what admission reads of
    /// it).
    pub fn set_node(&self, node: Node) {
        let kept = admission::what_it_reads(node);
        let mut held = self.node_object.write().unwrap_or_else(|e| e.into_inner());
        *held = Some(Arc::new(kept));
    }

    fn node_object(&self) -> Option<Arc<Node>> {
        let held = self.node_object.read().unwrap_or_else(|e| e.into_inner());
        held.clone()
    }

    /// Keeps the node as the API shows it, for admission.
    async fn follow_node(self: Arc<Self>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.node));
        let changes = skiff_runtime::watch::changes_without::<_, ForAdmission>(api, config);
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            match change {
                Change::Relisted(nodes) => {
                    if let Some(n) = nodes.into_iter().next() {
                        self.set_node(n);
                    }
                }
                Change::Applied(n) => self.set_node(n),
                Change::Deleted(_) => {}
            }
        }
    }

    /// The runtime's container changes: its events, or else (a real
    /// node's runtime without them) a look at every container each
    /// [`RESYNC`].
    async fn changes(&self) -> Option<crate::runtime::Events> {
        match self.runtime.events().await {
            Some(events) => Some(events),
            None if !self.simulated => {
                Some(crate::runtime::relist::relist(self.runtime.clone(), RESYNC))
            }
            None => None,
        }
    }

    /// How long a pod's worker may sleep when nothing is due: a pod with
    /// probes is looked at every second, as is every pod while the
    /// runtime's events do not come.
    fn resync(&self, spec: &PodSpec) -> Duration {
        let probed = long_running(spec).any(|c| {
            c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some()
        });
        if self.simulated {
            SIMULATED_RESYNC
        } else if !probed && self.told.load(std::sync::atomic::Ordering::Relaxed) {
            TOLD_RESYNC
        } else {
            RESYNC
        }
    }

    /// Unmounts what the pod's directory holds (nothing on simulated
    /// nodes, which have none).
    fn release(&self, uid: &str) {
        self.free(uid);
        self.evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
        if !self.simulated {
            let dir = self.log_dir.join(uid);
            if let Some(images) = &self.image_volumes {
                images.release(&dir);
            }
            pod_inputs::release(&dir);
        }
    }

    fn allocations(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, skiff_core::node_fit::Resources>> {
        self.allocations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the pod's allocation off the node's ledger.
    fn free(&self, uid: &str) {
        if self.allocations().remove(uid).is_some() {
            self.freed.notify_waiters();
        }
    }

    /// Allocates what the pod's spec asks for where it changed (a
    /// resize) and fits beside the node's other pods; otherwise says why
    /// the resize waits. Returns whether the allocation changed.
    fn allocate(&self, pod: &Pod, uid: &str, state: &mut PodState) -> bool {
        let allocated = state.allocated.get_or_insert_with(|| resize::initial(pod));
        let mut ledger = self.allocations();
        let asks = resize::asks(spec_of(pod), allocated);
        if !ledger.contains_key(uid) {
            // What the status tells the pod holds, where an agent before
            // this one left a resize under way.
            let held = match asks {
                true => pod_requests(pod),
                false => resize::requests(pod, allocated),
            };
            ledger.insert(uid.to_owned(), held);
        }
        state.pending = None;
        if asks {
            return false;
        }
        let want = pod_requests(pod);
        let mut others = skiff_core::node_fit::Resources::default();
        for (_, held) in ledger.iter().filter(|(other, _)| *other != uid) {
            others.add(held, 1);
        }
        let fits = match self.node_object() {
            Some(node) => resize::fits(&want, &node, &others),
            None => Ok(()),
        };
        match fits {
            Ok(()) => *allocated = resize::desired(spec_of(pod)),
            Err(pending) => state.pending = Some(pending),
        }
        state.pending.is_none()
    }

    /// Counts on the node's ledger what a pod being resized holds: its
    /// allocation, or more where a container still holds more.
    fn count(&self, pod: &Pod, uid: &str, state: &PodState) {
        let Some(allocated) = &state.allocated else {
            return;
        };
        let mut held = resize::requests(pod, allocated);
        held.max(&resize::requests(pod, &resize::sizes(&state.applied)));
        let mut ledger = self.allocations();
        let before = ledger.insert(uid.to_owned(), held.clone());
        if before.is_some_and(|b| b.cpu > held.cpu || b.memory > held.memory) {
            self.freed.notify_waiters();
        }
    }

    /// Gives each running container what it was allocated: in place
    /// through the runtime, or by stopping it where its resize policy
    /// asks for a restart. Returns the containers stopped, which start
    /// again at once at their new size.
    async fn actuate(&self, pod: &Pod, state: &mut PodState, seen: &Observed) -> Vec<String> {
        let mut stopped = Vec::new();
        let Some(allocated) = &state.allocated else {
            return stopped;
        };
        let spec = spec_of(pod);
        let running = cri::ContainerState::ContainerRunning as i32;
        state.resize_error = None;
        for c in long_running(spec) {
            let (Some(want), Some(now)) = (allocated.get(&c.name), seen.latest.get(&c.name)) else {
                continue;
            };
            if now.state != running {
                continue;
            }
            // A container this agent did not start holds what the pod
            // held when the agent first saw it.
            let applied = state
                .applied
                .get_or_insert_with(&c.name, || (now.id.clone(), want.clone()));
            if applied.0 != now.id {
                *applied = (now.id.clone(), want.clone());
            }
            if applied.1 == *want {
                continue;
            }
            if resize::needs_restart(c, &applied.1, want) {
                let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0);
                let deadline = Instant::now() + Duration::from_secs(grace as u64);
                let ip = &seen.pod_ip;
                let stop = self.stop_container(Some(pod), Some(&c.name), &now.id, ip, deadline);
                match stop.await {
                    Ok(()) => stopped.push(c.name.clone()),
                    Err(e) => state.resize_error = Some(e.to_string()),
                }
                continue;
            }
            if let Some(why) = self.below_usage(pod, &c.name, &applied.1, want) {
                state.resize_error = Some(why);
                continue;
            }
            let linux = cri_config::resources(Some(&want.onto(c.resources.as_ref())));
            match self
                .runtime
                .update_container_resources(&now.id, &linux)
                .await
            {
                Ok(()) => applied.1 = want.clone(),
                Err(e) => {
                    let why = format!("error updating container {}: {}", c.name, e.message());
                    state.resize_error = Some(why);
                }
            }
        }
        stopped
    }

    /// Why a memory limit cannot come down to `to` in place: the
    /// container uses that much already (at the latest sample), and the
    /// kernel would kill it, as upstream's kubelet refuses it.
    fn below_usage(
        &self,
        pod: &Pod,
        name: &str,
        from: &resize::Size,
        to: &resize::Size,
    ) -> Option<String> {
        let new = to.memory_limit()?;
        if from.memory_limit().is_some_and(|old| new >= old) {
            return None;
        }
        let usage = self.usage.pod(pod.metadata.uid.as_deref()?)?;
        let used = usage.containers.iter().find(|c| c.name == name)?;
        (i128::from(used.memory_working_set) >= new).then(|| {
            format!(
                "attempting to set container {name:?} memory limit ({new}) below current usage ({})",
                used.memory_working_set
            )
        })
    }

    /// Follows the pods bound here, one worker each, and removes what the
    /// runtime runs for pods that no longer exist.
    pub async fn run(self: Arc<Self>) {
        // Admission reads the node: it is known before the first pod.
        match Api::<Node>::all(self.client.clone()).get(&self.node).await {
            Ok(n) => self.set_node(n),
            Err(e) => tracing::warn!(error = %e, "reading the node for admission"),
        }
        let follow = tokio::spawn(self.clone().follow_node());
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let events = skiff_runtime::watch::changes(api, config);
        let mut events = std::pin::pin!(events);
        let mut pods = Dispatcher::new(self.clone());
        let mut housekeeping = tokio::time::interval(RESYNC * 2);
        // Runtimes that tell container changes wake workers at once; the
        // stream is asked for again if it ends (the runtime restarted).
        let mut changes = self.changes().await;
        let told = changes.is_some();
        self.told.store(told, std::sync::atomic::Ordering::Relaxed);
        let mut asks = self.asks.lock().unwrap_or_else(|e| e.into_inner()).take();
        loop {
            let change = async {
                match changes.as_mut() {
                    Some(c) => c.next().await,
                    None => std::future::pending().await,
                }
            };
            let ask = async {
                match asks.as_mut() {
                    Some(a) => a.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ask = ask => match ask {
                    Some(ask) => pods.evict_one(ask),
                    None => asks = None,
                },
                uid = change => match uid {
                    Some(uid) => pods.wake(&uid),
                    None => {
                        changes = None;
                        self.told.store(false, std::sync::atomic::Ordering::Relaxed);
                    }
                },
                change = events.next() => match change {
                    Some(change) => pods.handle(change),
                    None => break,
                },
                _ = housekeeping.tick() => {
                    if told && changes.is_none() {
                        changes = self.changes().await;
                        self.told
                            .store(changes.is_some(), std::sync::atomic::Ordering::Relaxed);
                    }
                    pods.housekeeping().await;
                }
            }
        }
        follow.abort();
    }

    /// One pod's worker: syncs at each change of the pod and when its
    /// next step is due, until the pod is gone.
    async fn pod_worker(
        self: Arc<Self>,
        uid: String,
        mut pod: watch::Receiver<Option<Arc<Pod>>>,
        rejection: Option<Rejection>,
    ) {
        let mut state = PodState {
            rejection: rejection.map(|r| (r, false)),
            ..Default::default()
        };
        loop {
            let Some(current) = pod.borrow_and_update().clone() else {
                if let Err(e) = Box::pin(self.tear_down(&uid, None, 0, None)).await {
                    tracing::warn!(pod = uid, error = %e, "tearing down a deleted pod");
                }
                self.release(&uid);
                return;
            };
            // Boxed, so that an idle worker holds only its wait, not the
            // largest state a sync passes through.
            let permit = match &self.syncs {
                Some(syncs) => syncs.clone().acquire_owned().await.ok(),
                None => None,
            };
            // Made before the sync, so that room freed meanwhile is seen.
            let freed = self.freed.notified();
            let next = match Box::pin(self.sync(&current, &mut state)).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(pod = ?current.metadata.name, error = %e, "pod sync");
                    RETRY
                }
            };
            drop((current, permit));
            let waits = state.pending.is_some();
            tokio::select! {
                changed = pod.changed() => {
                    // The dispatcher went without a last word: stop.
                    if changed.is_err() && pod.borrow().is_some() {
                        return;
                    }
                }
                _ = tokio::time::sleep(next) => {}
                _ = freed, if waits => {}
            }
        }
    }

    /// Removes what belongs to no pod: sandboxes of pods gone while the
    /// agent was down, probe results and tokens of gone containers.
    async fn housekeeping(&self, known: &[String]) {
        self.tokens.retain(known);
        let containers = self.runtime.containers(None).await.ok();
        if let Some(all) = &containers {
            let ids: Vec<String> = all.iter().map(|c| c.id.clone()).collect();
            self.prober.retain(&ids);
        }
        if !self.simulated {
            match self.runtime.stats().await {
                Ok(stats) => self.usage.sample(&stats),
                Err(e) => tracing::debug!(error = %e, "container statistics"),
            }
        }
        let Ok(sandboxes) = self.runtime.sandboxes(&[]).await else {
            return;
        };
        if let (Some(m), Some(all)) = (&self.metrics, &containers) {
            let count = |s: cri::ContainerState| all.iter().filter(|c| c.state == s as i32).count();
            let ready = cri::PodSandboxState::SandboxReady as i32;
            m.running(
                sandboxes.iter().filter(|s| s.state == ready).count(),
                &[
                    ("running", count(cri::ContainerState::ContainerRunning)),
                    ("exited", count(cri::ContainerState::ContainerExited)),
                    ("created", count(cri::ContainerState::ContainerCreated)),
                    ("unknown", count(cri::ContainerState::ContainerUnknown)),
                ],
            );
        }
        for sb in sandboxes {
            let Some(uid) = sb.labels.get(UID_LABEL) else {
                continue;
            };
            if !known.contains(uid) {
                if let Err(e) = self.tear_down(uid, None, 0, None).await {
                    tracing::debug!(error = %e, "orphan sandbox");
                }
                self.release(uid);
            }
        }
    }

    /// Stops and removes a pod's containers and sandboxes: each running
    /// container gets its preStop hook, then SIGTERM, then SIGKILL once the
    /// grace period is over. With `exits`, how each container's last run
    /// ended is read into it once all are stopped.
    async fn tear_down(
        &self,
        uid: &str,
        pod: Option<&Pod>,
        grace: i64,
        mut exits: Option<&mut Exits>,
    ) -> Result<(), Error> {
        let rt = &self.runtime;
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        for sb in rt.sandboxes(&[(UID_LABEL, uid)]).await? {
            let all = rt.containers(Some(&sb.id)).await?;
            let running: Vec<&cri::Container> = all
                .iter()
                .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
                .collect();
            let pod_ip = match pod {
                Some(_) => rt.sandbox_ip(&sb.id).await.unwrap_or_default(),
                None => String::new(),
            };
            // As upstream: the app's containers stop together, then the
            // sidecars one by one, the last started first.
            let spec = pod.and_then(|p| p.spec.as_ref());
            let sidecars: Vec<&str> = spec
                .into_iter()
                .flat_map(|s| s.init_containers.iter().flatten())
                .filter(|c| plan::is_sidecar(c))
                .map(|c| c.name.as_str())
                .rev()
                .collect();
            let sidecar_at = |c: &cri::Container| {
                let name = name_of(c)?;
                sidecars.iter().position(|s| *s == name)
            };
            let (mut last, first): (Vec<_>, Vec<_>) =
                running.into_iter().partition(|c| sidecar_at(c).is_some());
            last.sort_by_key(|c| sidecar_at(c));
            let stops = first
                .into_iter()
                .map(|c| self.stop_container(pod, name_of(c), &c.id, &pod_ip, deadline));
            for stopped in futures::future::join_all(stops).await {
                stopped?;
            }
            for c in last {
                self.stop_container(pod, name_of(c), &c.id, &pod_ip, deadline)
                    .await?;
            }
            if let Some(exits) = exits.as_deref_mut() {
                for c in &all {
                    let Some(name) = name_of(c) else { continue };
                    let exited = cri::ContainerState::ContainerExited as i32;
                    match rt.container_status(&c.id).await {
                        Ok(status) if status.state == exited => {
                            exits.saw(name, c.created_at, status.exit_code)
                        }
                        _ => {}
                    }
                }
            }
            rt.stop_sandbox(&sb.id).await?;
            rt.remove_sandbox(&sb.id).await?;
        }
        Ok(())
    }

    /// Stops one of a pod's containers after its preStop hook, by the
    /// pod's deadline.
    async fn stop_container(
        &self,
        pod: Option<&Pod>,
        name: Option<&str>,
        id: &str,
        pod_ip: &str,
        deadline: Instant,
    ) -> Result<(), Error> {
        let rt = &self.runtime;
        let spec = pod.and_then(|p| container_named(p.spec.as_ref()?, name?));
        if let (Some(pod), Some(spec)) = (pod, &spec) {
            let message = format!("Stopping container {}", spec.name);
            self.event(pod, &spec.name, Type::Normal, "Killing", &message);
        }
        let pre_stop = spec
            .as_ref()
            .and_then(|s| s.lifecycle.as_ref()?.pre_stop.as_ref());
        if let (Some(spec), Some(hook)) = (&spec, pre_stop) {
            let left = deadline.saturating_duration_since(Instant::now());
            let ran = crate::probes::hook(&**rt, spec, hook, id, pod_ip, left).await;
            if let Err(why) = ran {
                tracing::info!(container = %spec.name, %why, "preStop hook failed");
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        rt.stop_container(id, left.as_secs() as i64).await?;
        Ok(())
    }

    /// An event about `pod`, or about its container `container` when not
    /// empty.
    fn event(&self, pod: &Pod, container: &str, kind: Type, reason: &str, message: &str) {
        let path = if container.is_empty() {
            String::new()
        } else {
            container_path(container)
        };
        if let Some(events) = &self.events {
            events.record(pod, &path, kind, reason, message);
        }
    }

    /// Makes sure the image is present, pulling it as the policy says;
    /// failed pulls back off 10 s doubling to 5 min (`ImagePullBackOff`).
    /// Each step is an event, with upstream's reasons and messages.
    /// Returns who the image runs as, read from the same status.
    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
        state: &mut PodState,
        interim: &Interim<'_>,
    ) -> Result<security::ImageUser, Waiting> {
        let image = c.image.as_deref().unwrap_or_default();
        let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
        let pulled = self
            .ensure_pulled(pod, &c.name, image, policy, state, interim)
            .await?;
        Ok(pulled
            .as_ref()
            .map(security::ImageUser::of)
            .unwrap_or_default())
    }

    /// Pulls `image` as `policy` asks, with the pod's pull secrets, for
    /// the container `who` (`""`: for the pod, an image volume's), which
    /// the events name and whose pulls back off together; the image as
    /// the runtime then holds it.
    async fn ensure_pulled(
        &self,
        pod: &Pod,
        who: &str,
        image: &str,
        policy: &str,
        state: &mut PodState,
        interim: &Interim<'_>,
    ) -> Result<Option<cri::Image>, Waiting> {
        let event = |kind, reason: &str, message: &str| self.event(pod, who, kind, reason, message);
        let status = |e: tonic::Status| Waiting::new("ErrImagePull", e.message());
        let present = self.runtime.image_status(image).await.map_err(status)?;
        if let (Some(_), false) = (&present, policy == "Always") {
            let message = format!("Container image {image:?} already present on machine");
            event(Type::Normal, "Pulled", &message);
            return Ok(present);
        }
        if policy == "Never" {
            let message =
                format!("Container image {image:?} is not present with pull policy of Never");
            event(Type::Warning, "ErrImageNeverPull", &message);
            event(Type::Warning, "Failed", "Error: ErrImageNeverPull");
            return Err(Waiting::new("ErrImageNeverPull", message));
        }
        // Container names are DNS labels: an image's own key cannot be one.
        let backoff = match who {
            "" => format!("image {image}"),
            name => name.to_owned(),
        };
        if let Some((until, _)) = state.pull_backoff.get(&backoff) {
            if Instant::now() < *until {
                let message = format!("Back-off pulling image {image:?}");
                event(Type::Normal, "BackOff", &message);
                event(Type::Warning, "Failed", "Error: ImagePullBackOff");
                return Err(Waiting::new("ImagePullBackOff", message));
            }
        }
        let (secrets, missing) = pod_inputs::pull_secrets(&self.client, pod).await;
        if !missing.is_empty() {
            let message = format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                missing.join(", ")
            );
            self.event(
                pod,
                "",
                Type::Warning,
                "FailedToRetrieveImagePullSecret",
                &message,
            );
        }
        let auths = crate::pull_secrets::credentials(image, &secrets);
        event(Type::Normal, "Pulling", &format!("Pulling image {image:?}"));
        let began = Instant::now();
        let pull = self.pulls.pull(&self.runtime, image, &auths);
        match self.pulled(pod, state, interim, pull).await {
            Ok(()) => {
                state.pull_backoff.remove(&backoff);
                let took = began.elapsed().as_secs_f64();
                let message = format!(
                    "Successfully pulled image {image:?} in {took:.3}s ({took:.3}s including waiting)"
                );
                event(Type::Normal, "Pulled", &message);
                self.runtime.image_status(image).await.map_err(status)
            }
            Err(_) if present.is_some() => Ok(present),
            Err(why) => {
                let failures = state.pull_backoff.get(&backoff).map_or(0, |(_, n)| *n);
                let delay = Duration::from_secs((10u64 << failures.min(5)).min(300));
                let entry = (Instant::now() + delay, failures + 1);
                state.pull_backoff.insert(backoff, entry);
                let message = format!("Failed to pull image {image:?}: {why}");
                event(Type::Warning, "Failed", &message);
                event(Type::Warning, "Failed", "Error: ErrImagePull");
                Err(Waiting::new("ErrImagePull", why))
            }
        }
    }

    /// The pod's image volumes, pulled and mounted read-only, by name.
    async fn image_volumes(
        &self,
        pod: &Pod,
        uid: &str,
        state: &mut PodState,
        interim: &Interim<'_>,
    ) -> Result<BTreeMap<String, pod_inputs::Volume>, Waiting> {
        let mut out = BTreeMap::new();
        let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
        for (v, image) in volumes.filter_map(|v| Some((v, v.image.as_ref()?))) {
            let failed = |why: String| {
                let message = format!("MountVolume.SetUp failed for volume {:?}: {why}", v.name);
                self.event(pod, "", Type::Warning, "FailedMount", &message);
                Waiting::new("CreateContainerConfigError", why)
            };
            let Some(images) = &self.image_volumes else {
                return Err(failed(
                    "image volumes are not supported on this node".into(),
                ));
            };
            let reference = image.reference.as_deref().unwrap_or_default();
            if reference.is_empty() {
                return Err(failed("the image volume names no image".into()));
            }
            // Its name makes a path on this node.
            if !skiff_core::validate::is_dns_label(&v.name) {
                return Err(failed(format!(
                    "volume name {:?} is not a DNS label",
                    v.name
                )));
            }
            let policy = image.pull_policy.as_deref().unwrap_or("IfNotPresent");
            let pulled = self
                .ensure_pulled(pod, "", reference, policy, state, interim)
                .await?
                .ok_or_else(|| failed(format!("image {reference:?} is not on this node")))?;
            let pod_dir = self.log_dir.join(uid);
            let path = images
                .mount(&pulled, &pod_dir, &v.name)
                .await
                .map_err(failed)?;
            let volume = pod_inputs::Volume {
                path,
                read_only: true,
                block: false,
            };
            out.insert(v.name.clone(), volume);
        }
        Ok(out)
    }

    /// One step for one pod, then its status; returns when the next step
    /// is due if nothing wakes the worker before.
    async fn sync(&self, pod: &Pod, state: &mut PodState) -> Result<Duration, Error> {
        state.first_seen.get_or_insert_with(Instant::now);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = spec_of(pod);
        // An eviction asked of a pod already going or over is dropped:
        // the eviction manager, told so, looks again.
        let asked = self
            .evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        if pod.metadata.deletion_timestamp.is_some() {
            if state.finished {
                return Ok(self.resync(spec));
            }
            state.finished = self.finish(pod, &uid).await?;
            state.reported = None;
            return Ok(RETRY);
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            self.free(&uid);
            return Ok(self.resync(spec));
        }
        // A pod the node refused never runs.
        if let Some((rejection, written)) = &mut state.rejection {
            if !*written {
                *written = self.reject(pod, &uid, rejection).await;
            }
            return Ok(if *written { self.resync(spec) } else { RETRY });
        }
        if let Some(e) = asked {
            self.evict(pod, &uid, "Evicted", &e.message, Some(e.grace))
                .await?;
            let _ = e.stopped.send(());
            return Ok(self.resync(spec));
        }
        // Past its `activeDeadlineSeconds` the pod fails, as upstream's;
        // until then it is looked at again by then at the latest.
        let status = state.reported.as_ref().or(pod.status.as_ref());
        let left = deadline_left(spec, status.and_then(|s| s.start_time.as_ref()));
        if left == Some(Duration::ZERO) {
            let why = "Pod was active on the node longer than the specified deadline";
            self.evict(pod, &uid, "DeadlineExceeded", why, None).await?;
            return Ok(self.resync(spec));
        }
        let next = Box::pin(self.sync_running(pod, state, &uid)).await?;
        Ok(left.map_or(next, |left| next.min(left)))
    }

    /// [`Self::sync`] of a pod that is neither being deleted nor over.
    async fn sync_running(
        &self,
        pod: &Pod,
        state: &mut PodState,
        uid: &str,
    ) -> Result<Duration, Error> {
        let uid = uid.to_owned();
        let spec = spec_of(pod);
        let security = match security::sandbox(spec, self.seccomp_root.as_deref()) {
            Ok(s) => s,
            Err(why) => {
                // Nothing runs with less isolation than asked for.
                self.event(pod, "", Type::Warning, "Failed", &format!("Error: {why}"));
                let waiting = spec
                    .containers
                    .iter()
                    .map(|c| {
                        let w = Waiting::new("CreateContainerConfigError", why.clone());
                        (c.name.clone(), w)
                    })
                    .collect();
                let seen = Observed::default();
                self.report(pod, state, &seen, &waiting, &HashMap::new(), Init::Done)
                    .await;
                return Ok(RETRY);
            }
        };
        let Some((sandbox, config, mut seen)) = self.ensure_sandbox(pod, &uid, security).await?
        else {
            // Its sandbox died and the pod never restarts: it is over.
            let seen = self.observe(spec, &uid).await?;
            self.report(
                pod,
                state,
                &seen,
                &HashMap::new(),
                &HashMap::new(),
                Init::Done,
            )
            .await;
            return Ok(self.resync(spec));
        };
        // Volumes are refreshed on every sync, so mounted ConfigMaps and
        // Secrets follow their objects.
        let mut volumes = match self.simulated {
            true => Ok(Default::default()),
            false => {
                let volume_dir = self.log_dir.join(&uid).join("volumes");
                let mounts = pod_inputs::Mounts {
                    tokens: &self.tokens,
                    local_path: self.local_path.as_deref(),
                    claimed: &mut state.claimed,
                };
                pod_inputs::volumes(&self.client, pod, &volume_dir, mounts).await
            }
        };
        if let Ok(v) = &volumes {
            let due = state
                .usage_checked
                .is_none_or(|t| t.elapsed() >= USAGE_CHECK);
            if due {
                state.usage_checked = Some(Instant::now());
                let usage = self.usage.pod(&uid);
                let pod_dir = self.log_dir.join(&uid);
                if let Some(message) = local_storage::over_limit(pod, v, &pod_dir, usage.as_ref()) {
                    self.evict(pod, &uid, "Evicted", &message, None).await?;
                    return Ok(self.resync(spec));
                }
            }
        }
        let reallocated = self.allocate(pod, &uid, state);
        let resized = self.actuate(pod, state, &seen).await;
        let settled = (state.allocated.as_ref()).is_none_or(|a| resize::settled(a, &state.applied));
        if reallocated || !settled {
            self.count(pod, &uid, state);
        }
        if !resized.is_empty() {
            seen = self.observe(spec, &uid).await?;
        }
        let mut plan = plan::plan(spec, &seen, Timestamp::now());
        // A container stopped for a resize starts again at once, whatever
        // its restart policy and back-off, as upstream's.
        for name in resized {
            plan.back_off.retain(|n| *n != name);
            let attempt = seen
                .latest
                .get(&name)
                .map_or(0, |s| plan::attempt_of(s) + 1);
            if !plan.start.iter().any(|(n, _)| *n == name) {
                plan.start.push((name, attempt));
            }
        }
        if !plan.stop.is_empty() {
            self.stop_sidecars(pod, &seen, &plan.stop).await?;
            seen = self.observe(spec, &uid).await?;
        }
        let mut waiting: HashMap<String, Waiting> = HashMap::new();
        for name in &plan.back_off {
            self.back_off(pod, name, &mut waiting);
        }
        let ephemeral = plan::ephemeral_containers(spec);
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .chain(ephemeral.iter().map(|(c, _)| c));
        let by_name: HashMap<&str, &Container> = containers.map(|c| (c.name.as_str(), c)).collect();
        let interim = Interim {
            seen: &seen,
            waiting: waiting.clone(),
            init: plan.init,
            written: AtomicBool::new(false),
        };
        // Image volumes are there before any container starts, as
        // upstream's: what fails to pull keeps them all waiting.
        let has_images =
            !self.simulated && spec.volumes.iter().flatten().any(|v| v.image.is_some());
        let mut start = plan.start.as_slice();
        if let (Ok(mounted), false, true) = (&mut volumes, start.is_empty(), has_images) {
            match self.image_volumes(pod, &uid, state, &interim).await {
                Ok(images) => mounted.extend(images),
                Err(why) => {
                    for (name, _) in start {
                        waiting.insert(name.clone(), why.clone());
                    }
                    start = &[];
                }
            }
        }
        for (name, attempt) in start {
            let Some(c) = by_name.get(name.as_str()) else {
                continue;
            };
            // An ephemeral container aimed at another shares its processes.
            let target = ephemeral
                .iter()
                .find(|(e, _)| e.name == *name)
                .and_then(|(_, target)| target.as_ref())
                .and_then(|t| seen.latest.get(t))
                .map(|s| s.id.as_str());
            let launch = Launch {
                pod,
                sandbox: &sandbox,
                config: &config,
                volumes: &volumes,
                pod_ip: &seen.pod_ip,
                target,
                interim: &interim,
            };
            if let Err(why) = self.launch(&launch, c, *attempt, state).await {
                waiting.insert(name.clone(), why);
            }
        }
        if !plan.start.is_empty() {
            seen = self.observe(spec, &uid).await?;
        }
        let ready = match self.simulated {
            true => HashMap::new(),
            false => self.probe(pod, &seen).await?,
        };
        let written = self
            .report(pod, state, &seen, &waiting, &ready, plan.init)
            .await;
        let until_due = plan
            .due
            .map(|due| due.duration_since(Timestamp::now()))
            .and_then(|d| Duration::try_from(d).ok());
        let resync = if written { self.resync(spec) } else { RETRY };
        Ok(until_due.map_or(resync, |d| d.min(resync)))
    }

    /// Waits for a pull; one that takes longer than [`INTERIM_AFTER`]
    /// first has what the pod looks like meanwhile written (once per sync).
    async fn pulled<T>(
        &self,
        pod: &Pod,
        state: &mut PodState,
        interim: &Interim<'_>,
        pull: impl std::future::Future<Output = T>,
    ) -> T {
        let mut pull = std::pin::pin!(pull);
        if interim.written.load(Ordering::Relaxed) {
            return pull.await;
        }
        tokio::select! {
            done = &mut pull => done,
            () = tokio::time::sleep(INTERIM_AFTER) => {
                interim.written.store(true, Ordering::Relaxed);
                let probed = HashMap::new();
                self.report(pod, state, interim.seen, &interim.waiting, &probed, interim.init)
                    .await;
                pull.await
            }
        }
    }

    /// Evicts the pod as upstream's eviction manager does: stopped within
    /// its grace period (or the one given), then Failed with reason
    /// Evicted; its controller replaces it.
    async fn evict(
        &self,
        pod: &Pod,
        uid: &str,
        reason: &str,
        message: &str,
        grace: Option<i64>,
    ) -> Result<(), Error> {
        self.event(pod, "", Type::Warning, reason, message);
        let own = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        let grace = grace.unwrap_or(own);
        self.tear_down(uid, Some(pod), grace, None).await?;
        // Unwritten, it is measured again at the next check and evicted
        // again.
        self.write_failed(pod, uid, reason, message).await;
        Ok(())
    }

    /// Fails a pod the node refused at admission, as upstream's
    /// `rejectPod`: an event, and the pod Failed with the reason.
    /// Whether the failure was written.
    async fn reject(&self, pod: &Pod, uid: &str, r: &Rejection) -> bool {
        self.event(pod, "", Type::Warning, &r.reason, &r.message);
        let message = format!("Pod was rejected: {}", r.message);
        self.write_failed(pod, uid, &r.reason, &message).await
    }

    /// Writes the pod Failed with this reason and message; whether it was
    /// written.
    async fn write_failed(&self, pod: &Pod, uid: &str, reason: &str, message: &str) -> bool {
        let now = Timestamp::now().to_string();
        // Merged by type: the pod's other conditions stay. An eviction is
        // a disruption; a deadline the pod's own.
        let mut status = json!({"metadata": {"uid": uid},
            "status": {"phase": "Failed", "reason": reason, "message": message}});
        if reason == "Evicted" {
            status["status"]["conditions"] = json!([{"type": "DisruptionTarget", "status": "True",
                "reason": "TerminationByKubelet", "message": message, "lastTransitionTime": now}]);
        }
        // Tried again at the pod's next sync.
        self.patch_status(pod, &status, "could not fail a pod")
            .await
    }

    /// Merges `patch` (a strategic merge patch naming the pod's uid) into
    /// the pod's status; whether it was written, else why not is logged.
    async fn patch_status(&self, pod: &Pod, patch: &serde_json::Value, failed: &str) -> bool {
        let url = Pod::url_path(&(), pod.metadata.namespace.as_deref());
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = Patch::Strategic(patch);
        match skiff_runtime::api::patch_status_unread(&self.client, &url, name, &patch).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "{failed}");
                false
            }
        }
    }

    /// A pod being deleted: stop it within its grace period, write how it
    /// ended, then remove it from the API and its directories from the
    /// node. Whether all of that was done.
    async fn finish(&self, pod: &Pod, uid: &str) -> Result<bool, Error> {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
        let mut exits = Exits::default();
        self.tear_down(uid, Some(pod), grace, Some(&mut exits))
            .await?;
        // As upstream's kubelet, a pod ends in a final phase before it
        // goes, so what counts finished pods (a Job, through its
        // finalizer) sees how it ended.
        if !matches!(
            crate::pod_status::reported_phase(pod),
            "Succeeded" | "Failed"
        ) && !self.write_phase(pod, uid, exits.phase(pod)).await
        {
            return Ok(false);
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let deleted = api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await;
        if !self.simulated {
            // Only the pod's own directories: hostPath volumes live elsewhere.
            self.release(uid);
            let _ = std::fs::remove_dir_all(self.log_dir.join(uid));
            let _ = std::fs::remove_dir_all(cri_config::sandbox_log_dir(&self.log_dir, pod));
        }
        Ok(deleted.is_ok())
    }

    /// Writes the pod's final phase; whether it was written.
    async fn write_phase(&self, pod: &Pod, uid: &str, phase: &str) -> bool {
        let status = json!({"metadata": {"uid": uid}, "status": {"phase": phase}});
        self.patch_status(pod, &status, "could not write a stopped pod's phase")
            .await
    }

    /// The pod's ready sandbox, made if there is none ([`plan::sandbox_step`]).
    /// When one died, what still runs in it is stopped and the next attempt
    /// replaces it; the dead one stays until every app container has run
    /// in the new one, so that their last states carry over. Returns the
    /// sandbox with what the pod looks like ([`Self::observe`]); `None` when
    /// the pod is over.
    async fn ensure_sandbox(
        &self,
        pod: &Pod,
        uid: &str,
        security: cri::LinuxSandboxSecurityContext,
    ) -> Result<Option<(String, cri::PodSandboxConfig, Observed)>, Error> {
        let spec = spec_of(pod);
        let sandboxes = self.sandboxes(uid).await?;
        let newest = sandboxes.last();
        let seen = match newest {
            Some(s) => self.observe_sandbox(&s.id).await?,
            None => Observed::default(),
        };
        let log_dir = cri_config::sandbox_log_dir(&self.log_dir, pod);
        let dns = self.dns.as_ref();
        let next = match (plan::sandbox_step(spec, newest, &seen), newest) {
            (SandboxStep::Keep, Some(s)) => {
                let attempt = s.metadata.as_ref().map_or(0, |m| m.attempt);
                let config = cri_config::sandbox(pod, attempt, security, &log_dir, dns);
                let seen = self.carry_over(spec, &sandboxes, seen).await?;
                return Ok(Some((s.id.clone(), config, self.with_messages(spec, seen))));
            }
            (SandboxStep::Create(next), _) => next,
            _ => {
                self.stop_running(pod, &seen).await?;
                return Ok(None);
            }
        };
        if let Some(dead) = newest {
            let message = "Pod sandbox changed, it will be killed and re-created.";
            self.event(pod, "", Type::Normal, "SandboxChanged", message);
            self.stop_running(pod, &seen).await?;
            // A sandbox half made when the agent stopped may not stop
            // cleanly; the new one is made all the same.
            if let Err(e) = self.runtime.stop_sandbox(&dead.id).await {
                tracing::info!(sandbox = %dead.id, error = %e.message(), "stopping a dead sandbox");
            }
        }
        // Older ones than the dead sandbox hold nothing the pod needs.
        for old in sandboxes.iter().rev().skip(1) {
            if let Err(e) = self.runtime.remove_sandbox(&old.id).await {
                tracing::info!(sandbox = %old.id, error = %e.message(), "removing an old sandbox");
            }
        }
        if !self.simulated {
            let _ = std::fs::create_dir_all(&log_dir);
        }
        let config = cri_config::sandbox(pod, next, security, &log_dir, dns);
        let made = match self.runtime_handler(spec).await {
            Ok(handler) => self.runtime.run_sandbox(&config, &handler).await,
            Err(e) => Err(e),
        };
        match made {
            Ok(id) => Ok(Some((id, config, self.observe(spec, uid).await?))),
            Err(e) => {
                let message = format!("Failed to create pod sandbox: {}", e.message());
                self.event(pod, "", Type::Warning, "FailedCreatePodSandBox", &message);
                Err(e.into())
            }
        }
    }

    /// The runtime handler of the pod's RuntimeClass, read when its
    /// sandbox is made (empty, the runtime's default, when it names none).
    async fn runtime_handler(&self, spec: &PodSpec) -> Result<String, tonic::Status> {
        let Some(name) = spec.runtime_class_name.as_deref() else {
            return Ok(String::new());
        };
        match Api::<RuntimeClass>::all(self.client.clone())
            .get_opt(name)
            .await
        {
            Ok(Some(class)) => Ok(class.handler),
            Ok(None) => Err(tonic::Status::not_found(format!(
                "runtimeclass.node.k8s.io {name:?} not found"
            ))),
            Err(e) => Err(tonic::Status::unavailable(format!(
                "failed to lookup RuntimeClass {name}: {e}"
            ))),
        }
    }

    /// Marks a container that waits to restart (`CrashLoopBackOff`).
    fn back_off(&self, pod: &Pod, name: &str, waiting: &mut HashMap<String, Waiting>) {
        let m = &pod.metadata;
        let part = |v: &Option<String>| v.clone().unwrap_or_default();
        let message = format!(
            "Back-off restarting failed container {name} in pod {}_{}({})",
            part(&m.name),
            part(&m.namespace),
            part(&m.uid)
        );
        self.event(pod, name, Type::Warning, "BackOff", &message);
        let why = format!("back-off restarting failed container {name}");
        waiting.insert(name.to_owned(), Waiting::new("CrashLoopBackOff", why));
    }

    /// Starts one container (image, configuration, mounts); the error says
    /// why it waits.
    async fn launch(
        &self,
        at: &Launch<'_>,
        c: &Container,
        attempt: u32,
        state: &mut PodState,
    ) -> Result<(), Waiting> {
        let failed = |why: &str, reason: &str| {
            let message = format!("Error: {why}");
            self.event(at.pod, &c.name, Type::Warning, "Failed", &message);
            Waiting::new(reason, why)
        };
        let config_error = |why: String| failed(&why, "CreateContainerConfigError");
        // Its name makes paths on this node: checked here again, whatever
        // the API server let through.
        if !skiff_core::validate::is_dns_label(&c.name) {
            return Err(config_error(format!(
                "container name {:?} is not a DNS label",
                c.name
            )));
        }
        let image_user = self.ensure_image(at.pod, c, state, at.interim).await?;
        let volumes = at.volumes.as_ref().map_err(|why| {
            let message = format!("MountVolume.SetUp failed: {why}");
            self.event(at.pod, "", Type::Warning, "FailedMount", &message);
            Waiting::new("CreateContainerConfigError", why.clone())
        })?;
        let env = match self.simulated {
            true => Ok(Vec::new()),
            false => pod_inputs::env(&self.client, at.pod, c, at.pod_ip, volumes).await,
        };
        let seccomp_root = self.seccomp_root.as_deref();
        let mut security = security::container(spec_of(at.pod), c, &image_user, seccomp_root)
            .map_err(config_error)?;
        if let (Some(target), Some(ns)) = (at.target, security.namespace_options.as_mut()) {
            ns.pid = cri::NamespaceMode::Target as i32;
            ns.target_id = target.to_owned();
        }
        let env = env.map_err(config_error)?;
        let recursive = pod_inputs::wants_recursive_read_only(c)
            && self.runtime.recursive_read_only_mounts().await;
        let mut mounts = pod_inputs::mounts(c, volumes, &env, recursive).map_err(config_error)?;
        if !self.simulated {
            mounts.extend(
                self.hosts_file(at.pod, at.pod_ip, c)
                    .map_err(config_error)?,
            );
            let uid = at.pod.metadata.uid.as_deref().unwrap_or_default();
            let run = self.log_dir.join(uid).join("containers").join(&c.name);
            mounts.extend(
                termination::mount(c, &run.join(attempt.to_string())).map_err(config_error)?,
            );
        }
        let devices = pod_inputs::devices(c, volumes).map_err(config_error)?;
        let inputs = ContainerInputs {
            env,
            mounts,
            devices,
            security,
        };
        // A container starts with what it was allocated, which a resize
        // still waiting leaves behind the spec.
        let allocated = state.allocated.as_ref().and_then(|a| a.get(&c.name));
        let mut config = cri_config::container(c, at.pod, attempt, inputs);
        if let (Some(linux), Some(size)) = (config.linux.as_mut(), allocated) {
            let sized = size.onto(c.resources.as_ref());
            linux.resources = Some(cri_config::resources(Some(&sized)));
        }
        let rt = &self.runtime;
        let id = rt
            .create_container(at.sandbox, &config, at.config)
            .await
            .map_err(|e| failed(e.message(), "CreateContainerError"))?;
        let created = format!("Created container: {}", c.name);
        self.event(at.pod, &c.name, Type::Normal, "Created", &created);
        rt.start_container(&id)
            .await
            .map_err(|e| failed(e.message(), "RunContainerError"))?;
        let started = format!("Started container {}", c.name);
        self.event(at.pod, &c.name, Type::Normal, "Started", &started);
        let given = allocated
            .cloned()
            .unwrap_or_else(|| resize::Size::of(c.resources.as_ref()));
        state.applied.insert(&c.name, (id.clone(), given));
        self.post_start(at, c, &id).await
    }

    /// Runs the container's postStart hook, as upstream's kubelet: the
    /// start waits for it, and a failed hook kills the container (which
    /// then restarts as its policy says). A hook gets at most the pod's
    /// grace period, and 30 s at least.
    async fn post_start(&self, at: &Launch<'_>, c: &Container, id: &str) -> Result<(), Waiting> {
        let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return Ok(());
        };
        if self.simulated {
            return Ok(());
        }
        let grace = spec_of(at.pod)
            .termination_grace_period_seconds
            .unwrap_or(30);
        let timeout = Duration::from_secs(grace.max(30) as u64);
        let rt = &*self.runtime;
        let Err(why) = crate::probes::hook(rt, c, hook, id, at.pod_ip, timeout).await else {
            return Ok(());
        };
        let message = format!("PostStartHook failed: {why}");
        self.event(
            at.pod,
            &c.name,
            Type::Warning,
            "FailedPostStartHook",
            &message,
        );
        let killing = format!("FailedPostStartHook: stopping container {}", c.name);
        self.event(at.pod, &c.name, Type::Normal, "Killing", &killing);
        if let Err(e) = rt.stop_container(id, grace).await {
            tracing::info!(container = %c.name, error = %e, "could not stop after a failed postStart hook");
        }
        Err(Waiting::new("PostStartHookError", message))
    }

    /// The pod's `/etc/hosts`, written anew for each container start, and
    /// its mount; none where the container mounts its own.
    fn hosts_file(
        &self,
        pod: &Pod,
        pod_ip: &str,
        c: &Container,
    ) -> Result<Option<cri::Mount>, String> {
        let own = c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == hosts_file::PATH);
        let domain = self
            .dns
            .as_ref()
            .map_or("cluster.local", |d| d.domain.as_str());
        let node_hosts = || std::fs::read_to_string(hosts_file::PATH).unwrap_or_default();
        let Some(content) = hosts_file::content(pod, pod_ip, domain, node_hosts).filter(|_| !own)
        else {
            return Ok(None);
        };
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let dir = self.log_dir.join(uid);
        let path = dir.join("etc-hosts");
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, content))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(cri::Mount {
            container_path: hosts_file::PATH.to_owned(),
            host_path: path.display().to_string(),
            ..Default::default()
        }))
    }

    /// The pod's sandboxes, oldest first.
    async fn sandboxes(&self, uid: &str) -> Result<Vec<cri::PodSandbox>, Error> {
        let mut sandboxes = self.runtime.sandboxes(&[(UID_LABEL, uid)]).await?;
        sandboxes.sort_by_key(|s| (s.metadata.as_ref().map_or(0, |m| m.attempt), s.created_at));
        Ok(sandboxes)
    }

    /// Stops the containers still running in a sandbox, within the pod's
    /// grace period, as upstream kills a pod whose sandbox changed.
    async fn stop_running(&self, pod: &Pod, seen: &Observed) -> Result<(), Error> {
        let grace = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        for (name, status) in &seen.latest {
            if running(status) {
                let message = format!("Stopping container {name}");
                self.event(pod, name, Type::Normal, "Killing", &message);
                self.runtime.stop_container(&status.id, grace).await?;
            }
        }
        Ok(())
    }

    /// Stops the pod's sidecars, one after the other in `order`, once its
    /// app containers are over, as upstream's kubelet does.
    async fn stop_sidecars(
        &self,
        pod: &Pod,
        seen: &Observed,
        order: &[String],
    ) -> Result<(), Error> {
        let grace = spec_of(pod).termination_grace_period_seconds.unwrap_or(30);
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        for name in order {
            if let Some(status) = seen.latest.get(name) {
                let (id, ip) = (&status.id, &seen.pod_ip);
                self.stop_container(Some(pod), Some(name), id, ip, deadline)
                    .await?;
            }
        }
        Ok(())
    }

    /// One look at the pod: its newest sandbox's IP and the latest
    /// container of each name. While an app container has not run in a
    /// sandbox that replaced a dead one, its state in the dead one stands
    /// (for its restart count, back-off and last state); once each has,
    /// the dead sandbox goes.
    async fn observe(&self, spec: &PodSpec, uid: &str) -> Result<Observed, Error> {
        let sandboxes = self.sandboxes(uid).await?;
        let Some(newest) = sandboxes.last() else {
            return Ok(Observed::default());
        };
        let seen = self.observe_sandbox(&newest.id).await?;
        let seen = self.carry_over(spec, &sandboxes, seen).await?;
        Ok(self.with_messages(spec, seen))
    }

    /// `seen` with the termination messages its exited containers left,
    /// and which running containers passed their startup probe.
    fn with_messages(&self, spec: &PodSpec, mut seen: Observed) -> Observed {
        if self.simulated {
            return seen;
        }
        seen.started = seen
            .latest
            .iter()
            .filter(|(_, s)| running(s) && self.prober.started(&s.id))
            .map(|(name, _)| name.clone())
            .collect();
        let statuses = seen.latest.iter_mut().chain(seen.previous.iter_mut());
        for (name, status) in statuses.filter(|(_, s)| plan::exited(s)) {
            let message =
                container_named(spec, name).and_then(|c| termination::message(&c, status));
            if let Some(message) = message {
                status.message = message;
            }
        }
        seen
    }

    /// What [`Self::observe`] adds to the newest sandbox's look (`seen`)
    /// from the dead sandbox before it, if any.
    async fn carry_over(
        &self,
        spec: &PodSpec,
        sandboxes: &[cri::PodSandbox],
        mut seen: Observed,
    ) -> Result<Observed, Error> {
        let Some((_, older)) = sandboxes.split_last() else {
            return Ok(seen);
        };
        let Some(dead) = older.last() else {
            return Ok(seen);
        };
        let before = self.observe_sandbox(&dead.id).await?;
        let mut carried = false;
        for c in &spec.containers {
            if seen.latest.contains_key(&c.name) {
                continue;
            }
            if let Some(status) = before.latest.get(&c.name) {
                seen.latest.insert(c.name.clone(), status.clone());
                carried = true;
            }
        }
        if !carried {
            for old in older {
                self.runtime.remove_sandbox(&old.id).await?;
            }
        }
        Ok(seen)
    }

    /// One look at a sandbox: its IP and the latest container of each name
    /// with its status.
    async fn observe_sandbox(&self, sandbox: &str) -> Result<Observed, Error> {
        let rt = &self.runtime;
        let pod_ip = rt.sandbox_ip(sandbox).await?;
        let mut by_name: HashMap<String, Vec<cri::Container>> = HashMap::new();
        for x in rt.containers(Some(sandbox)).await? {
            if let Some(name) = x.labels.get(NAME_LABEL) {
                by_name.entry(name.clone()).or_default().push(x);
            }
        }
        let mut seen = Observed {
            pod_ip,
            ..Default::default()
        };
        for (name, mut attempts) in by_name {
            attempts.sort_by_key(attempt_of_container);
            // One that never started and was replaced holds nothing to show.
            let latest = attempts.pop();
            let mut replaced = Vec::new();
            attempts.retain(|x| {
                let created = x.state == cri::ContainerState::ContainerCreated as i32
                    || x.state == cri::ContainerState::ContainerUnknown as i32;
                if created {
                    replaced.push(x.id.clone());
                }
                !created
            });
            for id in replaced {
                let _ = rt.remove_container(&id).await;
            }
            attempts.extend(latest);
            // As upstream's container GC: only the last dead container of
            // each name is kept, for `lastState` and `logs --previous`.
            let old = attempts.len().saturating_sub(2);
            for dead in attempts.drain(..old) {
                if dead.state == cri::ContainerState::ContainerExited as i32 {
                    let _ = rt.remove_container(&dead.id).await;
                }
            }
            for (i, x) in attempts.iter().rev().enumerate() {
                let status = rt.container_status(&x.id).await?;
                let into = if i == 0 {
                    &mut seen.latest
                } else {
                    &mut seen.previous
                };
                into.insert(name.clone(), status);
            }
        }
        Ok(seen)
    }

    /// Runs the probes of the pod's running containers, killing those whose
    /// liveness or startup probe failed; returns readiness by container.
    async fn probe(&self, pod: &Pod, seen: &Observed) -> Result<HashMap<String, bool>, Error> {
        let spec = spec_of(pod);
        let mut ready = HashMap::new();
        for c in long_running(spec) {
            let Some(status) = seen.latest.get(&c.name).filter(|s| running(s)) else {
                continue;
            };
            let age =
                chrono::Utc::now() - chrono::DateTime::from_timestamp_nanos(status.started_at);
            let started = Instant::now()
                .checked_sub(age.to_std().unwrap_or_default())
                .unwrap_or_else(Instant::now);
            let outcome = self
                .prober
                .check(&*self.runtime, c, &status.id, started, &seen.pod_ip)
                .await;
            for failure in &outcome.failures {
                self.event(pod, &c.name, Type::Warning, "Unhealthy", failure);
            }
            if let Some(probe) = outcome.kill {
                tracing::info!(pod = ?pod.metadata.name, container = %c.name, probe, "killing the container");
                let message = format!(
                    "Container {} failed {} probe, will be restarted",
                    c.name,
                    probe.to_lowercase()
                );
                self.event(pod, &c.name, Type::Normal, "Killing", &message);
                // The probe's own grace period first, as upstream's.
                let grace = outcome.grace.or(spec.termination_grace_period_seconds);
                let grace = grace.unwrap_or(30);
                self.runtime.stop_container(&status.id, grace).await?;
            }
            ready.insert(c.name.clone(), outcome.ready);
        }
        Ok(ready)
    }

    /// Writes the pod's status when it differs from the one last written;
    /// a failed write is retried at the next sync.
    async fn report(
        &self,
        pod: &Pod,
        state: &mut PodState,
        seen: &Observed,
        waiting: &HashMap<String, Waiting>,
        probed: &HashMap<String, bool>,
        init: Init,
    ) -> bool {
        let spec = spec_of(pod);
        // The status last written, which the pod held may not show yet:
        // its times stay, and the patch is taken against it (a change
        // back to what the pod held shows must still be sent).
        let written = state.reported.as_ref().or(pod.status.as_ref());
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers);
        let recursive_read_only = containers
            .chain(
                crate::plan::ephemeral_containers(spec)
                    .iter()
                    .map(|(c, _)| c),
            )
            .any(pod_inputs::wants_recursive_read_only)
            && self.runtime.recursive_read_only_mounts().await;
        let status = pod_status(&Facts {
            spec,
            seen,
            waiting,
            probed,
            init,
            generation: pod.metadata.generation.filter(|g| *g != 0),
            recursive_read_only,
            node_ip: &self.node_ip,
            previous: written,
            api: pod.status.as_ref(),
            now: Timestamp::now(),
            resize: pod_status::Resizing {
                allocated: state.allocated.as_ref(),
                applied: Some(&state.applied),
                pending: state.pending.as_ref(),
                error: state.resize_error.as_deref(),
            },
        });
        if state.reported.as_ref() == Some(&status) {
            return true;
        }
        let url = Pod::url_path(&(), pod.metadata.namespace.as_deref());
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let patch = Patch::Strategic(status_patch(uid, written, &status));
        match skiff_runtime::api::patch_status_unread(&self.client, &url, name, &patch).await {
            Ok(_) => {
                let running = status.phase.as_deref() == Some("Running");
                if let (Some(m), Some(seen), true, false) =
                    (&self.metrics, state.first_seen, running, state.started)
                {
                    m.pod_started(seen.elapsed());
                    state.started = true;
                }
                state.reported = Some(status);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not report pod status");
                false
            }
        }
    }
}

/// A pod's spec, read where it is (an empty one if it has none): a sync
/// reads it many times and clones it never.
fn spec_of(pod: &Pod) -> &PodSpec {
    static NONE: std::sync::LazyLock<PodSpec> = std::sync::LazyLock::new(PodSpec::default);
    pod.spec.as_ref().unwrap_or(&NONE)
}

/// Hands each pod bound to a node to its own worker, from the events of
/// a watch on those pods.
pub struct Dispatcher {
    worker: Arc<Worker>,
    slots: HashMap<String, Slot>,
    /// Every pod worker still running, those of deleted pods included
    /// until their teardown is over.
    running: HashMap<String, tokio::task::JoinHandle<()>>,
    /// Until the first full list arrives, nothing is cleaned up: an empty
    /// map would make every running pod look orphaned.
    listed: bool,
    /// The pods the node refused at admission.
    rejected: std::collections::HashSet<String>,
}

impl Dispatcher {
    pub fn new(worker: Arc<Worker>) -> Self {
        Self {
            worker,
            slots: HashMap::new(),
            running: HashMap::new(),
            listed: false,
            rejected: Default::default(),
        }
    }

    /// Admission reads `node` as the node's from now on.
    pub fn set_node(&self, node: Node) {
        self.worker.set_node(node);
    }

    pub fn handle(&mut self, change: Change<Pod>) {
        let uid = |pod: &Pod| pod.metadata.uid.clone().unwrap_or_default();
        match change {
            Change::Relisted(mut pods) => {
                let relist: std::collections::HashSet<String> = pods.iter().map(uid).collect();
                let gone = self.slots.extract_if(|uid, _| !relist.contains(uid));
                for (uid, slot) in gone {
                    tracing::debug!(pod = uid, "gone while the watch was down");
                    slot.send_replace(None);
                    self.rejected.remove(&uid);
                }
                // Admitted oldest first, as upstream's kubelet admits.
                pods.sort_by(|a, b| {
                    let created = |p: &Pod| p.metadata.creation_timestamp.clone();
                    created(a).cmp(&created(b))
                });
                for pod in pods {
                    self.deliver(uid(&pod), pod);
                }
                self.listed = true;
            }
            Change::Applied(pod) => self.deliver(uid(&pod), pod),
            Change::Deleted(pod) => {
                if let Some(slot) = self.slots.remove(&uid(&pod)) {
                    slot.send_replace(None);
                }
                self.rejected.remove(&uid(&pod));
            }
        }
    }

    /// Wakes a pod's worker: its containers changed.
    pub fn wake(&self, uid: &str) {
        if let Some(slot) = self.slots.get(uid) {
            slot.send_modify(|_| {});
        }
    }

    /// Hands a pod to its worker, starting one for a new pod. A change
    /// its worker does not act on (its status, mostly the agent's own
    /// report) is handed over without waking the worker, which sees it at
    /// its next sync, as upstream's pod config reconciles such a change
    /// without a sync.
    fn deliver(&mut self, uid: String, pod: Pod) {
        if let Some(slot) = self.slots.get(&uid) {
            slot.send_if_modified(|held| {
                let wake = held
                    .as_ref()
                    .is_none_or(|held| differs_for_sync(held, &pod));
                *held = Some(Arc::new(pod));
                wake
            });
            return;
        }
        let rejection = self.admit(&uid, &pod);
        if let Some(r) = &rejection {
            tracing::info!(pod = ?pod.metadata.name, reason = r.reason, "refused at admission");
            self.rejected.insert(uid.clone());
        }
        let (slot, rx) = watch::channel(Some(Arc::new(pod)));
        self.slots.insert(uid.clone(), slot);
        let worker = self.worker.clone().pod_worker(uid.clone(), rx, rejection);
        self.running.insert(uid, tokio::spawn(worker));
    }

    /// The node's admission of a pod new to this agent, beside the active
    /// pods it admitted; none for a pod that started before (this agent
    /// admitted it before it restarted), is over or is being deleted.
    fn admit(&self, uid: &str, pod: &Pod) -> Option<Rejection> {
        let status = pod.status.as_ref();
        let over = |p: &Pod| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            matches!(phase, Some("Succeeded" | "Failed"))
        };
        if status.is_some_and(|s| s.start_time.is_some())
            || over(pod)
            || pod.metadata.deletion_timestamp.is_some()
        {
            return None;
        }
        let node = self.worker.node_object()?;
        let others: Vec<Arc<Pod>> = self
            .slots
            .iter()
            .filter(|(other, _)| *other != uid && !self.rejected.contains(*other))
            .filter_map(|(_, slot)| slot.borrow().clone())
            .filter(|p| !over(p))
            .collect();
        let pressure = self.worker.pressure.as_ref().map(|p| p.now());
        let pressed = pressure.and_then(|p| eviction::admit(&p, pod).err());
        let app_armor = self.worker.app_armor.as_deref();
        let refused = pressed.or_else(|| crate::app_armor::admit(pod, app_armor).err());
        refused.or_else(|| admission::admit(pod, &node, &others).err())
    }

    /// Hands the first pod in the eviction order of `ask` to its worker to
    /// evict, as upstream's eviction manager evicts one pod per look;
    /// critical pods and pods already being evicted stay.
    pub fn evict_one(&self, ask: eviction::Ask) {
        let active: Vec<Arc<Pod>> = self
            .slots
            .iter()
            .filter(|(uid, _)| !self.rejected.contains(*uid))
            .filter_map(|(_, slot)| slot.borrow().clone())
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
                    && p.metadata.deletion_timestamp.is_none()
            })
            .collect();
        let usage = self.worker.usage.pods();
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        // Logs and local volumes are measured only when they count.
        let disk = ask.reclaim.signal == eviction::Signal::NodeFsAvailable;
        let local_bytes = |p: &Pod| match disk && !self.worker.simulated {
            true => local_storage::local_bytes(p, &self.worker.log_dir.join(uid(p))),
            false => 0,
        };
        let mut ranked: Vec<eviction::Candidate<'_>> = active
            .iter()
            .map(|p| eviction::Candidate {
                pod: p,
                usage: usage.get(&uid(p)),
                local_bytes: local_bytes(p),
                processes: ask.processes.get(&uid(p)).copied().unwrap_or(0),
            })
            .collect();
        eviction::rank(ask.reclaim.signal, &mut ranked);
        let mut evictions = self
            .worker
            .evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let chosen = ranked
            .into_iter()
            .find(|c| !eviction::is_critical(c.pod) && !evictions.contains_key(&uid(c.pod)));
        let Some(eviction::Candidate {
            pod, usage: used, ..
        }) = chosen
        else {
            let _ = ask.evicted.send(None);
            return;
        };
        let (stopped, done) = tokio::sync::oneshot::channel();
        let eviction = eviction::Eviction {
            message: eviction::message(&ask.reclaim, pod, used),
            grace: eviction::grace_period(&ask.reclaim, ask.max_pod_grace, pod),
            stopped,
        };
        tracing::info!(pod = ?pod.metadata.name, "eviction manager: evicting");
        evictions.insert(uid(pod), eviction);
        drop(evictions);
        self.wake(&uid(pod));
        let _ = ask.evicted.send(Some(done));
    }

    /// Removes what belongs to no pod worker, once the pods are known.
    pub async fn housekeeping(&mut self) {
        self.running.retain(|_, worker| !worker.is_finished());
        if self.listed {
            let known: Vec<String> = self.running.keys().cloned().collect();
            self.worker.housekeeping(&known).await;
        }
    }
}

/// Whether a pod changed in what its worker acts on: its spec, labels,
/// annotations or deletion (upstream's `podsDifferSemantically`), or its
/// status when readiness gates read conditions others write there.
fn differs_for_sync(held: &Pod, next: &Pod) -> bool {
    let (a, b) = (&held.metadata, &next.metadata);
    let gated = next
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|gates| !gates.is_empty());
    held.spec != next.spec
        || a.labels != b.labels
        || a.annotations != b.annotations
        || a.deletion_timestamp != b.deletion_timestamp
        || a.deletion_grace_period_seconds != b.deletion_grace_period_seconds
        || (gated && held.status != next.status)
}

/// What starting any container of one pod needs.
struct Launch<'a> {
    pod: &'a Pod,
    sandbox: &'a str,
    config: &'a cri::PodSandboxConfig,
    volumes: &'a Result<std::collections::BTreeMap<String, pod_inputs::Volume>, String>,
    pod_ip: &'a str,
    /// The container whose process namespace an ephemeral container joins.
    target: Option<&'a str>,
    interim: &'a Interim<'a>,
}

/// How long the pod may still run under its `activeDeadlineSeconds`,
/// counted from its `startTime`; none without both.
fn deadline_left(spec: &PodSpec, started: Option<&Time>) -> Option<Duration> {
    let deadline = u64::try_from(spec.active_deadline_seconds?).ok()?;
    let started = started?.0;
    let ran = Timestamp::now().duration_since(started);
    let ran = Duration::try_from(ran).unwrap_or(Duration::ZERO);
    Some(Duration::from_secs(deadline).saturating_sub(ran))
}

/// The container of the pod named `name`: an app, init or ephemeral one.
fn container_named(spec: &PodSpec, name: &str) -> Option<Container> {
    let init = spec.init_containers.iter().flatten();
    let found = spec.containers.iter().chain(init).find(|c| c.name == name);
    found.cloned().or_else(|| {
        let ephemeral = plan::ephemeral_containers(spec).into_iter();
        ephemeral.map(|(c, _)| c).find(|c| c.name == name)
    })
}

/// How long a pull may take before the pod's status is written while it
/// waits (`ContainerCreating`): a quick pull, as on a simulated node or a
/// fast registry, costs no write of its own.
const INTERIM_AFTER: Duration = Duration::from_millis(500);

/// What a sync writes while a pull takes long: the pod as observed before
/// its containers started, once.
struct Interim<'a> {
    seen: &'a Observed,
    waiting: HashMap<String, Waiting>,
    init: Init,
    written: AtomicBool,
}

#[cfg(test)]
mod tests;
