//! Persistent storage end to end, with real containers and the real
//! kubectl: an emptyDir dies with its pod while a claim's files outlive
//! it; static volumes bind by size; the default local-path class waits
//! for its first consumer, provisions on that pod's node and keeps later
//! pods there; reclaim policies; a claim in use outlives its deletion
//! until its pod goes; a StatefulSet's pod comes back to its data.
//! Needs root and `scripts/setup.sh --test`.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{create, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(90);
const BUSYBOX: &str = "skiff.local/busybox:1";

/// A pod that mounts `volume` (YAML of one volume named `data`) at /data.
fn pod(name: &str, volume: &str) -> String {
    pod_on(name, volume, None)
}

/// As [`pod`], on `node` when one is given.
fn pod_on(name: &str, volume: &str, node: Option<&str>) -> String {
    let selector = node.map_or(String::new(), |n| {
        format!("  nodeSelector: {{kubernetes.io/hostname: {n}}}\n")
    });
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
{selector}  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    {volume}
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sleep, '3600']
    volumeMounts: [{{name: data, mountPath: /data}}]
"
    )
}

fn claim(name: &str, class: Option<&str>, size: &str) -> String {
    let class = class.map_or(String::new(), |c| format!("  storageClassName: {c:?}\n"));
    format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
{class}  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: {size}}}}}
"
    )
}

fn host_volume(name: &str, size: &str, path: &Path, policy: &str) -> String {
    format!(
        "apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: {size}}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: {policy}
  storageClassName: ''
  hostPath: {{path: {}, type: DirectoryOrCreate}}
",
        path.display()
    )
}

