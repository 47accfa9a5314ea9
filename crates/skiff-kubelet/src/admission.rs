//! The agent's admission of a pod bound to its node, as upstream's
//! kubelet admits a pod before running it: a pod that names its node never
//! met the scheduler, and a node may have changed since a pod was placed.
//! The pod must fit beside the pods admitted before it (resources and host
//! ports), match the node's selector and affinity and tolerate its
//! NoExecute taints; otherwise it fails with upstream's reason.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_core::node_fit::{allocatable, pod_requests, HostPort};
use skiff_core::placement::{node_selected, tolerated};

/// Why the node refuses a pod: the pod's reason and message when it fails.
#[derive(Debug, PartialEq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

impl Rejection {
    /// A failed scheduler predicate, worded as upstream's
    /// `PredicateFailureError`.
    fn predicate(name: &str, why: &str) -> Self {
        Self {
            reason: name.into(),
            message: format!("Predicate {name} failed: {why}"),
        }
    }
}

/// What admission reads of a node: its name, labels and taints, and what
/// it offers. A simulated agent holds thousands of nodes, so it keeps no
/// more.
pub fn what_it_reads(node: Node) -> Node {
    let status = node.status.map(|s| NodeStatus {
        capacity: s.capacity.filter(|_| s.allocatable.is_none()),
        allocatable: s.allocatable,
        ..Default::default()
    });
    Node {
        metadata: ObjectMeta {
            name: node.metadata.name,
            labels: node.metadata.labels,
            ..Default::default()
        },
        spec: node.spec.map(|s| NodeSpec {
            taints: s.taints,
            ..Default::default()
        }),
        status,
    }
}

