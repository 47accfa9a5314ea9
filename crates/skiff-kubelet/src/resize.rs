//! In-place resize of a pod's containers, as upstream's kubelet does it:
//! what the spec asks for is allocated once it fits the node beside what
//! the node's other pods were allocated (else the resize waits,
//! `Infeasible` when the node could never hold it, `Deferred` otherwise),
//! then applied to each running container through the runtime, or by a
//! restart where the container's resize policy asks for one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_core::node_fit::{allocatable, pod_requests, Resources};
use skiff_core::pod_containers::long_running;

/// What a resize changes of a container: its cpu and memory requests and
/// limits, as written. The rest of its resources stays as its spec says,
/// so only these are kept (not a copy of the whole).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Size {
    requests: [Option<Quantity>; 2],
    limits: [Option<Quantity>; 2],
}

/// The resources a resize changes, in [`Size`]'s order.
const RESIZABLE: [&str; 2] = ["cpu", "memory"];

fn pick(list: Option<&BTreeMap<String, Quantity>>) -> [Option<&Quantity>; 2] {
    RESIZABLE.map(|name| list.and_then(|l| l.get(name)))
}

impl Size {
    /// The size `resources` give.
    pub fn of(resources: Option<&ResourceRequirements>) -> Self {
        let owned = |list| pick(list).map(|q| q.cloned());
        Self {
            requests: owned(resources.and_then(|r| r.requests.as_ref())),
            limits: owned(resources.and_then(|r| r.limits.as_ref())),
        }
    }

    /// Whether `resources` give this size.
    pub fn is(&self, resources: Option<&ResourceRequirements>) -> bool {
        let same = |held: &[Option<Quantity>; 2], list| {
            held.iter().zip(pick(list)).all(|(h, q)| h.as_ref() == q)
        };
        same(&self.requests, resources.and_then(|r| r.requests.as_ref()))
            && same(&self.limits, resources.and_then(|r| r.limits.as_ref()))
    }

    /// `base` (a container's spec) at this size.
    pub fn onto(&self, base: Option<&ResourceRequirements>) -> ResourceRequirements {
        let mut out = base.cloned().unwrap_or_default();
        let set = |list: &mut Option<BTreeMap<String, Quantity>>, held: &[Option<Quantity>; 2]| {
            for (name, q) in RESIZABLE.iter().zip(held) {
                match q {
                    Some(q) => {
                        _ = list
                            .get_or_insert_default()
                            .insert((*name).into(), q.clone())
                    }
                    None => _ = list.as_mut().and_then(|l| l.remove(*name)),
                }
            }
            if list.as_ref().is_some_and(|l| l.is_empty()) {
                *list = None;
            }
        };
        set(&mut out.requests, &self.requests);
        set(&mut out.limits, &self.limits);
        out
    }

    /// The memory limit, in bytes.
    pub fn memory_limit(&self) -> Option<i128> {
        let q = self.limits[1].as_ref()?;
        skiff_core::quantity::parse_milli(&q.0).map(|m| m / 1000)
    }

    /// Whether `resource` (cpu or memory) differs between the two sizes.
    fn differs(&self, other: &Self, resource: &str) -> bool {
        let Some(i) = RESIZABLE.iter().position(|r| *r == resource) else {
            return false;
        };
        self.requests[i] != other.requests[i] || self.limits[i] != other.limits[i]
    }
}

/// Values by container name, kept in a vector: a pod has few containers,
/// and a map's table would cost more than its entries.
#[derive(Clone, Debug, PartialEq)]
pub struct ByName<T>(Vec<(String, T)>);

