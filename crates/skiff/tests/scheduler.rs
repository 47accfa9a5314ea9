//! End to end: the scheduler inside `skiff server` places pods on simulated
//! nodes (`skiff agent --simulate`), driven by the real kubectl.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::{agent, create, wait_for, Cluster, Process, Relay};

fn pod_manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: main\n    image: busybox\n{spec}")
}

fn node_of(c: &Cluster, pod: &str) -> Option<String> {
    let p = c.json(&["get", "pod", pod]);
    p["spec"]["nodeName"].as_str().map(str::to_owned)
}

fn wait_running(c: &Cluster, pod: &str) -> String {
    wait_for(&format!("{pod} to run"), Duration::from_secs(30), || {
        let p = c.json(&["get", "pod", pod]);
        (p["status"]["phase"] == "Running")
            .then(|| p["spec"]["nodeName"].as_str().unwrap().to_owned())
    })
}

#[test]
fn unschedulable_pod_waits_with_reasons_then_fits_a_new_node() {
    let c = Cluster::start();
    let _small = agent(&c, "small", 3, &["--cpu", "2"]);
    create(
        &c,
        &pod_manifest(
            "big",
            "    resources:\n      requests:\n        cpu: \"6\"\n",
        ),
    );
    let described = wait_for(
        "the FailedScheduling event",
        Duration::from_secs(30),
        || {
            let d = c.ok(&["describe", "pod", "big"]);
            d.contains("FailedScheduling").then_some(d)
        },
    );
    assert!(
        described.contains("0/3 nodes are available: 3 Insufficient cpu."),
        "{described}"
    );
    let p = c.json(&["get", "pod", "big"]);
    let cond = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone();
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("Unschedulable"))
    );
    // Each attempt is recorded; repeats count in one event's series, as
    // upstream's events-API recorder counts them, so `kubectl describe`
    // shows "(x2 over …)". The series is written when it starts at 2,
    // then when it ends: what the test sees first is 2.
    let mut poke = 0;
    let count = wait_for("a FailedScheduling series", Duration::from_secs(30), || {
        // A new label on a node sends the waiting pod round again.
        poke += 1;
        let label = format!("poke={poke}");
        c.ok(&["label", "node", "small-00000", &label, "--overwrite"]);
        let events = c.json(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=big,reason=FailedScheduling",
        ]);
        events["items"]
            .as_array()?
            .iter()
            .find_map(|e| e["series"]["count"].as_i64())
    });
    assert_eq!(count, 2);
    let described = c.ok(&["describe", "pod", "big"]);
    assert!(described.contains("(x2 over"), "{described}");

    let _big = agent(&c, "large", 1, &["--cpu", "8"]);
    assert_eq!(wait_running(&c, "big"), "large-00000");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=big,reason=Scheduled",
        "-o",
        "name",
    ]);
    assert!(!events.trim().is_empty(), "a Scheduled event is recorded");
}

#[test]
fn taints_tolerations_and_cordon() {
    let c = Cluster::start();
    let _nodes = agent(&c, "n", 2, &[]);
    c.ok(&["taint", "nodes", "n-00000", "dedicated=gpu:NoSchedule"]);
    for i in 0..4 {
        create(&c, &pod_manifest(&format!("plain-{i}"), ""));
        assert_eq!(
            wait_running(&c, &format!("plain-{i}")),
            "n-00001",
            "untolerated taint keeps pods off n-00000"
        );
    }
    let tolerant = "  tolerations:\n  - key: dedicated\n    operator: Equal\n    value: gpu\n    effect: NoSchedule\n  nodeSelector:\n    kubernetes.io/hostname: n-00000\n";
    create(&c, &pod_manifest("gpu-job", tolerant));
    assert_eq!(wait_running(&c, "gpu-job"), "n-00000");

    c.ok(&["taint", "nodes", "n-00000", "dedicated-"]);
    c.ok(&["cordon", "n-00001"]);
    create(&c, &pod_manifest("after-cordon", ""));
    assert_eq!(wait_running(&c, "after-cordon"), "n-00000");
    c.ok(&["cordon", "n-00000"]);
    create(&c, &pod_manifest("nowhere", ""));
    let described = wait_for("FailedScheduling", Duration::from_secs(30), || {
        let d = c.ok(&["describe", "pod", "nowhere"]);
        d.contains("FailedScheduling").then_some(d)
    });
    assert!(
        described.contains("0/2 nodes are available: 2 node(s) were unschedulable."),
        "{described}"
    );
    c.ok(&["uncordon", "n-00001"]);
    assert_eq!(
        wait_running(&c, "nowhere"),
        "n-00001",
        "uncordon lets the waiting pod in"
    );
}

