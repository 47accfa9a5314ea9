//! Node-pressure eviction as upstream's kubelet's eviction manager: every
//! [`INTERVAL`] the node's memory, disks and process table are measured
//! against the `--eviction-hard` and `--eviction-soft` thresholds. A
//! threshold met sets its condition (MemoryPressure, DiskPressure,
//! PIDPressure), which stays for the transition period after it was last
//! seen; one met past its grace period first reclaims what the node
//! itself holds (unused images, for disk), then evicts one pod at a time,
//! in upstream's order. Under pressure the node refuses new pods as
//! upstream's admission handler does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Taint};
use skiff_core::node_fit::pod_requests;
use skiff_core::placement::tolerated;
use skiff_core::quantity::{format_bytes, parse_units};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::admission::Rejection;
use crate::cri_config::UID_LABEL;
use crate::events::{Recorder, Type};
use crate::runtime::ContainerRuntime;
use crate::usage::PodUsage;

/// How often the eviction manager looks (upstream's monitoring interval).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The default hard thresholds: upstream's, but for the disks' 5 % as
/// k3s sets them (upstream's 10 % and 15 % put a machine whose one disk is
/// 85 % full under pressure, and a small cluster shares its disk with
/// everything else on the machine).
pub const DEFAULT_HARD: &str = "memory.available<100Mi,nodefs.available<5%,nodefs.inodesFree<5%,imagefs.available<5%,imagefs.inodesFree<5%";

/// The priority from which a pod is critical: never evicted, always
/// admitted (`system-cluster-critical` and above).
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// What the eviction manager measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

impl Signal {
    const ALL: [Signal; 6] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| format!("unsupported eviction signal {name}"))
    }

    /// The node condition a met threshold on this signal sets.
    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            Signal::PidAvailable => Condition::PidPressure,
            _ => Condition::DiskPressure,
        }
    }

    /// The resource it starves, as upstream names it to users.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }
}

/// A node condition the eviction manager owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    MemoryPressure,
    DiskPressure,
    PidPressure,
}

impl Condition {
    pub const ALL: [Condition; 3] = [
        Condition::MemoryPressure,
        Condition::DiskPressure,
        Condition::PidPressure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
            Condition::PidPressure => "PIDPressure",
        }
    }

    /// The condition's reason and message, under pressure or not, in
    /// upstream's words.
    pub fn said(self, pressure: bool) -> (&'static str, &'static str) {
        match (self, pressure) {
            (Condition::MemoryPressure, false) => (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (Condition::MemoryPressure, true) => (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (Condition::DiskPressure, false) => {
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            }
            (Condition::DiskPressure, true) => {
                ("KubeletHasDiskPressure", "kubelet has disk pressure")
            }
            (Condition::PidPressure, false) => (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            (Condition::PidPressure, true) => (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
        }
    }
}

/// A threshold's value: a quantity, or a share of the capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    Quantity(i128),
    /// Between 0 and 1.
    Share(f64),
}

impl Amount {
    fn parse(signal: Signal, text: &str) -> Result<Self, String> {
        if let Some(number) = text.strip_suffix('%') {
            let percent: f64 = number
                .parse()
                .map_err(|_| format!("invalid eviction percentage {text}"))?;
            if !(0.0..=100.0).contains(&percent) {
                return Err(format!(
                    "eviction percentage threshold {} must be between 0% and 100%: {text}",
                    signal.name()
                ));
            }
            return Ok(Amount::Share(percent / 100.0));
        }
        match parse_units(text) {
            Some(q) if q > 0 => Ok(Amount::Quantity(q)),
            Some(_) => Err(format!(
                "eviction threshold {} must be positive: {text}",
                signal.name()
            )),
            None => Err(format!("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text}")),
        }
    }

    /// The amount for a resource of this capacity.
    pub fn of(self, capacity: i128) -> i128 {
        match self {
            Amount::Quantity(q) => q,
            Amount::Share(share) => (capacity as f64 * share) as i128,
        }
    }
}

/// One threshold: met when what is available of `signal` falls below
/// `amount`, acted on once it stays met for `grace` (none: a hard one).
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub amount: Amount,
    pub grace: Option<Duration>,
    /// What must be available beyond the threshold before a met threshold
    /// counts as resolved.
    pub min_reclaim: Option<Amount>,
}

impl Threshold {
    /// Whether `seen` meets it, counting its minimum reclaim if asked.
    fn met(&self, seen: &Observation, with_reclaim: bool) -> bool {
        let mut quantity = self.amount.of(seen.capacity);
        if with_reclaim {
            quantity += self.min_reclaim.map_or(0, |m| m.of(seen.capacity));
        }
        quantity > seen.available
    }
}

/// The eviction manager's settings (upstream's flags of the same names).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub thresholds: Vec<Threshold>,
    /// How long a condition stays after its threshold was last met.
    pub transition: Duration,
    /// The grace period of pods evicted for a soft threshold; negative:
    /// the pod's own.
    pub max_pod_grace: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self::parse(DEFAULT_HARD, "", "", "", Duration::from_secs(300), 0)
            .expect("the defaults parse")
    }
}

