//! In-place resize of a pod's containers, as upstream's kubelet does it:
//! what the spec asks for is allocated once it fits the node beside what
//! the node's other pods were allocated (else the resize waits,
//! `Infeasible` when the node could never hold it, `Deferred` otherwise),
//! then applied to each running container through the runtime, or by a
//! restart where the container's resize policy asks for one.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ResourceRequirements};
use skiff_core::node_fit::{allocatable, pod_requests, Resources};
use skiff_core::pod_containers::long_running;

/// Resources by container name, for the containers a resize reaches: the
/// app's and its sidecars.
pub type ByContainer = HashMap<String, ResourceRequirements>;

/// What the spec asks for.
pub fn desired(spec: &PodSpec) -> ByContainer {
    let asked = |c: &Container| c.resources.clone().unwrap_or_default();
    long_running(spec)
        .map(|c| (c.name.clone(), asked(c)))
        .collect()
}

/// Whether `spec` asks for what `held` holds, container by container.
pub fn asks(spec: &PodSpec, held: &ByContainer) -> bool {
    let mut count = 0;
    let same = long_running(spec).all(|c| {
        count += 1;
        let asked = c.resources.as_ref();
        held.get(&c.name)
            .is_some_and(|h| asked.map_or(*h == ResourceRequirements::default(), |a| a == h))
    });
    same && count == held.len()
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
            slot.clone_from(reported);
        }
    }
    held
}

/// `pod`'s requests were its containers to hold `held`.
pub fn requests(pod: &Pod, held: &ByContainer) -> Resources {
    let mut sized = pod.clone();
    if let Some(spec) = sized.spec.as_mut() {
        let init = spec.init_containers.iter_mut().flatten();
        for c in init.chain(spec.containers.iter_mut()) {
            if let Some(r) = held.get(&c.name) {
                c.resources = Some(r.clone());
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
pub fn needs_restart(
    c: &Container,
    from: &ResourceRequirements,
    to: &ResourceRequirements,
) -> bool {
    let amount = |r: &ResourceRequirements, part: bool, name: &str| {
        let list = if part { &r.requests } else { &r.limits };
        list.as_ref().and_then(|l| l.get(name)).map(|q| q.0.clone())
    };
    let changed = |name: &str| {
        [true, false]
            .iter()
            .any(|part| amount(from, *part, name) != amount(to, *part, name))
    };
    c.resize_policy
        .iter()
        .flatten()
        .any(|p| p.restart_policy == "RestartContainer" && changed(&p.resource_name))
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
        let others = requests(&pod("1500m"), &ByContainer::new());
        let p = pod("100m");
        let mut held = desired(p.spec.as_ref().unwrap());
        assert!(fits(&requests(&p, &held), &node(), &others).is_ok());
        held.get_mut("c")
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert(
                "cpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        let deferred = fits(&requests(&p, &held), &node(), &others).unwrap_err();
        assert_eq!(deferred.reason, "Deferred");
        assert_eq!(
            deferred.message,
            "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
        );
        let infeasible = fits(&requests(&pod("3"), &ByContainer::new()), &node(), &others);
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
        let from = c.resources.clone().unwrap();
        let mut cpu = from.clone();
        let q = |s: &str| k8s_openapi::apimachinery::pkg::api::resource::Quantity(s.into());
        cpu.requests
            .as_mut()
            .unwrap()
            .insert("cpu".into(), q("200m"));
        assert!(!needs_restart(c, &from, &cpu));
        let mut memory = from.clone();
        memory
            .requests
            .as_mut()
            .unwrap()
            .insert("memory".into(), q("128Mi"));
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
        assert_eq!(held["c"].requests.as_ref().unwrap()["cpu"].0, "50m");
        assert!(!asks(p.spec.as_ref().unwrap(), &held));
    }
}
