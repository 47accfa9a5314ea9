//! The volume controllers against a fake API server: each step's writes
//! are fed back into the caches until nothing changes.

use std::sync::Arc;

use serde_json::{json, Value};
use skiff_core::volumes::{CLAIM_PROTECTION, LOCAL_PATH, LOCAL_PATH_ROOT, SELECTED_NODE};

use super::*;
use skiff_runtime::controller::Reconcile;
use skiff_runtime::fake::FakeCluster;

struct Bed {
    fake: Arc<FakeCluster>,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    claim_c: ClaimController,
    volume_c: VolumeController,
}

fn typed<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

impl Bed {
    fn new() -> Self {
        let fake = Arc::new(FakeCluster::default());
        let mut claims = Informer::default();
        let mut volumes = Informer::default();
        let mut classes = Informer::default();
        let nodes = Informer::default();
        let mut pods = Informer::default();
        let informers = Informers {
            claims: &mut claims,
            volumes: &mut volumes,
            classes: &mut classes,
            nodes: &nodes,
            pods: &mut pods,
        };
        let shared = Shared::new(informers, fake.clone(), Queue::new(), Queue::new());
        Self {
            fake,
            claims,
            volumes,
            classes,
            nodes,
            pods,
            claim_c: ClaimController {
                shared: shared.clone(),
            },
            volume_c: VolumeController { shared },
        }
    }

    fn put(&self, plural: &str, obj: Value) {
        let mut obj = obj;
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] =
                json!(format!("uid-{}", obj["metadata"]["name"].as_str().unwrap()));
        }
        self.fake.put(plural, obj);
        self.sync();
    }

    /// The caches as the cluster holds it now.
    fn sync(&self) {
        fn follow<K: skiff_runtime::cache::Object + serde::de::DeserializeOwned>(
            informer: &Informer<K>,
            objects: Vec<Value>,
        ) {
            let now: Vec<K> = objects.into_iter().map(typed).collect();
            let keys: Vec<String> = now.iter().map(key_of).collect();
            for old in informer.cache().list() {
                if !keys.contains(&key_of(&*old)) {
                    informer.delete(&old);
                }
            }
            for o in now {
                informer.apply(o);
            }
        }
        follow(&self.claims, self.fake.objects("persistentvolumeclaims"));
        follow(&self.volumes, self.fake.objects("persistentvolumes"));
        follow(&self.classes, self.fake.objects("storageclasses"));
        follow(&self.nodes, self.fake.objects("nodes"));
        follow(&self.pods, self.fake.objects("pods"));
    }

    /// Reconciles every claim and volume until the cluster stops changing.
    async fn settle(&self) {
        for _ in 0..20 {
            let before = self.snapshot();
            for c in self.claims.cache().list() {
                self.claim_c.reconcile(&key_of(&*c)).await.unwrap();
                self.sync();
            }
            for v in self.volumes.cache().list() {
                self.volume_c.reconcile(&v.name_any()).await.unwrap();
                self.sync();
            }
            if self.snapshot() == before {
                return;
            }
        }
        panic!("the volume controllers never settled");
    }

    fn snapshot(&self) -> Vec<Value> {
        let mut all = self.fake.objects("persistentvolumeclaims");
        all.extend(self.fake.objects("persistentvolumes"));
        all
    }

    fn claim(&self) -> Value {
        self.fake.objects("persistentvolumeclaims").remove(0)
    }

    fn volume(&self, name: &str) -> Option<Value> {
        let all = self.fake.objects("persistentvolumes");
        all.into_iter().find(|v| v["metadata"]["name"] == name)
    }
}

fn claim(class: Option<&str>, size: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "d", "resourceVersion": "1", "finalizers": [CLAIM_PROTECTION]},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "resources": {"requests": {"storage": size}}},
        "status": {"phase": "Pending"}})
}

fn host_volume(name: &str, size: &str, policy: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name, "resourceVersion": "1"},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "persistentVolumeReclaimPolicy": policy, "hostPath": {"path": format!("/srv/{name}")}}})
}

