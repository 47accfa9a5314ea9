//! Pod workers on the fake runtime, against a fake API server that
//! records what the workers write.

use serde_json::Value;

use super::*;
use crate::fake_api::{fake_api, Requests};
use crate::runtime::fake::{FakeRuntime, Pull};

fn pod(name: &str, containers: &[(&str, &str)], restart: &str) -> Pod {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(n, image)| json!({"name": n, "image": image}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": containers, "restartPolicy": restart, "nodeName": "n1"},
    }))
    .unwrap()
}

struct Node {
    worker: Arc<Worker>,
    fake: Arc<FakeRuntime>,
    requests: Requests,
    _dir: TempDir,
}

/// A directory removed when the test ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node(test: &str) -> Node {
    let dir = std::env::temp_dir().join(format!("skiff-pods-{test}-{}", std::process::id()));
    let (client, requests) = fake_api();
    let fake = Arc::new(FakeRuntime::default());
    let worker = Arc::new(Worker::new(
        client,
        fake.clone(),
        "n1".into(),
        "192.0.2.1".into(),
        dir.clone(),
        None,
        Arc::default(),
    ));
    Node {
        worker,
        fake,
        requests,
        _dir: TempDir(dir),
    }
}

impl Node {
    /// Starts a worker for `pod`; the sender stands for the dispatcher.
    fn start(&self, pod: Pod) -> Slot {
        let uid = pod.metadata.uid.clone().unwrap();
        let (slot, rx) = watch::channel(Some(Arc::new(pod)));
        tokio::spawn(self.worker.clone().pod_worker(uid, rx, None));
        slot
    }

    /// The statuses pod `name` had, oldest first: each patch written
    /// applied to the one before, as the API server does.
    fn statuses(&self, name: &str) -> Vec<Value> {
        let path = format!("/api/v1/namespaces/default/pods/{name}/status");
        let pods = skiff_core::registry::lookup("", "v1", "pods").unwrap();
        let root = skiff_core::schema::Root::of(pods);
        let requests = self.requests.lock().unwrap();
        let mut pod = json!({"status": {}});
        requests
            .iter()
            .filter(|(m, p, _)| m == "PATCH" && *p == path)
            .map(|(_, _, body)| {
                pod = skiff_core::strategic::patch(&pod, body, root.shape()).unwrap();
                pod["status"].clone()
            })
            .collect()
    }

    fn latest_status(&self, name: &str) -> Value {
        self.statuses(name).pop().unwrap_or(Value::Null)
    }
}

/// Waits for `done` to hold, checking as the workers make progress; fails
/// after ten seconds.
async fn until(what: &str, done: impl Fn() -> bool) {
    until_within(what, Duration::from_secs(10), done).await
}