/// The pod, once it exists.
fn get_pod(c: &Cluster, name: &str) -> Option<Value> {
    let out = c.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn running(c: &Cluster, name: &str) -> Value {
    wait_for(&format!("pod {name} Running"), LIMIT, || {
        get_pod(c, name).filter(|p| p["status"]["phase"] == "Running")
    })
}

fn exec(c: &Cluster, name: &str, command: &str) -> String {
    let out = c.kubectl(&["exec", name, "--", "sh", "-c", command]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Deletes a pod and waits until it is gone.
fn delete_pod(c: &Cluster, name: &str) {
    c.ok(&["delete", "pod", name, "--wait=true", "--timeout=60s"]);
}

fn phase(c: &Cluster, kind: &str, name: &str) -> String {
    let o = c.json(&["get", kind, name]);
    o["status"]["phase"].as_str().unwrap_or_default().to_owned()
}

fn wait_phase(c: &Cluster, kind: &str, name: &str, want: &str) {
    wait_for(&format!("{kind} {name} {want}"), LIMIT, || {
        (phase(c, kind, name) == want).then_some(())
    });
}

fn events_of(c: &Cluster, name: &str) -> String {
    let selector = format!("involvedObject.name={name}");
    c.ok(&["get", "events", "--field-selector", &selector, "-o", "json"])
}

#[test]
fn claims_outlive_pods() {
    let real = support::real_cluster(&[]);
    let c = &real.c;
    let node = wait_for("the node", LIMIT, || {
        let nodes = c.json(&["get", "nodes"]);
        nodes["items"][0]["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
    });
    // Other nodes a volume's pods could go to, were it not for the volume.
    let _others = support::agent(c, "sim-", 3, &[]);

    // The default class, as kubectl shows it.
    let classes = c.ok(&["get", "storageclass"]);
    assert!(classes.contains("local-path (default)"), "{classes}");
    assert!(classes.contains("skiff.io/local-path"), "{classes}");
    assert!(classes.contains("WaitForFirstConsumer"), "{classes}");

    // An emptyDir dies with its pod.
    create(c, &pod_on("scratch", "emptyDir: {}", Some(&node)));
    running(c, "scratch");
    let wrote = exec(c, "scratch", "echo kept > /data/file && cat /data/file");
    assert_eq!(wrote, "kept\n");
    delete_pod(c, "scratch");
    create(c, &pod_on("scratch", "emptyDir: {}", Some(&node)));
    running(c, "scratch");
    let gone = exec(c, "scratch", "cat /data/file");
    assert!(gone.contains("No such file"), "{gone}");
    delete_pod(c, "scratch");

    // An emptyDir over its sizeLimit gets its pod evicted.
    create(
        c,
        &pod_on("greedy", "emptyDir: {sizeLimit: 1Mi}", Some(&node)),
    );
    running(c, "greedy");
    exec(
        c,
        "greedy",
        "dd if=/dev/zero of=/data/fill bs=1024 count=2048",
    );
    let evicted = wait_for("the pod evicted", LIMIT, || {
        get_pod(c, "greedy").filter(|p| p["status"]["phase"] == "Failed")
    });
    assert_eq!(evicted["status"]["reason"], "Evicted");
    let message = evicted["status"]["message"].as_str().unwrap();
    assert!(message.contains("exceeds the limit \"1Mi\""), "{message}");
    delete_pod(c, "greedy");

    // A generic ephemeral volume: its claim is made for the pod from the
    // template, provisioned where the pod goes, and goes with the pod.
    let template = |labels: &str| {
        format!("ephemeral: {{volumeClaimTemplate: {{metadata: {{labels: {{{labels}}}}}, spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 16Mi}}}}}}}}}}")
    };
    create(
        c,
        &pod_on("ephemeral", &template("kind: scratch"), Some(&node)),
    );
    running(c, "ephemeral");
    let made = c.json(&["get", "pvc", "ephemeral-data"]);
    assert_eq!(made["metadata"]["labels"]["kind"], "scratch");
    let owner = &made["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Pod"), Some("ephemeral"))
    );
    assert_eq!(owner["controller"], true);
    wait_phase(c, "pvc", "ephemeral-data", "Bound");
    let wrote = exec(c, "ephemeral", "echo kept > /data/file && cat /data/file");
    assert_eq!(wrote, "kept\n");
    delete_pod(c, "ephemeral");
    wait_for("the ephemeral claim gone with its pod", LIMIT, || {
        let out = c.kubectl(&["get", "pvc", "ephemeral-data"]);
        (!out.status.success()).then_some(())
    });
    // A claim of that name made otherwise is not the pod's volume.
    create(c, &claim("taken-data", None, "16Mi"));
    create(c, &pod_on("taken", &template(""), Some(&node)));
    wait_for("the claim refused for the pod", LIMIT, || {
        events_of(c, "taken")
            .contains(
                "PVC default/taken-data was not created for pod default/taken (pod is not owner)",
            )
            .then_some(())
    });
    assert_eq!(phase(c, "pod", "taken"), "Pending");
    delete_pod(c, "taken");
    c.ok(&[
        "delete",
        "pvc",
        "taken-data",
        "--wait=true",
        "--timeout=60s",
    ]);

    // The default class waits for its first consumer.
    create(c, &claim("data", None, "64Mi"));
    wait_for("WaitForFirstConsumer", LIMIT, || {
        events_of(c, "data")
            .contains("waiting for first consumer to be created before binding")
            .then_some(())
    });
    assert_eq!(phase(c, "pvc", "data"), "Pending");
    let stored = c.json(&["get", "pvc", "data"]);
    assert_eq!(stored["spec"]["storageClassName"], "local-path");

    // Its first pod has it made on its node; the file outlives the pod,
    // and the next pod, free to go anywhere, goes where the volume is.
    create(
        c,
        &pod_on(
            "writer",
            "persistentVolumeClaim: {claimName: data}",
            Some(&node),
        ),
    );
    let writer = running(c, "writer");
    assert_eq!(writer["spec"]["nodeName"], node.as_str());
    wait_phase(c, "pvc", "data", "Bound");
    let volume = c.json(&["get", "pvc", "data"])["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = c.dir.path().join("agent/local-path").join(&volume);
    assert!(dir.is_dir(), "{} exists", dir.display());
    exec(c, "writer", "echo kept > /data/file");
    assert_eq!(std::fs::read_to_string(dir.join("file")).unwrap(), "kept\n");
    delete_pod(c, "writer");
    create(
        c,
        &pod("reader", "persistentVolumeClaim: {claimName: data}"),
    );
    let reader = running(c, "reader");
    assert_eq!(
        reader["spec"]["nodeName"],
        node.as_str(),
        "stays with its volume"
    );
    assert_eq!(exec(c, "reader", "cat /data/file"), "kept\n");

    // kubectl's columns.
    let pvc = c.ok(&["get", "pvc", "data"]);
    for column in [
        "NAME",
        "STATUS",
        "VOLUME",
        "CAPACITY",
        "ACCESS MODES",
        "STORAGECLASS",
        "VOLUMEATTRIBUTESCLASS",
        "AGE",
    ] {
        assert!(pvc.contains(column), "{pvc}");
    }
    assert!(
        pvc.contains("Bound")
            && pvc.contains(&volume)
            && pvc.contains("64Mi")
            && pvc.contains("RWO"),
        "{pvc}"
    );
    let pv = c.ok(&["get", "pv", &volume]);
    for column in ["CAPACITY", "RECLAIM POLICY", "CLAIM", "REASON"] {
        assert!(pv.contains(column), "{pv}");
    }
    assert!(
        pv.contains("Delete") && pv.contains("default/data") && pv.contains("local-path"),
        "{pv}"
    );

    // A claim in use stays until its pod goes; then Delete removes the
    // volume and its directory.
    c.ok(&["delete", "pvc", "data", "--wait=false"]);
    let held = c.ok(&["get", "pvc", "data"]);
    assert!(held.contains("Terminating"), "{held}");
    assert_eq!(running(c, "reader")["status"]["phase"], "Running");
    delete_pod(c, "reader");
    wait_for("the claim gone", LIMIT, || {
        let out = c.kubectl(&["get", "pvc", "data"]);
        (!out.status.success()).then_some(())
    });
    wait_for("the volume and its directory gone", LIMIT, || {
        let out = c.kubectl(&["get", "pv", &volume]);
        (!out.status.success() && !dir.exists()).then_some(())
    });

    // Static volumes: the smallest that fits, never a smaller one; Retain
    // keeps the data and the volume goes Released.
    let host = c.dir.path().join("static");
    create(
        c,
        &host_volume("small", "32Mi", &host.join("small"), "Retain"),
    );
    create(c, &host_volume("big", "1Gi", &host.join("big"), "Retain"));
    create(c, &host_volume("fit", "128Mi", &host.join("fit"), "Retain"));
    create(c, &claim("static", Some(""), "100Mi"));
    wait_phase(c, "pvc", "static", "Bound");
    assert_eq!(
        c.json(&["get", "pvc", "static"])["spec"]["volumeName"],
        "fit"
    );
    assert_eq!(phase(c, "pv", "small"), "Available");
    assert_eq!(phase(c, "pv", "big"), "Available");
    create(
        c,
        &pod_on(
            "static",
            "persistentVolumeClaim: {claimName: static}",
            Some(&node),
        ),
    );
    running(c, "static");
    exec(c, "static", "echo retained > /data/file");
    delete_pod(c, "static");
    c.ok(&["delete", "pvc", "static"]);
    wait_phase(c, "pv", "fit", "Released");
    assert_eq!(
        std::fs::read_to_string(host.join("fit/file")).unwrap(),
        "retained\n"
    );
    let too_big = claim("huge", Some(""), "2Gi");
    create(c, &too_big);
    wait_for("no volume for a claim larger than any", LIMIT, || {
        events_of(c, "huge")
            .contains("no persistent volumes available for this claim")
            .then_some(())
    });
    assert_eq!(phase(c, "pvc", "huge"), "Pending");

    // A StatefulSet's pod comes back to its own data.
    create(
        c,
        &format!(
            "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: web
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {BUSYBOX}
        command: [sleep, '3600']
        volumeMounts: [{{name: www, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: www}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 16Mi}}}}
"
        ),
    );
    running(c, "web-1");
    exec(c, "web-1", "hostname > /data/who");
    let uid = support::pod(c, "web-1")["metadata"]["uid"].clone();
    delete_pod(c, "web-1");
    let again = wait_for("web-1 back", LIMIT, || {
        get_pod(c, "web-1")
            .filter(|p| p["metadata"]["uid"] != uid && p["status"]["phase"] == "Running")
    });
    assert_eq!(again["spec"]["nodeName"], node.as_str());
    assert_eq!(exec(c, "web-1", "cat /data/who"), "web-1\n");
    wait_phase(c, "pvc", "www-web-0", "Bound");
    raw_block_volumes(c, &node);
}

/// A loop device over a file, detached when dropped.
struct LoopDevice(String);

impl LoopDevice {
    fn over(file: &Path) -> Self {
        std::fs::write(file, vec![0u8; 1 << 20]).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .unwrap();
        support::assert_success(&out, "losetup");
        Self(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["--detach", &self.0])
            .status();
    }
}

/// A claim in block mode reaches its pod as a raw device at its
/// `devicePath`: what the container writes there is on the node's device
/// (here a loop device over a file).
fn raw_block_volumes(c: &Cluster, node: &str) {
    let backing = c.dir.path().join("block.img");
    let device = LoopDevice::over(&backing);
    let manifest = format!(
        "apiVersion: v1
kind: PersistentVolume
metadata: {{name: raw-disk}}
spec:
  capacity: {{storage: 1Mi}}
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  storageClassName: ''
  local: {{path: {}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{node}]}}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: raw-disk}}
