//! What recording managed fields costs a write (`cargo bench -p skiff-core
//! --bench managed_fields`): a pod's create, and its node's first status
//! write (the costliest write of a pod's start), as the API server records
//! them. Prints microseconds per write, the copy of the object it works on
//! not counted.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_core::apply::{track_update, Manager};
use skiff_core::registry;
use skiff_core::schema::Root;

/// A pod as the API server stores it once bound: a service account's
/// token volume, defaults, a PodScheduled condition.
fn bound() -> Value {
    let mount = json!({"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "name": "kube-api-access-kwt25", "readOnly": true});
    let toleration = |key: &str| json!({"effect": "NoExecute", "key": key, "operator": "Exists", "tolerationSeconds": 300});
    json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "bench-00001", "namespace": "default", "generation": 1,
            "uid": "184f8618-95ab-4e8d-9531-668b8c52620b",
            "creationTimestamp": "2026-12-07T02:22:32Z", "labels": {"app": "bench", "shard": "11"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36",
                "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "volumeMounts": [mount]}],
            "dnsPolicy": "ClusterFirst", "enableServiceLinks": true, "nodeName": "sim-00000",
            "preemptionPolicy": "PreemptLowerPriority", "priority": 0, "restartPolicy": "Always",
            "schedulerName": "default-scheduler", "securityContext": {},
            "serviceAccount": "default", "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [toleration("node.kubernetes.io/not-ready"),
                toleration("node.kubernetes.io/unreachable")],
            "volumes": [{"name": "kube-api-access-kwt25", "projected": {"defaultMode": 420,
                "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}],
                        "name": "kube-root-ca.crt"}},
                    {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1",
                        "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}]}}]},
        "status": {"phase": "Pending", "qosClass": "Burstable",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": "2026-12-07T02:22:32Z", "observedGeneration": 1}]}})
}

/// The status the pod's node writes once its container runs.
fn running(bound: &Value) -> Value {
    let condition = |kind: &str| {
        json!({"type": kind, "status": "True", "observedGeneration": 1,
            "lastTransitionTime": "2026-12-07T02:22:33Z"})
    };
    let mut pod = bound.clone();
    let scheduled = pod["status"]["conditions"][0].clone();
    pod["status"] = json!({"phase": "Running", "qosClass": "Burstable",
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"),
            condition("Ready"), condition("ContainersReady"), scheduled],
        "containerStatuses": [{"name": "main", "image": "busybox:1.36", "imageID": "",
            "containerID": "containerd://container-2", "ready": true, "started": true,
            "restartCount": 0, "lastState": {},
            "state": {"running": {"startedAt": "2026-12-07T02:22:33Z"}},
            "allocatedResources": {"cpu": "100m", "memory": "128Mi"},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "volumeMounts": [{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "name": "kube-api-access-kwt25", "readOnly": true,
                "recursiveReadOnly": "Disabled"}]}],
        "hostIP": "192.0.2.1", "hostIPs": [{"ip": "192.0.2.1"}], "observedGeneration": 1,
        "podIP": "10.65.129.3", "podIPs": [{"ip": "10.65.129.3"}],
        "startTime": "2026-12-07T02:22:33Z"});
    pod
}

/// Microseconds per call of `f` on a fresh copy of `obj`, less the copy.
fn per_write(obj: &Value, mut f: impl FnMut(&mut Value)) -> f64 {
    let time = |f: &mut dyn FnMut(&mut Value)| {
        let (mut runs, started) = (0u32, Instant::now());
        while started.elapsed() < Duration::from_secs(1) {
            let mut copy = obj.clone();
            f(&mut copy);
            black_box(copy);
            runs += 1;
        }
        started.elapsed().as_secs_f64() * 1e6 / f64::from(runs)
    };
    let copy_only = time(&mut |_| {});
    time(&mut f) - copy_only
}

fn main() {
    let pods = registry::lookup("", "v1", "pods").expect("pods are served");
    let root = Root::of(pods);
    let manager = |name, subresource| Manager {
        name,
        api_version: "v1",
        subresource,
        status_apart: true,
    };
    let creator = manager("kubectl-create", None);
    let mut stored = bound();
    track_update(None, &mut stored, &creator, root.shape());
    let create = per_write(&bound(), |pod| {
        track_update(None, pod, &creator, root.shape())
    });
    let kubelet = manager("kubelet", Some("status"));
    let status = per_write(&running(&stored), |pod| {
        track_update(Some(&stored), pod, &kubelet, root.shape())
    });
    println!("managed fields of a pod create        {create:>7.1} µs");
    println!("managed fields of its status write    {status:>7.1} µs");
}
