//! End to end with real containers: `skiff server` with its node agent and
//! its own containerd, runc and CNI bridge, driven by the real kubectl.
//! Needs root and Debian's containerd, runc, containernetworking-plugins,
//! busybox-static, umoci, skopeo and docker-registry (`.ci/run` installs
//! them).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{assert_success, create, pod, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(90);

fn container_state(p: &Value) -> Value {
    p["status"]["containerStatuses"][0].clone()
}

/// A real registry (Debian's docker-registry) on 127.0.0.1 serving the
/// test's busybox image as `127.0.0.1:PORT/test/busybox:1`.
struct Registry {
    host: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A registry that lets only `user` (name and password) in, if given.
    fn start(images: &Path, user: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("127.0.0.1:{}", support::free_port());
        let config = dir.path().join("config.yml");
        let mut settings = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((name, password)) = user {
            let users = dir.path().join("htpasswd");
            let made = Command::new("htpasswd")
                .args(["-Bbn", name, password])
                .output()
                .unwrap();
            assert_success(&made, "htpasswd");
            std::fs::write(&users, made.stdout).unwrap();
            settings += &format!(
                "auth:\n  htpasswd:\n    realm: skiff\n    path: {}\n",
                users.display()
            );
        }
        std::fs::write(&config, settings).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Self {
            host,
            child,
            _dir: dir,
        };
        wait_for("the registry to listen", LIMIT, || {
            std::net::TcpStream::connect(&registry.host).ok()
        });
        let creds = user.map(|(name, password)| format!("--dest-creds={name}:{password}"));
        let pushed = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(creds)
            .arg(format!(
                "docker-archive:{}",
                images.join("busybox.tar").display()
            ))
            .arg(format!("docker://{}/test/busybox:1", registry.host))
            .output()
            .unwrap();
        assert_success(&pushed, "skopeo copy");
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host pid of a container's main process, from containerd.
fn host_pid(socket: &Path, container_id: &str) -> String {
    let id = container_id.trim_start_matches("containerd://");
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(id)).then(|| f.next().unwrap_or_default().to_owned())
        })
        .unwrap_or_else(|| panic!("no task for container {id}"))
}

fn manifest(name: &str, restart: &str, policy: &str, image: &str, cmd: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: {policy}\n    command: [sh, -c, '{cmd}']\n")
}

#[test]
fn pods_run_as_real_containers() {
    support::check_prerequisites();
    let images = support::build_images();
    let registry = Registry::start(images.path(), None);
    let private = Registry::start(images.path(), Some(("skiff", "s3cret")));
    let (http, https) = (support::free_port(), support::free_port());
    let (http_port, https_port) = (http.to_string(), https.to_string());
    let silent = Silent::start();
    let registry_flags = [
        "--insecure-registry",
        registry.host.as_str(),
        "--insecure-registry",
        silent.host.as_str(),
        "--insecure-registry",
        private.host.as_str(),
        "--ingress-port",
        &http_port,
        "--ingress-https-port",
        &https_port,
    ];
    let mut c = Cluster::start_with_agent(&registry_flags);
    let _cleanup = support::Cleanup(c.dir.path().to_owned());
    let agent_dir = c.dir.path().join("agent");
    let socket = agent_dir.join("containerd/containerd.sock");
    wait_for("containerd's socket", LIMIT, || {
        socket.exists().then_some(())
    });
    support::import_images(&agent_dir, images.path());
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
    status_writes_keep_what_others_set(&c, node["metadata"]["name"].as_str().unwrap());
    // The node's status lists the images it holds, as upstream's kubelet
    // does (what the scheduler's ImageLocality reads).
    wait_for("the imported images in the node's status", LIMIT, || {
        let nodes = c.json(&["get", "nodes"]);
        let images = nodes["items"][0]["status"]["images"].as_array()?.clone();
        images
            .iter()
            .any(|i| {
                let names = i["names"].as_array().into_iter().flatten();
                names.clone().any(|n| n == "skiff.local/busybox:1")
                    && i["sizeBytes"].as_i64() > Some(0)
            })
            .then_some(())
    });

    lifecycle_and_restarts(&c, &socket);
    a_hanging_pull_delays_no_other_pod(&c, &silent);
    service_account_credentials(&c);
    inputs_logs_and_exec(&c);
    references_and_mount_modes(&c);
    names_and_resolution(&c);
    termination_messages(&c);
    runtime_classes(&c);
    indexed_jobs_and_failure_policies(&c);
    port_forward_and_copy(&c);
    probes(&c);
    init_containers_and_volumes(&c);
    sidecars_rules_and_env_files(&c);
    host_ports(&c);
    limits_and_termination(&c);
    in_place_resize(&c);
    registry_pulls(&c, &registry.host);
    private_registry_pulls(&c, &private.host);
    image_volumes(&c, &registry.host, &socket);
    services_route_to_ready_pods(&c);
    ingress_routes_by_host_and_path(&c, http, https);
    agent_restart_keeps_containers(&mut c, &socket, &registry_flags);
    a_crash_mid_rollout_still_completes(&mut c, &registry_flags);

    let shown = c.ok(&["get", "pods"]);
    assert!(
        shown.contains("CrashLoopBackOff") && shown.contains("Completed"),
        "{shown}"
    );
    // Deleting pods stops their containers and removes their sandboxes.
    c.ok(&["delete", "deployments", "--all"]);
    c.ok(&["delete", "pods", "--all", "--timeout=60s"]);
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
    unused_images_are_collected(&mut c, &socket, &registry_flags);
    container_logs_rotate(&mut c, &registry_flags);
    memory_pressure_evicts_and_refuses(&mut c, &registry_flags);
    pid_pressure_evicts_the_busiest_first(&mut c, &registry_flags);
}

/// Under PID pressure (a threshold of every process ID, always met), of
/// two pods of one priority the one running more processes goes first,
/// as upstream ranks them; the other still runs when it goes.
fn pid_pressure_evicts_the_busiest_first(c: &mut Cluster, flags: &[&str]) {
    let busybox = "skiff.local/busybox:1";
    let many = "sleep 3600 & sleep 3600 & sleep 3600 & sleep 3600";
    create(
        c,
        &manifest("few", "Always", "IfNotPresent", busybox, "sleep 3600"),
    );
    create(
        c,
        &manifest("many", "Always", "IfNotPresent", busybox, many),
    );
    wait_for("both pods to run", LIMIT, || {
        let running = |name| pod(c, name)["status"]["phase"] == "Running";
        (running("few") && running("many")).then_some(())
    });
    let mut pressed = flags.to_vec();
    pressed.extend(["--eviction-hard", "pid.available<100%"]);
    c.kill();
    c.spawn(&pressed);
    let status = wait_for("the pod with more processes to be evicted", LIMIT, || {
        let p = pod(c, "many");
        (p["status"]["phase"] == "Failed").then(|| p["status"].clone())
    });
    // The manager waits for an evicted pod to stop, then ten seconds.
    assert_eq!(pod(c, "few")["status"]["phase"], "Running");
    assert_eq!(status["reason"], "Evicted", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("The node was low on resource: pids. "),
        "{message}"
    );
    c.kill();
    c.spawn(flags);
    let node = node_name(c);
    wait_for("the pressure to go", LIMIT, || {
        let m = node_condition(c, &node, "PIDPressure")?;
        (m["status"] == "False").then_some(())
    });
    c.ok(&["delete", "pod", "few", "many", "--timeout=60s"]);
}

/// The name of the cluster's one node.
fn node_name(c: &Cluster) -> String {
    let nodes = c.json(&["get", "nodes"]);
    nodes["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A counter the agent of `node` serves, read through the node proxy.
fn node_counter(c: &Cluster, node: &str, series: &str) -> u64 {
    let metrics = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/metrics"),
    ]);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in: {metrics}"))
}