fn local_path_class() -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local-path"},
        "provisioner": LOCAL_PATH, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"})
}

#[tokio::test]
async fn a_claim_binds_the_smallest_volume_that_fits() {
    let bed = Bed::new();
    bed.put("persistentvolumes", host_volume("small", "512Mi", "Retain"));
    bed.put("persistentvolumes", host_volume("big", "10Gi", "Retain"));
    bed.put("persistentvolumes", host_volume("exact", "1Gi", "Retain"));
    bed.put("persistentvolumeclaims", claim(Some(""), "1Gi"));
    bed.settle().await;
    let c = bed.claim();
    assert_eq!(c["spec"]["volumeName"], "exact");
    assert_eq!(c["status"]["phase"], "Bound");
    assert_eq!(c["status"]["capacity"]["storage"], "1Gi");
    let exact = bed.volume("exact").unwrap();
    assert_eq!(exact["status"]["phase"], "Bound");
    assert_eq!(exact["spec"]["claimRef"]["uid"], "uid-data");
    assert_eq!(bed.volume("big").unwrap()["status"]["phase"], "Available");
    assert_eq!(bed.volume("small").unwrap()["status"]["phase"], "Available");

    // Retain: the claim goes, the volume stays Released.
    let mut deleted = bed.claim();
    deleted["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    bed.put("persistentvolumeclaims", deleted);
    bed.settle().await;
    assert_eq!(bed.claim()["metadata"]["finalizers"], json!([]));
    bed.fake.clear();
    let target = Target::of::<PersistentVolumeClaim>(Some("d"), "data");
    bed.fake.delete(&target, Default::default()).await.unwrap();
    bed.sync();
    bed.settle().await;
    assert_eq!(bed.volume("exact").unwrap()["status"]["phase"], "Released");
    let deleted = bed.fake.made("delete");
    assert!(
        !deleted.iter().any(|d| d.starts_with("persistentvolumes")),
        "{deleted:?}"
    );
}

#[tokio::test]
async fn no_volume_and_no_class_is_told() {
    let bed = Bed::new();
    bed.put("persistentvolumes", host_volume("small", "512Mi", "Retain"));
    bed.put("persistentvolumeclaims", claim(Some(""), "1Gi"));
    bed.settle().await;
    assert_eq!(bed.claim()["status"]["phase"], "Pending");
    let events = bed.fake.event_messages();
    assert_eq!(
        events,
        ["FailedBinding no persistent volumes available for this claim and no storage class is set"],
        "told once"
    );
}

/// A local path has no attributes to apply: a claim asking for a volume
/// attributes class is not provisioned, and is told why.
#[tokio::test]
async fn local_path_provisions_no_volume_attributes() {
    let bed = Bed::new();
    let mut class = local_path_class();
    class["volumeBindingMode"] = json!("Immediate");
    bed.put("storageclasses", class);
    let mut c = claim(Some("local-path"), "1Gi");
    c["spec"]["volumeAttributesClassName"] = json!("gold");
    bed.put("persistentvolumeclaims", c);
    bed.settle().await;
    assert_eq!(bed.claim()["status"]["phase"], "Pending");
    assert!(bed.fake.objects("persistentvolumes").is_empty());
    let events = bed.fake.event_messages();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("ProvisioningFailed") && e.contains("\"gold\"")),
        "{events:?}"
    );
}

