//! Simulated nodes: one process registers many nodes, keeps their Leases
//! and Ready condition fresh, marks pods bound to them Running (with an IP
//! from the node's range) and lets deleted pods go. No containers run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::Client;
use serde_json::{json, Value};

/// How many API calls the agent makes at once.
const CONCURRENCY: usize = 16;

/// What the simulated nodes look like.
#[derive(Clone, Debug)]
pub struct Config {
    pub count: usize,
    pub prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// Extra labels on every node.
    pub labels: Vec<(String, String)>,
    /// Taints on every node: `(key, value, effect)`.
    pub taints: Vec<(String, String, String)>,
    /// Nodes are spread over this many `topology.kubernetes.io/zone`s.
    pub zones: usize,
    /// How often Leases are renewed; the kubelet's default is 10 s.
    pub heartbeat: Duration,
}

impl Config {
    fn name(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }

    /// A synthetic /24 per node for pod IPs, from a hash of the node's
    /// name so that separate agents rarely collide (node IPAM proper
    /// belongs to the controller manager).
    fn pod_subnet(&self, i: usize) -> (u8, u8) {
        let h = self.name(i).bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        (64 + (h >> 8 & 0x3f) as u8, (h & 0xff) as u8)
    }

    fn node(&self, i: usize) -> Value {
        let name = self.name(i);
        let mut labels = json!({
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.skiff.dev/simulated": "true",
        });
        if self.zones > 0 {
            labels["topology.kubernetes.io/zone"] = json!(format!("zone-{}", i % self.zones));
        }
        for (k, v) in &self.labels {
            labels[k] = json!(v);
        }
        let taints: Vec<Value> = self
            .taints
            .iter()
            .map(|(k, v, e)| json!({"key": k, "value": v, "effect": e}))
            .collect();
        let (a, b) = self.pod_subnet(i);
        let resources = json!({"cpu": self.cpu, "memory": self.memory, "pods": self.pods, "ephemeral-storage": "100Gi"});
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDR": format!("10.{a}.{b}.0/24"), "taints": taints},
            "status": status(&resources, i),
        })
    }
}

fn status(resources: &Value, i: usize) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |t: &str, s: &str, reason: &str, message: &str| json!({"type": t, "status": s, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "simulated"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "simulated"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "simulated"),
            condition("Ready", "True", "KubeletReady", "simulated node is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": format!("192.0.2.{}", i % 250 + 1)}, {"type": "Hostname", "address": format!("node-{i}")}],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "simulated", "osImage": "Skiff simulated node",
            "containerRuntimeVersion": "simulated://1", "kubeletVersion": "v1.35.0-skiff", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

/// Registers the nodes and keeps them alive until the task is dropped.
pub async fn run(client: Client, config: Config) -> Result<(), kube::Error> {
    let names: Vec<String> = (0..config.count).map(|i| config.name(i)).collect();
    let registered = stream::iter(0..config.count)
        .map(|i| crate::node::register(&client, config.node(i)))
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    registered.into_iter().collect::<Result<Vec<_>, _>>()?;
    tracing::info!(count = config.count, "simulated nodes registered");
    let index: Arc<HashMap<String, usize>> = Arc::new(
        names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect(),
    );
    let leases = tokio::spawn(renew_leases(client.clone(), names, config.heartbeat));
    let pods = run_pods(client, config, index).await;
    leases.abort();
    pods
}

/// Keeps one Lease per node in `kube-node-lease` renewed.
async fn renew_leases(client: Client, names: Vec<String>, every: Duration) {
    let mut keepers: Vec<_> = names
        .iter()
        .map(|n| crate::node::LeaseKeeper::new(&client, n))
        .collect();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        stream::iter(keepers.iter_mut())
            .for_each_concurrent(CONCURRENCY, |keeper| async move {
                if let Err(e) = keeper.renew().await {
                    tracing::warn!(error = %e, "lease renewal failed");
                }
            })
            .await;
    }
}

/// Pods bound to simulated nodes start at once and go as soon as they are
/// deleted; pods that run to completion (restartPolicy Never or OnFailure)
/// succeed at once.
async fn run_pods(
    client: Client,
    config: Config,
    index: Arc<HashMap<String, usize>>,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let selector = watcher::Config::default().fields("spec.nodeName!=");
    let next_ip: Arc<Mutex<HashMap<usize, u32>>> = Arc::default();
    watcher::watcher(pods, selector)
        .for_each_concurrent(CONCURRENCY, |event| {
            let (client, config, index, next_ip) = (
                client.clone(),
                config.clone(),
                index.clone(),
                next_ip.clone(),
            );
            async move {
                let pod = match event {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => p,
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch");
                        return;
                    }
                };
                let Some(&i) = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .and_then(|n| index.get(n))
                else {
                    return;
                };
                let api: Api<Pod> = Api::namespaced(
                    client,
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                );
                let name = pod.metadata.name.clone().unwrap_or_default();
                if pod.metadata.deletion_timestamp.is_some() {
                    let _ = api
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                    return;
                }
                let phase = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .unwrap_or("Pending");
                if phase != "Pending" {
                    return;
                }
                let host = {
                    let mut ips = next_ip.lock().unwrap_or_else(|e| e.into_inner());
                    let n = ips.entry(i).or_insert(1);
                    *n = *n % 254 + 1;
                    *n
                };
                let (a, b) = config.pod_subnet(i);
                let ip = format!("10.{a}.{b}.{host}");
                let mut status = running(&pod, &ip, i);
                let runs_to_completion = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.restart_policy.as_deref())
                    .is_some_and(|p| p != "Always");
                if runs_to_completion {
                    status = succeeded(status);
                }
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
                    .await
                {
                    tracing::debug!(pod = %name, error = %e, "could not mark the pod started");
                }
            }
        })
        .await;
    Ok(())
}

/// The status of a pod whose containers all started.
fn running(pod: &Pod, ip: &str, node: usize) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("simulated://{}", c.name), "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "hostIP": format!("192.0.2.{}", node % 250 + 1),
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
        "containerStatuses": containers,
    }})
}

/// A started pod's status turned into that of a pod whose containers all
/// exited 0.
fn succeeded(mut status: Value) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let s = &mut status["status"];
    s["phase"] = json!("Succeeded");
    for c in s["conditions"].as_array_mut().into_iter().flatten() {
        if c["type"] == "Ready" || c["type"] == "ContainersReady" {
            c["status"] = json!("False");
            c["reason"] = json!("PodCompleted");
        }
    }
    for c in s["containerStatuses"].as_array_mut().into_iter().flatten() {
        c["ready"] = json!(false);
        c["started"] = json!(false);
        c["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}});
    }
    status
}