/// Under memory pressure (here a threshold of all the node's memory,
/// always met) the node reports MemoryPressure, the node lifecycle
/// controller taints it, the agent evicts its BestEffort pod in
/// upstream's words and refuses a new one; started again without the
/// threshold, the pressure and its taint go.
fn memory_pressure_evicts_and_refuses(c: &mut Cluster, flags: &[&str]) {
    let busybox = "skiff.local/busybox:1";
    create(
        c,
        &manifest("hog", "Always", "IfNotPresent", busybox, "sleep 3600"),
    );
    wait_for("the hog to run", LIMIT, || {
        (pod(c, "hog")["status"]["phase"] == "Running").then_some(())
    });
    let mut pressed = flags.to_vec();
    pressed.extend(["--eviction-hard", "memory.available<100%"]);
    c.kill();
    c.spawn(&pressed);
    let node = node_name(c);
    let memory = wait_for("MemoryPressure", LIMIT, || {
        let m = node_condition(c, &node, "MemoryPressure")?;
        (m["status"] == "True").then_some(m)
    });
    assert_eq!(memory["reason"], "KubeletHasInsufficientMemory");
    assert_eq!(
        memory["message"],
        "kubelet has insufficient memory available"
    );
    let tainted = |c: &Cluster| {
        let n = c.json(&["get", "node", &node]);
        let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
        taints.iter().any(|t| {
            t["key"] == "node.kubernetes.io/memory-pressure" && t["effect"] == "NoSchedule"
        })
    };
    wait_for("the memory-pressure taint", LIMIT, || {
        tainted(c).then_some(())
    });
    let evicted = wait_for("the hog to be evicted", LIMIT, || {
        let p = pod(c, "hog");
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let status = &evicted["status"];
    assert_eq!(status["reason"], "Evicted", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: "),
        "{message}"
    );
    let disruption = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .cloned()
        .unwrap_or_else(|| panic!("no DisruptionTarget: {status}"));
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    let reclaiming = c.json(&[
        "get",
        "events",
        "--field-selector",
        "reason=EvictionThresholdMet",
    ]);
    assert_eq!(
        reclaiming["items"][0]["message"], "Attempting to reclaim memory",
        "{reclaiming}"
    );
    let series = "kubelet_evictions_total{eviction_signal=\"memory.available\"}";
    let evictions = node_counter(c, &node, series);
    assert!(evictions >= 1, "{evictions}");
    // A pod naming the node skips the scheduler, which the taint keeps
    // away: the node itself refuses it.
    let refused = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "refused"},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": busybox,
            "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}});
    create(c, &refused.to_string());
    let status = wait_for("the new pod to be refused", LIMIT, || {
        let p = pod(c, "refused");
        (p["status"]["phase"] == "Failed").then(|| p["status"].clone())
    });
    assert_eq!(status["reason"], "Evicted", "{status}");
    assert_eq!(
        status["message"],
        "Pod was rejected: The node had condition: [MemoryPressure]. "
    );
    c.kill();
    c.spawn(flags);
    wait_for("the pressure to go", LIMIT, || {
        let m = node_condition(c, &node, "MemoryPressure")?;
        (m["status"] == "False" && !tainted(c)).then_some(())
    });
    c.ok(&["delete", "pod", "hog", "refused", "--timeout=60s"]);
}

/// A running container's log rotates at the maximum size (16Ki here):
/// the older rotated files gzipped, no more files than the maximum (3,
/// the live log included), and `kubectl logs -f` goes on across
/// rotations.
fn container_logs_rotate(c: &mut Cluster, flags: &[&str]) {
    let mut rotating = flags.to_vec();
    rotating.extend([
        "--container-log-max-size",
        "16Ki",
        "--container-log-max-files",
        "3",
    ]);
    c.kill();
    c.spawn(&rotating);
    // About 1 KiB a line, 20 lines a second: a rotation at each 10 s look.
    let chatty = "pad=$(head -c 1000 /dev/zero | tr \"\\0\" x); i=0; while true; do i=$((i+1)); echo \"$i $pad\"; usleep 50000; done";
    create(
        c,
        &manifest(
            "chatty",
            "Always",
            "IfNotPresent",
            "skiff.local/busybox:1",
            chatty,
        ),
    );
    let p = wait_for("the chatty pod to run", LIMIT, || {
        let p = pod(c, "chatty");
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let mut follower = c
        .kubectl_cmd(&["logs", "-f", "chatty"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let n = line.split_whitespace().next().and_then(|n| n.parse().ok());
            if tx.send(n.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let dir = c
        .dir
        .path()
        .join(format!("agent/pods/default_chatty_{uid}/main"));
    // Looked at between rotations (one renames the live log before the
    // runtime opens it again, and compresses through a `.tmp` file): a
    // gzipped log, the live one, and no more than 3 files. Keeping more
    // would never settle.
    wait_for("two rotations, settled", LIMIT, || {
        let names: Vec<String> = std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let settled = names.iter().any(|n| n.ends_with(".gz"))
            && names.iter().any(|n| n == "0.log")
            && !names.iter().any(|n| n.ends_with(".tmp"))
            && names.len() <= 3;
        settled.then_some(())
    });
    let last: u64 = wait_for("the last line", LIMIT, || {
        let out = c.kubectl(&["logs", "chatty", "--tail", "1"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().next()?.parse().ok()
    });
    let mut seen = 0;
    wait_for("the follower to go on past the rotations", LIMIT, || {
        while let Ok(n) = rx.try_recv() {
            seen = seen.max(n);
        }
        (seen >= last).then_some(())
    });
    let _ = follower.kill();
    let _ = follower.wait();
    c.ok(&["delete", "pod", "chatty", "--timeout=60s"]);
}

/// What `ctr images ls` prints for the runtime at `socket`.
fn ctr_images(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "images"])
        .args(args)
        .output()
        .unwrap();
    assert_success(&out, "ctr images");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn images(socket: &Path) -> Vec<String> {
    ctr_images(socket, &["ls", "-q"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The node's `FreeDiskSpaceFailed` event whose message has `part`.
fn free_disk_space_failed(c: &Cluster, part: &str) -> String {
    wait_for(&format!("FreeDiskSpaceFailed with {part:?}"), LIMIT, || {
        let events = c.json(&[
            "get",
            "events",
            "--field-selector",
            "reason=FreeDiskSpaceFailed,involvedObject.kind=Node",
        ]);
        events["items"].as_array()?.iter().find_map(|e| {
            let message = e["message"].as_str()?;
            message.contains(part).then(|| message.to_owned())
        })
    })
}

/// With the image filesystem over the high threshold (1 % here), the
/// agent removes the images no container uses as it starts: not those
/// `skiff image import` pinned, not the sandbox image, not one a running
/// container uses. What it cannot free is a `FreeDiskSpaceFailed` event
/// on the node.
fn unused_images_are_collected(c: &mut Cluster, socket: &Path, flags: &[&str]) {
    let (busybox, nginx) = ("skiff.local/busybox:1", "skiff.local/nginx:1");
    let pinned = skiff_kubelet::image_gc::pinned_references(&ctr_images(socket, &["ls"]));
    assert!(
        pinned.contains(busybox) && pinned.contains(nginx),
        "imported images are pinned: {pinned:?}"
    );
    let mut collecting = flags.to_vec();
    collecting.extend([
        "--image-gc-high-threshold",
        "1",
        "--image-gc-low-threshold",
        "0",
        "--image-minimum-gc-age",
        "0s",
    ]);
    // Unpinned, as an image pulled from a registry is, and unused: it goes.
    ctr_images(socket, &["label", nginx, "io.cri-containerd.pinned="]);
    c.kill();
    c.spawn(&collecting);
    let left = wait_for("the unpinned image to be removed", LIMIT, || {
        let left = images(socket);
        (!left.iter().any(|i| i == nginx)).then_some(left)
    });
    for kept in [busybox, skiff_kubelet::pause_image::DEFAULT] {
        assert!(left.iter().any(|i| i == kept), "{kept} kept: {left:?}");
    }
    free_disk_space_failed(c, "Failed to garbage collect required amount of images.");
    let node = node_name(c);
    let collected = node_counter(
        c,
        &node,
        "kubelet_image_garbage_collected_total{reason=\"space\"}",
    );
    assert!(collected >= 1, "{collected}");
    // Unpinned but used by a running container: it stays, and nothing is
    // left to free.
    ctr_images(socket, &["label", busybox, "io.cri-containerd.pinned="]);
    create(
        c,
        &manifest("keeper", "Always", "IfNotPresent", busybox, "sleep 3600"),
    );
    wait_for("the keeper to run", LIMIT, || {
        (pod(c, "keeper")["status"]["phase"] == "Running").then_some(())
    });
    c.kill();
    c.spawn(&collecting);
    free_disk_space_failed(c, "but only found 0 bytes eligible to free.");
    let left = images(socket);
    assert!(left.iter().any(|i| i == busybox), "{left:?}");
    c.ok(&["delete", "pod", "keeper", "--timeout=60s"]);
}

/// The node's condition of `kind`.
fn node_condition(c: &Cluster, node: &str, kind: &str) -> Option<Value> {
    let n = c.json(&["get", "node", node]);
    n["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

/// The agent writes its node's status over one another component changed
/// (Ready=Unknown, as the node lifecycle controller sets it) at its next
/// look, without waiting for the next periodic report; a condition another
/// component set outlives that write, and a condition whose status stays
/// keeps its lastTransitionTime while its lastHeartbeatTime moves.
fn status_writes_keep_what_others_set(c: &Cluster, node: &str) {
    let patch = r#"{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False","reason":"RouteCreated","message":"set by a network plugin"},{"type":"Ready","status":"Unknown","reason":"NodeStatusUnknown","message":"Kubelet stopped posting node status."}]}}"#;
    let memory = node_condition(c, node, "MemoryPressure").unwrap();
    c.ok(&["patch", "node", node, "--subresource=status", "-p", patch]);
    let ready = wait_for("the agent to write Ready=True again", LIMIT, || {
        let now = node_condition(c, node, "Ready")?;
        (now["status"] == "True").then_some(now)
    });
    assert_eq!(ready["reason"], "KubeletReady");
    let kept = node_condition(c, node, "NetworkUnavailable").expect("kept");
    assert_eq!(kept["reason"], "RouteCreated");
    let after = node_condition(c, node, "MemoryPressure").unwrap();
    assert_eq!(after["lastTransitionTime"], memory["lastTransitionTime"]);
    assert_ne!(after["lastHeartbeatTime"], memory["lastHeartbeatTime"]);
    // The node lifecycle controller's taint for Ready=Unknown goes again
    // before the next steps schedule pods.
    wait_for("the unreachable taint to go", LIMIT, || {
        let n = c.json(&["get", "node", node]);
        let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
        (!taints
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable"))
        .then_some(())
    });
}

/// Running, succeeding, crashing with back-off, a missing image, and a
/// process killed from the host coming back.
fn lifecycle_and_restarts(c: &Cluster, socket: &Path) {
    let busybox = "skiff.local/busybox:1";
    create(
        c,
        &manifest("runner", "Always", "IfNotPresent", busybox, "sleep 3600"),
    );
    create(
        c,
        &manifest(
            "crasher",
            "Always",
            "IfNotPresent",
            busybox,
            "echo crashing; exit 1",
        ),
    );
    create(
        c,
        &manifest("oneshot", "Never", "IfNotPresent", busybox, "true"),
    );
    create(
        c,
        &manifest(
            "missing",
            "Always",
            "Never",
            "skiff.local/nothing:1",
            "true",
        ),
    );
    let ip = wait_for("runner to run", LIMIT, || {
        let p = pod(c, "runner");
        (p["status"]["phase"] == "Running" && container_state(&p)["ready"] == true)
            .then(|| p["status"]["podIP"].as_str().map(str::to_owned))
            .flatten()
    });
    assert!(
        ip.starts_with("10.42."),
        "pod IP {ip} from the node's podCIDR"
    );
    wait_for("oneshot to succeed", LIMIT, || {
        let p = pod(c, "oneshot");
        (p["status"]["phase"] == "Succeeded"
            && container_state(&p)["state"]["terminated"]["reason"] == "Completed")
            .then_some(())
    });
    wait_for("crasher to back off", LIMIT, || {
        let s = container_state(&pod(c, "crasher"));
        (s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && s["restartCount"].as_i64() >= Some(1)
            && s["lastState"]["terminated"]["exitCode"] == 1)
            .then_some(())
    });
    let restarts = |p: &str| {
        container_state(&pod(c, p))["restartCount"]
            .as_i64()
            .unwrap_or(0)
    };
    let before = restarts("crasher");
    wait_for("crasher's restart count to grow", LIMIT, || {
        (restarts("crasher") > before).then_some(())
    });
    assert!(
        c.ok(&["logs", "crasher", "--previous"])
            .contains("crashing"),
        "logs --previous show the last run"
    );
    wait_for("missing to report its image", LIMIT, || {
        let s = container_state(&pod(c, "missing"));
        (s["state"]["waiting"]["reason"] == "ErrImageNeverPull").then_some(())
    });
    // A process killed from the host is restarted by the kubelet.
    let id = container_state(&pod(c, "runner"))["containerID"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = host_pid(socket, &id);
    assert!(Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(
        "runner to be restarted after its process was killed",
        LIMIT,
        || {
            let s = container_state(&pod(c, "runner"));
            (s["restartCount"] == 1
                && s["state"]["running"].is_object()
                && s["lastState"]["terminated"]["exitCode"] == 137)
                .then_some(())
        },
    );
    // A sandbox whose pause process dies is replaced, and the container
    // runs again in the new one (upstream's SandboxChanged).
    let id = container_state(&pod(c, "runner"))["containerID"]
        .as_str()
        .unwrap()
        .to_owned();
    let pause = host_pid(socket, &sandbox_of(socket, &id));
    assert!(Command::new("kill")
        .args(["-9", &pause])
        .status()
        .unwrap()
        .success());
    wait_for("runner to run in a new sandbox", LIMIT, || {
        let s = container_state(&pod(c, "runner"));
        let id = s["containerID"].as_str().unwrap_or_default().to_owned();
        (s["restartCount"] == 2 && s["state"]["running"].is_object())
            .then(|| sandbox_of(socket, &id))
            .filter(|sandbox| host_pid(socket, sandbox) != pause)
    });
}

/// The server (and with it this node's agent) is SIGKILLed in the middle
/// of a rollout; restarted on the same data, the rollout completes and
/// every pod runs on the node.
fn a_crash_mid_rollout_still_completes(c: &mut Cluster, flags: &[&str]) {
    create(
        c,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: roll}\nspec:\n  replicas: 8\n  selector: {matchLabels: {app: roll}}\n  template:\n    metadata: {labels: {app: roll}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{name: c, image: 'skiff.local/busybox:1', command: [sleep, '3600']}]\n",
    );
    let rolled_out = |c: &Cluster, step: &str| {
        let d = c.json(&["get", "deployment", "roll"]);
        let s = &d["status"];
        let done = d["metadata"]["generation"] == s["observedGeneration"]
            && ["replicas", "updatedReplicas", "readyReplicas"]
                .iter()
                .all(|k| s[k] == 8);
        let pods = c.json(&["get", "pods", "-l", "app=roll"]);
        let pods = pods["items"].as_array().unwrap().clone();
        let running = pods.iter().all(|p| {
            let env = &p["spec"]["containers"][0]["env"];
            let at = env[0]["value"].as_str().unwrap_or("1");
            p["status"]["phase"] == "Running" && at == step
        });
        (done && running && pods.len() == 8).then_some(())
    };
    wait_for("8 pods running", LIMIT, || rolled_out(c, "1"));
    c.ok(&["set", "env", "deployment/roll", "STEP=2"]);
    // Not a wait for anything: the crash is meant to land mid-rollout.
    std::thread::sleep(Duration::from_millis(700));
    c.kill();
    c.spawn(flags);
    let deadline = std::time::Instant::now() + LIMIT;
    while rolled_out(c, "2").is_none() {
        if std::time::Instant::now() > deadline {
            let pods = c.ok(&["get", "pods", "-l", "app=roll", "-o", "wide"]);
            let d = c.ok(&["get", "deployment", "roll", "-o", "jsonpath={.status}"]);
            let rs = c.ok(&["get", "replicasets", "-l", "app=roll"]);
            panic!("the rollout did not complete after the restart:\n{pods}\n{d}\n{rs}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok(&["delete", "deployment", "roll"]);
}

/// The sandbox a container runs in, from containerd.
fn sandbox_of(socket: &Path, container_id: &str) -> String {
    let id = container_id.trim_start_matches("containerd://");
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "containers", "info", id])
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    info["Spec"]["annotations"]["io.kubernetes.cri.sandbox-id"]
        .as_str()
        .unwrap_or_else(|| panic!("no sandbox for container {id}"))
        .to_owned()
}

/// Environment and files from a ConfigMap and a Secret, checked through
/// `kubectl logs` and `kubectl exec`, with stdin and exit codes.
fn inputs_logs_and_exec(c: &Cluster) {
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
        c,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: reader}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'echo \"$GREETING $password $POD\"; sleep 3600']\n    env:\n    - {name: GREETING, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}\n    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n    envFrom: [{secretRef: {name: creds}}]\n    volumeMounts:\n    - {name: settings, mountPath: /etc/settings}\n    - {name: creds, mountPath: /etc/creds}\n    - {name: scratch, mountPath: /scratch}\n  volumes:\n  - {name: settings, configMap: {name: settings}}\n  - {name: creds, secret: {secretName: creds}}\n  - {name: scratch, emptyDir: {}}\n",
    );
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: unconfigured}\nspec:\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    envFrom: [{configMapRef: {name: absent}}]\n");
    wait_for("reader to log its environment", LIMIT, || {
        let out = c.kubectl(&["logs", "reader"]);
        (String::from_utf8_lossy(&out.stdout).trim() == "hello s3cret reader").then_some(())
    });
    let files = c.ok(&[
        "exec",
        "reader",
        "--",
        "sh",
        "-c",
        "cat /etc/settings/color; echo; cat /etc/creds/password; echo; test -d /scratch && echo scratch",
    ]);
    assert_eq!(files, "blue\ns3cret\nscratch\n");
    let echoed = c.kubectl_stdin(&["exec", "-i", "reader", "--", "cat"], "from stdin\n");
    assert_success(&echoed, "exec -i");
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "from stdin\n");
    let failed = c.kubectl(&["exec", "reader", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(
        failed.status.code(),
        Some(3),
        "exec passes the exit code on"
    );
    assert!(String::from_utf8_lossy(&failed.stderr).contains("oops"));
    // `kubectl debug` adds an ephemeral container that sees the target
    // container's processes.
    c.ok(&[
        "debug",
        "reader",
        "--image=skiff.local/busybox:1",
        "--image-pull-policy=Never",
        "--container=dbg",
        "--target=main",
        "--",
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline; echo",
    ]);
    let seen = wait_for("the debug container to end", LIMIT, || {
        let p = pod(c, "reader");
        let s = p["status"]["ephemeralContainerStatuses"][0].clone();
        s["state"]["terminated"].is_object().then_some(s)
    });
    assert_eq!(seen["name"], "dbg");
    assert_eq!(seen["state"]["terminated"]["exitCode"], 0, "{seen}");
    wait_for(
        "the target's pid 1 in the debug container's log",
        LIMIT,
        || {
            let shown = c.ok(&["logs", "reader", "-c", "dbg"]);
            shown.contains("sleep 3600").then_some(())
        },
    );
    let tail = c.ok(&["logs", "reader", "--tail=1", "--timestamps"]);
    assert!(
        tail.ends_with(" hello s3cret reader\n") && tail.starts_with("20"),
        "{tail}"
    );
    wait_for("unconfigured to wait for its ConfigMap", LIMIT, || {
        let s = container_state(&pod(c, "unconfigured"));
        (s["state"]["waiting"]["reason"] == "CreateContainerConfigError").then_some(())
    });
    // The node's Summary API, through the API server's node proxy: the
    // reader's memory and, from the second sample on, its CPU rate.
    let node = pod(c, "reader")["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("/api/v1/nodes/{node}/proxy/stats/summary");
    wait_for("the reader's usage in the node's summary", LIMIT, || {
        let summary: Value = serde_json::from_str(&c.ok(&["get", "--raw", &url])).ok()?;
        let reader = summary["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == "reader")?
            .clone();
        let main = &reader["containers"][0];
        let used = main["memory"]["workingSetBytes"].as_u64()? > 0
            && main["cpu"]["usageNanoCores"].is_u64()
            && main["name"] == "main";
        used.then_some(())
    });

    // The agent's own endpoint: a token's user must be allowed to use the
    // node (here `nodes/stats`); no token is 401.
    let port = c.json(&["get", "node", &node])["status"]["daemonEndpoints"]["kubeletEndpoint"]
        ["Port"]
        .as_u64()
        .unwrap();
    c.ok(&["create", "serviceaccount", "viewer"]);
    c.ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--serviceaccount=default:viewer",
    ]);
    let viewer = c.ok(&["create", "token", "viewer"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The agent's certificate is its own, self-signed: only the token is
    // under test here.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let stats = |token: Option<&str>| {
        let mut request = client.get(format!("https://127.0.0.1:{port}/stats/summary"));
        if let Some(t) = token {
            request = request.bearer_auth(t.trim());
        }
        runtime.block_on(async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let (code, body) = stats(Some(&c.admin_token()));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"podRef\""), "{body}");
    let (code, body) = stats(Some(&viewer));
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("Forbidden (user=system:serviceaccount:default:viewer, verb=get, resource=nodes, subresource(s)=[stats])"),
        "{body}"
    );
    assert_eq!(stats(None).0, 401);
}

/// A registry on 127.0.0.1 (plain HTTP) that accepts connections and
/// never answers, so a pull from it never ends.
struct Silent {
    host: String,
    reached: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Silent {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = reached.clone();
        // Holds every connection open, silent, until the test ends.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
                held.push(conn);
            }
        });
        Self { host, reached }
    }
}

/// While one pod's pull hangs on the silent registry, another pod starts
/// and a third one's crashed container restarts.
fn a_hanging_pull_delays_no_other_pod(c: &Cluster, silent: &Silent) {
    let reached = &silent.reached;
    let manifest = |name: &str, image: &str, cmd: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: main, image: '{image}', imagePullPolicy: Always, command: [sh, -c, '{cmd}']}}\n")
    };
    create(
        c,
        &manifest("stuck", &format!("{}/never:1", silent.host), "true"),
    );
    wait_for("the pull to reach the silent registry", LIMIT, || {
        reached
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(())
    });
    let local = |name: &str, cmd: &str| {
        manifest(name, "skiff.local/busybox:1", cmd)
            .replace("imagePullPolicy: Always", "imagePullPolicy: Never")
    };
    create(c, &local("fresh", "sleep 3600"));
    create(c, &local("crashy", "sleep 1; exit 1"));
    wait_for("fresh to run and crashy to restart", LIMIT, || {
        let fresh = pod(c, "fresh")["status"]["phase"] == "Running";
        let restarts = container_state(&pod(c, "crashy"))["restartCount"].as_u64()?;
        (fresh && restarts >= 1).then_some(())
    });
    // All the while, the stuck pod's pull has not come back.
    let stuck = container_state(&pod(c, "stuck"));
    assert_eq!(
        stuck["state"]["waiting"]["reason"], "ContainerCreating",
        "{stuck}"
    );
    c.ok(&["delete", "pod", "stuck", "fresh", "crashy", "--wait=false"]);
}

/// A pod gets its service account's token, the cluster CA and its
/// namespace without asking, and the API server's address in its
/// environment; the token names the account, carries only its rights, and
/// dies with the pod.
fn service_account_credentials(c: &Cluster) {
    create(
        c,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: sa-reader}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {name: main, image: 'skiff.local/busybox:1', command: [sleep, '3600']}\n",
    );
    wait_for("sa-reader to run", LIMIT, || {
        (pod(c, "sa-reader")["status"]["phase"] == "Running").then_some(())
    });
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    let read = |file: &str| c.ok(&["exec", "sa-reader", "--", "cat", &format!("{dir}/{file}")]);
    let token = read("token");
    assert_eq!(read("namespace"), "default");
    assert!(read("ca.crt").starts_with("-----BEGIN CERTIFICATE-----"));
    let host = c.ok(&[
        "exec",
        "sa-reader",
        "--",
        "sh",
        "-c",
        "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
    ]);
    let ip = c.ok(&[
        "get",
        "service",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(host.trim(), format!("{ip}:443"));
    let as_pod = |args: &[&str]| c.kubectl_as(&token, args);
    let whoami = as_pod(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_success(&whoami, "auth whoami with the pod's token");
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "system:serviceaccount:default:default"
    );
    let secrets = as_pod(&["get", "secrets"]);
    assert!(
        String::from_utf8_lossy(&secrets.stderr).contains(
            "User \"system:serviceaccount:default:default\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        String::from_utf8_lossy(&secrets.stderr)
    );
    c.ok(&["delete", "pod", "sa-reader", "--wait=true"]);
    let after = as_pod(&["auth", "whoami"]);
    assert!(!after.status.success());
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
}

/// `kubectl port-forward` reaches an httpd in a pod, through kubectl's
/// SPDY-over-WebSocket tunnel (no fallback) and through plain SPDY;
/// `kubectl cp` copies a file in and out (tar over exec).
fn port_forward_and_copy(c: &Cluster) {
    create(
        c,
        &manifest(
            "httpd",
            "Always",
            "IfNotPresent",
            "skiff.local/busybox:1",
            "mkdir -p /www && echo served > /www/index.html && httpd -f -p 8080 -h /www",
        ),
    );
    wait_for("httpd to run", LIMIT, || {
        (pod(c, "httpd")["status"]["phase"] == "Running").then_some(())
    });
    for websockets in ["true", "false"] {
        let port = support::free_port();
        let log = c.dir.path().join(format!("port-forward-{websockets}.log"));
        let mut forward = c
            .kubectl_cmd(&["port-forward", "-v=4", "pod/httpd", &format!("{port}:8080")])
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let page = wait_for("a page through port-forward", LIMIT, || {
            use std::io::{Read, Write};
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            conn.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
            let mut reply = String::new();
            conn.read_to_string(&mut reply).ok()?;
            reply.contains("200 OK").then_some(reply)
        });
        let _ = forward.kill();
        let _ = forward.wait();
        assert!(page.ends_with("served\n"), "{page}");
        let said = std::fs::read_to_string(&log).unwrap();
        assert!(
            !said.contains("fallback to secondary dialer"),
            "the tunnel was refused: {said}"
        );
    }

    let local = c.dir.path().join("to-copy");
    std::fs::write(&local, "copied\n").unwrap();
    c.ok(&["cp", local.to_str().unwrap(), "httpd:/tmp/copied"]);
    assert_eq!(
        c.ok(&["exec", "httpd", "--", "cat", "/tmp/copied"]),
        "copied\n"
    );
    let back = c.dir.path().join("copied-back");
    c.ok(&["cp", "httpd:/www/index.html", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(back).unwrap(), "served\n");
}

/// Readiness gates Ready; a failing liveness probe restarts.
fn probes(c: &Cluster) {
    let probed = |name: &str, probe: &str, cmd: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, '{cmd}']\n    {probe}: {{exec: {{command: [sh, -c, test -f /tmp/flag]}}, periodSeconds: 1, failureThreshold: 1}}\n")
    };
    create(
        c,
        &probed(
            "warming",
            "readinessProbe",
            "sleep 4; touch /tmp/flag; sleep 3600",
        ),
    );
    create(
        c,
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
        let p = pod(c, "warming");
        (p["status"]["phase"] == "Running" && ready(&p) == Some(false)).then_some(())
    });
    wait_for("warming to become ready", LIMIT, || {
        ready(&pod(c, "warming")).filter(|r| *r).map(|_| ())
    });
    wait_for(
        "sickly to be restarted by its liveness probe",
        LIMIT,
        || {
            let s = container_state(&pod(c, "sickly"));
            (s["restartCount"].as_i64() >= Some(1)).then_some(())
        },
    );
}

/// `$(VAR)` in an environment value, the command and a `subPathExpr`
/// names the container's variables, as upstream's kubelet expands them;
/// a recursively read-only mount is made so, or refused with upstream's
/// reason where the runtime cannot, and each mount's status says which.
fn references_and_mount_modes(c: &Cluster) {
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: expanded}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'echo \"$(GREETING) from $(POD)\"; echo \"$WHO\"; touch /data/mine; sleep 3600']\n    env:\n    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n    - {name: GREETING, value: hello}\n    - {name: WHO, value: '$(GREETING), $(POD), $$(POD)'}\n    volumeMounts:\n    - {name: data, mountPath: /data, subPathExpr: $(POD)}\n    - {name: data, mountPath: /all}\n    - {name: data, mountPath: /ro, readOnly: true, recursiveReadOnly: IfPossible}\n  volumes:\n  - {name: data, emptyDir: {}}\n");
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: strict}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sleep, '3600']\n    volumeMounts: [{name: data, mountPath: /ro, readOnly: true, recursiveReadOnly: Enabled}]\n  volumes:\n  - {name: data, emptyDir: {}}\n");
    wait_for("expanded to log its references", LIMIT, || {
        let out = c.kubectl(&["logs", "expanded"]);
        let logged = String::from_utf8_lossy(&out.stdout).into_owned();
        (logged == "hello from expanded\nhello, expanded, $(POD)\n").then_some(())
    });
    assert_eq!(
        c.ok(&["exec", "expanded", "--", "ls", "/all/expanded"]),
        "mine\n"
    );
    // Where the runtime cannot make a mount recursively read-only, a pod
    // that must have one waits, and one that may do without runs with a
    // plain read-only mount.
    let supported = wait_for("strict to run or be refused", LIMIT, || {
        let s = container_state(&pod(c, "strict"));
        if s["state"]["running"].is_object() {
            return Some(true);
        }
        let waiting = &s["state"]["waiting"];
        let refused = "failed to resolve recursive read-only mode: volume \"data\" requested recursive read-only mode, but it is not supported by the runtime";
        (waiting["reason"] == "CreateContainerConfigError" && waiting["message"] == refused)
            .then_some(false)
    });
    let mounts = container_state(&pod(c, "expanded"))["volumeMounts"].clone();
    let mode = if supported { "Enabled" } else { "Disabled" };
    let ro = serde_json::json!({"name": "data", "mountPath": "/ro", "readOnly": true, "recursiveReadOnly": mode});
    assert_eq!(mounts[2], ro, "{mounts}");
    assert_eq!(
        mounts[0],
        serde_json::json!({"name": "data", "mountPath": "/data"})
    );
    // Both-way propagation is for privileged containers only.
    let refused = c.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata: {name: shared}\nspec:\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    volumeMounts: [{name: data, mountPath: /d, mountPropagation: Bidirectional}]\n  volumes:\n  - {name: data, emptyDir: {}}\n");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("spec.containers[0].volumeMounts.mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers"),
        "{why}"
    );
    c.ok(&["delete", "pod", "expanded", "strict", "--wait=false"]);
}

/// A pod's `/etc/hosts` is the agent's, with the pod's own names and its
/// `hostAliases`; its `dnsConfig` joins the cluster's resolver settings;
/// `setHostnameAsFQDN` gives the kernel the full name; an ExternalName
/// Service resolves as an alias.
fn names_and_resolution(c: &Cluster) {
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: named}\nspec:\n  terminationGracePeriodSeconds: 1\n  hostname: box\n  subdomain: web\n  setHostnameAsFQDN: true\n  hostAliases: [{ip: 192.0.2.7, hostnames: [db.local, cache.local]}]\n  dnsConfig: {searches: [corp.example], options: [{name: ndots, value: '2'}, {name: edns0}]}\n  containers:\n  - {name: main, image: skiff.local/busybox:1, command: [sleep, '3600']}\n");
    let ip = wait_for("named to run", LIMIT, || {
        let p = pod(c, "named");
        let running = container_state(&p)["state"]["running"].is_object();
        running
            .then(|| p["status"]["podIP"].as_str().map(str::to_owned))
            .flatten()
    });
    let hosts = c.ok(&["exec", "named", "--", "cat", "/etc/hosts"]);
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!("\n{ip}\tbox.web.default.svc.")),
        "{hosts}"
    );
    assert!(
        hosts.ends_with("\n# Entries added by HostAliases.\n192.0.2.7\tdb.local\tcache.local\n"),
        "{hosts}"
    );
    let resolv = c.ok(&["exec", "named", "--", "cat", "/etc/resolv.conf"]);
    let line = |key: &str| {
        resolv
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("search ").ends_with(" corp.example"), "{resolv}");
    assert_eq!(line("options "), "options ndots:2 edns0", "{resolv}");
    let hostname = c.ok(&["exec", "named", "--", "hostname"]);
    assert!(hostname.starts_with("box.web.default.svc."), "{hostname}");
    // An ExternalName Service is an alias of its name: here the API
    // server's Service, whose address the lookup ends at.
    create(c, "apiVersion: v1\nkind: Service\nmetadata: {name: alias}\nspec:\n  type: ExternalName\n  externalName: kubernetes.default.svc.cluster.local\n");
    let found = c.ok(&[
        "exec",
        "named",
        "--",
        "nslookup",
        "alias.default.svc.cluster.local",
    ]);
    assert!(
        found.contains("canonical name = kubernetes.default.svc.cluster.local"),
        "{found}"
    );
    assert!(found.contains("Address: 10.43.0.1"), "{found}");
    c.ok(&["delete", "service", "alias"]);
    c.ok(&["delete", "pod", "named", "--wait=false"]);
}