impl Config {
    /// Reads upstream's flags: `--eviction-hard` and `--eviction-soft`
    /// (`signal<value,…`), `--eviction-soft-grace-period`
    /// (`signal=duration,…`, one for each soft threshold) and
    /// `--eviction-minimum-reclaim` (`signal=value,…`). A threshold of 0%
    /// is none.
    pub fn parse(
        hard: &str,
        soft: &str,
        soft_grace: &str,
        min_reclaim: &str,
        transition: Duration,
        max_pod_grace: i64,
    ) -> Result<Self, String> {
        let graces = pairs(soft_grace, "grace period", |_, v| go_duration(v))?;
        let reclaims = pairs(min_reclaim, "minimum reclaim", Amount::parse)?;
        let mut thresholds = statements(hard)?;
        for mut t in statements(soft)? {
            let Some(grace) = graces.get(&t.signal) else {
                return Err(format!(
                    "grace period must be specified for the soft eviction threshold {}",
                    t.signal.name()
                ));
            };
            t.grace = Some(*grace);
            thresholds.push(t);
        }
        thresholds.retain(|t| t.amount != Amount::Share(0.0));
        for t in &mut thresholds {
            t.min_reclaim = reclaims.get(&t.signal).copied();
        }
        Ok(Self {
            thresholds,
            transition,
            max_pod_grace,
        })
    }
}

/// A duration as Go writes it (`90s`, `1m30s`, `1.5h`).
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration \"{text}\"");
    let mut rest = text;
    let mut seconds = 0.0;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(split);
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        seconds += value * scale;
        rest = tail;
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl Config {
    /// What the hard thresholds keep free of a node resource of this
    /// capacity (in its units): the memory one for memory, the node
    /// filesystem's for ephemeral storage, as upstream's allocatable
    /// reserves them.
    pub fn hard_reservation(&self, resource: &str, capacity: i128) -> i128 {
        let signal = match resource {
            "memory" => Signal::MemoryAvailable,
            "ephemeral-storage" => Signal::NodeFsAvailable,
            _ => return 0,
        };
        self.thresholds
            .iter()
            .find(|t| t.signal == signal && t.grace.is_none())
            .map_or(0, |t| t.amount.of(capacity))
    }
}

/// `signal<value,…`, each signal once.
fn statements(expr: &str) -> Result<Vec<Threshold>, String> {
    let mut out: Vec<Threshold> = Vec::new();
    for statement in expr.split(',').filter(|s| !s.is_empty()) {
        let Some((signal, value)) = statement.split_once('<').filter(|(_, v)| !v.contains('<'))
        else {
            return Err(format!(
                "invalid eviction threshold syntax {statement}, expected <signal><operator><value>"
            ));
        };
        let signal = Signal::parse(signal)?;
        if out.iter().any(|t| t.signal == signal) {
            return Err(format!(
                "found duplicate eviction threshold for signal {}",
                signal.name()
            ));
        }
        out.push(Threshold {
            signal,
            amount: Amount::parse(signal, value)?,
            grace: None,
            min_reclaim: None,
        });
    }
    Ok(out)
}

