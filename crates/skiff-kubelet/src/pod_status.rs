//! A pod's status from what the runtime shows: a pure function, so that
//! the same facts always give the same status and a condition's
//! `lastTransitionTime` moves only when the condition does.

use std::collections::{BTreeMap, HashMap};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, ContainerUser, HostIP, LinuxContainerUser, Pod,
    PodCondition, PodIP, PodSpec, PodStatus, VolumeMount, VolumeMountStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::plan::{attempt_of, exited, instant, is_sidecar, restarts, running, Init, Observed};
use crate::pod_inputs::recursive_read_only;

/// Why a container is not running: upstream's reason and message.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

impl Waiting {
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Everything a pod's status is made of.
pub struct Facts<'a> {
    pub spec: &'a PodSpec,
    pub seen: &'a Observed,
    /// Containers that could not (re)start, and why.
    pub waiting: &'a HashMap<String, Waiting>,
    /// Readiness from probes, by container; a container without a
    /// readiness probe is ready when running.
    pub probed: &'a HashMap<String, bool>,
    pub init: Init,
    /// The pod's `metadata.generation`, which the status observes.
    pub generation: Option<i64>,
    /// Whether the runtime makes mounts recursively read-only.
    pub recursive_read_only: bool,
    pub node_ip: &'a str,
    /// The status last written, for times that must not move.
    pub previous: Option<&'a PodStatus>,
    /// The status as the API shows it now: the conditions others own,
    /// which are kept, and those readiness gates wait for.
    pub api: Option<&'a PodStatus>,
    pub now: Timestamp,
    pub resize: Resizing<'a>,
}

/// Where the pod's resize stands (see [`crate::resize`]).
#[derive(Default)]
pub struct Resizing<'a> {
    /// What the node allocated to each container; the spec's when none.
    pub allocated: Option<&'a crate::resize::ByContainer>,
    /// What each running container was given, with its id.
    pub applied: Option<&'a crate::resize::ByName<(String, crate::resize::Size)>>,
    /// Why a resize waits for the node.
    pub pending: Option<&'a crate::resize::Pending>,
    /// Why giving a container its allocation failed.
    pub error: Option<&'a str>,
}

/// The conditions the agent owns; any other belongs to whoever set it.
const OWN_CONDITIONS: [&str; 7] = [
    "PodResizePending",
    "PodResizeInProgress",
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

/// Why the pod's readiness gates keep it from being ready, in upstream's
/// words; none when every gate's condition is `True`.
fn gates_not_ready(spec: &PodSpec, conditions: &[PodCondition]) -> Option<String> {
    let unready: Vec<String> = spec
        .readiness_gates
        .iter()
        .flatten()
        .filter_map(|gate| {
            let kind = &gate.condition_type;
            match conditions.iter().find(|c| c.type_ == *kind) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {kind:?} does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {kind:?} is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect();
    (!unready.is_empty()).then(|| unready.join(", "))
}

/// A timestamp at the API's precision (whole seconds), so that a status
/// compares equal to itself after a round trip.
fn time(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn terminated(s: &cri::ContainerStatus) -> ContainerStateTerminated {
    let reason = match (s.reason.as_str(), s.exit_code) {
        ("", 0) => "Completed",
        ("", _) => "Error",
        (r, _) => r,
    };
    ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(reason.to_owned()),
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        started_at: Some(time(instant(s.started_at))),
        finished_at: Some(time(instant(s.finished_at))),
        container_id: Some(format!("containerd://{}", s.id)),
        ..Default::default()
    }
}

fn waiting_state(w: &Waiting) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(w.reason.clone()),
            message: (!w.message.is_empty()).then(|| w.message.clone()),
        }),
        ..Default::default()
    }
}

