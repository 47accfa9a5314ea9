//! End to end: the controller manager inside `skiff server` reconciles
//! workloads on simulated nodes, driven by the real kubectl.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::{agent, create, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(60);

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Pods with this label that are not being deleted.
fn live_pods(c: &Cluster, selector: &str) -> Vec<Value> {
    let pods = c.json(&["get", "pods", "-l", selector]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// Lines a long-running kubectl prints, gathered on a thread.
struct Watch {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(c: &Cluster, args: &[&str]) -> Self {
        let mut child = c
            .kubectl_cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    fn next(&self) -> String {
        self.lines.recv_timeout(LIMIT).expect("a watch line")
    }

    fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn deployment_heals_scales_rolls_out_and_rolls_back() {
    let c = Cluster::start();
    let _nodes = agent(&c, "sim", 3, &[]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=3",
    ]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let events = c.ok(&["get", "events"]);
    assert!(
        events.contains("ScalingReplicaSet") && events.contains("Scaled up replica set web-"),
        "{events}"
    );
    assert!(events.contains("SuccessfulCreate"), "{events}");

    // Each writer is named as upstream's (the controller manager and the
    // kubelet by their user agents), a status writer in an entry of its
    // own.
    let owners = |what: &str| -> Vec<(String, String)> {
        let obj = c.json(&["get", what, "--show-managed-fields"]);
        let obj = obj.get("items").map_or(&obj, |items| &items[0]);
        let entries = obj["metadata"]["managedFields"].as_array().unwrap();
        entries
            .iter()
            .map(|e| {
                let name = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (name("manager"), name("subresource"))
            })
            .collect()
    };
    let owned = |list: &[(String, String)], manager: &str, subresource: &str| {
        list.contains(&(manager.to_owned(), subresource.to_owned()))
    };
    let deployment = owners("deployment/web");
    assert!(owned(&deployment, "kubectl-create", ""), "{deployment:?}");
    assert!(
        owned(&deployment, "kube-controller-manager", "status"),
        "{deployment:?}"
    );
    let pod = owners("pods");
    assert!(owned(&pod, "kube-controller-manager", ""), "{pod:?}");
    assert!(owned(&pod, "kubelet", "status"), "{pod:?}");

    // A deleted pod is replaced.
    let before: Vec<String> = live_pods(&c, "app=web")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(before.len(), 3);
    c.ok(&["delete", "pod", &before[0], "--wait=false"]);
    wait_for("a replacement pod", LIMIT, || {
        let now: Vec<String> = live_pods(&c, "app=web")
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        (now.len() == 3 && !now.contains(&before[0])).then_some(())
    });

    c.ok(&["scale", "deployment/web", "--replicas=5"]);
    wait_for("5 available replicas", LIMIT, || {
        (c.json(&["get", "deployment", "web"])["status"]["availableReplicas"] == 5).then_some(())
    });

    // A rolling update never drops below replicas - maxUnavailable (25% of
    // 5, rounded down: 1) available pods.
    let watch = Watch::start(
        &c,
        &[
            "get",
            "deployment",
            "web",
            "--watch",
            "-o",
            "jsonpath={.status.availableReplicas}{\"\\n\"}",
        ],
    );
    assert_eq!(watch.next(), "5");
    c.ok(&["set", "image", "deployment/web", "busybox=busybox:1.36"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let seen: Vec<i64> = watch
        .drain()
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|n| *n >= 4),
        "available replicas during the rollout: {seen:?}"
    );
    drop(watch);

    let history = c.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(revisions.len(), 2, "{history}");
    c.ok(&["rollout", "undo", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let d = c.json(&["get", "deployment", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    assert_eq!(
        c.json(&["get", "replicasets"])["items"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "undo reuses the first ReplicaSet"
    );

    // Orphaning leaves the ReplicaSets and pods behind, without owners.
    c.ok(&["delete", "deployment", "web", "--cascade=orphan"]);
    wait_for("the deployment to go", LIMIT, || {
        c.fails(&["get", "deployment", "web"])
            .contains("NotFound")
            .then_some(())
    });
    let sets = c.json(&["get", "replicasets"]);
    assert!(sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|rs| rs["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())));
    assert_eq!(live_pods(&c, "app=web").len(), 5);
}

#[test]
fn statefulset_orders_pods_and_daemonset_follows_nodes() {
    let c = Cluster::start();
    let _nodes = agent(&c, "sim", 2, &[]);
    let _gpu = agent(&c, "gpu", 1, &["--taint", "dedicated=gpu:NoSchedule"]);
    let watch = Watch::start(
        &c,
        &[
            "get",
            "pods",
            "-l",
            "app=db",
            "--watch",
            "--output-watch-events",
            "--no-headers",
        ],
    );
    create(
        &c,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\nspec:\n  replicas: 2\n  serviceName: web\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: c, image: busybox}]}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    let mut added = Vec::new();
    while added.len() < 2 {
        let line = watch.next();
        let mut words = line.split_whitespace();
        if words.next() == Some("ADDED") {
            added.push(words.next().unwrap().to_owned());
        }
    }
    assert_eq!(added, ["web-0", "web-1"]);
    let claims = names(&c.json(&["get", "pvc"]));
    assert_eq!(claims, ["data-web-0", "data-web-1"]);
    let pod = c.json(&["get", "pod", "web-1"]);
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "data-web-1"
    );
    assert_eq!(pod["spec"]["hostname"], "web-1");

    create(
        &c,
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    );
    c.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    // Go's encoding: a zero count tagged omitempty is left out, the others
    // are written.
    let ds = c.json(&["get", "daemonset", "agent"]);
    let status = &ds["status"];
    assert!(status.get("numberUnavailable").is_none(), "{status}");
    assert_eq!(status["numberMisscheduled"], 0, "{status}");
    let placed = |c: &Cluster| -> Vec<String> {
        let mut n: Vec<String> = live_pods(c, "app=agent")
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        placed(&c),
        ["sim-00000", "sim-00001"],
        "not on the tainted node"
    );
    let _late = agent(&c, "late", 1, &[]);
    wait_for("a daemon pod on the new node", LIMIT, || {
        (placed(&c) == ["late-00000", "sim-00000", "sim-00001"]).then_some(())
    });

    // A surging update starts each node's new pod before its old one stops.
    // The watch lists the pods first; the update starts once that list is
    // read, so no event of the update can fall before the watch.
    let before = names(&c.json(&["get", "pods", "-l", "app=agent"]));
    let watch = Watch::start(
        &c,
        &[
            "get",
            "pods",
            "-l",
            "app=agent",
            "--watch",
            "--output-watch-events",
            "--no-headers",
        ],
    );
    for _ in &before {
        let line = watch.next();
        assert!(line.starts_with("ADDED "), "{line}");
    }
    c.ok(&[
        "patch",
        "daemonset",
        "agent",
        "--type=merge",
        "-p",
        r#"{"spec": {"updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 0, "template": {"metadata": {"annotations": {"revision": "2"}}}}}"#,
    ]);
    loop {
        let line = watch.next();
        let words: Vec<&str> = line.split_whitespace().collect();
        let (event, name, status) = (words[0], words[1], words[3]);
        let old = before.iter().any(|b| b == name);
        assert!(
            !(old && (event == "DELETED" || status == "Terminating")),
            "an old pod stopped before a new one started: {line}"
        );
        if !old && event == "ADDED" {
            break;
        }
    }
    c.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    wait_for("three new daemon pods, one per node", LIMIT, || {
        let pods = live_pods(&c, "app=agent");
        let new = pods
            .iter()
            .filter(|p| p["metadata"]["annotations"]["revision"] == "2")
            .count();
        (new == 3 && pods.len() == 3 && placed(&c) == ["late-00000", "sim-00000", "sim-00001"])
            .then_some(())
    });
    // With revisionHistoryLimit 0, the first template's revision goes once
    // no pod runs it.
    wait_for("one revision left", LIMIT, || {
        let revisions = names(&c.json(&["get", "controllerrevisions", "-l", "app=agent"]));
        (revisions.len() == 1).then_some(())
    });
}

#[test]
fn job_completes_and_namespace_deletion_removes_its_contents() {
    let c = Cluster::start();
    let _nodes = agent(&c, "sim", 2, &[]);
    create(
        &c,
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: pi}\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}\n",
    );
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=60s",
    ]);
    let job = c.json(&["get", "job", "pi"]);
    assert_eq!(job["status"]["succeeded"], 3);
    // Counts Go leaves out when zero are left out, as upstream's are.
    let status = &job["status"];
    assert!(
        status.get("active").is_none() && status.get("failed").is_none(),
        "{status}"
    );
    assert_eq!(
        (&status["ready"], &status["terminating"]),
        (&0.into(), &0.into()),
        "{status}"
    );
    assert_eq!(status["uncountedTerminatedPods"], serde_json::json!({}));
    // Counted, every pod lost the Job's tracking finalizer.
    let pods = c.json(&["get", "pods", "-l", "job-name=pi"]);
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 3);
    assert!(
        pods.iter().all(|p| p["metadata"]["finalizers"].is_null()),
        "{pods:?}"
    );

    // A simulated node's admission follows its labels: a pod bound to it
    // that selects a label added after it registered runs. (Until the
    // agent sees the label, such a pod is refused; it is made again.)
    c.ok(&["label", "node", "sim-00001", "disk=ssd"]);
    wait_for("a pod selecting the new label admitted", LIMIT, || {
        create(
            &c,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: pinned}\nspec:\n  nodeName: sim-00001\n  nodeSelector: {disk: ssd}\n  containers: [{name: c, image: busybox}]\n",
        );
        let phase = wait_for("pinned to start or be refused", LIMIT, || {
            let pod = c.json(&["get", "pod", "pinned"]);
            let phase = pod["status"]["phase"].as_str()?.to_owned();
            (phase == "Running" || phase == "Failed").then_some(phase)
        });
        if phase == "Running" {
            return Some(());
        }
        c.ok(&["delete", "pod", "pinned", "--wait"]);
        None
    });

    c.ok(&["create", "namespace", "doomed"]);
    c.ok(&[
        "-n",
        "doomed",
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
    ]);
    c.ok(&[
        "-n",
        "doomed",
        "create",
        "configmap",
        "settings",
        "--from-literal=a=b",
    ]);
    c.ok(&[
        "-n",
        "doomed",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=60s",
    ]);
    c.ok(&["-n", "doomed", "scale", "deployment/web", "--replicas=0"]);
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    // Scaled to 0 and its pods gone, a Deployment's status keeps no count
    // but the terminating pods' (a pointer upstream, written at 0).
    wait_for("the deployment's status at 0 replicas", LIMIT, || {
        let d = c.json(&["-n", "doomed", "get", "deployment", "web"]);
        let observed = d["status"]["observedGeneration"] == d["metadata"]["generation"];
        let counts = ["conditions", "observedGeneration", "terminatingReplicas"];
        let none_left = d["status"]["terminatingReplicas"] == 0;
        (observed && none_left && keys(&d["status"]) == counts).then_some(())
    });
    let rs = &c.json(&["-n", "doomed", "get", "replicasets"])["items"][0];
    assert_eq!(rs["status"]["replicas"], 0, "replicas is always written");
    assert_eq!(rs["status"]["terminatingReplicas"], 0);
    assert_eq!(
        keys(&rs["status"]),
        ["observedGeneration", "replicas", "terminatingReplicas"]
    );
    c.ok(&["delete", "namespace", "doomed", "--timeout=60s"]);
    assert!(c
        .fails(&["get", "namespace", "doomed"])
        .contains("NotFound"));
    let left = c.json(&["get", "pods,configmaps,deployments", "-n", "doomed"]);
    assert_eq!(left["items"].as_array().unwrap().len(), 0);
}

#[test]
fn pods_of_a_silent_node_are_evicted_and_come_back_elsewhere() {
    let mut c = Cluster::start();
    c.kill();
    c.spawn(&["--node-monitor-grace-period", "3s"]);
    let _stay = agent(&c, "stay", 2, &["--heartbeat-interval", "1s"]);
    let doomed = agent(&c, "doomed", 1, &["--heartbeat-interval", "1s"]);
    create(
        &c,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 6\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}]\n      containers: [{name: c, image: busybox}]\n",
    );
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let on = |c: &Cluster, prefix: &str| {
        live_pods(c, "app=web")
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .count()
    };
    assert!(
        on(&c, "doomed") > 0,
        "some pods landed on the node that will go silent"
    );
    drop(doomed);
    wait_for("the silent node to be unreachable", LIMIT, || {
        let n = c.json(&["get", "node", "doomed-00000"]);
        let ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap();
        let tainted = n["spec"]["taints"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
        });
        (ready["status"] == "Unknown" && tainted).then_some(())
    });
    wait_for("all pods back on the live nodes", LIMIT, || {
        let running = live_pods(&c, "app=web")
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        (on(&c, "doomed") == 0 && on(&c, "stay") == 6 && running == 6).then_some(())
    });
    let events = c.ok(&["get", "events"]);
    assert!(events.contains("TaintManagerEviction"), "{events}");
}