#[tokio::test]
async fn local_path_waits_for_its_first_consumer_then_provisions_on_its_node() {
    let bed = Bed::new();
    bed.put("storageclasses", local_path_class());
    bed.put(
        "nodes",
        json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"},
        "annotations": {LOCAL_PATH_ROOT: "/var/lib/skiff/n1/local-path"}}}),
    );
    bed.put("persistentvolumeclaims", claim(Some("local-path"), "1Gi"));
    bed.settle().await;
    assert!(bed.fake.objects("persistentvolumes").is_empty());
    assert_eq!(
        bed.fake.event_messages(),
        ["WaitForFirstConsumer waiting for first consumer to be created before binding"]
    );

    let mut chosen = bed.claim();
    chosen["metadata"]["annotations"] = json!({SELECTED_NODE: "n1"});
    bed.put("persistentvolumeclaims", chosen);
    bed.settle().await;
    let pv = bed.volume("pvc-uid-data").expect("a volume is provisioned");
    assert_eq!(
        pv["spec"]["local"]["path"],
        "/var/lib/skiff/n1/local-path/pvc-uid-data"
    );
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["values"],
        json!(["n1"])
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["status"]["phase"], "Bound");
    let c = bed.claim();
    assert_eq!(c["spec"]["volumeName"], "pvc-uid-data");
    assert_eq!(c["status"]["phase"], "Bound");
    assert!(bed.fake.event_messages().contains(
        &"ProvisioningSucceeded Successfully provisioned volume pvc-uid-data".to_owned()
    ));

    // Delete: once the claim is gone, so is the volume.
    let target = Target::of::<PersistentVolumeClaim>(Some("d"), "data");
    bed.fake.delete(&target, Default::default()).await.unwrap();
    bed.sync();
    bed.settle().await;
    assert!(bed
        .fake
        .made("delete")
        .contains(&"persistentvolumes pvc-uid-data".to_owned()));
}

#[tokio::test]
async fn a_claim_in_use_keeps_its_finalizer_until_its_pod_finishes() {
    let bed = Bed::new();
    bed.put("persistentvolumes", host_volume("exact", "1Gi", "Retain"));
    bed.put("persistentvolumeclaims", claim(Some(""), "1Gi"));
    let pod = json!({"metadata": {"name": "p", "namespace": "d"},
        "spec": {"containers": [], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]},
        "status": {"phase": "Running"}});
    bed.put("pods", pod.clone());
    bed.settle().await;
    let mut deleted = bed.claim();
    deleted["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    bed.put("persistentvolumeclaims", deleted);
    bed.settle().await;
    assert_eq!(
        bed.claim()["metadata"]["finalizers"],
        json!([CLAIM_PROTECTION])
    );
    let mut done = pod;
    done["status"]["phase"] = json!("Succeeded");
    bed.put("pods", done);
    bed.settle().await;
    assert_eq!(bed.claim()["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn a_bound_local_path_claim_grows() {
    let bed = Bed::new();
    bed.put("storageclasses", local_path_class());
    bed.put(
        "nodes",
        json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"},
        "annotations": {LOCAL_PATH_ROOT: "/v"}}}),
    );
    let mut c = claim(Some("local-path"), "1Gi");
    c["metadata"]["annotations"] = json!({SELECTED_NODE: "n1"});
    bed.put("persistentvolumeclaims", c);
    bed.settle().await;
    let mut grown = bed.claim();
    grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    bed.put("persistentvolumeclaims", grown);
    bed.settle().await;
    assert_eq!(bed.claim()["status"]["capacity"]["storage"], "2Gi");
    assert_eq!(
        bed.volume("pvc-uid-data").unwrap()["spec"]["capacity"]["storage"],
        "2Gi"
    );
}

#[tokio::test]
async fn a_node_that_cannot_keep_the_volume_is_taken_back_off_the_claim() {
    let bed = Bed::new();
    bed.put("storageclasses", local_path_class());
    // n1's agent publishes no local-path root.
    bed.put(
        "nodes",
        json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}}),
    );
    let mut c = claim(Some("local-path"), "1Gi");
    c["metadata"]["annotations"] = json!({SELECTED_NODE: "n1"});
    bed.put("persistentvolumeclaims", c);
    bed.settle().await;
    assert!(bed.fake.objects("persistentvolumes").is_empty());
    assert!(
        bed.claim()["metadata"]["annotations"][SELECTED_NODE].is_null(),
        "the scheduler may choose again: {}",
        bed.claim()
    );
    assert!(bed
        .fake
        .event_messages()
        .iter()
        .any(|m| m.starts_with("ProvisioningFailed node \"n1\" keeps no local-path volumes")));
}