fn container_status(c: &Container, f: &Facts, before_start: &str) -> ContainerStatus {
    let why = f.waiting.get(&c.name);
    let mut last = None;
    let latest = f.seen.latest.get(&c.name);
    let state = match latest {
        None => waiting_state(why.unwrap_or(&Waiting::new(before_start, ""))),
        Some(s) if running(s) => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(instant(s.started_at))),
            }),
            ..Default::default()
        },
        Some(s) if exited(s) => match why {
            Some(w) => {
                last = Some(terminated(s));
                waiting_state(w)
            }
            None => ContainerState {
                terminated: Some(terminated(s)),
                ..Default::default()
            },
        },
        Some(_) => waiting_state(&Waiting::new("ContainerCreating", "")),
    };
    let last = last.or_else(|| {
        f.seen
            .previous
            .get(&c.name)
            .filter(|p| exited(p))
            .map(terminated)
    });
    let is_running = state.running.is_some();
    let spec = c.resources.as_ref();
    let allocated = f.resize.allocated.and_then(|a| a.get(&c.name));
    let actual = f
        .resize
        .applied
        .and_then(|a| a.get(&c.name))
        .filter(|(id, _)| is_running && latest.is_some_and(|s| s.id == *id))
        .map(|(_, size)| size);
    let sized = |size: Option<&crate::resize::Size>| match size {
        Some(size) => size.onto(spec),
        None => spec.cloned().unwrap_or_default(),
    };
    let allocated = sized(allocated);
    // Once the container exists, its image is the runtime's name for it
    // and its id the digest the runtime resolved, as upstream reports.
    let image = latest
        .and_then(|s| s.image.as_ref())
        .map(|i| i.image.clone())
        .filter(|i| !i.is_empty());
    ContainerStatus {
        name: c.name.clone(),
        image: image.unwrap_or_else(|| c.image.clone().unwrap_or_default()),
        image_id: latest.map(|s| s.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|s| format!("containerd://{}", s.id)),
        ready: is_running && f.probed.get(&c.name).copied().unwrap_or(true),
        // A startup probe holds `started` back until it passes.
        started: Some(
            is_running && (c.startup_probe.is_none() || f.seen.started.contains(&c.name)),
        ),
        restart_count: latest.map_or(0, |s| attempt_of(s) as i32),
        state: Some(state),
        // Go holds the last state by value: `{}` before any.
        last_state: Some(ContainerState {
            terminated: last,
            ..Default::default()
        }),
        volume_mounts: mount_statuses(c, f.recursive_read_only),
        // What a running container was given, else what it starts with.
        resources: Some(actual.map_or_else(|| allocated.clone(), |a| sized(Some(a)))),
        allocated_resources: allocated.requests,
        user: latest.and_then(|s| s.user.as_ref()).and_then(user),
        ..Default::default()
    }
}

/// The identity the runtime started the container with, if it says.
fn user(u: &cri::ContainerUser) -> Option<ContainerUser> {
    let linux = u.linux.as_ref()?;
    Some(ContainerUser {
        linux: Some(LinuxContainerUser {
            uid: linux.uid,
            gid: linux.gid,
            supplemental_groups: Some(linux.supplemental_groups.clone()),
        }),
    })
}

/// The container's mounts as its status shows them: a read-only one says
/// whether it is recursively so.
fn mount_statuses(c: &Container, recursive: bool) -> Option<Vec<VolumeMountStatus>> {
    let status = |m: &VolumeMount| {
        let read_only = m.read_only == Some(true);
        let mode = match recursive_read_only(m, recursive) {
            Ok(true) => "Enabled",
            _ => "Disabled",
        };
        VolumeMountStatus {
            name: m.name.clone(),
            mount_path: m.mount_path.clone(),
            read_only: read_only.then_some(true),
            recursive_read_only: read_only.then(|| mode.to_owned()),
        }
    };
    let mounts: Vec<_> = c.volume_mounts.iter().flatten().map(status).collect();
    (!mounts.is_empty()).then_some(mounts)
}

/// The pod's phase, as upstream's getPhase: from its app containers
/// (`statuses`, in the spec's order) alone; one that exited but runs again
/// keeps the pod running.
fn phase(spec: &PodSpec, init: Init, statuses: &[ContainerStatus]) -> &'static str {
    let restart = spec.restart_policy.as_deref().unwrap_or("Always");
    let exit_code = |s: &ContainerStatus| {
        s.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code)
    };
    let count = |f: &dyn Fn(&ContainerStatus) -> bool| statuses.iter().filter(|s| f(s)).count();
    let running = count(&|s| s.state.as_ref().is_some_and(|s| s.running.is_some()));
    let succeeded = count(&|s| exit_code(s) == Some(0));
    let failed = count(&|s| exit_code(s).is_some_and(|c| c != 0));
    let total = statuses.len();
    let over = spec
        .containers
        .iter()
        .zip(statuses)
        .all(|(c, s)| exit_code(s).is_some_and(|code| !restarts(c, restart, code)));
    match init {
        Init::Failed => "Failed",
        Init::Running => "Pending",
        Init::Done if running == total => "Running",
        Init::Done if over && succeeded == total => "Succeeded",
        Init::Done if over => "Failed",
        Init::Done if running + succeeded + failed > 0 => "Running",
        Init::Done => "Pending",
    }
}

/// The phase the pod was last reported in.
pub fn reported_phase(pod: &Pod) -> &str {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase.unwrap_or("Pending")
}

/// How each of a stopped pod's containers last ended, by name: the exit
/// code of its latest run, read from the runtime after the stop.
#[derive(Debug, Default)]
pub struct Exits(BTreeMap<String, (i64, i32)>);