/// `signal=value,…`, each signal once, each value read by `read`.
fn pairs<T>(
    expr: &str,
    what: &str,
    read: impl Fn(Signal, &str) -> Result<T, String>,
) -> Result<HashMap<Signal, T>, String> {
    let mut out = HashMap::new();
    for statement in expr.split(',').filter(|s| !s.is_empty()) {
        let Some((signal, value)) = statement.split_once('=') else {
            return Err(format!(
                "invalid eviction {what} syntax {statement}, expected <signal>=<value>"
            ));
        };
        let signal = Signal::parse(signal)?;
        if out.insert(signal, read(signal, value)?).is_some() {
            return Err(format!(
                "duplicate eviction {what} specified for {}",
                signal.name()
            ));
        }
    }
    Ok(out)
}

/// What was measured of one signal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    pub available: i128,
    pub capacity: i128,
}

pub type Observations = HashMap<Signal, Observation>;

/// A threshold met past its grace period: what to reclaim, and the figures
/// eviction messages give.
#[derive(Clone, Debug, PartialEq)]
pub struct Reclaim {
    pub signal: Signal,
    /// Whether the threshold is a hard one.
    pub hard: bool,
    pub quantity: i128,
    pub available: i128,
}

/// What one look decided.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// The node's pressure conditions now.
    pub conditions: Vec<Condition>,
    /// The threshold to act on, if any.
    pub reclaim: Option<Reclaim>,
}

/// The eviction manager's memory between looks.
#[derive(Debug, Default)]
pub struct Manager {
    config: Config,
    /// When each met threshold (by index) was first seen met.
    first_met: HashMap<usize, Instant>,
    /// When each condition's threshold was last seen met.
    last_seen: HashMap<Condition, Instant>,
    /// The thresholds acted on at the last look, resolved only once their
    /// minimum reclaim is available too.
    acting: Vec<usize>,
}

impl Manager {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One look at `seen`, as upstream's `synchronize` decides.
    pub fn decide(&mut self, seen: &Observations, now: Instant) -> Decision {
        let thresholds = &self.config.thresholds;
        let met_by = |i: &usize, with_reclaim: bool| {
            let t = &thresholds[*i];
            seen.get(&t.signal).is_some_and(|o| t.met(o, with_reclaim))
        };
        let mut met: Vec<usize> = (0..thresholds.len()).filter(|i| met_by(i, false)).collect();
        for i in &self.acting {
            if met_by(i, true) && !met.contains(i) {
                met.push(*i);
            }
        }
        met.sort_unstable();
        self.first_met = met
            .iter()
            .map(|i| (*i, self.first_met.get(i).copied().unwrap_or(now)))
            .collect();
        for i in &met {
            self.last_seen
                .insert(thresholds[*i].signal.condition(), now);
        }
        let transition = self.config.transition;
        let mut conditions: Vec<Condition> = self
            .last_seen
            .iter()
            .filter(|(_, at)| now.duration_since(**at) < transition)
            .map(|(c, _)| *c)
            .collect();
        conditions.sort_unstable();
        self.acting = met
            .into_iter()
            .filter(|i| {
                let grace = thresholds[*i].grace.unwrap_or_default();
                now.duration_since(self.first_met[i]) >= grace
            })
            .collect();
        // Memory before every other resource, as upstream ranks them.
        let first = self
            .acting
            .iter()
            .min_by_key(|i| thresholds[**i].signal != Signal::MemoryAvailable)
            .map(|i| &thresholds[*i]);
        let reclaim = first.and_then(|t| {
            let o = seen.get(&t.signal)?;
            Some(Reclaim {
                signal: t.signal,
                hard: t.grace.is_none(),
                quantity: t.amount.of(o.capacity),
                available: o.available,
            })
        });
        Decision {
            conditions,
            reclaim,
        }
    }