/// A pod naming a RuntimeClass takes the class's overhead, node selector
/// and tolerations at admission; the scheduler counts the overhead; a
/// class that does not exist refuses the pod.
#[test]
fn a_runtime_class_places_and_sizes_its_pods() {
    let c = Cluster::start();
    let _plain = agent(&c, "plain", 1, &["--cpu", "4"]);
    let _sandbox = agent(
        &c,
        "sandbox",
        1,
        &[
            "--cpu",
            "2",
            "--label",
            "sandbox=yes",
            "--taint",
            "sandbox=yes:NoSchedule",
        ],
    );
    create(&c, "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: sandboxed}\nhandler: runc\noverhead:\n  podFixed: {cpu: 900m}\nscheduling:\n  nodeSelector: {sandbox: \"yes\"}\n  tolerations:\n  - {key: sandbox, operator: Exists, effect: NoSchedule}\n");
    let spec = |name: &str| {
        let classed =
            "    resources:\n      requests: {cpu: 500m}\n  runtimeClassName: sandboxed\n";
        pod_manifest(name, classed)
    };
    create(&c, &spec("first"));
    assert_eq!(wait_running(&c, "first"), "sandbox-00000");
    let first = c.json(&["get", "pod", "first"]);
    assert_eq!(first["spec"]["overhead"]["cpu"], "900m");
    assert_eq!(first["spec"]["nodeSelector"]["sandbox"], "yes");
    // 500m asked and 900m of overhead, twice, is more than the node's 2.
    create(&c, &spec("second"));
    let described = wait_for("second's FailedScheduling", Duration::from_secs(30), || {
        let d = c.ok(&["describe", "pod", "second"]);
        d.contains("FailedScheduling").then_some(d)
    });
    assert!(described.contains("1 Insufficient cpu"), "{described}");
    let refused = c.fails_stdin(&pod_manifest("nowhere", "  runtimeClassName: missing\n"));
    assert!(
        refused.contains(
            "pods \"nowhere\" is forbidden: pod rejected: RuntimeClass \"missing\" not found"
        ),
        "{refused}"
    );
}

#[test]
fn node_selector_and_required_affinity() {
    let c = Cluster::start();
    let _plain = agent(&c, "plain", 2, &[]);
    let _ssd = agent(&c, "ssd", 2, &["--label", "disk=ssd"]);
    for i in 0..3 {
        create(
            &c,
            &pod_manifest(&format!("sel-{i}"), "  nodeSelector:\n    disk: ssd\n"),
        );
    }
    let affinity = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: disk, operator: NotIn, values: [ssd]}\n";
    for i in 0..3 {
        create(&c, &pod_manifest(&format!("aff-{i}"), affinity));
    }
    let mut placed = BTreeMap::new();
    for i in 0..3 {
        placed.insert(format!("sel-{i}"), wait_running(&c, &format!("sel-{i}")));
        placed.insert(format!("aff-{i}"), wait_running(&c, &format!("aff-{i}")));
    }
    for (pod, node) in &placed {
        let want = if pod.starts_with("sel") {
            "ssd-"
        } else {
            "plain-"
        };
        assert!(node.starts_with(want), "{pod} landed on {node}");
    }
    assert!(node_of(&c, "sel-0").is_some());
    let nodes: Value = c.json(&["get", "nodes", "-l", "disk=ssd"]);
    assert_eq!(nodes["items"].as_array().unwrap().len(), 2);
}

/// A pod with scheduling gates waits, shown as `SchedulingGated`, until
/// the last gate is removed; gates may be removed, never added.
#[test]
fn a_gated_pod_waits_until_its_gates_are_removed() {
    let c = Cluster::start();
    let _node = agent(&c, "gates", 1, &[]);
    let gates = "  schedulingGates:\n  - name: example.com/quota\n  - name: example.com/review\n";
    create(&c, &pod_manifest("gated", gates));
    create(&c, &pod_manifest("plain", ""));
    // The scheduler saw the gated pod before the plain one it placed.
    wait_running(&c, "plain");
    assert_eq!(node_of(&c, "gated"), None);
    let shown = c.ok(&["get", "pod", "gated", "--no-headers"]);
    assert_eq!(
        shown.split_whitespace().nth(2),
        Some("SchedulingGated"),
        "{shown}"
    );
    let add = r#"[{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": "example.com/more"}}]"#;
    let out = c.kubectl(&["patch", "pod", "gated", "--type=json", "-p", add]);
    let refused = String::from_utf8_lossy(&out.stderr);
    assert!(
        refused
            .contains("only deletion is allowed, but found new scheduling gate 'example.com/more'"),
        "{refused}"
    );
    let remove_first = r#"[{"op": "remove", "path": "/spec/schedulingGates/0"}]"#;
    c.ok(&["patch", "pod", "gated", "--type=json", "-p", remove_first]);
    create(&c, &pod_manifest("plain-2", ""));
    wait_running(&c, "plain-2");
    assert_eq!(node_of(&c, "gated"), None);
    c.ok(&["patch", "pod", "gated", "--type=json", "-p", remove_first]);
    wait_running(&c, "gated");
}

