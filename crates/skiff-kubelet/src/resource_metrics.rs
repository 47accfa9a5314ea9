//! Upstream's `/metrics/resource`: the node's and every container's
//! cumulative CPU time and memory working set, each with the time it was
//! taken, in Prometheus text, as metrics servers (the API server's
//! `metrics.k8s.io`) scrape them and turn counters into rates.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use k8s_cri::v1 as cri;

use crate::cri_config::NAME_LABEL;

/// The node's own use at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeUsage {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub cpu_seconds: f64,
    pub memory_working_set: u64,
}

/// Ticks per second in `/proc/stat`: `USER_HZ`, 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// The CPU time the machine has spent busy, from `/proc/stat`'s `cpu`
/// line (everything but idle and iowait), in seconds.
pub fn busy_seconds(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(busy as f64 / USER_HZ)
}

/// The machine's memory working set from `/proc/meminfo`: what is used,
/// less the file cache the kernel may drop first (cAdvisor's figure).
pub fn working_set(meminfo: &str) -> Option<u64> {
    let field = |name| meminfo_bytes(meminfo, name);
    let used = field("MemTotal:")?.saturating_sub(field("MemFree:")?);
    Some(used.saturating_sub(field("Inactive(file):").unwrap_or(0)))
}

/// One field of `/proc/meminfo` (`MemTotal:`), in bytes.
pub fn meminfo_bytes(meminfo: &str, name: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The node's use now, from `/proc`.
pub fn node_usage() -> Option<NodeUsage> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(NodeUsage {
        at_ms: chrono::Utc::now().timestamp_millis(),
        cpu_seconds: busy_seconds(&stat)?,
        memory_working_set: working_set(&meminfo)?,
    })
}

/// A label value in the text format: backslash, quote and newline escaped.
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One container's figures, named as its pod and namespace.
struct Container {
    namespace: String,
    pod: String,
    name: String,
    /// When the container was created, in seconds since the epoch.
    started: Option<f64>,
    at_ms: i64,
    cpu_seconds: f64,
    memory: u64,
}

