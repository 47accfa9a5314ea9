//! In-place resize of a pod's containers, as upstream's kubelet does it:
//! what the spec asks for is allocated once it fits the node beside what
//! the node's other pods were allocated (else the resize waits,
//! `Infeasible` when the node could never hold it, `Deferred` otherwise),
//! then applied to each running container through the runtime, or by a
//! restart where the container's resize policy asks for one.

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ResourceRequirements};
use skiff_core::node_fit::{allocatable, Resources};
use skiff_core::pod_containers::long_running;

/// The resources `spec` asks for its container `name`, if a resize
/// reaches it (an app container or a sidecar).
pub fn asked<'a>(spec: &'a PodSpec, name: &str) -> Option<&'a ResourceRequirements> {
    long_running(spec)
        .find(|c| c.name == name)
        .and_then(|c| c.resources.as_ref())
}

/// Whether two specs ask the same resources of every container a resize
/// reaches.
pub fn same_resources(a: &PodSpec, b: &PodSpec) -> bool {
    let mut others = long_running(b);
    long_running(a).all(|c| {
        others
            .next()
            .is_some_and(|o| o.name == c.name && o.resources == c.resources)
    }) && others.next().is_none()
}

/// What the pod held when this agent first synced it, where that is not
/// what its spec asks: the resources its status reports (an agent before
/// this one allocated them), as the pod they make.
pub fn held_before(pod: &Pod) -> Option<Pod> {
    let status = pod.status.as_ref()?;
    let statuses = status.container_statuses.iter().flatten();
    let reported = statuses.chain(status.init_container_statuses.iter().flatten());
    let spec = pod.spec.as_ref()?;
    let differs = |name: &str, r: &ResourceRequirements| {
        long_running(spec).any(|c| c.name == name && c.resources.clone().unwrap_or_default() != *r)
    };
    let held: Vec<(&str, &ResourceRequirements)> = reported
        .filter_map(|s| Some((s.name.as_str(), s.resources.as_ref()?)))
        .filter(|(name, r)| differs(name, r))
        .collect();
    if held.is_empty() {
        return None;
    }
    let mut sized = pod.clone();
    let spec = sized.spec.as_mut()?;
    let init = spec.init_containers.iter_mut().flatten();
    for c in init.chain(spec.containers.iter_mut()) {
        if let Some((_, r)) = held.iter().find(|(name, _)| *name == c.name) {
            c.resources = Some((*r).clone());
        }
    }
    Some(sized)
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
    use skiff_core::node_fit::pod_requests;

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
        let others = pod_requests(&pod("1500m"));
        assert!(fits(&pod_requests(&pod("100m")), &node(), &others).is_ok());
        let deferred = fits(&pod_requests(&pod("1")), &node(), &others).unwrap_err();
        assert_eq!(deferred.reason, "Deferred");
        assert_eq!(
            deferred.message,
            "Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000"
        );
        let infeasible = fits(&pod_requests(&pod("3")), &node(), &others);
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
        assert!(same_resources(
            p.spec.as_ref().unwrap(),
            pod("100m").spec.as_ref().unwrap()
        ));
        assert!(!same_resources(
            p.spec.as_ref().unwrap(),
            pod("200m").spec.as_ref().unwrap()
        ));
        assert!(held_before(&p).is_none());
        p.status = serde_json::from_value(json!({"containerStatuses": [{"name": "c",
            "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "resources": {"requests": {"cpu": "50m"}}}]}))
        .unwrap();
        let held = held_before(&p).unwrap();
        let spec = held.spec.as_ref().unwrap();
        assert_eq!(
            asked(spec, "c").unwrap().requests.as_ref().unwrap()["cpu"].0,
            "50m"
        );
    }
}