/// What a container writes to its `terminationMessagePath` is its
/// terminated state's message; with `FallbackToLogsOnError` a failed one
/// that wrote nothing is told by its log's tail.
fn termination_messages(c: &Cluster) {
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: farewell}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: file, image: skiff.local/busybox:1, command: [sh, -c, 'echo -n done well > /dev/termination-log']}\n  - {name: logs, image: skiff.local/busybox:1, command: [sh, -c, 'echo last words; exit 2'], terminationMessagePolicy: FallbackToLogsOnError}\n");
    let messages = wait_for("farewell's containers to end", LIMIT, || {
        let p = pod(c, "farewell");
        let statuses = p["status"]["containerStatuses"].as_array()?.clone();
        let ended: Vec<_> = statuses
            .iter()
            .filter_map(|s| s["state"]["terminated"].as_object())
            .collect();
        (ended.len() == 2).then(|| {
            ended
                .iter()
                .map(|t| t.get("message").cloned())
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(
        messages,
        [Some("done well".into()), Some("last words\n".into())]
    );
    // A pod past its activeDeadlineSeconds fails, as upstream's kubelet
    // fails it.
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: deadline}\nspec:\n  activeDeadlineSeconds: 2\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, image: skiff.local/busybox:1, command: [sleep, '3600']}\n");
    let status = wait_for("deadline to fail", LIMIT, || {
        let s = pod(c, "deadline")["status"].clone();
        (s["phase"] == "Failed").then_some(s)
    });
    assert_eq!(status["reason"], "DeadlineExceeded", "{status}");
    assert_eq!(
        status["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    c.ok(&["delete", "pod", "farewell", "deadline", "--wait=false"]);
}

/// A RuntimeClass's handler reaches containerd: `runc`, the runtime the
/// agent configures, runs the pod; a handler containerd lacks fails the
/// sandbox with containerd's reason, shown as an event.
fn runtime_classes(c: &Cluster) {
    create(c, "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: plain}\nhandler: runc\n---\napiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: kata}\nhandler: kata\n");
    let shown = c.ok(&["get", "runtimeclasses"]);
    assert!(
        shown.contains("HANDLER") && shown.contains("runc"),
        "{shown}"
    );
    let classed = |name: &str, class: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  runtimeClassName: {class}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: main, image: skiff.local/busybox:1, command: [sleep, '3600']}}\n")
    };
    create(c, &classed("with-runc", "plain"));
    create(c, &classed("with-kata", "kata"));
    wait_for("with-runc to run", LIMIT, || {
        (pod(c, "with-runc")["status"]["phase"] == "Running").then_some(())
    });
    let event = wait_for("with-kata's sandbox to fail", LIMIT, || {
        let events = c.json(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=with-kata,reason=FailedCreatePodSandBox",
        ]);
        events["items"].as_array()?.first().cloned()
    });
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains("no runtime for \"kata\" is configured"),
        "{message}"
    );
    assert_eq!(pod(c, "with-kata")["status"]["phase"], "Pending");
    // A class deleted after its pod was admitted fails the pod's sandbox,
    // as upstream's kubelet does: no handler is guessed.
    create(
        c,
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: brief}\nhandler: runc\n",
    );
    let held = classed("with-brief", "brief").replace(
        "  containers:",
        "  schedulingGates: [{name: example.com/hold}]\n  containers:",
    );
    create(c, &held);
    c.ok(&["delete", "runtimeclass", "brief"]);
    c.ok(&[
        "patch",
        "pod",
        "with-brief",
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/spec/schedulingGates"}]"#,
    ]);
    let event = wait_for("with-brief's sandbox to fail", LIMIT, || {
        let events = c.json(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=with-brief,reason=FailedCreatePodSandBox",
        ]);
        events["items"].as_array()?.first().cloned()
    });
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains(r#"runtimeclass.node.k8s.io "brief" not found"#),
        "{message}"
    );
    assert_eq!(pod(c, "with-brief")["status"]["phase"], "Pending");
    c.ok(&[
        "delete",
        "pod",
        "with-runc",
        "with-kata",
        "with-brief",
        "--wait=false",
    ]);
}