fn containers(stats: &[cri::ContainerStats], created: &HashMap<String, i64>) -> Vec<Container> {
    let mut out = Vec::new();
    for s in stats {
        let Some(a) = &s.attributes else { continue };
        let label = |k: &str| a.labels.get(k).cloned();
        let (Some(namespace), Some(pod), Some(name)) = (
            label("io.kubernetes.pod.namespace"),
            label("io.kubernetes.pod.name"),
            label(NAME_LABEL),
        ) else {
            continue;
        };
        let Some(cpu) = s.cpu.as_ref() else { continue };
        out.push(Container {
            namespace,
            pod,
            name,
            started: created.get(&a.id).map(|ns| *ns as f64 / 1e9),
            at_ms: cpu.timestamp / 1_000_000,
            cpu_seconds: cpu.usage_core_nano_seconds.map_or(0, |v| v.value) as f64 / 1e9,
            memory: s
                .memory
                .as_ref()
                .and_then(|m| m.working_set_bytes)
                .map_or(0, |v| v.value),
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.pod, &a.name).cmp(&(&b.namespace, &b.pod, &b.name)));
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The text of `/metrics/resource` for these container statistics, the
/// containers' creation times (nanoseconds, by container id) and the
/// node's own use (none when `/proc` could not be read).
pub fn render(
    stats: &[cri::ContainerStats],
    created: &HashMap<String, i64>,
    node: Option<&NodeUsage>,
) -> String {
    let containers = containers(stats, created);
    let mut pods: BTreeMap<(&str, &str), (i64, f64, u64)> = BTreeMap::new();
    for c in &containers {
        let p = pods.entry((&c.namespace, &c.pod)).or_default();
        *p = (p.0.max(c.at_ms), p.1 + c.cpu_seconds, p.2 + c.memory);
    }
    let mut out = String::new();
    let container_labels = |c: &Container| {
        format!(
            "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
            escaped(&c.name),
            escaped(&c.namespace),
            escaped(&c.pod)
        )
    };
    let pod_labels =
        |ns: &str, pod: &str| format!("namespace=\"{}\",pod=\"{}\"", escaped(ns), escaped(pod));
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
    );
    for c in &containers {
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{{}}} {} {}",
            container_labels(c),
            c.cpu_seconds,
            c.at_ms
        );
    }
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
    );
    for c in &containers {
        let _ = writeln!(
            out,
            "container_memory_working_set_bytes{{{}}} {} {}",
            container_labels(c),
            c.memory,
            c.at_ms
        );
    }
    family(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
    );
    for c in &containers {
        if let Some(started) = c.started {
            let _ = writeln!(
                out,
                "container_start_time_seconds{{{}}} {started} {}",
                container_labels(c),
                c.at_ms
            );
        }
    }
    if let Some(n) = node {
        family(
            &mut out,
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
        );
        let _ = writeln!(
            out,
            "node_cpu_usage_seconds_total {} {}",
            n.cpu_seconds, n.at_ms
        );
        family(
            &mut out,
            "node_memory_working_set_bytes",
            "gauge",
            "Current working set of the node in bytes",
        );
        let _ = writeln!(
            out,
            "node_memory_working_set_bytes {} {}",
            n.memory_working_set, n.at_ms
        );
    }
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
    );
    for ((ns, pod), (at, cpu, _)) in &pods {
        let _ = writeln!(
            out,
            "pod_cpu_usage_seconds_total{{{}}} {cpu} {at}",
            pod_labels(ns, pod)
        );
    }
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
    );
    for ((ns, pod), (at, _, memory)) in &pods {
        let _ = writeln!(
            out,
            "pod_memory_working_set_bytes{{{}}} {memory} {at}",
            pod_labels(ns, pod)
        );
    }
    family(
        &mut out,
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    );
    let _ = writeln!(out, "resource_scrape_error {}", u8::from(node.is_none()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 20 30 5000 70 1 2 3 0 0\ncpu0 50 10 15 2500 35 0 1 1 0 0\n";
        assert_eq!(busy_seconds(stat), Some(1.56));
        assert_eq!(busy_seconds("intr 1 2"), None);
    }

    #[test]
    fn working_set_is_used_memory_less_inactive_file_cache() {
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    500 kB\nInactive(file):  100 kB\n";
        assert_eq!(working_set(meminfo), Some(700 * 1024));
        assert_eq!(working_set("MemFree: 1 kB\n"), None);
    }

    fn stats(pod: &str, name: &str, at_ns: i64, cpu_ns: u64, memory: u64) -> cri::ContainerStats {
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: format!("{pod}-{name}"),
                labels: [
                    (NAME_LABEL.to_owned(), name.to_owned()),
                    ("io.kubernetes.pod.name".to_owned(), pod.to_owned()),
                    ("io.kubernetes.pod.namespace".to_owned(), "ns".to_owned()),
                ]
                .into(),
                ..Default::default()
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: at_ns,
                usage_core_nano_seconds: Some(cri::UInt64Value { value: cpu_ns }),
                usage_nano_cores: None,
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: at_ns,
                working_set_bytes: Some(cri::UInt64Value { value: memory }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn containers_pods_and_the_node_with_their_times() {
        let node = NodeUsage {
            at_ms: 7,
            cpu_seconds: 12.5,
            memory_working_set: 4096,
        };
        let created = HashMap::from([("web-a".to_owned(), 1_500_000_000)]);
        let text = render(
            &[
                stats("web", "b\"x", 2_000_000, 500_000_000, 10),
                stats("web", "a", 3_000_000, 1_500_000_000, 20),
            ],
            &created,
            Some(&node),
        );
        assert!(
            text.contains("container_start_time_seconds{container=\"a\",namespace=\"ns\",pod=\"web\"} 1.5 3\n"),
            "{text}"
        );
        assert!(
            text.contains("container_cpu_usage_seconds_total{container=\"a\",namespace=\"ns\",pod=\"web\"} 1.5 3\n"),
            "{text}"
        );
        assert!(
            text.contains("container=\"b\\\"x\""),
            "quotes escaped: {text}"
        );
        assert!(text.contains("pod_cpu_usage_seconds_total{namespace=\"ns\",pod=\"web\"} 2 3\n"));
        assert!(text.contains("pod_memory_working_set_bytes{namespace=\"ns\",pod=\"web\"} 30 3\n"));
        assert!(text.contains("node_cpu_usage_seconds_total 12.5 7\n"));
        assert!(text.contains("node_memory_working_set_bytes 4096 7\n"));
        assert!(text.ends_with("resource_scrape_error 0\n"));
        assert!(render(&[], &HashMap::new(), None).ends_with("resource_scrape_error 1\n"));
    }
}
