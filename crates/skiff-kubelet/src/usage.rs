//! What each pod and container uses, from the runtime's statistics: CPU
//! as a rate between two samples, memory as the working set. Kept for the
//! node's Summary API (`/stats/summary`, what metrics servers read).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_cri::v1 as cri;
use serde_json::{json, Value};

use crate::cri_config::{NAME_LABEL, UID_LABEL};

/// One container's use at one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerUsage {
    pub name: String,
    /// When the sample was taken, in nanoseconds since the epoch.
    pub at: i64,
    /// CPU time used since the container started.
    pub cpu_total_ns: u64,
    /// CPU in use, in billionths of a core: the rate since the previous
    /// sample, or the runtime's own figure; `None` after a first sample.
    pub nano_cores: Option<u64>,
    pub memory_working_set: u64,
    /// What its writable layer holds on disk.
    pub writable_layer_bytes: u64,
}

/// One pod's containers at the latest sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodUsage {
    pub name: String,
    pub namespace: String,
    pub containers: Vec<ContainerUsage>,
}

/// The latest sample of every pod on the node, by pod uid.
#[derive(Default)]
pub struct Usage {
    pods: Mutex<HashMap<String, PodUsage>>,
    /// The previous sample per container id, for rates.
    previous: Mutex<HashMap<String, (i64, u64)>>,
}

/// The CPU rate between two cumulative samples `(at, total)`, in
/// nanocores; none when time has not moved or the counter went back (a
/// restarted container).
pub fn rate(previous: (i64, u64), current: (i64, u64)) -> Option<u64> {
    let elapsed = current.0.checked_sub(previous.0).filter(|e| *e > 0)?;
    let used = current.1.checked_sub(previous.1)?;
    Some((u128::from(used) * 1_000_000_000 / elapsed as u128) as u64)
}

impl Usage {
    /// Takes in a sample of every container's statistics.
    pub fn sample(&self, stats: &[cri::ContainerStats]) {
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        let mut pods: HashMap<String, PodUsage> = HashMap::new();
        let mut seen = HashMap::new();
        for s in stats {
            let Some(a) = &s.attributes else { continue };
            let (Some(uid), Some(name)) = (a.labels.get(UID_LABEL), a.labels.get(NAME_LABEL))
            else {
                continue;
            };
            let cpu = s.cpu.unwrap_or_default();
            let total = cpu.usage_core_nano_seconds.map_or(0, |v| v.value);
            let at = cpu.timestamp;
            let own = cpu.usage_nano_cores.map(|v| v.value).filter(|v| *v > 0);
            let nano_cores = own.or_else(|| rate(*previous.get(&a.id)?, (at, total)));
            seen.insert(a.id.clone(), (at, total));
            let label = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
            let pod = pods.entry(uid.clone()).or_insert_with(|| PodUsage {
                name: label("io.kubernetes.pod.name"),
                namespace: label("io.kubernetes.pod.namespace"),
                containers: Vec::new(),
            });
            pod.containers.push(ContainerUsage {
                name: name.clone(),
                at,
                cpu_total_ns: total,
                nano_cores,
                memory_working_set: s
                    .memory
                    .as_ref()
                    .and_then(|m| m.working_set_bytes)
                    .map_or(0, |v| v.value),
                writable_layer_bytes: s
                    .writable_layer
                    .as_ref()
                    .and_then(|w| w.used_bytes)
                    .map_or(0, |v| v.value),
            });
        }
        *previous = seen;
        *self.pods.lock().unwrap_or_else(|e| e.into_inner()) = pods;
    }

    /// The latest sample of one pod.
    pub fn pod(&self, uid: &str) -> Option<PodUsage> {
        let pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        pods.get(uid).cloned()
    }

    /// The latest sample, by pod uid.
    pub fn pods(&self) -> HashMap<String, PodUsage> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The pods' part of upstream's Summary API (`/stats/summary`).
    pub fn summary(&self, node: &str) -> Value {
        let time = |at: i64| {
            let t = crate::plan::instant(at);
            t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
        };
        let pods: Vec<Value> = self
            .pods()
            .into_iter()
            .map(|(uid, p)| {
                let at = p.containers.iter().map(|c| c.at).max().unwrap_or_default();
                let cpu = |cs: &[&ContainerUsage]| {
                    let cores: Option<u64> = cs.iter().map(|c| c.nano_cores).sum();
                    let total: u64 = cs.iter().map(|c| c.cpu_total_ns).sum();
                    json!({"time": time(at), "usageNanoCores": cores, "usageCoreNanoSeconds": total})
                };
                let memory = |cs: &[&ContainerUsage]| {
                    let ws: u64 = cs.iter().map(|c| c.memory_working_set).sum();
                    json!({"time": time(at), "workingSetBytes": ws})
                };
                let all: Vec<&ContainerUsage> = p.containers.iter().collect();
                let containers: Vec<Value> = p
                    .containers
                    .iter()
                    .map(|c| json!({"name": c.name, "cpu": cpu(&[c]), "memory": memory(&[c])}))
                    .collect();
                json!({"podRef": {"name": p.name, "namespace": p.namespace, "uid": uid},
                       "cpu": cpu(&all), "memory": memory(&all), "containers": containers})
            })
            .collect();
        json!({"node": {"nodeName": node}, "pods": pods})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(id: &str, uid: &str, at: i64, total: u64, memory: u64) -> cri::ContainerStats {
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: id.into(),
                labels: [
                    (UID_LABEL.to_owned(), uid.to_owned()),
                    (NAME_LABEL.to_owned(), format!("c-{id}")),
                    ("io.kubernetes.pod.name".to_owned(), format!("pod-{uid}")),
                    (
                        "io.kubernetes.pod.namespace".to_owned(),
                        "default".to_owned(),
                    ),
                ]
                .into(),
                ..Default::default()
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: at,
                usage_core_nano_seconds: Some(cri::UInt64Value { value: total }),
                usage_nano_cores: None,
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: at,
                working_set_bytes: Some(cri::UInt64Value { value: memory }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rates() {
        let s = 1_000_000_000;
        assert_eq!(
            rate((0, 0), (2 * s, s as u64)),
            Some(500_000_000),
            "half a core"
        );
        assert_eq!(rate((s, 5), (s, 9)), None, "no time passed");
        assert_eq!(rate((0, 900), (s, 100)), None, "a restarted counter");
    }

    #[test]
    fn cpu_is_a_rate_between_samples_and_pods_sum_their_containers() {
        let usage = Usage::default();
        let s = 1_000_000_000;
        usage.sample(&[stats("a", "u1", 0, 0, 10), stats("b", "u1", 0, 0, 5)]);
        assert_eq!(usage.pods()["u1"].containers[0].nano_cores, None);
        usage.sample(&[
            stats("a", "u1", s, s as u64 / 4, 12),
            stats("b", "u1", s, s as u64 / 2, 6),
        ]);
        let pods = usage.pods();
        let cores: Vec<Option<u64>> = pods["u1"].containers.iter().map(|c| c.nano_cores).collect();
        assert_eq!(cores, [Some(250_000_000), Some(500_000_000)]);
        let summary = usage.summary("n1");
        let pod = &summary["pods"][0];
        assert_eq!(pod["podRef"]["name"], "pod-u1");
        assert_eq!(pod["cpu"]["usageNanoCores"], 750_000_000);
        assert_eq!(pod["memory"]["workingSetBytes"], 18);
        // A container gone from the runtime is gone from the sample.
        usage.sample(&[stats("a", "u1", 2 * s, s as u64 / 2, 12)]);
        assert_eq!(usage.pods()["u1"].containers.len(), 1);
    }
}