/// An Indexed Job's pods each know their index (variable and hostname),
/// and its status lists the done ones; a pod failure policy's `FailJob`
/// rule fails a Job on the first matching exit code, whatever its
/// backoff limit.
fn indexed_jobs_and_failure_policies(c: &Cluster) {
    create(c, "apiVersion: batch/v1\nkind: Job\nmetadata: {name: shards}\nspec:\n  completionMode: Indexed\n  completions: 3\n  parallelism: 3\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {name: main, image: skiff.local/busybox:1, command: [sh, -c, 'test \"$(hostname)\" = shards-$JOB_COMPLETION_INDEX && echo shard $JOB_COMPLETION_INDEX']}\n");
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/shards",
        "--timeout=60s",
    ]);
    let job = c.json(&["get", "job", "shards"]);
    assert_eq!(
        (
            &job["status"]["completedIndexes"],
            &job["status"]["succeeded"]
        ),
        (&"0-2".into(), &3.into()),
        "{}",
        job["status"]
    );
    let index = "batch.kubernetes.io/job-completion-index";
    let second = c.json(&["get", "pods", "-l", &format!("job-name=shards,{index}=1")]);
    let name = second["items"][0]["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("shards-1-"), "{name}");
    assert_eq!(c.ok(&["logs", name]).trim(), "shard 1");

    create(c, "apiVersion: batch/v1\nkind: Job\nmetadata: {name: picky}\nspec:\n  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes: {operator: In, values: [42]}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {name: main, image: skiff.local/busybox:1, command: [sh, -c, 'exit 42']}\n");
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/picky",
        "--timeout=60s",
    ]);
    let job = c.json(&["get", "job", "picky"]);
    let failed = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["reason"], "PodFailurePolicy");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.ends_with("failed with exit code 42 matching FailJob rule at index 0"),
        "{message}"
    );
    assert_eq!(job["status"]["failed"], 1, "no second pod ran");

    // A Job's pod carries its tracking finalizer until counted: deleted
    // while running, it counts as failed once the node wrote it Failed,
    // then goes, and is replaced.
    create(c, "apiVersion: batch/v1\nkind: Job\nmetadata: {name: keeper}\nspec:\n  podReplacementPolicy: Failed\n  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers:\n      - {name: main, image: skiff.local/busybox:1, command: [sleep, '3600']}\n");
    let first = wait_for("keeper's pod to run", LIMIT, || {
        let pods = c.json(&["get", "pods", "-l", "job-name=keeper"]);
        let p = pods["items"].as_array()?.first()?.clone();
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(
        first["metadata"]["finalizers"],
        serde_json::json!(["batch.kubernetes.io/job-tracking"])
    );
    let name = first["metadata"]["name"].as_str().unwrap();
    c.ok(&["delete", "pod", name, "--wait=false"]);
    c.ok(&[
        "wait",
        "--for=delete",
        &format!("pod/{name}"),
        "--timeout=60s",
    ]);
    wait_for(
        "keeper to count the failure and replace the pod",
        LIMIT,
        || {
            let job = c.json(&["get", "job", "keeper"]);
            let pods = c.json(&["get", "pods", "-l", "job-name=keeper"]);
            let replaced = pods["items"].as_array()?.len() == 1;
            (job["status"]["failed"] == 1 && replaced).then_some(())
        },
    );
    // How a deleted pod ended is read after its stop: a process that
    // exits 0 on SIGTERM leaves the pod Succeeded, and its Job complete.
    create(c, "apiVersion: batch/v1\nkind: Job\nmetadata: {name: graceful}\nspec:\n  podReplacementPolicy: Failed\n  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 20\n      containers:\n      - {name: main, image: skiff.local/busybox:1, command: [sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 1; done']}\n");
    let pod = wait_for("graceful's pod to run", LIMIT, || {
        let pods = c.json(&["get", "pods", "-l", "job-name=graceful"]);
        let p = pods["items"].as_array()?.first()?.clone();
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let name = pod["metadata"]["name"].as_str().unwrap();
    c.ok(&["delete", "pod", name, "--wait=false"]);
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/graceful",
        "--timeout=60s",
    ]);
    let job = c.json(&["get", "job", "graceful"]);
    assert_eq!(
        (&job["status"]["succeeded"], &job["status"]["failed"]),
        (&serde_json::json!(1), &serde_json::Value::Null),
        "{}",
        job["status"]
    );
    c.ok(&[
        "delete",
        "jobs",
        "shards",
        "picky",
        "keeper",
        "graceful",
        "--wait=false",
    ]);
}

/// A sidecar starts in the init sequence (the next init container waits
/// for its startup probe), runs beside the app and is stopped once the
/// app is done; environment variables read from an env file an init
/// container wrote; `hostnameOverride`; a container's own restart rules;
/// a pod for another OS refused.
fn sidecars_rules_and_env_files(c: &Cluster) {
    create(
        c,
        r#"apiVersion: v1
kind: Pod
metadata: {name: sidecar}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  hostnameOverride: db.example
  initContainers:
  - name: side
    image: skiff.local/busybox:1
    restartPolicy: Always
    command: [sh, -c, 'sleep 1; echo up > /shared/side; exec sleep 3600']
    startupProbe: {exec: {command: [test, -f, /shared/side]}, periodSeconds: 1}
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: env
    image: skiff.local/busybox:1
    command:
    - sh
    - -c
    - |
      cat /shared/side
      printf "DB='db:5432'\nNOTE='two words'\n" > /shared/config.env
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: main
    image: skiff.local/busybox:1
    command: [sh, -c, 'echo "$DB|$NOTE|${GONE-unset}"; hostname']
    env:
    - {name: DB, valueFrom: {fileKeyRef: {volumeName: shared, path: config.env, key: DB}}}
    - {name: NOTE, valueFrom: {fileKeyRef: {volumeName: shared, path: config.env, key: NOTE}}}
    - {name: GONE, valueFrom: {fileKeyRef: {volumeName: shared, path: config.env, key: GONE, optional: true}}}
  volumes: [{name: shared, emptyDir: {}}]
"#,
    );
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: rules}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    restartPolicy: Never\n    restartPolicyRules: [{action: Restart, exitCodes: {operator: In, values: [42]}}]\n    command: [sh, -c, 'if [ -f /data/once ]; then exit 3; fi; touch /data/once; exit 42']\n    volumeMounts: [{name: data, mountPath: /data}]\n  volumes: [{name: data, emptyDir: {}}]\n");
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: windows}\nspec:\n  os: {name: windows}\n  containers:\n  - {name: main, image: skiff.local/busybox:1, command: [sleep, '3600']}\n");
    let p = wait_for("sidecar to succeed", LIMIT, || {
        let p = pod(c, "sidecar");
        (p["status"]["phase"] == "Succeeded").then_some(p)
    });
    // The env init container ran once the sidecar had written its file;
    // the sidecar was stopped before the pod was reported done.
    assert_eq!(c.ok(&["logs", "sidecar", "-c", "env"]), "up\n");
    let inits = &p["status"]["initContainerStatuses"];
    assert!(inits[0]["state"]["terminated"].is_object(), "{inits}");
    assert_eq!(inits[1]["state"]["terminated"]["exitCode"], 0, "{inits}");
    assert_eq!(
        c.ok(&["logs", "sidecar", "-c", "main"]),
        "db:5432|two words|unset\ndb.example\n"
    );
    let main = wait_for("rules to end", LIMIT, || {
        let p = pod(c, "rules");
        (p["status"]["phase"] == "Failed").then(|| container_state(&p))
    });
    assert_eq!(main["restartCount"], 1, "{main}");
    assert_eq!(main["state"]["terminated"]["exitCode"], 3, "{main}");
    let status = wait_for("windows to be refused", LIMIT, || {
        let s = pod(c, "windows")["status"].clone();
        (s["phase"] == "Failed").then_some(s)
    });
    assert_eq!(status["reason"], "PodOSNotSupported", "{status}");
    c.ok(&[
        "delete",
        "pod",
        "sidecar",
        "rules",
        "windows",
        "--wait=false",
    ]);
}