    /// Whether `seen` still meets any threshold, minimum reclaim counted:
    /// after reclaiming on the node, whether pods must go too.
    pub fn still_met(&self, seen: &Observations) -> bool {
        self.config.thresholds.iter().any(|t| {
            seen.get(&t.signal)
                .is_some_and(|o: &Observation| t.met(o, true))
        })
    }
}

/// The node's pressure conditions, which node status and admission read.
#[derive(Debug, Default)]
pub struct Pressure(RwLock<Vec<Condition>>);

impl Pressure {
    pub fn now(&self) -> Vec<Condition> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the conditions; whether they changed.
    pub fn set(&self, conditions: Vec<Condition>) -> bool {
        let mut held = self.0.write().unwrap_or_else(|e| e.into_inner());
        let changed = *held != conditions;
        *held = conditions;
        changed
    }
}

/// Whether the node must keep `pod` whatever its pressure: static and
/// mirror pods, and pods of a system-critical priority.
pub fn is_critical(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let source = annotations.and_then(|a| a.get("kubernetes.io/config.source"));
    let mirror = annotations.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    source.is_some_and(|s| s != "api") || mirror || priority(pod) >= CRITICAL_PRIORITY
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Upstream's admission under pressure: a critical pod always; under
/// memory pressure alone a pod that is not BestEffort, or tolerates the
/// memory-pressure taint; under any other pressure none.
pub fn admit(conditions: &[Condition], pod: &Pod) -> Result<(), Rejection> {
    if conditions.is_empty() || is_critical(pod) {
        return Ok(());
    }
    if conditions == [Condition::MemoryPressure] {
        let spec = pod.spec.as_ref();
        // The class the API server wrote, as upstream reads it when set.
        let written = pod.status.as_ref().and_then(|s| s.qos_class.as_deref());
        let best_effort = match written {
            Some(class) => class == "BestEffort",
            None => spec
                .and_then(|s| serde_json::to_value(s).ok())
                .is_none_or(|s| skiff_core::qos::class(&s) == "BestEffort"),
        };
        let taint = Taint {
            key: "node.kubernetes.io/memory-pressure".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
        if !best_effort || tolerated(tolerations, &taint) {
            return Ok(());
        }
    }
    let names: Vec<&str> = conditions.iter().map(|c| c.name()).collect();
    Err(Rejection {
        reason: "Evicted".into(),
        message: format!("The node had condition: [{}]. ", names.join(" ")),
    })
}

/// What ranking reads of one pod: its usage and requests of the starved
/// resource.
struct Use {
    priority: i32,
    used: i128,
    requested: i128,
}

/// A pod the eviction manager may choose, with what it uses.
pub struct Candidate<'a> {
    pub pod: &'a Pod,
    /// The runtime's latest sample of its containers.
    pub usage: Option<&'a PodUsage>,
    /// What its logs and its emptyDirs on disk hold on the node's
    /// filesystem (counted for that filesystem's pressure only).
    pub local_bytes: u64,
    /// How many processes it runs (counted under PID pressure only).
    pub processes: u64,
}

fn use_of(signal: Signal, c: &Candidate<'_>) -> Use {
    let requests = pod_requests(c.pod);
    let containers = c.usage.map(|u| u.containers.as_slice()).unwrap_or(&[]);
    let layers = || {
        containers
            .iter()
            .map(|c| c.writable_layer_bytes)
            .sum::<u64>()
    };
    let (used, requested): (u64, i128) = match signal {
        Signal::MemoryAvailable => (
            containers.iter().map(|c| c.memory_working_set).sum(),
            requests.memory / 1000,
        ),
        // As upstream's ranking on one filesystem for both: the
        // containers' writable layers, logs and local volumes.
        Signal::NodeFsAvailable => (layers() + c.local_bytes, requests.ephemeral_storage / 1000),
        Signal::ImageFsAvailable => (layers(), requests.ephemeral_storage / 1000),
        Signal::PidAvailable => (c.processes, 0),
        _ => (0, 0),
    };
    Use {
        priority: priority(c.pod),
        used: i128::from(used),
        requested,
    }
}

/// Orders `pods` for eviction on `signal` as upstream ranks them: those
/// using more than they requested first, then lower priorities, then by
/// how far beyond their requests they go (for PIDs, by priority, then the
/// most processes first).
pub fn rank(signal: Signal, pods: &mut [Candidate<'_>]) {
    pods.sort_by_cached_key(|c| {
        let u = use_of(signal, c);
        let over = u.used - u.requested;
        (
            std::cmp::Reverse(over > 0 && signal != Signal::PidAvailable),
            u.priority,
            std::cmp::Reverse(over),
        )
    });
}

/// Why a pod was evicted, in upstream's words: the resource, the
/// threshold and what was left, and each container using more than it
/// requested.
pub fn message(reclaim: &Reclaim, pod: &Pod, usage: Option<&PodUsage>) -> String {
    let resource = reclaim.signal.resource();
    let bytes = |n: i128| format_bytes(u64::try_from(n.max(0)).unwrap_or(0));
    let mut message = format!(
        "The node was low on resource: {resource}. Threshold quantity: {}, available: {}. ",
        bytes(reclaim.quantity),
        bytes(reclaim.available)
    );
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    for used in usage.map(|u| u.containers.as_slice()).unwrap_or(&[]) {
        let Some(c) = containers.iter().find(|c| c.name == used.name) else {
            continue;
        };
        let amount = match reclaim.signal {
            Signal::MemoryAvailable => used.memory_working_set,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => used.writable_layer_bytes,
            _ => continue,
        };
        let requested = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource))
            .map_or_else(|| "0".to_owned(), |q| q.0.clone());
        let over = parse_units(&requested).is_none_or(|r| i128::from(amount) > r);
        if over {
            message.push_str(&format!(
                "Container {} was using {}, request is {requested}, has larger consumption of {resource}. ",
                c.name,
                format_bytes(amount)
            ));
        }
    }
    message
}