fn labelled_pod(name: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: web}}\nspec:\n  containers:\n  - name: main\n    image: busybox\n{extra}")
}

#[test]
fn required_anti_affinity_spreads_one_per_node() {
    let c = Cluster::start();
    let _nodes = agent(&c, "h", 3, &[]);
    let anti = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchLabels: {app: web}}\n        topologyKey: kubernetes.io/hostname\n";
    let mut hosts = std::collections::BTreeSet::new();
    for i in 0..3 {
        create(&c, &labelled_pod(&format!("web-{i}"), anti));
        hosts.insert(wait_running(&c, &format!("web-{i}")));
    }
    assert_eq!(hosts.len(), 3, "one replica per node: {hosts:?}");
    create(&c, &labelled_pod("web-3", anti));
    let described = wait_for("FailedScheduling", Duration::from_secs(30), || {
        let d = c.ok(&["describe", "pod", "web-3"]);
        d.contains("FailedScheduling").then_some(d)
    });
    assert!(
        described.contains("3 node(s) didn't match pod anti-affinity rules"),
        "{described}"
    );
}

#[test]
fn topology_spread_balances_three_zones() {
    let c = Cluster::start();
    let _nodes = agent(&c, "z", 6, &["--zones", "3"]);
    let spread = "  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: DoNotSchedule\n    labelSelector: {matchLabels: {app: web}}\n";
    for i in 0..9 {
        create(&c, &labelled_pod(&format!("s-{i}"), spread));
    }
    let zone_of: BTreeMap<String, String> = c.json(&["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_owned(),
                n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..9 {
        let node = wait_running(&c, &format!("s-{i}"));
        *per_zone.entry(zone_of[&node].clone()).or_default() += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        [3, 3, 3],
        "{per_zone:?}"
    );
}

#[test]
fn a_higher_priority_pod_preempts_a_lower_one() {
    let c = Cluster::start();
    let _node = agent(&c, "small", 1, &["--cpu", "2"]);
    create(
        &c,
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: 10\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n",
    );
    let sized = |name: &str, class: &str, cpu: &str| {
        pod_manifest(
            name,
            &format!("    resources: {{requests: {{cpu: {cpu}}}}}\n  priorityClassName: {class}\n"),
        )
    };
    create(&c, &sized("low", "low", "1500m"));
    wait_running(&c, "low");
    assert_eq!(c.json(&["get", "pod", "low"])["spec"]["priority"], 10);
    create(&c, &sized("high", "high", "1"));
    let node = wait_running(&c, "high");
    assert_eq!(node, "small-00000");
    assert!(c.fails(&["get", "pod", "low"]).contains("NotFound"));
    let events = c.ok(&["get", "events", "--field-selector", "reason=Preempted"]);
    assert!(
        events.contains("Preempted by pod default/high on node small-00000"),
        "{events}"
    );
    let refused = c.kubectl_stdin(&["apply", "-f", "-"], &sized("nobody", "missing", "1"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr)
        .contains("no PriorityClass with name missing was found"));
    // No user's class outranks the system's, and one default at most.
    let class = |name: &str, rest: &str| {
        format!("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {{name: {name}}}\n{rest}\n")
    };
    let err = c.fails_stdin(&class("above", "value: 2000000000"));
    assert!(
        err.contains(
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
        ),
        "{err}"
    );
    assert_eq!(
        c.json(&["get", "priorityclass", "low"])["preemptionPolicy"],
        "PreemptLowerPriority"
    );
    create(&c, &class("usual", "value: 5\nglobalDefault: true"));
    let err = c.fails_stdin(&class("other", "value: 6\nglobalDefault: true"));
    assert!(
        err.contains(
            "PriorityClass usual is already marked as default. Only one default can exist"
        ),
        "{err}"
    );
}

#[test]
fn a_node_deleted_while_the_schedulers_watch_is_cut_gets_no_more_pods() {
    let c = Cluster::start_with_flags(&["--disable-scheduler"]);
    let relay = Relay::to(c.port);
    let scheduler = Process(
        std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["scheduler", "--kubeconfig"])
            .arg(relay.kubeconfig(&c))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(c.dir.path().join("scheduler.log")).unwrap())
            .spawn()
            .expect("start skiff scheduler"),
    );
    let old = agent(&c, "old", 1, &["--label", "pool=old"]);
    create(
        &c,
        &pod_manifest("before", "  nodeSelector:\n    pool: old\n"),
    );
    assert_eq!(wait_running(&c, "before"), "old-00000");
    let lease = [
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        "old-00000",
        "-o",
        "json",
    ];
    let owned = wait_for("the node's Lease", Duration::from_secs(30), || {
        let out = c.kubectl(&lease);
        let lease: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(lease["metadata"]["ownerReferences"][0].clone())
    });
    assert_eq!(
        (owned["kind"].as_str(), owned["name"].as_str()),
        (Some("Node"), Some("old-00000"))
    );

    drop(old);
    relay.cut();
    c.ok(&["delete", "node", "old-00000"]);
    relay.mend();
    // The Lease, owned by its Node, goes with it.
    wait_for(
        "the deleted node's Lease to go",
        Duration::from_secs(30),
        || (!c.kubectl(&lease).status.success()).then_some(()),
    );

    // A node added after the deletion: once the scheduler places a pod
    // there, its node watch has passed the deletion.
    let _new = agent(&c, "new", 1, &["--label", "pool=new"]);
    create(
        &c,
        &pod_manifest("marker", "  nodeSelector:\n    pool: new\n"),
    );
    assert_eq!(wait_running(&c, "marker"), "new-00000");

    create(
        &c,
        &pod_manifest("after", "  nodeSelector:\n    pool: old\n"),
    );
    let described = wait_for(
        "the FailedScheduling event",
        Duration::from_secs(30),
        || {
            let d = c.ok(&["describe", "pod", "after"]);
            d.contains("FailedScheduling").then_some(d)
        },
    );
    assert!(
        described.contains("0/1 nodes are available"),
        "the deleted node is still counted: {described}"
    );
    assert_eq!(node_of(&c, "after"), None);
    drop(scheduler);
}