impl<T> Default for ByName<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> ByName<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        self.0.iter_mut().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value for `name`, made by `new` when there is none.
    pub fn get_or_insert_with(&mut self, name: &str, new: impl FnOnce() -> T) -> &mut T {
        let i = match self.0.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.0.push((name.to_owned(), new()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    pub fn insert(&mut self, name: &str, value: T) {
        match self.get_mut(name) {
            Some(slot) => *slot = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }
}

impl<T> FromIterator<(String, T)> for ByName<T> {
    fn from_iter<I: IntoIterator<Item = (String, T)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Sizes by container name, for the containers a resize reaches: the
/// app's and its sidecars.
pub type ByContainer = ByName<Size>;

/// What the spec asks for.
pub fn desired(spec: &PodSpec) -> ByContainer {
    long_running(spec)
        .map(|c| (c.name.clone(), Size::of(c.resources.as_ref())))
        .collect()
}

/// Whether `spec` asks for what `held` holds, container by container.
pub fn asks(spec: &PodSpec, held: &ByContainer) -> bool {
    let mut count = 0;
    let same = long_running(spec).all(|c| {
        count += 1;
        held.get(&c.name)
            .is_some_and(|h| h.is(c.resources.as_ref()))
    });
    same && count == held.0.len()
}

/// What the pod held when this agent first synced it: the resources its
/// status reports (an agent before this one allocated them), else those
/// its spec asks for.
pub fn initial(pod: &Pod) -> ByContainer {
    let mut held = desired(pod.spec.as_ref().unwrap_or(&PodSpec::default()));
    let status = pod.status.as_ref();
    let statuses = status.and_then(|s| s.container_statuses.as_ref());
    let init = status.and_then(|s| s.init_container_statuses.as_ref());
    for s in statuses.into_iter().chain(init).flatten() {
        if let (Some(reported), Some(slot)) = (&s.resources, held.get_mut(&s.name)) {
            *slot = Size::of(Some(reported));
        }
    }
    held
}

/// What containers were given: their sizes, by name.
pub fn sizes(applied: &ByName<(String, Size)>) -> ByContainer {
    let given = applied.0.iter();
    given
        .map(|(name, (_, size))| (name.clone(), size.clone()))
        .collect()
}

/// Whether every container holds what it was allocated.
pub fn settled(allocated: &ByContainer, applied: &ByName<(String, Size)>) -> bool {
    (applied.0.iter()).all(|(name, (_, size))| allocated.get(name).is_none_or(|a| a == size))
}

/// `pod`'s requests were its containers to hold `held` (what its status
/// tells is left out).
pub fn requests(pod: &Pod, held: &ByContainer) -> Resources {
    let mut sized = pod.clone();
    sized.status = None;
    if let Some(spec) = sized.spec.as_mut() {
        let init = spec.init_containers.iter_mut().flatten();
        for c in init.chain(spec.containers.iter_mut()) {
            if let Some(size) = held.get(&c.name) {
                c.resources = Some(size.onto(c.resources.as_ref()));
            }
        }
    }
    pod_requests(&sized)
}

/// Why a resize waits: upstream's `PodResizePending` reason and message.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub reason: &'static str,
    pub message: String,
}

/// Whether a pod needing `want` fits `node` beside pods holding `others`,
/// in upstream's words where it does not.
pub fn fits(want: &Resources, node: &Node, others: &Resources) -> Result<(), Pending> {
    let have = allocatable(node);
    for name in ["cpu", "memory"] {
        // cpu is counted in millicores, memory in bytes.
        let unit = if name == "cpu" { 1 } else { 1000 };
        let (w, used, cap) = (want.get(name), others.get(name), have.get(name));
        if w > cap {
            return Err(Pending {
                reason: "Infeasible",
                message: format!(
                    "Node didn't have enough capacity: {name}, requested: {}, capacity: {}",
                    w / unit,
                    cap / unit
                ),
            });
        }
        if w > cap - used {
            return Err(Pending {
                reason: "Deferred",
                message: format!(
                    "Node didn't have enough resource: {name}, requested: {}, used: {}, capacity: {}",
                    w / unit,
                    used / unit,
                    cap / unit
                ),
            });
        }
    }
    Ok(())
}

/// Whether taking `c` from `from` to `to` needs it restarted: a resource
/// that changed has the `RestartContainer` policy.
pub fn needs_restart(c: &Container, from: &Size, to: &Size) -> bool {
    c.resize_policy
        .iter()
        .flatten()
        .any(|p| p.restart_policy == "RestartContainer" && from.differs(to, &p.resource_name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node() -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n"},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}}))
        .unwrap()
    }

    fn pod(cpu: &str) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [{"name": "c",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
            "resizePolicy": [{"resourceName": "memory", "restartPolicy": "RestartContainer"}]}]}}))
        .unwrap()
    }

    #[test]
    fn a_resize_waits_until_it_fits_and_is_refused_past_the_node() {
        let others = requests(&pod("1500m"), &ByContainer::default());
        let p = pod("100m");
        let mut held = desired(p.spec.as_ref().unwrap());
        assert!(fits(&requests(&p, &held), &node(), &others).is_ok());
        held.get_mut("c").unwrap().requests[0] = Some(Quantity("1".into()));
        let deferred = fits(&requests(&p, &held), &node(), &others).unwrap_err();
        assert_eq!(deferred.reason, "Deferred");
        assert_eq!(
            deferred.message,
            "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
        );
        let infeasible = fits(
            &requests(&pod("3"), &ByContainer::default()),
            &node(),
            &others,
        );
        assert_eq!(
            infeasible.unwrap_err(),
            Pending {
                reason: "Infeasible",
                message: "Node didn't have enough capacity: cpu, requested: 3000, capacity: 2000"
                    .into()
            }
        );
    }

    #[test]
    fn only_a_changed_resource_with_the_restart_policy_restarts() {
        let p = pod("100m");
        let c = &p.spec.as_ref().unwrap().containers[0];
        let from = Size::of(c.resources.as_ref());
        let mut cpu = from.clone();
        cpu.requests[0] = Some(Quantity("200m".into()));
        assert!(!needs_restart(c, &from, &cpu));
        let mut memory = from.clone();
        memory.requests[1] = Some(Quantity("128Mi".into()));
        assert!(needs_restart(c, &from, &memory));
    }

    #[test]
    fn what_an_agent_reported_is_what_the_pod_holds() {
        let mut p = pod("100m");
        assert_eq!(initial(&p), desired(p.spec.as_ref().unwrap()));
        assert!(asks(p.spec.as_ref().unwrap(), &initial(&p)));
        p.status = serde_json::from_value(json!({"containerStatuses": [{"name": "c",
            "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "resources": {"requests": {"cpu": "50m"}}}]}))
        .unwrap();
        let held = initial(&p);
        assert_eq!(
            held.get("c").unwrap().requests[0],
            Some(Quantity("50m".into()))
        );
        assert_eq!(held.get("c").unwrap().requests[1], None);
        assert!(!asks(p.spec.as_ref().unwrap(), &held));
    }

    #[test]
    fn a_size_changes_only_cpu_and_memory_of_the_spec() {
        let spec: ResourceRequirements = serde_json::from_value(json!({
            "requests": {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "64Mi"}}))
        .unwrap();
        let size = Size::of(Some(
            &serde_json::from_value(json!({
            "requests": {"cpu": "200m", "memory": "64Mi"}}))
            .unwrap(),
        ));
        assert!(!size.is(Some(&spec)));
        let sized = size.onto(Some(&spec));
        assert_eq!(
            serde_json::to_value(&sized).unwrap(),
            json!({"requests": {"cpu": "200m", "memory": "64Mi", "ephemeral-storage": "1Gi"}})
        );
        assert!(size.is(Some(&sized)));
        assert_eq!(Size::of(Some(&spec)).memory_limit(), Some(64 << 20));
        assert_eq!(size.memory_limit(), None);
    }
}