/// The grace period an evicted pod gets: none for a hard threshold, the
/// configured maximum (or the pod's own, when shorter or when the maximum
/// is negative) for a soft one.
pub fn grace_period(reclaim: &Reclaim, max_pod_grace: i64, pod: &Pod) -> i64 {
    if reclaim.hard {
        return 0;
    }
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    if max_pod_grace < 0 {
        own
    } else {
        own.min(max_pod_grace)
    }
}

/// The eviction manager's ask to the pod workers: evict the first pod in
/// the order for `reclaim`; answered with a receiver that completes once
/// that pod is stopped, or none when no pod can go.
pub struct Ask {
    pub reclaim: Reclaim,
    pub max_pod_grace: i64,
    /// Under PID pressure, how many processes each pod runs, by uid.
    pub processes: HashMap<String, u64>,
    pub evicted: oneshot::Sender<Option<oneshot::Receiver<()>>>,
}

/// An eviction a pod's worker carries out at its next sync.
pub struct Eviction {
    pub message: String,
    pub grace: i64,
    /// Told once the pod is stopped.
    pub stopped: oneshot::Sender<()>,
}

/// How long the manager waits for an evicted pod to stop before it looks
/// again (upstream's pod cleanup timeout).
const CLEANUP: Duration = Duration::from_secs(30);

/// The eviction manager's loop.
pub struct Monitor {
    pub manager: Manager,
    pub pressure: Arc<Pressure>,
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The agent's directory, on the node's filesystem.
    pub data_dir: PathBuf,
    /// The image collector, which reclaims disk before pods go.
    pub images: mpsc::Sender<crate::image_gc::Reclaim>,
    /// The pod workers, which evict.
    pub pods: mpsc::Sender<Ask>,
    pub events: Recorder,
    pub metrics: crate::metrics::AgentMetrics,
    /// Told when the conditions change, so that node status goes out.
    pub changed: Arc<Notify>,
}

