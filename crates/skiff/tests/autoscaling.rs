//! Resource metrics and autoscaling end to end, with real containers and
//! the real kubectl: `kubectl top` shows a busy pod's core; a Deployment
//! made autoscaled by `kubectl autoscale` (50 % CPU, 1 to 5 replicas)
//! grows under a busy loop and shrinks back once it stops; the agent's
//! own metrics count the pods it started.
//! Needs root and `scripts/setup.sh --test`.

mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use support::{create, wait_for, Cluster};

const BUSYBOX: &str = "skiff.local/busybox:1";

/// The Deployment's single pod's name, once it runs.
fn running_pod(c: &Cluster) -> String {
    wait_for("the pod to run", Duration::from_secs(90), || {
        let pods = c.json(&["get", "pods", "-l", "app=burn"]);
        let items = pods["items"].as_array()?;
        let running = items.iter().find(|p| p["status"]["phase"] == "Running")?;
        running["metadata"]["name"].as_str().map(str::to_owned)
    })
}

/// `kubectl top pod`'s CPU figure for `pod`, in millicores.
fn top_millicores(c: &Cluster, pod: &str) -> Option<u64> {
    let out = c.kubectl(&["top", "pod", pod, "--no-headers"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let cpu = text.split_whitespace().nth(1)?;
    cpu.strip_suffix('m')?.parse().ok()
}

fn replicas(c: &Cluster) -> i64 {
    let d = c.json(&["get", "deployment", "burn"]);
    d["spec"]["replicas"].as_i64().unwrap_or(0)
}

/// A busy loop in `pod` until /tmp/stop exists (kubectl exec, left
/// running).
fn burn(c: &Cluster, pod: &str) -> Child {
    c.kubectl_cmd(&[
        "exec",
        pod,
        "--",
        "sh",
        "-c",
        "while [ ! -f /tmp/stop ]; do :; done",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

#[test]
fn top_shows_usage_and_an_autoscaler_follows_the_load() {
    let cluster = support::real_cluster(&[
        "--metrics-resolution",
        "2s",
        "--horizontal-pod-autoscaler-sync-period",
        "2s",
        "--horizontal-pod-autoscaler-downscale-stabilization",
        "10s",
    ]);
    let c = &cluster.c;
    create(
        c,
        &format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: burn}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burn}}}}
  template:
    metadata: {{labels: {{app: burn}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {BUSYBOX}
        command: [sleep, '3600']
        resources: {{requests: {{cpu: 100m}}}}
"
        ),
    );
    let pod = running_pod(c);

    // The metrics API is discovered and serves the node and the pod.
    let nodes = wait_for("kubectl top nodes", Duration::from_secs(60), || {
        let out = c.kubectl(&["top", "nodes", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !text.trim().is_empty()).then_some(text)
    });
    let fields: Vec<&str> = nodes.split_whitespace().collect();
    assert!(fields[1].ends_with('m'), "CPU in millicores: {nodes}");
    assert!(fields[3].ends_with("Mi"), "memory in MiB: {nodes}");
    wait_for("the pod's metrics", Duration::from_secs(60), || {
        top_millicores(c, &pod)
    });
    let containers = c.ok(&["top", "pods", "-l", "app=burn", "--containers"]);
    assert!(
        containers.contains(&pod) && containers.contains("main"),
        "{containers}"
    );
    let none = c.kubectl(&["top", "pods", "-l", "app=none"]);
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("No resources found"),
        "{none:?}"
    );

    c.ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=5",
    ]);
    let mut load = burn(c, &pod);
    wait_for("a busy pod to use a core", Duration::from_secs(60), || {
        top_millicores(c, &pod).filter(|m| *m >= 800)
    });
    wait_for(
        "the autoscaler to scale up",
        Duration::from_secs(90),
        || (replicas(c) > 1).then_some(()),
    );
    let hpa = c.ok(&["get", "hpa", "burn", "--no-headers"]);
    assert!(hpa.contains("Deployment/burn"), "{hpa}");
    assert!(hpa.contains("%/50%"), "TARGETS as cpu: N%/50%: {hpa}");
    assert_eq!(
        replicas(c),
        5,
        "the busy pod alone keeps the average above 50 %"
    );
    let status =
        c.json(&["get", "horizontalpodautoscalers.v2.autoscaling", "burn"])["status"].clone();
    let active = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ScalingActive")
        .cloned()
        .unwrap();
    assert_eq!(active["status"], "True", "{status}");
    assert_eq!(active["reason"], "ValidMetricFound");

    c.ok(&["exec", &pod, "--", "touch", "/tmp/stop"]);
    let _ = load.wait();
    wait_for(
        "the autoscaler to scale down",
        Duration::from_secs(120),
        || (replicas(c) == 1).then_some(()),
    );
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=burn",
    ]);
    assert!(events.contains("SuccessfulRescale"), "{events}");
    assert!(
        events.contains("New size: 5; reason: cpu resource utilization"),
        "{events}"
    );
    assert!(events.contains("All metrics below target"), "{events}");

    // The agent's own metrics, through the API server's node proxy.
    let node = c.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let text = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/metrics"),
    ]);
    let agent = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str| {
        agent
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| s.value.clone())
    };
    match value("kubelet_pod_start_duration_seconds") {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            let all = buckets.last().map_or(0.0, |b| b.count);
            assert!(all >= 5.0, "the five pods' starts: {buckets:?}");
        }
        other => panic!("no pod start histogram: {other:?}\n{text}"),
    }
    assert!(
        matches!(value("kubelet_running_pods"), Some(prometheus_parse::Value::Gauge(n)) if n >= 1.0),
        "{text}"
    );
    assert!(
        text.contains("kubelet_runtime_operations_duration_seconds_bucket{"),
        "{text}"
    );
}