/// A PodDisruptionBudget's status follows its pods, and an eviction it
/// cannot afford is refused with upstream's 429 until the budget allows.
#[test]
fn disruption_budgets_guard_evictions() {
    let c = Cluster::start();
    let _nodes = agent(&c, "sim", 2, &[]);
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
    ]);
    c.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=2",
    ]);
    let status = |c: &Cluster| c.json(&["get", "pdb", "web"])["status"].clone();
    wait_for("the budget to count two healthy pods", LIMIT, || {
        let s = status(&c);
        (s["currentHealthy"] == 2 && s["desiredHealthy"] == 2 && s["disruptionsAllowed"] == 0)
            .then_some(())
    });
    let evict = |pod: &str| {
        let url = format!("/api/v1/namespaces/default/pods/{pod}/eviction");
        let eviction = format!(
            r#"{{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {{"name": "{pod}"}}}}"#
        );
        c.kubectl_stdin(&["create", "--raw", &url, "-f", "-"], &eviction)
    };
    let first = live_pods(&c, "app=web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = evict(&first);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        why.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{why}"
    );
    assert!(live_pods(&c, "app=web")
        .iter()
        .any(|p| p["metadata"]["name"] == first.as_str()));
    // A percentage of the Deployment's scale: one of two may go.
    c.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec": {"minAvailable": null, "maxUnavailable": "50%"}}"#,
    ]);
    wait_for("the budget to allow one disruption", LIMIT, || {
        let s = status(&c);
        (s["expectedPods"] == 2 && s["disruptionsAllowed"] == 1).then_some(())
    });
    // No node takes the evicted pod's replacement: the budget stays spent.
    for node in names(&c.json(&["get", "nodes"])) {
        c.ok(&["cordon", &node]);
    }
    let out = evict(&first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The eviction was counted at once: a second is refused.
    let second = live_pods(&c, "app=web")
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .find(|n| *n != first)
        .unwrap();
    assert!(!evict(&second).status.success());
    for node in names(&c.json(&["get", "nodes"])) {
        c.ok(&["uncordon", &node]);
    }
    wait_for("the Deployment to replace the evicted pod", LIMIT, || {
        let s = status(&c);
        (s["currentHealthy"] == 2 && s["disruptionsAllowed"] == 1).then_some(())
    });
    // `kubectl drain` cordons a node and evicts its pods within the
    // budget; they come back on the other node.
    let drained = live_pods(&c, "app=web")[0]["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ok(&["drain", &drained, "--ignore-daemonsets", "--timeout=90s"]);
    assert_eq!(
        c.json(&["get", "node", &drained])["spec"]["unschedulable"],
        true
    );
    wait_for("the web pods to run on the other node", LIMIT, || {
        let pods = live_pods(&c, "app=web");
        let moved = pods.iter().all(|p| {
            p["spec"]["nodeName"] != drained.as_str() && p["status"]["phase"] == "Running"
        });
        (pods.len() == 2 && moved).then_some(())
    });
    c.ok(&["uncordon", &drained]);

    // Pods a custom resource controls count at its scale, read through
    // its scale subresource: 3 expected, so 50% leaves one to go.
    create(
        &c,
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n    subresources: {scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}}\n",
    );
    c.ok(&[
        "wait",
        "--for=condition=established",
        "crd/widgets.example.com",
        "--timeout=60s",
    ]);
    create(
        &c,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {replicas: 3}\n",
    );
    let uid = c.json(&["get", "widget", "w"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["w-1", "w-2"] {
        create(&c, &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: widget}}\n  ownerReferences: [{{apiVersion: example.com/v1, kind: Widget, name: w, uid: {uid}, controller: true}}]\nspec:\n  containers: [{{name: c, image: busybox}}]\n"));
    }
    c.ok(&[
        "create",
        "pdb",
        "widget",
        "--selector=app=widget",
        "--max-unavailable=50%",
    ]);
    wait_for("the budget to count the widget's scale", LIMIT, || {
        let s = c.json(&["get", "pdb", "widget"])["status"].clone();
        let counted = s["expectedPods"] == 3 && s["desiredHealthy"] == 1;
        (counted && s["currentHealthy"] == 2 && s["disruptionsAllowed"] == 1).then_some(())
    });

    // The garbage collector follows every kind, custom resources and
    // ConfigMaps among them: the widget's pods and its ConfigMap go with
    // it, and a ConfigMap owned by a ConfigMap with its owner.
    create(&c, &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: widget-config\n  ownerReferences: [{{apiVersion: example.com/v1, kind: Widget, name: w, uid: {uid}}}]\ndata: {{a: b}}\n"));
    create(
        &c,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: parent}\n",
    );
    let parent = c.json(&["get", "configmap", "parent"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    create(&c, &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: child\n  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: parent, uid: {parent}}}]\n"));
    c.ok(&["delete", "widget", "w", "--wait=false"]);
    c.ok(&["delete", "configmap", "parent", "--wait=false"]);
    wait_for(
        "the widget's and the parent's dependents to go",
        LIMIT,
        || {
            let pods = c.json(&["get", "pods", "-l", "app=widget"]);
            let maps = c.json(&["get", "configmaps"]);
            let left: Vec<&str> = maps["items"]
                .as_array()?
                .iter()
                .filter_map(|m| m["metadata"]["name"].as_str())
                .filter(|n| ["widget-config", "child"].contains(n))
                .collect();
            (pods["items"].as_array()?.is_empty() && left.is_empty()).then_some(())
        },
    );
}

/// A controller's events go through upstream's correlator: a ReplicaSet
/// making 12 pods says `SuccessfulCreate` nine times, then combines the
/// rest into one event that counts them.
#[test]
fn similar_events_are_combined_and_counted() {
    let c = Cluster::start();
    create(
        &c,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: many}\nspec:\n  replicas: 12\n  selector: {matchLabels: {app: many}}\n  template:\n    metadata: {labels: {app: many}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
    );
    let selector = "--field-selector=involvedObject.name=many,reason=SuccessfulCreate";
    let events = wait_for("the combined event to count 3", LIMIT, || {
        let events = c.json(&["get", "events", selector]);
        let counted = events["items"].as_array()?.iter().any(|e| {
            e["message"].as_str().is_some_and(|m| {
                m.starts_with("(combined from similar events): Created pod: many-")
            }) && e["count"] == 3
        });
        counted.then_some(events)
    });
    let items = events["items"].as_array().unwrap();
    let plain: Vec<&str> = items
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| !m.starts_with('('))
        .collect();
    assert_eq!(items.len(), 10, "{events}");
    assert_eq!(plain.len(), 9, "{plain:?}");
    assert!(
        plain.iter().all(|m| m.starts_with("Created pod: many-")),
        "{plain:?}"
    );
    assert_eq!(live_pods(&c, "app=many").len(), 12);
}