impl Monitor {
    /// Looks every [`INTERVAL`] until the pod workers are gone.
    pub async fn run(mut self) {
        let mut every = tokio::time::interval(INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let seen = self.measure().await;
            let decision = self.manager.decide(&seen, Instant::now());
            if self.pressure.set(decision.conditions) {
                self.changed.notify_one();
            }
            let Some(reclaim) = decision.reclaim else {
                continue;
            };
            let resource = reclaim.signal.resource();
            tracing::warn!(resource, "eviction manager: attempting to reclaim");
            let message = format!("Attempting to reclaim {resource}");
            self.events
                .record_node(Type::Warning, "EvictionThresholdMet", &message);
            if self.reclaimed_on_node(reclaim.signal).await {
                tracing::info!(
                    resource,
                    "eviction manager: pressure relieved without evicting pods"
                );
                continue;
            }
            let signal = reclaim.signal.name();
            let (evicted, answer) = oneshot::channel();
            let max_pod_grace = self.manager.config().max_pod_grace;
            let processes = match reclaim.signal {
                Signal::PidAvailable => self.processes().await,
                _ => HashMap::new(),
            };
            let ask = Ask {
                reclaim,
                max_pod_grace,
                processes,
                evicted,
            };
            if self.pods.send(ask).await.is_err() {
                return;
            }
            match answer.await {
                Ok(Some(stopped)) => {
                    self.metrics.evicted(signal);
                    let _ = tokio::time::timeout(CLEANUP, stopped).await;
                }
                _ => tracing::info!("eviction manager: unable to evict any pods from the node"),
            }
        }
    }

    /// What the node measures now.
    async fn measure(&self) -> Observations {
        let image_fs = match self.runtime.image_filesystems().await {
            Ok(f) => f.into_iter().find_map(|f| f.fs_id.map(|id| id.mountpoint)),
            Err(e) => {
                tracing::debug!(error = %e.message(), "no image filesystem from the runtime");
                None
            }
        };
        let data_dir = self.data_dir.clone();
        let measured = tokio::task::spawn_blocking(move || {
            measure::node(&data_dir, image_fs.as_deref().map(std::path::Path::new))
        });
        measured.await.unwrap_or_default()
    }

    /// Reclaims disk on the node itself (unused images), as upstream does
    /// before evicting for a disk signal; whether no threshold is met
    /// after.
    async fn reclaimed_on_node(&self, signal: Signal) -> bool {
        if matches!(signal, Signal::MemoryAvailable | Signal::PidAvailable) {
            return false;
        }
        let (done, wait) = oneshot::channel();
        if self.images.send(done).await.is_ok() {
            let _ = wait.await;
        }
        !self.manager.still_met(&self.measure().await)
    }
}

impl Monitor {
    /// How many processes each pod runs, by uid.
    async fn processes(&self) -> HashMap<String, u64> {
        let containers = match self.runtime.containers(None).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e.message(), "listing containers");
                return HashMap::new();
            }
        };
        let pods: HashMap<String, String> = containers
            .into_iter()
            .filter_map(|c| Some((c.id, c.labels.get(UID_LABEL)?.clone())))
            .collect();
        tokio::task::spawn_blocking(move || measure::processes(&pods))
            .await
            .unwrap_or_default()
    }
}

/// The node as the eviction manager measures it.
pub mod measure {
    use std::collections::HashMap;
    use std::path::Path;

    use super::{Observation, Observations, Signal};
    use crate::node::Space;

    /// Memory from `/proc/meminfo`: the capacity, and what is available
    /// beyond the working set (all used memory but inactive file pages,
    /// which the kernel reclaims first), as upstream counts it.
    pub fn memory(meminfo: &str) -> Option<Observation> {
        let total = crate::resource_metrics::meminfo_bytes(meminfo, "MemTotal:")?;
        let working_set = crate::resource_metrics::working_set(meminfo)?;
        Some(Observation {
            available: i128::from(total.saturating_sub(working_set)),
            capacity: i128::from(total),
        })
    }

