//! The resource metrics API (`metrics.k8s.io/v1beta1`) in process, as
//! upstream's metrics-server serves it: every resolution the agents'
//! `/metrics/resource` are scraped, and CPU is the rate of the cumulative
//! counters between two scrapes; memory is the latest working set. Only
//! the last window is kept, in memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{json, Value};
use skiff_core::quantity;

/// One cumulative CPU counter and working set, at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    at: DateTime<Utc>,
    cpu_seconds: f64,
    memory: u64,
    /// When the container started, when the agent says.
    started: Option<DateTime<Utc>>,
}

/// Usage over a window: CPU in nanocores, memory in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub at: DateTime<Utc>,
    pub window: Duration,
    pub nano_cores: u64,
    pub memory: u64,
}

/// The usage between two points of the same counter; none when time did
/// not move forward or the counter went back (a restarted container).
fn usage(previous: &Point, current: &Point) -> Option<Usage> {
    let window = (current.at - previous.at).to_std().ok()?;
    let used = current.cpu_seconds - previous.cpu_seconds;
    if window.is_zero() || used < 0.0 {
        return None;
    }
    Some(Usage {
        at: current.at,
        window,
        nano_cores: (used / window.as_secs_f64() * 1e9) as u64,
        memory: current.memory,
    })
}

/// One scrape of one agent.
#[derive(Clone, Debug, Default, PartialEq)]
struct Scrape {
    node: Option<Point>,
    /// By namespace, pod and container.
    containers: HashMap<(String, String, String), Point>,
}

/// What one sample line names.
fn parse(text: &str) -> Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let Ok(parsed) = prometheus_parse::Scrape::parse(lines) else {
        return Scrape::default();
    };
    let mut out = Scrape::default();
    for s in parsed.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let point = |p: Option<Point>| {
            let mut p = p.unwrap_or(Point {
                at: s.timestamp,
                cpu_seconds: 0.0,
                memory: 0,
                started: None,
            });
            p.at = p.at.max(s.timestamp);
            p
        };
        let key = || {
            let l = |k: &str| s.labels.get(k).unwrap_or_default().to_owned();
            (l("namespace"), l("pod"), l("container"))
        };
        match s.metric.as_str() {
            "node_cpu_usage_seconds_total" => {
                out.node = Some(Point {
                    cpu_seconds: value,
                    ..point(out.node)
                })
            }
            "node_memory_working_set_bytes" => {
                out.node = Some(Point {
                    memory: value as u64,
                    ..point(out.node)
                })
            }
            "container_cpu_usage_seconds_total" => {
                let k = key();
                let p = point(out.containers.get(&k).copied());
                out.containers.insert(
                    k,
                    Point {
                        cpu_seconds: value,
                        ..p
                    },
                );
            }
            "container_start_time_seconds" => {
                let k = key();
                let p = point(out.containers.get(&k).copied());
                let started = DateTime::from_timestamp_millis((value * 1000.0) as i64);
                out.containers.insert(k, Point { started, ..p });
            }
            "container_memory_working_set_bytes" => {
                let k = key();
                let p = point(out.containers.get(&k).copied());
                out.containers.insert(
                    k,
                    Point {
                        memory: value as u64,
                        ..p
                    },
                );
            }
            _ => {}
        }
    }
    out
}

/// One pod's containers over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUsage {
    pub containers: Vec<(String, Usage)>,
}

/// The usage of one node and its pods, from its last two scrapes.
#[derive(Clone, Debug, Default)]
struct NodeWindow {
    last: Scrape,
    /// When the last scrape was taken in.
    scraped: Option<DateTime<Utc>>,
    node: Option<Usage>,
    pods: HashMap<(String, String), PodUsage>,
}

impl NodeWindow {
    /// Takes in a new scrape at `now`: rates against the one before. A
    /// container started since that one is measured from its start (no
    /// CPU used then), as metrics-server does, so that a new pod shows
    /// after one scrape.
    fn advance(&mut self, scrape: Scrape, now: DateTime<Utc>) {
        self.node = match (&self.last.node, &scrape.node) {
            (Some(a), Some(b)) => usage(a, b),
            _ => None,
        };
        let mut pods: HashMap<(String, String), PodUsage> = HashMap::new();
        let mut incomplete = Vec::new();
        for (key, point) in &scrape.containers {
            let (ns, pod, container) = key;
            let pod_key = (ns.clone(), pod.clone());
            let since_start = || {
                let started = point
                    .started
                    .filter(|s| self.scraped.is_some_and(|t| *s > t))?;
                let origin = Point {
                    at: started,
                    cpu_seconds: 0.0,
                    memory: 0,
                    started: None,
                };
                usage(&origin, point)
            };
            let measured = match self.last.containers.get(key) {
                Some(previous) => usage(previous, point),
                None => since_start(),
            };
            match measured {
                Some(u) => pods
                    .entry(pod_key)
                    .or_insert_with(|| PodUsage {
                        containers: Vec::new(),
                    })
                    .containers
                    .push((container.clone(), u)),
                // A pod is reported only when all of its containers are.
                None => incomplete.push(pod_key),
            }
        }
        for key in incomplete {
            pods.remove(&key);
        }
        for p in pods.values_mut() {
            p.containers.sort_by(|a, b| a.0.cmp(&b.0));
        }
        self.pods = pods;
        self.last = scrape;
        self.scraped = Some(now);
    }
}