impl Exits {
    /// Keeps `code` if this run (created at `created`) is the latest seen.
    pub fn saw(&mut self, name: &str, created: i64, code: i32) {
        let latest = self.0.entry(name.to_owned()).or_insert((created, code));
        if created >= latest.0 {
            *latest = (created, code);
        }
    }

    /// The final phase of a pod stopped for its deletion, as upstream's
    /// getPhase for a terminal pod: Succeeded if every app container's
    /// last run exited with 0, Failed otherwise. A container the runtime
    /// did not show is judged by its last reported state.
    pub fn phase(&self, pod: &Pod) -> &'static str {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        let reported_zero = |name: &str| {
            statuses.into_iter().flatten().any(|s| {
                s.name == name
                    && s.state
                        .as_ref()
                        .and_then(|st| st.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0)
            })
        };
        let exited_zero = |name: &str| match self.0.get(name) {
            Some(&(_, code)) => code == 0,
            None => reported_zero(name),
        };
        let spec = pod.spec.as_ref();
        match spec.is_some_and(|s| s.containers.iter().all(|c| exited_zero(&c.name))) {
            true => "Succeeded",
            false => "Failed",
        }
    }
}

/// The status the pod has, given the facts.
pub fn pod_status(f: &Facts) -> PodStatus {
    let spec = f.spec;
    // A pod on the node's network has the node's address.
    let ip = if spec.host_network == Some(true) && f.seen.pod_ip.is_empty() {
        f.node_ip.to_owned()
    } else {
        f.seen.pod_ip.clone()
    };
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let status = container_status(c, f, "PodInitializing");
            if is_sidecar(c) {
                return status;
            }
            // An init container that is no sidecar is ready once done.
            let done = status.state.as_ref().and_then(|s| s.terminated.as_ref());
            ContainerStatus {
                ready: done.is_some_and(|t| t.exit_code == 0),
                ..status
            }
        })
        .collect();
    let before_start = match f.init {
        Init::Done => "ContainerCreating",
        _ => "PodInitializing",
    };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, f, before_start))
        .collect();
    let ephemeral: Vec<ContainerStatus> = crate::plan::ephemeral_containers(spec)
        .iter()
        .map(|(c, _)| ContainerStatus {
            // Nothing probes an ephemeral container: never ready, and
            // nothing to say of its start.
            ready: false,
            started: None,
            ..container_status(c, f, "ContainerCreating")
        })
        .collect();
    // Sidecars count towards the pod's readiness, as upstream's.
    let sidecars_ready = spec
        .init_containers
        .iter()
        .flatten()
        .zip(&init_statuses)
        .all(|(c, s)| !is_sidecar(c) || s.ready);
    let ready = sidecars_ready && statuses.iter().all(|s| s.ready);
    let previous = |kind: &str| {
        f.previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == kind))
    };
    let condition = |kind: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let since = previous(kind)
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| time(f.now));
        PodCondition {
            type_: kind.to_owned(),
            status: status.to_owned(),
            last_transition_time: Some(since),
            observed_generation: f.generation,
            ..Default::default()
        }
    };
    let start_time = f
        .previous
        .and_then(|p| p.start_time.clone())
        .unwrap_or_else(|| time(f.now));
    let network_ready = !ip.is_empty();
    let api_conditions = f
        .api
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let gated = ready
        .then(|| gates_not_ready(spec, api_conditions))
        .flatten();
    let pod_ready = match gated {
        Some(why) => PodCondition {
            reason: Some("ReadinessGatesNotReady".to_owned()),
            message: Some(why),
            ..condition("Ready", false)
        },
        None => condition("Ready", ready),
    };
    let resize_conditions = resize_conditions(f, &statuses, &init_statuses, &condition);
    // Others' conditions first, as upstream merges them.
    let conditions = api_conditions
        .iter()
        .filter(|c| !OWN_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .chain(resize_conditions)
        .chain([
            condition("PodReadyToStartContainers", network_ready),
            condition("Initialized", f.init == Init::Done),
            pod_ready,
            condition("ContainersReady", ready),
            condition("PodScheduled", true),
        ])
        .collect();
    PodStatus {
        phase: Some(phase(spec, f.init, &statuses).to_owned()),
        host_ip: Some(f.node_ip.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: f.node_ip.to_owned(),
        }]),
        pod_ip: (!ip.is_empty()).then(|| ip.clone()),
        pod_ips: (!ip.is_empty()).then(|| vec![PodIP { ip }]),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
        start_time: Some(start_time),
        observed_generation: f.generation,
        ..Default::default()
    }
}