    /// Process IDs: the kernel's limit (`pid_max`, or `threads-max` if
    /// lower) and what is left of it beside the tasks that exist
    /// (`/proc/loadavg`'s count).
    pub fn pids(pid_max: &str, threads_max: &str, loadavg: &str) -> Option<Observation> {
        let max: i128 = pid_max.trim().parse().ok()?;
        let threads: i128 = threads_max.trim().parse().unwrap_or(max);
        let capacity = max.min(threads);
        let tasks: i128 = loadavg
            .split_whitespace()
            .nth(3)?
            .split_once('/')?
            .1
            .parse()
            .ok()?;
        Some(Observation {
            available: capacity - tasks,
            capacity,
        })
    }

    /// Adds a filesystem's bytes and inodes as the two signals given.
    pub fn filesystem(seen: &mut Observations, space: Space, bytes: Signal, inodes: Signal) {
        let i = i128::from;
        seen.insert(
            bytes,
            Observation {
                available: i(space.available),
                capacity: i(space.size),
            },
        );
        if space.inodes > 0 {
            seen.insert(
                inodes,
                Observation {
                    available: i(space.inodes_free),
                    capacity: i(space.inodes),
                },
            );
        }
    }

    /// The container whose cgroup holds a process, from its
    /// `/proc/<pid>/cgroup`: the last part of a cgroup path, as containerd
    /// names it under cgroupfs (`…/<id>`) or systemd
    /// (`…/cri-containerd-<id>.scope`).
    pub fn container_of(cgroups: &str) -> Option<&str> {
        let path = cgroups.lines().rev().find_map(|l| {
            let path = l.splitn(3, ':').nth(2)?;
            (path.len() > 1).then_some(path)
        })?;
        let last = path.rsplit('/').next()?;
        let id = last.strip_prefix("cri-containerd-").unwrap_or(last);
        Some(id.strip_suffix(".scope").unwrap_or(id))
    }

    /// How many processes run in each of the `containers` (by id), their
    /// pods' uids as given: each pod's count. Blocking: reads `/proc`.
    pub fn processes(containers: &HashMap<String, String>) -> HashMap<String, u64> {
        let mut by_pod = HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(cgroups) = std::fs::read_to_string(entry.path().join("cgroup")) else {
                continue;
            };
            let pod = container_of(&cgroups).and_then(|id| containers.get(id));
            if let Some(uid) = pod {
                *by_pod.entry(uid.clone()).or_default() += 1;
            }
        }
        by_pod
    }

    /// Everything measured on this machine: memory, process IDs, the
    /// node's filesystem (holding `data_dir`) and the image filesystem.
    /// Blocking: `df` is run.
    pub fn node(data_dir: &Path, image_fs: Option<&Path>) -> Observations {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let mut seen = Observations::new();
        if let Some(m) = memory(&read("/proc/meminfo")) {
            seen.insert(Signal::MemoryAvailable, m);
        }
        let pid_max = read("/proc/sys/kernel/pid_max");
        let threads_max = read("/proc/sys/kernel/threads-max");
        if let Some(p) = pids(&pid_max, &threads_max, &read("/proc/loadavg")) {
            seen.insert(Signal::PidAvailable, p);
        }
        let node_fs = crate::node::disk_space(data_dir);
        if let Some(space) = node_fs {
            filesystem(
                &mut seen,
                space,
                Signal::NodeFsAvailable,
                Signal::NodeFsInodesFree,
            );
        }
        // Without its own filesystem, images are on the node's.
        let image = image_fs.and_then(crate::node::disk_space).or(node_fs);
        if let Some(space) = image {
            filesystem(
                &mut seen,
                space,
                Signal::ImageFsAvailable,
                Signal::ImageFsInodesFree,
            );
        }
        seen
    }
}

#[cfg(test)]
mod tests;