/// A container's `hostPort` is the node's: reached on the node, and held,
/// so a second pod asking for it is not scheduled, nor admitted when it
/// names the node.
fn host_ports(c: &Cluster) {
    let port = support::free_port();
    let manifest = |name: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: httpd\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && httpd -f -p 8080 -h /www']\n    ports: [{{containerPort: 8080, hostPort: {port}}}]\n")
    };
    create(c, &manifest("hostport"));
    let answer = wait_for("the pod to answer on the node's port", LIMIT, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.contains("200 OK").then_some(out)
    });
    assert!(answer.ends_with("\r\n\r\nhostport\n"), "{answer}");
    create(c, &manifest("hostport-again"));
    let why = wait_for("the second pod not to be scheduled", LIMIT, || {
        let p = pod(c, "hostport-again");
        let conditions = p["status"]["conditions"].as_array()?.clone();
        let scheduled = conditions.iter().find(|c| c["type"] == "PodScheduled")?;
        (scheduled["status"] == "False").then(|| scheduled["message"].clone())
    });
    assert!(
        why.as_str()
            .unwrap_or_default()
            .contains("didn't have free ports for the requested pod ports"),
        "{why}"
    );
    // A pod that names the node skips the scheduler; the agent's own
    // admission refuses it.
    let node = pod(c, "hostport")["spec"]["nodeName"].clone();
    let pinned =
        manifest("hostport-pinned").replace("spec:\n", &format!("spec:\n  nodeName: {node}\n"));
    create(c, &pinned);
    let status = wait_for("the pinned pod to be refused", LIMIT, || {
        let s = pod(c, "hostport-pinned")["status"].clone();
        (s["phase"] == "Failed").then_some(s)
    });
    assert_eq!(status["reason"], "NodePorts", "{status}");
    assert_eq!(
        status["message"],
        "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
    );
    c.ok(&[
        "delete",
        "pod",
        "hostport",
        "hostport-again",
        "hostport-pinned",
        "--wait=false",
    ]);
}

