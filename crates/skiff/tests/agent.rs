//! End to end with real containers: `skiff server` with its node agent and
//! its own containerd, runc and CNI bridge, driven by the real kubectl.
//! Needs root and Debian's containerd, runc, containernetworking-plugins,
//! busybox-static, umoci and skopeo (`.ci/run` installs them).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{create, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(90);

fn check_prerequisites() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(root, "the real-container tests need root");
    for tool in ["containerd", "runc", "ctr", "umoci", "skopeo", "busybox"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap()
            .status
            .success();
        assert!(found, "{tool} is missing: run .ci/run or apt-get install containerd runc containernetworking-plugins busybox-static umoci skopeo");
    }
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "containernetworking-plugins is missing"
    );
}

fn pod(c: &Cluster, name: &str) -> Value {
    c.json(&["get", "pod", name])
}

fn container_state(p: &Value) -> Value {
    p["status"]["containerStatuses"][0].clone()
}

/// Stops what the test started outside the server: its containerd (by its
/// own config path) and its bridge.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let containerd = self.0.join("agent/containerd");
        let config = containerd.join("config.toml");
        let socket = containerd.join("containerd.sock");
        let _ = Command::new("pkill")
            .args(["-f", &format!("containerd --config {}", config.display())])
            .status();
        // After a failure, containers may outlive containerd: stop their
        // shims and release their mounts.
        let _ = Command::new("pkill")
            .args([
                "-f",
                &format!("containerd-shim-runc-v2 .*-address {}", socket.display()),
            ])
            .status();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let prefix = self.0.display().to_string();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", "skiff0"])
            .status();
    }
}