async fn until_within(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn waiting_reason(status: &Value, i: usize) -> String {
    status["containerStatuses"][i]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_hanging_pull_delays_no_other_pod() {
    let n = node("hang");
    n.fake.registry("stuck:1", Pull::Hangs);
    n.fake.add_image("app:1");
    let _stuck = n.start(pod("stuck", &[("c", "stuck:1")], "Always"));
    let _crashy = n.start(pod("crashy", &[("c", "app:1")], "Always"));
    until("crashy runs", || {
        n.fake
            .container_named("uid-crashy", "c")
            .is_some_and(|s| running(&s))
    })
    .await;
    // The stuck pod's pull has not returned, yet a new pod starts and a
    // crashed container restarts (the first restart has no back-off).
    let _fresh = n.start(pod("fresh", &[("c", "app:1")], "Always"));
    let first = n.fake.container_named("uid-crashy", "c").unwrap();
    n.fake.exit(&first.id, 1);
    until("fresh runs", || {
        n.latest_status("fresh")["phase"] == "Running"
    })
    .await;
    until("crashy restarts", || {
        n.fake
            .container_named("uid-crashy", "c")
            .is_some_and(|s| running(&s) && attempt_of_status(&s) == 1)
    })
    .await;
    assert_eq!(n.fake.pulls(), ["stuck:1"]);
    assert!(n.fake.container_named("uid-stuck", "c").is_none());
    // A pull this long has the pod written as it waits.
    until("the stuck pod reported waiting", || {
        waiting_reason(&n.latest_status("stuck"), 0) == "ContainerCreating"
    })
    .await;
}

#[tokio::test]
async fn a_quick_pull_costs_no_status_write_of_its_own() {
    let n = node("quick");
    n.fake.registry(
        "quick:1",
        Pull::Succeeds {
            user: String::new(),
        },
    );
    let _slot = n.start(pod("p", &[("c", "quick:1")], "Always"));
    until("the pod runs", || {
        n.latest_status("p")["phase"] == "Running"
    })
    .await;
    assert_eq!(n.fake.pulls(), ["quick:1"]);
    let written = n.statuses("p");
    assert_eq!(written.len(), 1, "{written:?}");
}

fn attempt_of_status(s: &cri::ContainerStatus) -> u32 {
    crate::plan::attempt_of(s)
}

#[tokio::test]
async fn a_crashing_container_backs_off_and_reports_its_last_state() {
    let n = node("crash");
    n.fake.add_image("app:1");
    let _slot = n.start(pod("p", &[("c", "app:1")], "Always"));
    until("the container runs", || {
        n.latest_status("p")["phase"] == "Running"
    })
    .await;
    // Two crashes: the first restart is immediate, the second waits 10 s.
    for attempt in 0..2 {
        until("the attempt runs", || {
            n.fake
                .container_named("uid-p", "c")
                .is_some_and(|s| running(&s) && attempt_of_status(&s) == attempt)
        })
        .await;
        let c = n.fake.container_named("uid-p", "c").unwrap();
        n.fake.exit(&c.id, 3);
    }
    until("CrashLoopBackOff is reported", || {
        waiting_reason(&n.latest_status("p"), 0) == "CrashLoopBackOff"
    })
    .await;
    let status = n.latest_status("p");
    let c = &status["containerStatuses"][0];
    assert_eq!(c["restartCount"], 1, "{status}");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3, "{status}");
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error", "{status}");
    assert_eq!(c["ready"], false);
}

#[tokio::test]
async fn a_failed_pull_backs_off_then_succeeds_for_a_new_pod() {
    let n = node("pull");
    n.fake
        .registry("gone:1", Pull::Fails("manifest unknown".into()));
    let _slot = n.start(pod("p", &[("c", "gone:1")], "Always"));
    until("ErrImagePull is reported", || {
        waiting_reason(&n.latest_status("p"), 0) == "ErrImagePull"
    })
    .await;
    let status = n.latest_status("p");
    assert_eq!(
        status["containerStatuses"][0]["state"]["waiting"]["message"],
        "manifest unknown"
    );
    until("ImagePullBackOff is reported", || {
        waiting_reason(&n.latest_status("p"), 0) == "ImagePullBackOff"
    })
    .await;
    assert_eq!(
        n.fake.pulls().len(),
        1,
        "no second pull inside the back-off"
    );
}

#[tokio::test]
async fn a_pod_runs_to_completion_with_init_containers_in_order() {
    let n = node("init");
    n.fake.add_image("app:1");
    let mut p = pod("job", &[("main", "app:1")], "Never");
    p.spec.as_mut().unwrap().init_containers = Some(vec![serde_json::from_value(
        json!({"name": "first", "image": "app:1"}),
    )
    .unwrap()]);
    let _slot = n.start(p);
    until("the init container runs", || {
        n.fake.container_named("uid-job", "first").is_some()
    })
    .await;
    assert!(n.fake.container_named("uid-job", "main").is_none());
    assert_eq!(n.latest_status("job")["phase"], "Pending");
    let first = n.fake.container_named("uid-job", "first").unwrap();
    n.fake.exit(&first.id, 0);
    until("main runs", || {
        n.fake
            .container_named("uid-job", "main")
            .is_some_and(|s| running(&s))
    })
    .await;
    let main = n.fake.container_named("uid-job", "main").unwrap();
    n.fake.exit(&main.id, 0);
    until("the pod succeeds", || {
        n.latest_status("job")["phase"] == "Succeeded"
    })
    .await;
    let status = n.latest_status("job");
    assert_eq!(
        status["initContainerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(
        status["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(
        status["podIP"].as_str().map(|ip| ip.starts_with("10.88.")),
        Some(true)
    );
}

#[tokio::test]
async fn a_deleted_pod_is_stopped_then_removed_from_the_api() {
    let n = node("delete");
    n.fake.add_image("app:1");
    let slot = n.start(pod("p", &[("c", "app:1")], "Always"));
    until("the pod runs", || {
        n.latest_status("p")["phase"] == "Running"
    })
    .await;
    let mut deleting = pod("p", &[("c", "app:1")], "Always");
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    );
    deleting.metadata.deletion_grace_period_seconds = Some(0);
    slot.send_replace(Some(Arc::new(deleting)));
    until("the sandbox is gone", || n.fake.sandbox_count() == 0).await;
    until("the pod is deleted", || {
        n.requests.lock().unwrap().iter().any(|(m, p, body)| {
            m == "DELETE"
                && p == "/api/v1/namespaces/default/pods/p"
                && body["preconditions"]["uid"] == "uid-p"
        })
    })
    .await;
}

#[tokio::test]
async fn an_unchanged_pod_is_reported_once() {
    let n = node("quiet");
    n.fake.add_image("app:1");
    let slot = n.start(pod("p", &[("c", "app:1")], "Always"));
    until("the pod runs", || {
        n.latest_status("p")["phase"] == "Running"
    })
    .await;
    let written = n.statuses("p").len();
    // Each change of the pod wakes its worker, which finds nothing new.
    for _ in 0..3 {
        let looked = n.fake.looks();
        slot.send_modify(|_| {});
        until("the worker looked again", || n.fake.looks() > looked).await;
    }
    let looked = n.fake.looks();
    until("the worker's timer fired", || n.fake.looks() > looked).await;
    assert_eq!(n.statuses("p").len(), written, "{:?}", n.statuses("p"));
}

/// A simulated node's pods, dispatched to their workers, and its runtime
/// (which has `app:1`).
fn simulated() -> (Dispatcher, Arc<FakeRuntime>) {
    let (client, _) = fake_api();
    let fake = Arc::new(FakeRuntime::default());
    fake.add_image("app:1");
    let syncs = Arc::new(tokio::sync::Semaphore::new(4));
    let worker = Worker::simulated(client, fake.clone(), "n1".into(), "192.0.2.1".into(), syncs);
    (Dispatcher::new(Arc::new(worker)), fake)
}

#[tokio::test]
async fn a_runtime_event_wakes_the_pod_worker() {
    // A simulated node's worker looks at its runtime by itself only every
    // ten seconds; the runtime's event brings it back at once.
    let (mut pods, fake) = simulated();
    let mut changes = fake.events().await.expect("the fake tells its changes");
    pods.handle(Change::Applied(pod("p", &[("c", "app:1")], "Always")));
    let runs = |attempt: u32| {
        let fake = fake.clone();
        move || {
            fake.container_named("uid-p", "c")
                .is_some_and(|s| running(&s) && attempt_of_status(&s) == attempt)
        }
    };
    until("the container runs", runs(0)).await;
    let first = fake.container_named("uid-p", "c").unwrap();
    fake.exit(&first.id, 1);
    let uid = changes.next().await.unwrap();
    assert_eq!(uid, "uid-p");
    pods.wake(&uid);
    until_within("the restart", SIMULATED_RESYNC / 2, runs(1)).await;
}

#[tokio::test]
async fn a_change_of_status_alone_is_handed_over_without_waking_the_worker() {
    let (mut pods, _) = simulated();
    let p = pod("p", &[("c", "app:1")], "Always");
    pods.handle(Change::Applied(p.clone()));
    let seen = pods.slots["uid-p"].subscribe();

    let mut reported = p;
    reported.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    pods.handle(Change::Applied(reported.clone()));
    assert!(!seen.has_changed().unwrap(), "a status change wakes nobody");
    let held = seen.borrow().clone().unwrap();
    assert_eq!(held.status, reported.status, "but the worker will see it");

    let mut labelled = reported.clone();
    labelled.metadata.labels = Some([("tier".to_owned(), "web".to_owned())].into());
    pods.handle(Change::Applied(labelled));
    assert!(seen.has_changed().unwrap(), "a new label wakes the worker");

    // With readiness gates, others' conditions are the worker's input.
    let mut gated = pod("g", &[("c", "app:1")], "Always");
    gated.spec.as_mut().unwrap().readiness_gates =
        serde_json::from_value(json!([{"conditionType": "example.com/lb"}])).unwrap();
    pods.handle(Change::Applied(gated.clone()));
    let seen = pods.slots["uid-g"].subscribe();
    gated.status = reported.status.clone();
    pods.handle(Change::Applied(gated));
    assert!(seen.has_changed().unwrap(), "a gated pod's status wakes it");
}

#[tokio::test]
async fn pods_without_probes_rest_longer_while_the_runtime_tells_changes() {
    let n = node("resync");
    let plain = pod("plain", &[("c", "busybox")], "Always").spec.unwrap();
    let mut probed = plain.clone();
    probed.containers[0].readiness_probe = Some(Default::default());
    assert_eq!(n.worker.resync(&plain), RESYNC, "no events yet");
    n.worker
        .told
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(n.worker.resync(&plain), TOLD_RESYNC);
    assert_eq!(n.worker.resync(&probed), RESYNC, "probes keep their tick");
}

#[tokio::test]
async fn a_dead_sandbox_is_replaced_and_the_containers_restart_in_the_new_one() {
    let n = node("sandbox-dies");
    n.fake.add_image("app:1");
    let slot = n.start(pod("p", &[("c", "app:1")], "Always"));
    until("the pod runs", || {
        n.latest_status("p")["phase"] == "Running"
    })
    .await;
    n.fake.sandbox_dies("uid-p");
    slot.send_modify(|_| {});
    until("the container runs again in a new sandbox", || {
        n.fake.ready_sandboxes("uid-p") == [1]
            && n.fake
                .container_named("uid-p", "c")
                .is_some_and(|s| running(&s) && attempt_of_status(&s) == 1)
    })
    .await;
    until("the dead sandbox is removed", || {
        n.fake.sandbox_count() == 1
    })
    .await;
    until("the restart is reported", || {
        n.latest_status("p")["containerStatuses"][0]["restartCount"] == 1
    })
    .await;
}

#[tokio::test]
async fn a_pod_that_never_restarts_fails_with_its_sandbox() {
    let n = node("sandbox-dies-never");
    n.fake.add_image("app:1");
    let slot = n.start(pod("p", &[("c", "app:1")], "Never"));
    until("the pod runs", || {
        n.latest_status("p")["phase"] == "Running"
    })
    .await;
    n.fake.sandbox_dies("uid-p");
    slot.send_modify(|_| {});
    until("the pod fails", || {
        n.latest_status("p")["phase"] == "Failed"
    })
    .await;
    let status = n.latest_status("p");
    let terminated = &status["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 137, "{status}");
    assert!(n.fake.ready_sandboxes("uid-p").is_empty());
    let c = n.fake.container_named("uid-p", "c").unwrap();
    assert_eq!(attempt_of_status(&c), 0, "the container did not run again");
}

#[tokio::test]
async fn the_node_refuses_a_pod_that_does_not_fit_beside_those_it_admitted() {
    let n = node("admit");
    n.fake.add_image("app:1");
    n.worker.set_node(
        serde_json::from_value(json!({"metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"}}}))
        .unwrap(),
    );
    let asking = |name: &str, cpu: &str, port: i32| {
        let mut p = pod(name, &[("c", "app:1")], "Always");
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.ports = serde_json::from_value(json!([{"containerPort": 80, "hostPort": port}])).unwrap();
        c.resources = serde_json::from_value(json!({"requests": {"cpu": cpu}})).unwrap();
        p
    };
    let mut pods = Dispatcher::new(n.worker.clone());
    pods.handle(Change::Applied(asking("first", "600m", 8080)));
    pods.handle(Change::Applied(asking("same-port", "100m", 8080)));
    pods.handle(Change::Applied(asking("too-big", "500m", 9090)));
    pods.handle(Change::Applied(asking("fits", "400m", 9090)));
    until("the refused pods fail and the others run", || {
        let phase = |name: &str| n.latest_status(name)["phase"].clone();
        phase("same-port") == "Failed"
            && phase("too-big") == "Failed"
            && phase("first") == "Running"
            && phase("fits") == "Running"
    })
    .await;
    let refused = n.latest_status("same-port");
    assert_eq!(refused["reason"], "NodePorts");
    assert_eq!(
        refused["message"],
        "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
    );
    assert_eq!(n.latest_status("too-big")["reason"], "OutOfcpu");
    // Nothing of a refused pod ever ran.
    for refused in ["uid-same-port", "uid-too-big"] {
        assert!(n.fake.ready_sandboxes(refused).is_empty());
        assert!(n.fake.container_named(refused, "c").is_none());
    }
    assert!(n.fake.container_named("uid-fits", "c").is_some());
}

#[tokio::test]
async fn a_deferred_resize_is_allocated_as_soon_as_room_is_freed() {
    // A simulated node: its workers sleep ten seconds when nothing wakes
    // them, so only the room freed can bring the resize on sooner.
    let (client, requests) = fake_api();
    let fake = Arc::new(FakeRuntime::default());
    fake.add_image("app:1");
    let syncs = Arc::new(tokio::sync::Semaphore::new(4));
    let worker = Worker::simulated(client, fake.clone(), "n1".into(), "192.0.2.1".into(), syncs);
    let dir = format!("skiff-pods-deferred-{}", std::process::id());
    let n = Node {
        worker: Arc::new(worker),
        fake,
        requests,
        _dir: TempDir(std::env::temp_dir().join(dir)),
    };
    n.worker.set_node(
        serde_json::from_value(json!({"metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}}))
        .unwrap(),
    );
    let asking = |name: &str, cpu: &str| {
        let mut p = pod(name, &[("c", "app:1")], "Always");
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        c.resources = serde_json::from_value(json!({"requests": {"cpu": cpu}})).unwrap();
        p
    };
    let mut pods = Dispatcher::new(n.worker.clone());
    pods.handle(Change::Applied(asking("big", "1500m")));
    pods.handle(Change::Applied(asking("small", "100m")));
    let phase = |name: &str| n.latest_status(name)["phase"].clone();
    until("both pods run", || {
        phase("big") == "Running" && phase("small") == "Running"
    })
    .await;
    let deferred = || {
        let status = n.latest_status("small");
        let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
        let pending = conditions.iter().find(|c| c["type"] == "PodResizePending");
        pending.map(|c| c["reason"].clone())
    };
    let allocated = || {
        let status = n.latest_status("small");
        status["containerStatuses"][0]["allocatedResources"]["cpu"].clone()
    };
    // Room freed by a resize down.
    pods.handle(Change::Applied(asking("small", "1")));
    until("the resize waits for room", || {
        deferred().is_some_and(|r| r == "Deferred")
    })
    .await;
    assert_eq!(allocated(), "100m");
    pods.handle(Change::Applied(asking("big", "900m")));
    until_within("the resize is allocated", SIMULATED_RESYNC / 2, || {
        allocated() == "1" && deferred().is_none()
    })
    .await;
    // Room freed by a pod that leaves.
    pods.handle(Change::Applied(asking("small", "1500m")));
    until("the resize waits for room", || {
        deferred().is_some_and(|r| r == "Deferred")
    })
    .await;
    assert_eq!(allocated(), "1");
    pods.handle(Change::Deleted(asking("big", "900m")));
    until_within("the resize is allocated", SIMULATED_RESYNC / 2, || {
        allocated() == "1500m" && deferred().is_none()
    })
    .await;
}