/// Init containers run in order before the app; downwardAPI files and a
/// memory-backed emptyDir; a failing init container fails a Never pod.
fn init_containers_and_volumes(c: &Cluster) {
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: inits, labels: {app: inits}}\nspec:\n  terminationGracePeriodSeconds: 1\n  initContainers:\n  - {name: one, image: skiff.local/busybox:1, command: [sh, -c, 'echo first > /work/order'], volumeMounts: [{name: work, mountPath: /work}]}\n  - {name: two, image: skiff.local/busybox:1, command: [sh, -c, 'sleep 1; echo second >> /work/order'], volumeMounts: [{name: work, mountPath: /work}]}\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'cat /work/order; sleep 3600']\n    volumeMounts: [{name: work, mountPath: /work}, {name: info, mountPath: /info}, {name: mem, mountPath: /mem}]\n  volumes:\n  - {name: work, emptyDir: {}}\n  - {name: mem, emptyDir: {medium: Memory}}\n  - name: info\n    downwardAPI:\n      items:\n      - {path: name, fieldRef: {fieldPath: metadata.name}}\n      - {path: labels, fieldRef: {fieldPath: metadata.labels}}\n");
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: badinit}\nspec:\n  restartPolicy: Never\n  initContainers:\n  - {name: setup, image: skiff.local/busybox:1, command: [sh, -c, 'exit 2']}\n  containers:\n  - {name: main, image: skiff.local/busybox:1, command: [sh, -c, 'sleep 3600']}\n");
    wait_for("inits to run after its init containers", LIMIT, || {
        let p = pod(c, "inits");
        let inits = p["status"]["initContainerStatuses"].as_array()?.clone();
        let done = inits.len() == 2
            && inits
                .iter()
                .all(|s| s["state"]["terminated"]["reason"] == "Completed");
        (done && p["status"]["phase"] == "Running").then_some(())
    });
    // As upstream's kubelet: a finished init container is ready but not
    // started, and a status names the image the runtime ran by its id.
    let p = pod(c, "inits");
    for s in p["status"]["initContainerStatuses"].as_array().unwrap() {
        assert_eq!(
            (&s["ready"], &s["started"]),
            (&true.into(), &false.into()),
            "{s}"
        );
    }
    let main = &p["status"]["containerStatuses"][0];
    let id = main["imageID"].as_str().unwrap_or_default();
    assert!(id.contains("sha256:"), "{main}");
    wait_for(
        "the app to log what the init containers wrote",
        LIMIT,
        || {
            let out = c.kubectl(&["logs", "inits"]);
            (String::from_utf8_lossy(&out.stdout) == "first\nsecond\n").then_some(())
        },
    );
    assert_eq!(c.ok(&["exec", "inits", "--", "cat", "/info/name"]), "inits");
    assert_eq!(
        c.ok(&["exec", "inits", "--", "cat", "/info/labels"]),
        "app=\"inits\"\n"
    );
    let mounts = c.ok(&["exec", "inits", "--", "cat", "/proc/mounts"]);
    assert!(
        mounts.lines().any(|l| l.starts_with("tmpfs /mem tmpfs")),
        "{mounts}"
    );
    // A projected service account token authenticates to the API server.
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: tokened}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sleep, '3600']\n    volumeMounts: [{name: api, mountPath: /var/run/secrets/api}]\n  volumes:\n  - name: api\n    projected:\n      sources:\n      - serviceAccountToken: {path: token, expirationSeconds: 3600}\n      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}\n");
    wait_for("tokened to run", LIMIT, || {
        (pod(c, "tokened")["status"]["phase"] == "Running").then_some(())
    });
    let token = c.ok(&["exec", "tokened", "--", "cat", "/var/run/secrets/api/token"]);
    assert_eq!(
        c.ok(&[
            "exec",
            "tokened",
            "--",
            "cat",
            "/var/run/secrets/api/namespace"
        ]),
        "default"
    );
    // The token names its ServiceAccount, which may do nothing until a
    // role is bound to it.
    let as_pod = ["get", "pod", "tokened", "-o", "name"];
    let out = c.kubectl_as(token.trim(), &as_pod);
    assert!(!out.status.success());
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        refused.contains(r#"User "system:serviceaccount:default:default" cannot get resource "pods" in API group "" in the namespace "default""#),
        "{refused}"
    );
    c.ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    let listed = wait_for("the binding to take effect", LIMIT, || {
        let out = c.kubectl_as(token.trim(), &as_pod);
        out.status.success().then_some(out.stdout)
    });
    assert_eq!(String::from_utf8_lossy(&listed).trim(), "pod/tokened");
    let refused = c.kubectl_as("not-a-token", &["get", "pods"]);
    assert!(!refused.status.success());
    wait_for("badinit to fail", LIMIT, || {
        let p = pod(c, "badinit");
        let init = &p["status"]["initContainerStatuses"][0];
        (p["status"]["phase"] == "Failed" && init["state"]["terminated"]["exitCode"] == 2)
            .then_some(())
    });
}