/// The window of every node, as the API serves it.
#[derive(Default)]
pub struct ResourceMetrics {
    nodes: RwLock<HashMap<String, NodeWindow>>,
}

impl ResourceMetrics {
    /// A node's usage over the last window.
    pub fn node(&self, name: &str) -> Option<Usage> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes.get(name)?.node
    }

    /// A pod's usage over the last window.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<PodUsage> {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_owned(), name.to_owned());
        nodes.values().find_map(|n| n.pods.get(&key).cloned())
    }

    /// Takes in one scrape of a node's agent, taken at `now`.
    fn record(&self, node: &str, text: &str, now: DateTime<Utc>) {
        let scrape = parse(text);
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        nodes
            .entry(node.to_owned())
            .or_default()
            .advance(scrape, now);
    }

    /// Forgets nodes that are gone or were not reached.
    fn keep(&self, reached: &[String]) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|name, _| reached.contains(name));
    }
}

/// How many agents are scraped at once.
const SCRAPES_AT_ONCE: usize = 32;

/// Scrapes every agent each `resolution`, for as long as the server runs.
pub async fn scrape(
    metrics: Arc<ResourceMetrics>,
    objects: crate::storage::Objects,
    dialer: Arc<crate::node_proxy::NodeDialer>,
    resolution: Duration,
) {
    let nodes = skiff_core::registry::lookup("", "v1", "nodes").expect("nodes are registered");
    let mut tick = tokio::time::interval(resolution);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok((listed, _, _)) = objects
            .list(nodes, None, skiff_store::ListOptions::default())
            .await
        else {
            continue;
        };
        // Each node is decoded as its scrape starts: at most
        // `SCRAPES_AT_ONCE` at a time, not thousands held together.
        let scrapes = futures::stream::iter(listed)
            .map(|kv| {
                let dialer = dialer.clone();
                async move {
                    let node = crate::storage::decode(&kv).ok()?;
                    let name = skiff_core::meta::name(&node).to_owned();
                    let text = dialer
                        .scrape(&node, "/metrics/resource", resolution)
                        .await?;
                    Some((name, text))
                }
            })
            .buffer_unordered(SCRAPES_AT_ONCE)
            .filter_map(std::future::ready)
            .collect::<Vec<_>>();
        let reached: Vec<(String, String)> = scrapes.await;
        for (name, text) in &reached {
            metrics.record(name, text, Utc::now());
        }
        let names: Vec<String> = reached.into_iter().map(|(n, _)| n).collect();
        metrics.keep(&names);
    }
}

/// A duration as metrics-server shows a window (`15.012s`).
fn window(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn usage_json(u: &Usage) -> Value {
    json!({"cpu": quantity::format_nano(u.nano_cores), "memory": quantity::format_bytes(u.memory)})
}

/// The NodeMetrics of a node (its name and labels from the Node).
pub fn node_metrics(node: &Value, u: &Usage) -> Value {
    json!({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": node["metadata"]["name"], "labels": node["metadata"]["labels"],
            "creationTimestamp": time(Utc::now())},
        "timestamp": time(u.at), "window": window(u.window), "usage": usage_json(u)})
}

