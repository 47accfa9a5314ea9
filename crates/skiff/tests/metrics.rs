//! Prometheus metrics of the control plane at the API server's
//! `/metrics`, read with the real kubectl and parsed by a Prometheus text
//! parser: the request counter rises with kubectl's requests; the
//! scheduler's and controllers' series are there; only those RBAC lets
//! read `/metrics` may; a watch counts while its client listens.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{wait_for, Cluster};

fn scrape(c: &Cluster) -> prometheus_parse::Scrape {
    let text = c.ok(&["get", "--raw", "/metrics"]);
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The sum of the samples of `metric` with all of `labels`.
fn sum(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// The count of LIST requests for namespaces answered 200.
fn namespace_lists(s: &prometheus_parse::Scrape) -> f64 {
    let labels = [
        ("verb", "LIST"),
        ("resource", "namespaces"),
        ("code", "200"),
    ];
    sum(s, "apiserver_request_total", &labels)
}

#[test]
fn the_request_counter_rises_with_kubectl_calls() {
    let c = Cluster::start();
    let before = namespace_lists(&scrape(&c));
    c.ok(&["get", "namespaces"]);
    c.ok(&["get", "namespaces"]);
    let after = scrape(&c);
    assert!(
        namespace_lists(&after) >= before + 2.0,
        "{before} then {}",
        namespace_lists(&after)
    );
    let names: Vec<&str> = after.samples.iter().map(|s| s.metric.as_str()).collect();
    for family in [
        "apiserver_request_duration_seconds",
        "apiserver_current_inflight_requests",
        "scheduler_pending_pods",
        "workqueue_adds_total",
        "workqueue_depth",
        "skiff_watch_cache_events",
    ] {
        assert!(names.contains(&family), "{family} is missing");
    }
    let namespaces = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "apiserver_storage_objects"
                && s.labels.get("resource") == Some("namespaces")
        })
        .map(|s| s.value.clone());
    assert!(
        matches!(namespaces, Some(prometheus_parse::Value::Gauge(n)) if n >= 4.0),
        "default, kube-system, kube-public, kube-node-lease: {namespaces:?}"
    );
    let bucket = after
        .samples
        .iter()
        .find(|s| s.metric == "apiserver_request_duration_seconds")
        .unwrap();
    assert_eq!(bucket.labels.get("component"), Some("apiserver"));
    assert!(
        matches!(&bucket.value, prometheus_parse::Value::Histogram(b) if !b.is_empty()),
        "{bucket:?}"
    );
}

/// The open watches of `resource` the watch cache feeds.
fn watches(s: &prometheus_parse::Scrape, resource: &str) -> f64 {
    sum(s, "skiff_watch_cache_watches", &[("resource", resource)])
}

/// `kubectl get -w` opens a watch the cache feeds; when kubectl goes away
/// the watch closes with its connection. (Events: no component watches
/// them, the garbage collector, which follows every other kind, included.)
#[test]
fn a_watch_counts_while_its_client_listens() {
    let c = Cluster::start();
    let limit = Duration::from_secs(30);
    let before = watches(&scrape(&c), "events");
    let mut kubectl = c
        .kubectl_cmd(&["get", "events", "-w", "-n", "default"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("kubectl's watch to open", limit, || {
        (watches(&scrape(&c), "events") == before + 1.0).then_some(())
    });
    kubectl.kill().unwrap();
    kubectl.wait().unwrap();
    wait_for("kubectl's watch to close", limit, || {
        (watches(&scrape(&c), "events") == before).then_some(())
    });
}

#[test]
fn metrics_are_for_those_rbac_lets_read_them() {
    let c = Cluster::start();
    let refused = c.fails(&["get", "--raw", "/metrics", "--as", "alice"]);
    assert!(
        refused.contains("Forbidden") || refused.contains("forbidden"),
        "{refused}"
    );
    let monitoring = c.ok(&[
        "get",
        "--raw",
        "/metrics",
        "--as",
        "alice",
        "--as-group",
        "system:monitoring",
    ]);
    assert!(monitoring.contains("# TYPE apiserver_request counter"));
    assert!(monitoring.contains("apiserver_request_total{"));
}