/// Going past the memory limit is OOMKilled; deletion runs the preStop hook
/// and sends SIGTERM, which the process handles within its grace period.
/// `kubectl patch --subresource resize` changes a running container's
/// cpu in place (its cgroup follows, no restart) and its memory with a
/// restart where its resize policy asks; a resize the node cannot hold
/// waits, `Infeasible`; resources change through `resize` only, and never
/// the pod's QoS class.
fn in_place_resize(c: &Cluster) {
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: resized}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sleep, '3600']\n    resources: {requests: {cpu: 100m, memory: 32Mi}, limits: {cpu: 200m, memory: 64Mi}}\n    resizePolicy: [{resourceName: cpu, restartPolicy: NotRequired}, {resourceName: memory, restartPolicy: RestartContainer}]\n");
    wait_for("resized to run", LIMIT, || {
        (pod(c, "resized")["status"]["phase"] == "Running").then_some(())
    });
    let read = |file: &str| {
        c.ok(&["exec", "resized", "--", "cat", file])
            .trim()
            .to_owned()
    };
    let quota = || read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
    assert_eq!(quota(), "20000");
    let resize = |patch: &str| {
        c.kubectl(&[
            "patch",
            "pod",
            "resized",
            "--subresource",
            "resize",
            "-p",
            patch,
        ])
    };
    let cpu = r#"{"spec":{"containers":[{"name":"main","resources":{"requests":{"cpu":"150m"},"limits":{"cpu":"300m"}}}]}}"#;
    assert_success(&resize(cpu), "resize cpu");
    let status = wait_for("the new cpu to be applied", LIMIT, || {
        let p = pod(c, "resized");
        let s = container_state(&p);
        let settled = s["resources"]["limits"]["cpu"] == "300m"
            && !p["status"]["conditions"].as_array()?.iter().any(|c| {
                c["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("PodResize"))
            });
        settled.then_some(s)
    });
    assert_eq!(status["allocatedResources"]["cpu"], "150m", "{status}");
    assert_eq!(status["restartCount"], 0, "in place: {status}");
    assert_eq!(quota(), "30000");
    // Resources change through the subresource only.
    let plain = c.kubectl(&[
        "patch",
        "pod",
        "resized",
        "-p",
        cpu.replace("150m", "160m").as_str(),
    ]);
    assert!(!plain.status.success());
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(
        said.contains("pod updates may not change fields other than"),
        "{said}"
    );
    // Requests raised to the limits would make the pod Guaranteed.
    let qos = resize(
        r#"{"spec":{"containers":[{"name":"main","resources":{"requests":{"cpu":"300m","memory":"64Mi"}}}]}}"#,
    );
    let said = String::from_utf8_lossy(&qos.stderr);
    assert!(
        said.contains("Pod QOS Class may not change as a result of resizing"),
        "{said}"
    );
    // More cpu than the node has waits, said so.
    let huge = r#"{"spec":{"containers":[{"name":"main","resources":{"requests":{"cpu":"1000"},"limits":{"cpu":"2000"}}}]}}"#;
    assert_success(&resize(huge), "resize beyond the node");
    let pending = wait_for("the resize to be Infeasible", LIMIT, || {
        let p = pod(c, "resized");
        let conditions = p["status"]["conditions"].as_array()?.clone();
        conditions
            .into_iter()
            .find(|c| c["type"] == "PodResizePending")
    });
    assert_eq!(pending["reason"], "Infeasible", "{pending}");
    assert!(
        pending["message"]
            .as_str()
            .unwrap()
            .starts_with("Node didn't have enough capacity: cpu, requested: 1000000"),
        "{pending}"
    );
    assert_eq!(quota(), "30000", "nothing applied");
    // Memory restarts the container, as its policy says, at the new size.
    let memory = r#"{"spec":{"containers":[{"name":"main","resources":{"requests":{"cpu":"150m","memory":"48Mi"},"limits":{"cpu":"300m","memory":"96Mi"}}}]}}"#;
    assert_success(&resize(memory), "resize memory");
    let status = wait_for("the container to restart with more memory", LIMIT, || {
        let p = pod(c, "resized");
        let s = container_state(&p);
        let pending = p["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "PodResizePending");
        (s["resources"]["limits"]["memory"] == "96Mi"
            && s["state"]["running"].is_object()
            && !pending)
            .then_some(s)
    });
    assert_eq!(status["restartCount"], 1, "{status}");
    let limit = read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    assert_eq!(limit, (96 << 20).to_string());
    c.ok(&["delete", "pod", "resized", "--wait=false"]);

    // A memory limit is not taken in place below what the container uses.
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: holder}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'held=$(head -c 16000000 /dev/zero | tr \"\\\\0\" x); while sleep 3600; do :; done']\n    resources: {requests: {memory: 32Mi}, limits: {memory: 64Mi}}\n");
    // The node agent judges by its latest sample of what containers use,
    // which the metrics API shows.
    wait_for("holder's memory to be sampled", LIMIT, || {
        let path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/holder";
        let out = c.kubectl(&["get", "--raw", path]);
        let m: Value = serde_json::from_slice(&out.stdout).ok()?;
        let memory = m["containers"][0]["usage"]["memory"].as_str()?.to_owned();
        let bytes = skiff_core::quantity::parse_milli(&memory)? / 1000;
        (bytes > 12 << 20).then_some(())
    });
    let shrink = r#"{"spec":{"containers":[{"name":"main","resources":{"requests":{"memory":"8Mi"},"limits":{"memory":"12Mi"}}}]}}"#;
    let shrunk = c.kubectl(&[
        "patch",
        "pod",
        "holder",
        "--subresource",
        "resize",
        "-p",
        shrink,
    ]);
    assert_success(&shrunk, "resize below usage");
    let error = wait_for("the resize to fail on usage", LIMIT, || {
        let p = pod(c, "holder");
        let conditions = p["status"]["conditions"].as_array()?.clone();
        conditions
            .into_iter()
            .find(|c| c["type"] == "PodResizeInProgress" && c["reason"] == "Error")
    });
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("memory limit (12582912) below current usage"),
        "{error}"
    );
    let held = c.ok(&[
        "exec",
        "holder",
        "--",
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(held.trim(), (64 << 20).to_string(), "the old limit stays");
    c.ok(&["delete", "pod", "holder", "--wait=false"]);
}

fn limits_and_termination(c: &Cluster) {
    // The hog waits a moment: containerd 1.6's shim watches for the
    // kernel's OOM kill only once the task has started, and reports an
    // earlier one as a plain exit 137 ("Error").
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: hog}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'sleep 1; dd if=/dev/zero of=/dev/null bs=64M count=1']\n    resources: {limits: {memory: 16Mi}}\n");
    wait_for("hog to be OOMKilled", LIMIT, || {
        let s = container_state(&pod(c, "hog"));
        (s["state"]["terminated"]["reason"] == "OOMKilled").then_some(())
    });
    // A container that writes more to its own filesystem than its
    // ephemeral-storage limit gets its pod evicted.
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: filler}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'dd if=/dev/zero of=/fill bs=1M count=16; sleep 3600']\n    resources: {limits: {ephemeral-storage: 4Mi}}\n");
    let status = wait_for("filler to be evicted", LIMIT, || {
        let s = pod(c, "filler")["status"].clone();
        (s["phase"] == "Failed").then_some(s)
    });
    assert_eq!(status["reason"], "Evicted", "{status}");
    assert_eq!(
        status["message"],
        "Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. "
    );
    c.ok(&["delete", "pod", "filler", "--wait=false"]);
    let host = c.dir.path().join("graceful");
    std::fs::create_dir_all(&host).unwrap();
    create(c, &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: graceful}}\nspec:\n  terminationGracePeriodSeconds: 60\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'trap \"echo clean > /host/term; exit 0\" TERM; while true; do sleep 1; done']\n    lifecycle: {{preStop: {{exec: {{command: [sh, -c, 'echo ran > /host/prestop']}}}}}}\n    volumeMounts: [{{name: host, mountPath: /host}}]\n  volumes: [{{name: host, hostPath: {{path: {}}}}}]\n", host.display()));
    wait_for("graceful to run", LIMIT, || {
        (pod(c, "graceful")["status"]["phase"] == "Running").then_some(())
    });
    let started = std::time::Instant::now();
    c.ok(&["delete", "pod", "graceful", "--timeout=60s"]);
    assert_eq!(
        std::fs::read_to_string(host.join("prestop")).unwrap(),
        "ran\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("term")).unwrap(),
        "clean\n"
    );
    // The process left on SIGTERM: nothing waited for the 60 s SIGKILL.
    assert!(started.elapsed() < Duration::from_secs(50));
    // A postStart hook runs as the container starts; one that fails kills
    // its container.
    create(c, "apiVersion: v1\nkind: Pod\nmetadata: {name: hooked}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    command: [sh, -c, 'while [ ! -f /tmp/hook ]; do sleep 0.2; done; cat /tmp/hook']\n    lifecycle: {postStart: {exec: {command: [sh, -c, 'echo hooked > /tmp/hook']}}}\n  - name: failing\n    image: skiff.local/busybox:1\n    command: [sleep, '3600']\n    lifecycle: {postStart: {exec: {command: [sh, -c, 'exit 3']}}}\n");
    let statuses = wait_for("hooked to fail", LIMIT, || {
        let p = pod(c, "hooked");
        (p["status"]["phase"] == "Failed").then(|| p["status"]["containerStatuses"].clone())
    });
    assert_eq!(
        statuses[0]["state"]["terminated"]["exitCode"], 0,
        "{statuses}"
    );
    assert!(statuses[1]["state"]["terminated"].is_object(), "{statuses}");
    assert_eq!(c.ok(&["logs", "hooked", "-c", "main"]), "hooked\n");
    let selector = "--field-selector=reason=FailedPostStartHook,involvedObject.name=hooked";
    let events = c.ok(&["get", "events", selector, "-o", "name"]);
    assert!(!events.trim().is_empty(), "no FailedPostStartHook event");
    c.ok(&["delete", "pod", "hooked", "--wait=false"]);
}

/// A pull from the local registry works; a missing image there reports
/// ErrImagePull, then ImagePullBackOff.
fn registry_pulls(c: &Cluster, registry: &str) {
    let pulled = format!("{registry}/test/busybox:1");
    let absent = format!("{registry}/test/absent:1");
    create(
        c,
        &manifest("pulled", "Always", "Always", &pulled, "sleep 3600"),
    );
    create(
        c,
        &manifest("unpullable", "Always", "IfNotPresent", &absent, "true"),
    );
    wait_for("pulled to run", LIMIT, || {
        (pod(c, "pulled")["status"]["phase"] == "Running").then_some(())
    });
    let mut reasons = std::collections::BTreeSet::new();
    wait_for("unpullable to back off", LIMIT, || {
        let s = container_state(&pod(c, "unpullable"));
        if let Some(r) = s["state"]["waiting"]["reason"].as_str() {
            reasons.insert(r.to_owned());
        }
        (reasons.contains("ImagePullBackOff")).then_some(())
    });
}

/// Whether anything is mounted from a pod's image volumes.
fn image_volume_mounted() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.contains("/image-volumes/")
}