/// The PodMetrics of a pod (its name, namespace and labels from the Pod).
pub fn pod_metrics(pod: &Value, u: &PodUsage) -> Value {
    let at = u
        .containers
        .iter()
        .map(|(_, c)| c.at)
        .max()
        .unwrap_or_else(Utc::now);
    let longest = u
        .containers
        .iter()
        .map(|(_, c)| c.window)
        .max()
        .unwrap_or_default();
    let containers: Vec<Value> = u
        .containers
        .iter()
        .map(|(name, c)| json!({"name": name, "usage": usage_json(c)}))
        .collect();
    json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"],
            "labels": pod["metadata"]["labels"], "creationTimestamp": time(Utc::now())},
        "timestamp": time(at), "window": window(longest), "containers": containers})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(at_ms: i64, node_cpu: f64, web_cpu: f64, with_sidecar: bool) -> String {
        let mut t = format!(
            "# TYPE node_cpu_usage_seconds_total counter\nnode_cpu_usage_seconds_total {node_cpu} {at_ms}\n\
             node_memory_working_set_bytes 1000 {at_ms}\n\
             container_cpu_usage_seconds_total{{container=\"app\",namespace=\"ns\",pod=\"web\"}} {web_cpu} {at_ms}\n\
             container_memory_working_set_bytes{{container=\"app\",namespace=\"ns\",pod=\"web\"}} 2048 {at_ms}\n"
        );
        if with_sidecar {
            t.push_str(&format!(
                "container_cpu_usage_seconds_total{{container=\"side\",namespace=\"ns\",pod=\"web\"}} 1 {at_ms}\n"
            ));
        }
        t
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn a_container_started_since_the_last_scrape_counts_from_its_start() {
        let m = ResourceMetrics::default();
        m.record("n1", &text(10_000, 100.0, 5.0, false), at(10));
        let late = "container_cpu_usage_seconds_total{container=\"app\",namespace=\"ns\",pod=\"new\"} 1 12000\n\
                    container_start_time_seconds{container=\"app\",namespace=\"ns\",pod=\"new\"} 11 12000\n";
        m.record(
            "n1",
            &format!("{}{late}", text(12_000, 101.0, 6.0, false)),
            at(12),
        );
        let new = m.pod("ns", "new").expect("shown after one scrape");
        assert_eq!(new.containers[0].1.nano_cores, 1_000_000_000);
        assert_eq!(new.containers[0].1.window, Duration::from_secs(1));
        // One that started before the last scrape waits for a second one.
        let m = ResourceMetrics::default();
        m.record("n1", &text(10_000, 100.0, 5.0, false), at(10));
        let early = late
            .replace("} 11 ", "} 9 ")
            .replace("pod=\"new\"", "pod=\"old\"");
        m.record(
            "n1",
            &format!("{}{early}", text(12_000, 101.0, 6.0, false)),
            at(12),
        );
        assert_eq!(m.pod("ns", "old"), None);
    }

    #[test]
    fn cpu_is_the_counters_rate_between_two_scrapes() {
        let m = ResourceMetrics::default();
        m.record("n1", &text(10_000, 100.0, 5.0, false), at(10));
        assert_eq!(m.node("n1"), None, "one scrape is no window");
        assert_eq!(m.pod("ns", "web"), None);
        m.record("n1", &text(12_000, 103.0, 6.0, false), at(12));
        let node = m.node("n1").unwrap();
        assert_eq!(node.nano_cores, 1_500_000_000);
        assert_eq!(node.window, Duration::from_secs(2));
        assert_eq!(node.memory, 1000);
        let pod = m.pod("ns", "web").unwrap();
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].1.nano_cores, 500_000_000);
        assert_eq!(pod.containers[0].1.memory, 2048);
        // A container that appeared since hides its pod for one window.
        m.record("n1", &text(14_000, 104.0, 7.0, true), at(14));
        assert_eq!(m.pod("ns", "web"), None);
        m.record("n1", &text(16_000, 105.0, 8.0, true), at(16));
        assert_eq!(m.pod("ns", "web").unwrap().containers.len(), 2);
        // A counter that went back (a restart) gives no rate.
        m.record("n1", &text(18_000, 106.0, 1.0, true), at(18));
        assert_eq!(m.pod("ns", "web"), None);
        m.keep(&[]);
        assert_eq!(m.node("n1"), None, "a node not reached is forgotten");
    }

    #[test]
    fn shapes_as_metrics_server_serves_them() {
        let u = Usage {
            at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .to_utc(),
            window: Duration::from_millis(15_012),
            nano_cores: 250_000_000,
            memory: 64 << 20,
        };
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let m = node_metrics(&node, &u);
        assert_eq!(m["usage"], json!({"cpu": "250000000n", "memory": "64Mi"}));
        assert_eq!(m["window"], "15.012s");
        assert_eq!(m["timestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(m["metadata"]["labels"]["a"], "b");
        let pod = json!({"metadata": {"name": "web", "namespace": "ns"}});
        let p = pod_metrics(
            &pod,
            &PodUsage {
                containers: vec![("app".into(), u)],
            },
        );
        assert_eq!(p["containers"][0]["name"], "app");
        assert_eq!(p["metadata"]["namespace"], "ns");
    }
}