/// `PodResizePending` while a resize waits for the node, and
/// `PodResizeInProgress` while a running container does not hold what it
/// was allocated (with the error that keeps it so, if any).
fn resize_conditions(
    f: &Facts,
    statuses: &[ContainerStatus],
    init_statuses: &[ContainerStatus],
    condition: &dyn Fn(&str, bool) -> PodCondition,
) -> Vec<PodCondition> {
    let mut out = Vec::new();
    if let Some(p) = f.resize.pending {
        out.push(PodCondition {
            reason: Some(p.reason.to_owned()),
            message: Some(p.message.clone()),
            ..condition("PodResizePending", true)
        });
    }
    let behind = statuses.iter().chain(init_statuses).any(|s| {
        s.state.as_ref().is_some_and(|st| st.running.is_some())
            && s.resources.as_ref().and_then(|r| r.requests.as_ref())
                != s.allocated_resources.as_ref()
    });
    if let Some(why) = f.resize.error {
        out.push(PodCondition {
            reason: Some("Error".to_owned()),
            message: Some(why.to_owned()),
            ..condition("PodResizeInProgress", true)
        });
    } else if behind {
        out.push(condition("PodResizeInProgress", true));
    }
    out
}

/// The strategic merge patch that takes the status the API holds (`old`)
/// to `new`, as upstream's status manager sends it: only the fields that
/// changed; conditions merged by type, so one that someone else sets
/// meanwhile stays; addresses replaced whole; and the pod's uid, which a
/// pod created again under the same name refuses.
pub fn status_patch(uid: &str, old: Option<&PodStatus>, new: &PodStatus) -> Value {
    let mut patch = Map::new();
    for (field, value, before) in changed_fields(old, new) {
        match (field, value) {
            ("conditions", Value::Array(conditions)) => {
                let old = before.as_ref().and_then(Value::as_array);
                let (order, changed) = conditions_patch(old.map_or(&[], Vec::as_slice), conditions);
                patch.insert("$setElementOrder/conditions".into(), order);
                patch.insert(field.into(), changed);
            }
            ("podIPs" | "hostIPs", Value::Array(mut ips)) => {
                ips.push(json!({"$patch": "replace"}));
                patch.insert(field.into(), Value::Array(ips));
            }
            (_, value) => {
                patch.insert(field.into(), value);
            }
        }
    }
    json!({"metadata": {"uid": uid}, "status": patch})
}

/// The fields `new` sets whose JSON differs from `old`'s: the name, the
/// new JSON and the old. Only a field unequal in the struct is encoded;
/// the JSON decides, as times keep only their seconds there. Every field
/// is named, so one that a new API version adds cannot be left out.
fn changed_fields(
    old: Option<&PodStatus>,
    new: &PodStatus,
) -> Vec<(&'static str, Value, Option<Value>)> {
    let PodStatus {
        allocated_resources,
        conditions,
        container_statuses,
        ephemeral_container_statuses,
        extended_resource_claim_status,
        host_ip,
        host_ips,
        init_container_statuses,
        message,
        nominated_node_name,
        observed_generation,
        phase,
        pod_ip,
        pod_ips,
        qos_class,
        reason,
        resize,
        resource_claim_statuses,
        resources,
        start_time,
    } = new;
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($name:literal => $field:ident),* $(,)?) => {$(
            if let Some(now) = $field {
                let before = old.and_then(|o| o.$field.as_ref());
                if before != Some(now) {
                    let (now, before) = (json(now), before.map(json));
                    if before.as_ref() != Some(&now) {
                        changed.push(($name, now, before));
                    }
                }
            }
        )*};
    }
    compare!(
        "allocatedResources" => allocated_resources,
        "conditions" => conditions,
        "containerStatuses" => container_statuses,
        "ephemeralContainerStatuses" => ephemeral_container_statuses,
        "extendedResourceClaimStatus" => extended_resource_claim_status,
        "hostIP" => host_ip,
        "hostIPs" => host_ips,
        "initContainerStatuses" => init_container_statuses,
        "message" => message,
        "nominatedNodeName" => nominated_node_name,
        "observedGeneration" => observed_generation,
        "phase" => phase,
        "podIP" => pod_ip,
        "podIPs" => pod_ips,
        "qosClass" => qos_class,
        "reason" => reason,
        "resize" => resize,
        "resourceClaimStatuses" => resource_claim_statuses,
        "resources" => resources,
        "startTime" => start_time,
    );
    changed
}