/// An image volume shows an image's files read-only, whole or one of its
/// directories through `subPath`, pulled as a container's image is; one
/// that cannot be pulled keeps the pod's containers waiting; a deleted
/// pod leaves no mount and no snapshot behind.
fn image_volumes(c: &Cluster, registry: &str, socket: &Path) {
    let manifest = |name: &str, reference: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: skiff.local/busybox:1\n    imagePullPolicy: Never\n    command: [sh, -c, 'ls /img/etc; ls /sub; touch /img/x || echo refused; sleep 3600']\n    volumeMounts:\n    - {{name: img, mountPath: /img}}\n    - {{name: img, mountPath: /sub, subPath: bin}}\n  volumes:\n  - name: img\n    image: {{reference: \"{reference}\"}}\n"
        )
    };
    create(
        c,
        &manifest("image-volume", &format!("{registry}/test/busybox:1")),
    );
    create(
        c,
        &manifest("image-volume-absent", &format!("{registry}/test/absent:1")),
    );
    let shown = pod(c, "image-volume");
    assert_eq!(
        shown["spec"]["volumes"][0]["image"]["pullPolicy"],
        "IfNotPresent"
    );
    wait_for("the image volume's files in the container", LIMIT, || {
        let logs = c.kubectl(&["logs", "image-volume"]);
        let out = String::from_utf8_lossy(&logs.stdout).into_owned();
        (out.contains("passwd") && out.contains("busybox") && out.contains("refused")).then_some(())
    });
    assert!(image_volume_mounted());
    wait_for("the absent image to keep its pod waiting", LIMIT, || {
        let s = container_state(&pod(c, "image-volume-absent"));
        let reason = s["state"]["waiting"]["reason"].as_str()?.to_owned();
        ["ErrImagePull", "ImagePullBackOff"]
            .contains(&reason.as_str())
            .then_some(())
    });
    c.ok(&[
        "delete",
        "pod",
        "image-volume",
        "image-volume-absent",
        "--timeout=60s",
    ]);
    wait_for("the image volume to be unmounted", LIMIT, || {
        (!image_volume_mounted()).then_some(())
    });
    // Their snapshots and leases go with them.
    for what in ["leases", "snapshots"] {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", "k8s.io", what, "ls"])
            .output()
            .unwrap();
        assert_success(&out, what);
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(!listed.contains("image-volumes"), "{listed}");
    }
}

/// A registry that wants credentials serves a pod whose `imagePullSecrets`
/// hold them, and only such a pod.
fn private_registry_pulls(c: &Cluster, registry: &str) {
    let image = format!("{registry}/test/busybox:1");
    let manifest = |name: &str, secrets: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{secrets}  containers:\n  - {{name: main, image: '{image}', imagePullPolicy: Always, command: [sleep, '3600']}}\n")
    };
    create(c, &manifest("stranger", ""));
    c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={registry}"),
        "--docker-username=skiff",
        "--docker-password=s3cret",
    ]);
    create(
        c,
        &manifest(
            "member",
            "  imagePullSecrets: [{name: absent}, {name: regcred}]\n",
        ),
    );
    wait_for("member to run on a pull with its secret", LIMIT, || {
        (container_state(&pod(c, "member"))["state"]["running"].is_object()).then_some(())
    });
    wait_for("stranger to be refused its image", LIMIT, || {
        let waiting = &container_state(&pod(c, "stranger"))["state"]["waiting"];
        matches!(
            waiting["reason"].as_str(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
        .then_some(())
    });
    let described = c.ok(&["describe", "pod", "member"]);
    assert!(
        described.contains("Unable to retrieve some image pull secrets (absent)"),
        "{described}"
    );
    c.ok(&["delete", "pod", "stranger", "member", "--wait=false"]);
}

/// A ClusterIP Service balances over both replicas of a Deployment, fails
/// fast with none, recovers on scale-up, and its rules go with it.
fn services_route_to_ready_pods(c: &Cluster) {
    create(c, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: httpd\n        image: skiff.local/busybox:1\n        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && httpd -f -p 8080 -h /www']\n        ports: [{name: http, containerPort: 8080}]\n        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n");
    create(
        c,
        &manifest(
            "client",
            "Always",
            "IfNotPresent",
            "skiff.local/busybox:1",
            "sleep 3600",
        ),
    );
    c.ok(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    wait_for("client to run", LIMIT, || {
        (pod(c, "client")["status"]["phase"] == "Running").then_some(())
    });
    let ip = c.json(&["get", "service", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_owned();
    let fetch = |target: &str| {
        c.kubectl(&[
            "exec",
            "client",
            "--",
            "timeout",
            "3",
            "wget",
            "-qO-",
            &format!("http://{target}/"),
        ])
    };
    let pods: std::collections::BTreeSet<String> = c
        .ok(&["get", "pods", "-l", "app=web", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_owned())
        .collect();
    let mut answered = std::collections::BTreeSet::new();
    wait_for(
        "both replicas to answer through the ClusterIP",
        LIMIT,
        || {
            let out = fetch(&ip);
            if out.status.success() {
                answered.insert(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            (answered == pods).then_some(())
        },
    );
    // Names resolve through the cluster DNS, with the namespace's search
    // path; a headless Service resolves to the ready pods themselves.
    for name in ["web", "web.default.svc.cluster.local"] {
        let mut seen = std::collections::BTreeSet::new();
        wait_for(&format!("both replicas to answer at {name}"), LIMIT, || {
            let out = fetch(name);
            if out.status.success() {
                seen.insert(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            (seen == pods).then_some(())
        });
    }
    create(c, "apiVersion: v1\nkind: Service\nmetadata: {name: web-pods}\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports: [{name: http, port: 8080}]\n");
    let pod_ips: std::collections::BTreeSet<String> = pods
        .iter()
        .map(|p| pod(c, p)["status"]["podIP"].as_str().unwrap().to_owned())
        .collect();
    wait_for(
        "the headless Service to resolve to both pods",
        LIMIT,
        || {
            let out = c.kubectl(&[
                "exec",
                "client",
                "--",
                "nslookup",
                "web-pods.default.svc.cluster.local",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            pod_ips
                .iter()
                .all(|ip| text.contains(ip.as_str()))
                .then_some(())
        },
    );
    c.ok(&["scale", "deploy/web", "--replicas=0"]);
    wait_for(
        "the Service to refuse connections with no endpoints",
        LIMIT,
        || {
            let out = fetch(&ip);
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            let refused = text.contains("No route to host") || text.contains("refused");
            (!out.status.success() && refused).then_some(())
        },
    );
    c.ok(&["scale", "deploy/web", "--replicas=2"]);
    wait_for("the Service to answer again", LIMIT, || {
        fetch(&ip).status.success().then_some(())
    });
    c.ok(&["delete", "service", "web"]);
    wait_for("the Service's rules to go", LIMIT, || {
        let out = Command::new("nft")
            .args(["list", "map", "ip", "skiff", "services"])
            .output()
            .ok()?;
        (!String::from_utf8_lossy(&out.stdout).contains(&ip)).then_some(())
    });
}

/// The built-in ingress controller routes by host and path, falls back to
/// the default backend, terminates TLS from a Secret, and follows changes.
fn ingress_routes_by_host_and_path(c: &Cluster, http: u16, https: u16) {
    let site = |name: &str, files: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: httpd\n        image: skiff.local/busybox:1\n        command: [sh, -c, '{files} && httpd -f -p 8080 -h /www']\n        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n")
    };
    create(
        c,
        &site("front", "mkdir -p /www && echo front > /www/index.html"),
    );
    create(
        c,
        &site("api", "mkdir -p /www/api && echo api > /www/api/index.html"),
    );
    let cert = rcgen::generate_simple_self_signed(vec!["app.test".to_owned()]).unwrap();
    let (crt, key) = (c.dir.path().join("app.crt"), c.dir.path().join("app.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    c.ok(&[
        "create",
        "secret",
        "tls",
        "app-tls",
        "--cert",
        crt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    create(c, "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: app}\nspec:\n  defaultBackend: {service: {name: front, port: {number: 80}}}\n  tls: [{hosts: [app.test], secretName: app-tls}]\n  rules:\n  - host: app.test\n    http:\n      paths:\n      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}\n      - {path: /, pathType: Prefix, backend: {service: {name: front, port: {number: 80}}}}\n");
    let class = wait_for("IngressClass skiff", LIMIT, || {
        let out = c.kubectl(&["get", "ingressclass", "skiff", "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );
    c.ok(&["rollout", "status", "deploy/front", "--timeout=90s"]);
    c.ok(&["rollout", "status", "deploy/api", "--timeout=90s"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder()
        .resolve("app.test", ([127, 0, 0, 1], http).into())
        .resolve("other.test", ([127, 0, 0, 1], http).into())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |url: String| {
        let client = client.clone();
        runtime.block_on(async move {
            let r = client.get(&url).send().await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        })
    };
    let at = |host: &str, path: &str| format!("http://{host}:{http}{path}");
    wait_for("the ingress to route /api", LIMIT, || {
        (get(at("app.test", "/api/"))? == (200, "api\n".to_owned())).then_some(())
    });
    assert_eq!(get(at("app.test", "/")), Some((200, "front\n".to_owned())));
    assert_eq!(
        get(at("other.test", "/")),
        Some((200, "front\n".to_owned())),
        "other hosts get the default backend"
    );
    let tls = reqwest::Client::builder()
        .resolve("app.test", ([127, 0, 0, 1], https).into())
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let secure = runtime.block_on(async {
        let r = tls
            .get(format!("https://app.test:{https}/api/"))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    });
    assert_eq!(secure, "api\n");
    // Live changes: without the Ingress nothing matches.
    c.ok(&["delete", "ingress", "app"]);
    wait_for("the routes to go with the Ingress", LIMIT, || {
        (get(at("app.test", "/api/"))?.0 == 404).then_some(())
    });
    c.ok(&["delete", "deployment", "front", "api"]);
}

/// The agent (here inside the server) crashes and comes back: running
/// containers are left alone and re-adopted.
fn agent_restart_keeps_containers(c: &mut Cluster, socket: &Path, flags: &[&str]) {
    let before = container_state(&pod(c, "reader"));
    let pid = host_pid(socket, before["containerID"].as_str().unwrap());
    c.kill();
    c.spawn(flags);
    create(
        c,
        &manifest(
            "after",
            "Always",
            "IfNotPresent",
            "skiff.local/busybox:1",
            "sleep 3600",
        ),
    );
    wait_for("a pod created after the restart to run", LIMIT, || {
        (pod(c, "after")["status"]["phase"] == "Running").then_some(())
    });
    // Registering again keeps a condition another component set.
    let node = pod(c, "after")["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept = node_condition(c, &node, "NetworkUnavailable").expect("kept");
    assert_eq!(kept["reason"], "RouteCreated");
    let after = container_state(&pod(c, "reader"));
    assert_eq!(after["containerID"], before["containerID"]);
    assert_eq!(after["restartCount"], before["restartCount"]);
    assert!(after["state"]["running"].is_object(), "{after}");
    assert_eq!(
        host_pid(socket, after["containerID"].as_str().unwrap()),
        pid
    );
}