#[test]
fn pods_run_as_real_containers() {
    check_prerequisites();
    let images = tempfile::tempdir().unwrap();
    let built = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/build-test-images.sh"
    ))
    .arg(images.path())
    .output()
    .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let c = Cluster::start_with_agent();
    let _cleanup = Cleanup(c.dir.path().to_owned());
    let agent_dir = c.dir.path().join("agent");
    wait_for("containerd's socket", LIMIT, || {
        agent_dir
            .join("containerd/containerd.sock")
            .exists()
            .then_some(())
    });
    for image in ["pause.tar", "busybox.tar"] {
        let status = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["image", "import", "--data-dir"])
            .arg(&agent_dir)
            .arg(images.path().join(image))
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    let node = wait_for("a Ready node", LIMIT, || {
        let nodes = c.json(&["get", "nodes"]);
        let n = nodes["items"].as_array()?.first()?.clone();
        let ready = n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(n)
    });
    assert!(node["spec"]["podCIDR"]
        .as_str()
        .unwrap()
        .starts_with("10.42."));
    assert!(node["status"]["capacity"]["cpu"].as_str().is_some());

    let manifest = |name: &str, restart: &str, policy: &str, image: &str, cmd: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: {policy}\n    command: [sh, -c, '{cmd}']\n")
    };
    create(
        &c,
        &manifest(
            "runner",
            "Always",
            "IfNotPresent",
            "skiff.local/busybox:1",
            "sleep 3600",
        ),
    );
    create(
        &c,
        &manifest(
            "crasher",
            "Always",
            "IfNotPresent",
            "skiff.local/busybox:1",
            "exit 1",
        ),
    );
    create(
        &c,
        &manifest(
            "oneshot",
            "Never",
            "IfNotPresent",
            "skiff.local/busybox:1",
            "true",
        ),
    );
    create(
        &c,
        &manifest(
            "missing",
            "Always",
            "Never",
            "skiff.local/nothing:1",
            "true",
        ),
    );

    let ip = wait_for("runner to run", LIMIT, || {
        let p = pod(&c, "runner");
        (p["status"]["phase"] == "Running" && container_state(&p)["ready"] == true)
            .then(|| p["status"]["podIP"].as_str().map(str::to_owned))
            .flatten()
    });
    assert!(
        ip.starts_with("10.42."),
        "pod IP {ip} from the node's podCIDR"
    );
    wait_for("oneshot to succeed", LIMIT, || {
        let p = pod(&c, "oneshot");
        (p["status"]["phase"] == "Succeeded"
            && container_state(&p)["state"]["terminated"]["reason"] == "Completed")
            .then_some(())
    });
    wait_for("crasher to back off", LIMIT, || {
        let s = container_state(&pod(&c, "crasher"));
        (s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && s["restartCount"].as_i64() >= Some(1)
            && s["lastState"]["terminated"]["exitCode"] == 1)
            .then_some(())
    });
    wait_for("missing to report its image", LIMIT, || {
        let s = container_state(&pod(&c, "missing"));
        (s["state"]["waiting"]["reason"] == "ErrImageNeverPull").then_some(())
    });
    // Environment and files from a ConfigMap and a Secret.
    c.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=greeting=hello",
        "--from-literal=color=blue",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    create(
        &c,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: reader}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'test \"$GREETING\" = hello && test \"$password\" = s3cret && test \"$POD\" = reader && test \"$(cat /etc/settings/color)\" = blue && test \"$(cat /etc/creds/password)\" = s3cret && test -d /scratch']\n    env:\n    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}\n    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n    envFrom: [{secretRef: {name: creds}}]\n    volumeMounts:\n    - {name: settings, mountPath: /etc/settings}\n    - {name: creds, mountPath: /etc/creds}\n    - {name: scratch, mountPath: /scratch}\n  volumes:\n  - {name: settings, configMap: {name: settings}}\n  - {name: creds, secret: {secretName: creds}}\n  - {name: scratch, emptyDir: {}}\n",
    );
    create(&c, "apiVersion: v1\nkind: Pod\nmetadata: {name: unconfigured}\nspec:\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    envFrom: [{configMapRef: {name: absent}}]\n");
    wait_for("reader to find its inputs", LIMIT, || {
        let p = pod(&c, "reader");
        assert_ne!(p["status"]["phase"], "Failed", "{}", p["status"]);
        (p["status"]["phase"] == "Succeeded").then_some(())
    });
    wait_for("unconfigured to wait for its ConfigMap", LIMIT, || {
        let s = container_state(&pod(&c, "unconfigured"));
        (s["state"]["waiting"]["reason"] == "CreateContainerConfigError").then_some(())
    });

    // Probes: readiness gates Ready; a failing liveness probe restarts.
    let probed = |name: &str, probe: &str, cmd: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, '{cmd}']\n    {probe}: {{exec: {{command: [sh, -c, test -f /tmp/flag]}}, periodSeconds: 1, failureThreshold: 1}}\n")
    };
    create(
        &c,
        &probed(
            "warming",
            "readinessProbe",
            "sleep 4; touch /tmp/flag; sleep 3600",
        ),
    );
    create(
        &c,
        &probed(
            "sickly",
            "livenessProbe",
            "touch /tmp/flag; sleep 2; rm /tmp/flag; sleep 3600",
        ),
    );
    let ready = |p: &Value| {
        p["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"] == "True")
        })
    };
    wait_for("warming to run, not yet ready", LIMIT, || {
        let p = pod(&c, "warming");
        (p["status"]["phase"] == "Running" && ready(&p) == Some(false)).then_some(())
    });
    wait_for("warming to become ready", LIMIT, || {
        ready(&pod(&c, "warming")).filter(|r| *r).map(|_| ())
    });
    wait_for(
        "sickly to be restarted by its liveness probe",
        LIMIT,
        || {
            let s = container_state(&pod(&c, "sickly"));
            (s["restartCount"].as_i64() >= Some(1)).then_some(())
        },
    );

    let shown = c.ok(&["get", "pods"]);
    assert!(
        shown.contains("CrashLoopBackOff") && shown.contains("Completed"),
        "{shown}"
    );

    // Deleting pods stops their containers and removes their sandboxes.
    c.ok(&["delete", "pods", "--all", "--timeout=60s"]);
    let socket = agent_dir.join("containerd/containerd.sock");
    wait_for("the runtime to be empty", LIMIT, || {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "k8s.io", "tasks", "ls", "-q"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .is_empty()
            .then_some(())
    });
}