/// Whether the node admits `pod` beside `others`, the pods it admitted
/// before that are still active; upstream's checks in upstream's order,
/// the first failure given.
pub fn admit(pod: &Pod, node: &Node, others: &[Arc<Pod>]) -> Result<(), Rejection> {
    static NONE: std::sync::LazyLock<PodSpec> = std::sync::LazyLock::new(PodSpec::default);
    let spec = pod.spec.as_ref().unwrap_or(&NONE);
    if spec.os.as_ref().is_some_and(|os| os.name != "linux") {
        return Err(Rejection {
            reason: "PodOSNotSupported".into(),
            message: "Failed to admit pod as the OS field doesn't match node OS".into(),
        });
    }
    resources(pod, node, others)?;
    if !node_selected(spec, node) {
        let why = "node(s) didn't match Pod's node affinity/selector";
        return Err(Rejection::predicate("NodeAffinity", why));
    }
    let wanted = HostPort::of(pod);
    if !wanted.is_empty() {
        let held: Vec<HostPort> = others.iter().flat_map(|p| HostPort::of(p)).collect();
        if wanted.iter().any(|w| held.iter().any(|h| w.conflicts(h))) {
            let why = "node(s) didn't have free ports for the requested pod ports";
            return Err(Rejection::predicate("NodePorts", why));
        }
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints = node.spec.iter().flat_map(|s| s.taints.iter().flatten());
    let mut no_execute = taints.filter(|t| t.effect == "NoExecute");
    if no_execute.any(|t| !tolerated(tolerations, t)) {
        let why = "node(s) had taints that the pod didn't tolerate";
        return Err(Rejection::predicate("TaintToleration", why));
    }
    Ok(())
}

/// Upstream's resource fit: a pod slot, then each resource the pod
/// requests against what the node offers less what `others` request.
/// Extended resources the node does not offer at all are left to their
/// device plugins, as upstream leaves them.
fn resources(pod: &Pod, node: &Node, others: &[Arc<Pod>]) -> Result<(), Rejection> {
    let have = allocatable(node);
    let short = |name: &str, requested: i128, used: i128, capacity: i128| {
        // cpu is counted in millicores, everything else in units.
        let unit = if name == "cpu" { 1 } else { 1000 };
        Rejection {
            reason: format!("OutOf{name}"),
            message: format!(
                "Node didn't have enough resource: {name}, requested: {}, used: {}, capacity: {}",
                requested / unit,
                used / unit,
                capacity / unit
            ),
        }
    };
    let count = others.len() as i128;
    if count + 1 > have.pods / 1000 {
        return Err(short("pods", 1000, count * 1000, have.pods));
    }
    let want = pod_requests(pod);
    let mut used = skiff_core::node_fit::Resources::default();
    for p in others {
        used.add(&pod_requests(p), 1);
    }
    let offered = |name: &str| !name.contains('/') || have.extended.contains_key(name);
    let named = ["cpu", "memory", "ephemeral-storage"];
    let extended = want.extended.keys().map(String::as_str);
    for name in named.into_iter().chain(extended) {
        let (w, u, h) = (want.get(name), used.get(name), have.get(name));
        if w > 0 && offered(name) && w > h - u {
            return Err(short(name, w, u, h));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn node(extra: Value) -> Node {
        let mut n = json!({"metadata": {"name": "n", "labels": {"disk": "ssd"}},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "3"}}});
        if let Some(spec) = extra.get("spec") {
            n["spec"] = spec.clone();
        }
        serde_json::from_value(n).unwrap()
    }

    fn pod(spec: Value) -> Arc<Pod> {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "i"}]);
        }
        Arc::new(serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap())
    }

    fn asking(cpu: &str, host_port: Option<i32>) -> Arc<Pod> {
        let mut c = json!({"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}});
        if let Some(port) = host_port {
            c["ports"] = json!([{"containerPort": 80, "hostPort": port}]);
        }
        pod(json!({"containers": [c]}))
    }

    fn reason(pod: &Pod, node: &Node, others: &[Arc<Pod>]) -> Option<String> {
        admit(pod, node, others).err().map(|r| r.reason)
    }

    #[test]
    fn a_pod_fits_beside_the_pods_admitted_before_it() {
        let n = node(json!({}));
        let one = asking("1500m", Some(8080));
        assert_eq!(reason(&one, &n, &[]), None);
        let err = admit(&asking("600m", None), &n, std::slice::from_ref(&one)).unwrap_err();
        assert_eq!(err.reason, "OutOfcpu");
        assert_eq!(
            err.message,
            "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"
        );
        assert_eq!(
            reason(&asking("500m", None), &n, std::slice::from_ref(&one)),
            None
        );
        let err = admit(&asking("100m", Some(8080)), &n, std::slice::from_ref(&one)).unwrap_err();
        assert_eq!(
            (err.reason.as_str(), err.message.as_str()),
            (
                "NodePorts",
                "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
            )
        );
        let full = [asking("0", None), asking("0", None), asking("0", None)];
        assert_eq!(
            reason(&asking("0", None), &n, &full).as_deref(),
            Some("OutOfpods")
        );
        // An extended resource the node does not offer is its device
        // plugin's to refuse.
        let gpu = pod(json!({"containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"example.com/gpu": "1"}}}]}));
        assert_eq!(reason(&gpu, &n, &[]), None);
    }

    #[test]
    fn a_pod_must_match_the_node_and_tolerate_its_no_execute_taints() {
        let n = node(json!({}));
        let picky = pod(json!({"nodeSelector": {"disk": "hdd"}}));
        assert_eq!(reason(&picky, &n, &[]).as_deref(), Some("NodeAffinity"));
        let tainted = |effect: &str| {
            node(json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": effect}]}}))
        };
        let plain = pod(json!({}));
        assert_eq!(
            reason(&plain, &tainted("NoExecute"), &[]).as_deref(),
            Some("TaintToleration")
        );
        assert_eq!(reason(&plain, &tainted("NoSchedule"), &[]), None);
        let tolerant = pod(json!({"tolerations": [{"key": "k", "operator": "Exists"}]}));
        assert_eq!(reason(&tolerant, &tainted("NoExecute"), &[]), None);
        let windows = pod(json!({"os": {"name": "windows"}}));
        assert_eq!(
            reason(&windows, &n, &[]).as_deref(),
            Some("PodOSNotSupported")
        );
    }
}