#[test]
fn an_autoscaler_is_one_object_at_v1_and_v2() {
    let c = Cluster::start();
    create(
        &c,
        "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 60}}
  - type: Resource
    resource: {name: memory, target: {type: AverageValue, averageValue: 64Mi}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 30}
",
    );
    let v1 = c.json(&["get", "horizontalpodautoscalers.v1.autoscaling", "web"]);
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    assert_eq!(v1["spec"]["minReplicas"], 1, "defaulted");
    // An edit through v1 keeps what only v2 can say.
    c.ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":70}}"#,
    ]);
    let v2 = c.json(&["get", "horizontalpodautoscalers.v2.autoscaling", "web"]);
    let metrics = v2["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 70);
    assert_eq!(metrics[1]["resource"]["name"], "memory");
    assert_eq!(
        v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        30
    );
    assert_eq!(
        v2["spec"]["behavior"]["scaleUp"]["policies"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "behavior defaults filled in"
    );
    let annotations = v2["metadata"]["annotations"].as_object().unwrap();
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with("autoscaling.alpha")),
        "v1's annotations are taken back: {v2}"
    );
    // Checked as upstream checks it, at either version.
    let said = c.fails(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":0}}"#,
    ]);
    assert!(
        said.contains("spec.metrics[0].resource.target.averageUtilization: Invalid value: 0: must be greater than 0"),
        "{said}"
    );
    let said = c.fails(&[
        "patch",
        "hpa",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReplicas":5,"behavior":{"scaleUp":{"selectPolicy":"Most"}}}}"#,
    ]);
    assert!(
        said.contains(
            "spec.maxReplicas: Invalid value: 4: must be greater than or equal to `minReplicas`"
        ),
        "{said}"
    );
    assert!(
        said.contains(r#"spec.behavior.scaleUp.selectPolicy: Unsupported value: "Most""#),
        "{said}"
    );
    let table = c.ok(&["get", "hpa", "web", "--no-headers"]);
    assert!(
        table.contains("cpu: <unknown>/70%, memory: <unknown>/64Mi"),
        "{table}"
    );
    assert!(table.contains("Deployment/web"), "{table}");
}