fn json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The order of `new`'s conditions, and those that differ from `old`'s:
/// changed or added ones whole, removed ones as deletions.
fn conditions_patch(old: &[Value], new: Vec<Value>) -> (Value, Value) {
    let order = new.iter().map(|c| json!({"type": c["type"]})).collect();
    let mut changed: Vec<Value> = old
        .iter()
        .filter(|o| !new.iter().any(|c| c["type"] == o["type"]))
        .map(|o| json!({"type": o["type"], "$patch": "delete"}))
        .collect();
    changed.extend(new.into_iter().filter(|c| !old.contains(c)));
    (order, Value::Array(changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    const T0: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn a_stopped_pod_succeeded_only_if_every_container_exited_with_zero() {
        let pod = |codes: &[i32]| -> Pod {
            let statuses: Vec<Value> = codes
                .iter()
                .zip(["a", "b"])
                .map(|(code, name)| {
                    json!({"name": name, "image": "app:1", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": code}}})
                })
                .collect();
            serde_json::from_value(json!({"spec": spec("Always", false),
                "status": {"phase": "Running", "containerStatuses": statuses}}))
            .unwrap()
        };
        let none = Exits::default();
        assert_eq!(none.phase(&pod(&[0, 0])), "Succeeded");
        assert_eq!(none.phase(&pod(&[0, 143])), "Failed");
        assert_eq!(none.phase(&pod(&[0])), "Failed", "b never seen ending");
        assert_eq!(reported_phase(&pod(&[0])), "Running");
        // What the runtime showed after the stop wins over what was
        // reported before it, and the latest run of each container counts.
        let mut stopped = Exits::default();
        stopped.saw("b", 2, 0);
        stopped.saw("b", 1, 1);
        assert_eq!(
            stopped.phase(&pod(&[0])),
            "Succeeded",
            "b exited 0 on SIGTERM"
        );
        stopped.saw("a", 3, 143);
        assert_eq!(stopped.phase(&pod(&[0, 0])), "Failed", "a was killed");
    }

    fn spec(restart: &str, init: bool) -> PodSpec {
        serde_json::from_value(serde_json::json!({
            "containers": [{"name": "a", "image": "app:1"}, {"name": "b", "image": "app:1"}],
            "initContainers": if init { serde_json::json!([{"name": "i", "image": "app:1"}]) } else { serde_json::Value::Null },
            "restartPolicy": restart,
        }))
        .unwrap()
    }

    fn container(state: cri::ContainerState, attempt: u32, code: i32) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: format!("id{attempt}"),
            metadata: Some(cri::ContainerMetadata {
                name: String::new(),
                attempt,
            }),
            state: state as i32,
            exit_code: code,
            started_at: T0,
            finished_at: T0 + 1_000_000_000,
            ..Default::default()
        }
    }

    use cri::ContainerState::{
        ContainerCreated as Created, ContainerExited as Exited, ContainerRunning as Running,
    };

    fn seen(of: &[(&str, cri::ContainerStatus)]) -> Observed {
        Observed {
            pod_ip: "10.42.0.5".into(),
            latest: of.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(),
            ..Default::default()
        }
    }

    fn status_of(
        spec: &PodSpec,
        seen: &Observed,
        init: Init,
        previous: Option<&PodStatus>,
        at: i64,
    ) -> PodStatus {
        pod_status(&Facts {
            spec,
            seen,
            waiting: &HashMap::new(),
            probed: &HashMap::new(),
            init,
            generation: Some(1),
            recursive_read_only: false,
            node_ip: "192.0.2.1",
            previous,
            api: previous,
            now: instant(T0) + SignedDuration::from_secs(at),
            resize: Resizing::default(),
        })
    }

    #[test]
    fn a_sidecar_counts_towards_readiness_but_not_the_phase() {
        let mut pod = spec("Never", true);
        let init = &mut pod.init_containers.as_mut().unwrap()[0];
        init.restart_policy = Some("Always".into());
        init.readiness_probe = Some(Default::default());
        let running = |side_ready: bool| {
            let seen = seen(&[
                ("i", container(Running, 0, 0)),
                ("a", container(Running, 0, 0)),
                ("b", container(Running, 0, 0)),
            ]);
            let probed = HashMap::from([("i".to_owned(), side_ready)]);
            let status = pod_status(&Facts {
                probed: &probed,
                ..facts(&pod, &seen)
            });
            let ready = status.conditions.unwrap();
            let ready = ready.iter().find(|c| c.type_ == "ContainersReady").unwrap();
            ready.status.clone()
        };
        assert_eq!(
            (running(false), running(true)),
            ("False".into(), "True".into())
        );
        // The app done, the sidecar still running: the pod succeeded.
        let done = seen(&[
            ("i", container(Running, 0, 0)),
            ("a", container(Exited, 0, 0)),
            ("b", container(Exited, 0, 0)),
        ]);
        let status = pod_status(&facts(&pod, &done));
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        let side = &status.init_container_statuses.unwrap()[0];
        assert_eq!((side.ready, side.started), (true, Some(true)));
    }

    #[test]
    fn a_startup_probe_holds_started_back_until_it_passes() {
        let mut pod = spec("Always", false);
        pod.containers[0].startup_probe = Some(Default::default());
        let mut seen = seen(&[
            ("a", container(Running, 0, 0)),
            ("b", container(Running, 0, 0)),
        ]);
        let started = |seen: &Observed| {
            let status = pod_status(&facts(&pod, seen));
            status.container_statuses.unwrap()[0].started
        };
        assert_eq!(started(&seen), Some(false));
        seen.started.insert("a".into());
        assert_eq!(started(&seen), Some(true));
    }

    fn facts<'a>(spec: &'a PodSpec, seen: &'a Observed) -> Facts<'a> {
        static NONE: std::sync::LazyLock<HashMap<String, Waiting>> =
            std::sync::LazyLock::new(HashMap::new);
        static PROBED: std::sync::LazyLock<HashMap<String, bool>> =
            std::sync::LazyLock::new(HashMap::new);
        Facts {
            spec,
            seen,
            waiting: &NONE,
            probed: &PROBED,
            init: Init::Done,
            generation: Some(1),
            recursive_read_only: false,
            node_ip: "192.0.2.1",
            previous: None,
            api: None,
            now: instant(T0),
            resize: Resizing::default(),
        }
    }

    #[test]
    fn phases() {
        let cases = [
            (
                "nothing started",
                spec("Always", false),
                seen(&[]),
                Init::Done,
                "Pending",
            ),
            (
                "init running",
                spec("Always", true),
                seen(&[("i", container(Running, 0, 0))]),
                Init::Running,
                "Pending",
            ),
            (
                "init failed",
                spec("Never", true),
                seen(&[("i", container(Exited, 0, 1))]),
                Init::Failed,
                "Failed",
            ),
            (
                "all running",
                spec("Always", false),
                seen(&[
                    ("a", container(Running, 0, 0)),
                    ("b", container(Running, 0, 0)),
                ]),
                Init::Done,
                "Running",
            ),
            (
                "one created",
                spec("Always", false),
                seen(&[
                    ("a", container(Running, 0, 0)),
                    ("b", container(Created, 0, 0)),
                ]),
                Init::Done,
                "Running",
            ),
            (
                "all done",
                spec("OnFailure", false),
                seen(&[
                    ("a", container(Exited, 0, 0)),
                    ("b", container(Exited, 0, 0)),
                ]),
                Init::Done,
                "Succeeded",
            ),
            (
                "all done but Always",
                spec("Always", false),
                seen(&[
                    ("a", container(Exited, 0, 0)),
                    ("b", container(Exited, 0, 0)),
                ]),
                Init::Done,
                "Running",
            ),
            (
                "one failed, Never",
                spec("Never", false),
                seen(&[
                    ("a", container(Exited, 0, 0)),
                    ("b", container(Exited, 0, 2)),
                ]),
                Init::Done,
                "Failed",
            ),
            (
                "one failed, one runs",
                spec("Never", false),
                seen(&[
                    ("a", container(Running, 0, 0)),
                    ("b", container(Exited, 0, 2)),
                ]),
                Init::Done,
                "Running",
            ),
        ];
        for (name, spec, seen, init, phase) in cases {
            let status = status_of(&spec, &seen, init, None, 0);
            assert_eq!(status.phase.as_deref(), Some(phase), "{name}");
        }
    }

    #[test]
    fn a_condition_moves_only_when_its_status_does() {
        let spec = spec("Always", false);
        let starting = seen(&[("a", container(Running, 0, 0))]);
        let first = status_of(&spec, &starting, Init::Done, None, 0);
        let running = seen(&[
            ("a", container(Running, 0, 0)),
            ("b", container(Running, 0, 0)),
        ]);
        let second = status_of(&spec, &running, Init::Done, Some(&first), 5);
        let third = status_of(&spec, &running, Init::Done, Some(&second), 9);
        let since = |s: &PodStatus, kind: &str| {
            let c = s
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == kind)
                .unwrap();
            (
                c.status.clone(),
                c.last_transition_time.clone().unwrap().0.as_second(),
            )
        };
        let t0 = instant(T0).as_second();
        assert_eq!(since(&first, "Ready"), ("False".into(), t0));
        assert_eq!(since(&second, "Ready"), ("True".into(), t0 + 5));
        assert_eq!(since(&third, "Ready"), ("True".into(), t0 + 5));
        assert_eq!(since(&third, "Initialized"), ("True".into(), t0));
        assert_eq!(third.start_time, first.start_time);
        assert_eq!(third, second, "the same facts give the same status");
    }

    #[test]
    fn a_container_waiting_to_restart_shows_why_and_its_last_run() {
        let spec = spec("Always", false);
        let mut seen = seen(&[
            ("a", container(Exited, 2, 137)),
            ("b", container(Running, 0, 0)),
        ]);
        seen.latest.get_mut("a").unwrap().reason = "OOMKilled".into();
        let waiting = HashMap::from([(
            "a".to_owned(),
            Waiting::new("CrashLoopBackOff", "back-off restarting failed container a"),
        )]);
        let probed = HashMap::from([("b".to_owned(), false)]);
        let status = pod_status(&Facts {
            waiting: &waiting,
            probed: &probed,
            ..facts(&spec, &seen)
        });
        let statuses = status.container_statuses.unwrap();
        let a = &statuses[0];
        let w = a.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = a.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (last.exit_code, last.reason.as_deref()),
            (137, Some("OOMKilled"))
        );
        assert_eq!((a.restart_count, a.ready), (2, false));
        assert_eq!(a.container_id.as_deref(), Some("containerd://id2"));
        // Running but failing its readiness probe.
        assert_eq!(
            (statuses[1].started, statuses[1].ready),
            (Some(true), false)
        );
        assert_eq!(status.pod_ip.as_deref(), Some("10.42.0.5"));
    }

    #[test]
    fn statuses_observe_the_generation_name_the_image_and_say_who_is_ready() {
        let mut with_all = spec("Always", true);
        with_all.ephemeral_containers = Some(vec![serde_json::from_value(
            serde_json::json!({"name": "dbg", "image": "tools:1"}),
        )
        .unwrap()]);
        let mut seen = seen(&[
            ("i", container(Exited, 0, 0)),
            ("a", container(Running, 0, 0)),
            ("dbg", container(Running, 0, 0)),
        ]);
        let a = seen.latest.get_mut("a").unwrap();
        a.image = Some(cri::ImageSpec {
            image: "docker.io/library/app:1".into(),
            ..Default::default()
        });
        a.image_ref = "docker.io/library/app@sha256:ab".into();
        let status = status_of(&with_all, &seen, Init::Done, None, 0);
        // The status and each condition the agent sets observe the pod's
        // generation.
        assert_eq!(status.observed_generation, Some(1));
        let conditions = status.conditions.as_deref().unwrap_or_default();
        assert!(conditions.iter().all(|c| c.observed_generation == Some(1)));
        let statuses = status.container_statuses.unwrap();
        let image = |s: &ContainerStatus| (s.image.clone(), s.image_id.clone());
        assert_eq!(
            image(&statuses[0]),
            (
                "docker.io/library/app:1".into(),
                "docker.io/library/app@sha256:ab".into()
            )
        );
        // Not created yet: the spec's image, and no id.
        assert_eq!(image(&statuses[1]), ("app:1".into(), String::new()));
        // Go's by-value structs, empty: no last state, no resources.
        let empty = (Some(ContainerState::default()), Some(Default::default()));
        assert_eq!(
            (
                statuses[0].last_state.clone(),
                statuses[0].resources.clone()
            ),
            empty
        );
        assert_eq!(statuses[0].allocated_resources, None);
        let init = &status.init_container_statuses.unwrap()[0];
        assert_eq!((init.ready, init.started), (true, Some(false)));
        let dbg = &status.ephemeral_container_statuses.unwrap()[0];
        assert_eq!((dbg.ready, dbg.started), (false, None));
        assert!(dbg.state.as_ref().unwrap().running.is_some());
        // A pod without init containers has no list of them.
        let plain = status_of(&spec("Always", false), &seen, Init::Done, None, 0);
        assert_eq!(plain.init_container_statuses, None);
    }

    #[test]
    fn readiness_gates_hold_ready_and_others_conditions_are_kept() {
        let mut spec = spec("Always", false);
        spec.readiness_gates = serde_json::from_value(serde_json::json!([
            {"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}
        ]))
        .unwrap();
        let seen = seen(&[
            ("a", container(Running, 0, 0)),
            ("b", container(Running, 0, 0)),
        ]);
        let with = |conditions: serde_json::Value| -> PodStatus {
            serde_json::from_value(serde_json::json!({ "conditions": conditions })).unwrap()
        };
        let of = |api: &PodStatus| {
            pod_status(&Facts {
                spec: &spec,
                seen: &seen,
                waiting: &HashMap::new(),
                probed: &HashMap::new(),
                init: Init::Done,
                generation: Some(1),
                recursive_read_only: false,
                node_ip: "192.0.2.1",
                previous: None,
                api: Some(api),
                now: instant(T0),
                resize: Resizing::default(),
            })
            .conditions
            .unwrap()
        };
        let find = |conditions: &[PodCondition], kind: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == kind)
                .cloned()
                .unwrap()
        };

        let api = with(serde_json::json!([
            {"type": "example.com/lb", "status": "False"},
            {"type": "Ready", "status": "False"},
        ]));
        let conditions = of(&api);
        let ready = find(&conditions, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some(
                "the status of pod readiness gate \"example.com/lb\" is not \"True\", but False, \
                 corresponding condition of pod readiness gate \"example.com/dns\" does not exist."
            )
        );
        assert_eq!(find(&conditions, "ContainersReady").status, "True");
        // The gate's condition stays, first, and the agent's own old
        // `Ready` is not carried over beside the new one.
        assert_eq!(conditions[0].type_, "example.com/lb");
        assert_eq!(conditions.iter().filter(|c| c.type_ == "Ready").count(), 1);

        let api = with(serde_json::json!([
            {"type": "example.com/lb", "status": "True"},
            {"type": "example.com/dns", "status": "True"},
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"},
        ]));
        let conditions = of(&api);
        let ready = find(&conditions, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason), ("True", None));
        // The agent's own, but for the two of a resize under way.
        assert_eq!(conditions.len(), 3 + OWN_CONDITIONS.len() - 2);
        assert_eq!(
            find(&conditions, "DisruptionTarget").reason.as_deref(),
            Some("EvictionByEvictionAPI")
        );
    }

    #[test]
    fn the_status_patch_sends_what_changed_and_keeps_what_others_set_meanwhile() {
        let status = |conditions: Value, ip: &str| -> PodStatus {
            serde_json::from_value(json!({"phase": "Running", "conditions": conditions,
                "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.0.1"}))
            .unwrap()
        };
        let scheduled = json!({"type": "PodScheduled", "status": "True"});
        let seen = status(
            json!([{"type": "Ready", "status": "False"}, scheduled.clone()]),
            "10.1.0.5",
        );
        let new = status(
            json!([{"type": "Ready", "status": "True"}, scheduled.clone()]),
            "10.1.0.6",
        );
        let patch = status_patch("u1", Some(&seen), &new);
        assert_eq!(patch["metadata"]["uid"], "u1");
        // Only what changed: not the phase, the host's address or PodScheduled.
        let sent: Vec<&String> = patch["status"].as_object().unwrap().keys().collect();
        assert_eq!(
            sent,
            [
                "$setElementOrder/conditions",
                "conditions",
                "podIP",
                "podIPs"
            ]
        );
        assert_eq!(
            patch["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );

        // Meanwhile another writer added a gate's condition: it stays.
        let mut stored = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "uid": "u1"},
            "status": serde_json::to_value(&seen).unwrap()});
        stored["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "example.com/lb", "status": "True"}));
        let pods = skiff_core::registry::lookup("", "v1", "pods").unwrap();
        let root = skiff_core::schema::Root::of(pods);
        let merged = skiff_core::strategic::patch(&stored, &patch, root.shape()).unwrap();
        let types: Vec<&str> = merged["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Ready", "PodScheduled", "example.com/lb"]);
        assert_eq!(merged["status"]["conditions"][0]["status"], "True");
        assert_eq!(merged["status"]["podIPs"], json!([{"ip": "10.1.0.6"}]));

        // A condition the new status no longer has is deleted.
        let fewer = status(json!([scheduled]), "10.1.0.5");
        let patch = status_patch("u1", Some(&seen), &fewer);
        assert_eq!(
            patch["status"]["conditions"],
            json!([{"type": "Ready", "$patch": "delete"}])
        );
        let merged = skiff_core::strategic::patch(&stored, &patch, root.shape()).unwrap();
        assert_eq!(merged["status"]["conditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_field_that_differs_only_below_its_json_is_not_sent() {
        let at = |nanos: i64| Time(Timestamp::from_nanosecond(i128::from(T0 + nanos)).unwrap());
        let old = PodStatus {
            phase: Some("Pending".into()),
            start_time: Some(at(0)),
            ..Default::default()
        };
        // The same second, which is all the API keeps of a time.
        let new = PodStatus {
            phase: Some("Running".into()),
            start_time: Some(at(250_000_000)),
            ..Default::default()
        };
        assert_eq!(
            status_patch("u1", Some(&old), &new)["status"],
            json!({"phase": "Running"})
        );
        // No status held yet: every field set is sent.
        let sent = status_patch("u1", None, &new)["status"].clone();
        assert_eq!(sent, serde_json::to_value(&new).unwrap());
    }
}
