//! NodeVolumeLimits, as upstream's CSI limits: a node's CSINode says how
//! many volumes of each driver it can attach
//! (`spec.drivers[].allocatable.count`); a pod fits only if the distinct
//! volumes of that driver its pods and it use stay within. A volume counts
//! by its PersistentVolume when its claim is bound to a CSI one, by its
//! claim while the claim waits for a class whose provisioner is the
//! driver, and inline CSI volumes by pod and name. Drivers a node gives no
//! count for are not limited.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{CycleState, Filter, Status};
use crate::node_info::{NodeInfo, PodVolume};
use crate::plugins::volume_binding::{View, Volumes};

pub const EXCEEDED: &str = "node(s) exceed max volume count";

pub struct NodeVolumeLimits {
    pub volumes: Arc<Volumes>,
}

/// A counted volume: its driver and what tells it apart.
type Counted = (String, String);

/// What `volume` of a pod in `ns` named `pod` counts as, if anything.
fn counted(view: &View, ns: &str, pod: &str, volume: &PodVolume) -> Option<Counted> {
    match volume {
        PodVolume::Inline { driver, name } => {
            Some((driver.clone(), format!("inline/{ns}/{pod}/{name}")))
        }
        PodVolume::Claim(claim) => {
            let claim = view.claims.get(&format!("{ns}/{claim}"))?;
            let bound = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
            match bound.filter(|n| !n.is_empty()) {
                Some(name) => {
                    let pv = view.volumes.get(name)?;
                    let csi = pv.spec.as_ref()?.csi.as_ref()?;
                    Some((csi.driver.clone(), format!("pv/{name}")))
                }
                None => {
                    let class = view.classes.get(skiff_core::volumes::claim_class(claim))?;
                    let name = claim.metadata.name.as_deref().unwrap_or_default();
                    Some((class.provisioner.clone(), format!("claim/{ns}/{name}")))
                }
            }
        }
    }
}

/// The node's limits, by driver.
fn limits(view: &View, node: &str) -> HashMap<String, usize> {
    let Some(csi_node) = view.csi_nodes.get(node) else {
        return HashMap::new();
    };
    csi_node
        .spec
        .drivers
        .iter()
        .filter_map(|d| {
            let count = d.allocatable.as_ref()?.count?;
            Some((d.name.clone(), usize::try_from(count).unwrap_or(0)))
        })
        .collect()
}

impl Filter for NodeVolumeLimits {
    fn name(&self) -> &'static str {
        "NodeVolumeLimits"
    }

    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let asked = PodVolume::of(pod);
        if asked.is_empty() {
            return Status::Success;
        }
        let view = self.volumes.read();
        let limits = limits(&view, node.name());
        if limits.is_empty() {
            return Status::Success;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let new: BTreeSet<Counted> = asked
            .iter()
            .filter_map(|v| counted(&view, ns, name, v))
            .filter(|(driver, _)| limits.contains_key(driver))
            .collect();
        if new.is_empty() {
            return Status::Success;
        }
        let mut attached: BTreeSet<Counted> = BTreeSet::new();
        for placed in &node.pods {
            for v in &placed.volumes {
                if let Some(c) = counted(&view, &placed.namespace, &placed.name, v) {
                    attached.insert(c);
                }
            }
        }
        for (driver, limit) in &limits {
            let used = attached.iter().filter(|(d, _)| d == driver).count();
            let more = new
                .iter()
                .filter(|c| &c.0 == driver && !attached.contains(*c))
                .count();
            if more > 0 && used + more > *limit {
                return Status::unschedulable(EXCEEDED);
            }
        }
        Status::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{plain, pod};
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
    use serde_json::json;

    fn claim(name: &str, class: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"storageClassName": class, "volumeName": volume}}))
        .unwrap()
    }

    fn csi_volume(name: &str, driver: &str) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"csi": {"driver": driver, "volumeHandle": name}}}))
        .unwrap()
    }

    fn using(claims: &[&str]) -> Pod {
        let volumes: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        pod(json!({"volumes": volumes}))
    }

    #[test]
    fn distinct_volumes_of_a_limited_driver_stay_within_the_count() {
        let volumes = Arc::new(Volumes::default());
        let plugin = NodeVolumeLimits {
            volumes: volumes.clone(),
        };
        volumes.put(
            serde_json::from_value::<CSINode>(json!({"metadata": {"name": "n"},
                "spec": {"drivers": [{"name": "disk.example.com", "nodeID": "n", "allocatable": {"count": 2}},
                    {"name": "free.example.com", "nodeID": "n"}]}}))
            .unwrap(),
        );
        volumes.put(
            serde_json::from_value::<StorageClass>(
                json!({"metadata": {"name": "disks"}, "provisioner": "disk.example.com"}),
            )
            .unwrap(),
        );
        for i in 1..=3 {
            volumes.put(csi_volume(&format!("pv{i}"), "disk.example.com"));
            volumes.put(claim(&format!("c{i}"), "", Some(&format!("pv{i}"))));
        }
        volumes.put(csi_volume("other", "free.example.com"));
        volumes.put(claim("unlimited", "", Some("other")));
        volumes.put(claim("waiting", "disks", None));
        let mut node = plain("n");
        let state = CycleState::default();
        assert_eq!(
            plugin.filter(&state, &using(&["c1", "c2"]), &node),
            Status::Success
        );
        let mut placed = using(&["c1", "c2"]);
        placed.metadata.name = Some("first".into());
        node.account(&placed, 1);
        // A third distinct volume goes over; sharing one already there does not.
        let third = plugin.filter(&state, &using(&["c3"]), &node);
        assert_eq!(third, Status::unschedulable(EXCEEDED));
        let waiting = plugin.filter(&state, &using(&["waiting"]), &node);
        assert_eq!(waiting, Status::unschedulable(EXCEEDED));
        assert_eq!(
            plugin.filter(&state, &using(&["c1"]), &node),
            Status::Success
        );
        assert_eq!(
            plugin.filter(&state, &using(&["unlimited"]), &node),
            Status::Success
        );
        // Another node without a CSINode has no limits.
        assert_eq!(
            plugin.filter(&state, &using(&["c3"]), &plain("m")),
            Status::Success
        );
        let inline =
            pod(json!({"volumes": [{"name": "scratch", "csi": {"driver": "disk.example.com"}}]}));
        assert_eq!(
            plugin.filter(&state, &inline, &node),
            Status::unschedulable(EXCEEDED)
        );
    }
}