/// A node's CSINode caps how many volumes of a driver it attaches: a
/// second pod bringing another such volume waits, naming the limit, and
/// is placed once the first is gone.
#[test]
fn csi_volume_limits_cap_what_a_node_attaches() {
    let c = Cluster::start();
    let _node = agent(&c, "v", 1, &[]);
    create(
        &c,
        "apiVersion: storage.k8s.io/v1\nkind: CSINode\nmetadata: {name: v-00000}\nspec:\n  drivers:\n  - {name: disk.example.com, nodeID: v-00000, allocatable: {count: 1}}\n",
    );
    let listed = c.ok(&["get", "csinodes"]);
    assert!(
        listed.contains("DRIVERS") && listed.contains("v-00000"),
        "{listed}"
    );
    for i in 1..=2 {
        create(
            &c,
            &format!(
                "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: pv{i}}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  csi: {{driver: disk.example.com, volumeHandle: disk-{i}}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: c{i}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  volumeName: pv{i}\n  resources: {{requests: {{storage: 1Gi}}}}\n"
            ),
        );
    }
    wait_for("both claims bound", Duration::from_secs(30), || {
        let claims = c.json(&["get", "pvc"]);
        let bound = claims["items"]
            .as_array()?
            .iter()
            .filter(|c| c["status"]["phase"] == "Bound")
            .count();
        (bound == 2).then_some(())
    });
    let with_claim = |name: &str, claim: &str| {
        pod_manifest(
            name,
            &format!("    volumeMounts: [{{name: d, mountPath: /d}}]\n  volumes:\n  - name: d\n    persistentVolumeClaim: {{claimName: {claim}}}\n"),
        )
    };
    create(&c, &with_claim("first", "c1"));
    wait_for("first placed", Duration::from_secs(30), || {
        node_of(&c, "first")
    });
    create(&c, &with_claim("second", "c2"));
    let described = wait_for(
        "the FailedScheduling event",
        Duration::from_secs(30),
        || {
            let d = c.ok(&["describe", "pod", "second"]);
            d.contains("FailedScheduling").then_some(d)
        },
    );
    assert!(
        described.contains("0/1 nodes are available: 1 node(s) exceed max volume count."),
        "{described}"
    );
    c.ok(&["delete", "pod", "first", "--wait=true"]);
    let node = wait_for("second placed", Duration::from_secs(30), || {
        node_of(&c, "second")
    });
    assert_eq!(node, "v-00000");
}