spec:
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  storageClassName: ''
  volumeName: raw-disk
  resources: {{requests: {{storage: 1Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: raw-disk-user}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: disk
    persistentVolumeClaim: {{claimName: raw-disk}}
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c, 'echo written-by-the-pod | dd of=/dev/xvda conv=fsync && sleep 3600']
    volumeDevices: [{{name: disk, devicePath: /dev/xvda}}]
",
        device.0
    );
    create(c, &manifest);
    running(c, "raw-disk-user");
    wait_for("the pod's bytes on the device", LIMIT, || {
        let bytes = std::fs::read(&backing).ok()?;
        bytes.starts_with(b"written-by-the-pod\n").then_some(())
    });
    // A claim in block mode is no directory to mount.
    let mounting = pod(
        "raw-disk-mounted",
        "persistentVolumeClaim: {claimName: raw-disk}",
    );
    create(c, &mounting);
    wait_for("the mount to be refused", LIMIT, || {
        let p = get_pod(c, "raw-disk-mounted")?;
        let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        let message = waiting["message"].as_str()?;
        (waiting["reason"] == "CreateContainerConfigError"
            && message.contains("through volumeDevices"))
        .then_some(())
    });
    c.ok(&[
        "delete",
        "pod",
        "raw-disk-user",
        "raw-disk-mounted",
        "--timeout=60s",
    ]);
    c.ok(&["delete", "pvc", "raw-disk", "--timeout=60s"]);
    c.ok(&["delete", "pv", "raw-disk", "--timeout=60s"]);
}
