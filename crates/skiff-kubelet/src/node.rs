//! The real node: registration with this machine's capacity, addresses and
//! system info, a Lease renewed every 10 s, and a status whose Ready
//! condition says whether the container runtime works (and why not),
//! written when it changes and every few minutes otherwise.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use std::collections::BTreeMap;

use skiff_core::quantity::{format_bytes, parse_milli};

use crate::eviction::Condition;

/// How often the Lease is renewed and the status looked at.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// How long a Lease holds without renewal, as the kubelet's default.
const LEASE_SECONDS: i32 = 40;

/// What this machine offers, as the kubelet reports it.
pub fn capacity(data_dir: &Path) -> Value {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let disk = disk_bytes(data_dir);
    json!({"cpu": cpus.to_string(), "memory": format!("{mem_kib}Ki"), "ephemeral-storage": disk.to_string(), "pods": "110"})
}

fn disk_bytes(path: &Path) -> u64 {
    disk_space(path).map_or(0, |s| s.size)
}

/// What the node keeps from pods (`--kube-reserved` and
/// `--system-reserved`, `name=quantity,…`), in thousandths, summed.
/// Upstream also reserves `pid`, which needs a node-level cgroup for
/// pods that Skiff does not make: refused rather than ignored.
pub fn reserved(lists: &[&str]) -> Result<BTreeMap<String, i128>, String> {
    let mut out = BTreeMap::new();
    for list in lists {
        for pair in list.split(',').filter(|p| !p.is_empty()) {
            let Some((name, quantity)) = pair.split_once('=') else {
                return Err(format!(
                    "invalid reservation {pair:?}, expected <resource>=<quantity>"
                ));
            };
            if !matches!(name, "cpu" | "memory" | "ephemeral-storage") {
                return Err(format!("cannot reserve {name:?} resource"));
            }
            let Some(milli) = parse_milli(quantity) else {
                return Err(format!("invalid quantity {quantity:?} for {name:?}"));
            };
            if milli < 0 {
                return Err(format!(
                    "resource quantity for {name:?} cannot be negative: {quantity}"
                ));
            }
            *out.entry(name.to_owned()).or_default() += milli;
        }
    }
    Ok(out)
}

/// What the node offers pods, as upstream's node allocatable: its
/// capacity less what is `reserved` and what the hard eviction thresholds
/// on memory and the node's filesystem keep free.
pub fn allocatable(
    capacity: &Value,
    reserved: &BTreeMap<String, i128>,
    eviction: &crate::eviction::Config,
) -> Value {
    let Some(offered) = capacity.as_object() else {
        return capacity.clone();
    };
    let mut out = offered.clone();
    for (name, value) in offered {
        let Some(total) = value.as_str().and_then(parse_milli) else {
            continue;
        };
        let kept = eviction.hard_reservation(name, total / 1000) * 1000;
        let left = (total - reserved.get(name).copied().unwrap_or(0) - kept).max(0);
        if left == total {
            continue;
        }
        out[name] = match name.as_str() {
            "cpu" if left % 1000 == 0 => json!((left / 1000).to_string()),
            "cpu" => json!(format!("{left}m")),
            "memory" => json!(format_bytes(u64::try_from(left / 1000).unwrap_or(0))),
            _ => json!((left / 1000).to_string()),
        };
    }
    Value::Object(out)
}

/// A filesystem's size and what is available on it to unprivileged
/// users, in bytes, and its inodes (none counted: 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Space {
    pub size: u64,
    pub available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// The space of the filesystem holding `path`.
pub fn disk_space(path: &Path) -> Option<Space> {
    // `df` is everywhere and spares us an unsafe statvfs.
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=size,avail,itotal,iavail"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut fields = text.lines().nth(1)?.split_whitespace();
    let mut number = || fields.next()?.parse().ok();
    Some(Space {
        size: number()?,
        available: number()?,
        // Some filesystems count no inodes (`-`).
        inodes: number().unwrap_or(0),
        inodes_free: number().unwrap_or(0),
    })
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The node's status, Ready or not with the runtime's reason, under the
/// pressure given or none.
pub fn status(
    name: &str,
    ip: &str,
    (capacity, allocatable): (&Value, &Value),
    runtime: &Result<String, String>,
    pressure: &[Condition],
) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |t: &str, s: &str, reason: &str, message: &str| json!({"type": t, "status": s, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now});
    let pressed = |c: Condition| {
        let under = pressure.contains(&c);
        let (reason, message) = c.said(under);
        condition(
            c.name(),
            if under { "True" } else { "False" },
            reason,
            message,
        )
    };
    let ready = match runtime {
        Ok(_) => condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        Err(why) => condition(
            "Ready",
            "False",
            "KubeletNotReady",
            &format!("container runtime is down: {why}"),
        ),
    };
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": [
            pressed(Condition::MemoryPressure),
            pressed(Condition::DiskPressure),
            pressed(Condition::PidPressure),
            ready,
        ],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "nodeInfo": {
            "machineID": std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim(), "systemUUID": "", "bootID": "",
            "kernelVersion": kernel(), "osImage": os_image(),
            "containerRuntimeVersion": runtime.as_ref().map(String::as_str).unwrap_or("unknown"),
            "kubeletVersion": "v1.35.0-skiff", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        },
    })
}

/// How many names of one image the node's status gives (upstream's
/// `MaxNamesPerImageInNodeStatus`).
const NAMES_PER_IMAGE: usize = 5;

/// The images the node holds as its status lists them (upstream's
/// setter): largest first, at most `max` (none: all), each named by its
/// digests and then its tags.
pub fn images(mut held: Vec<k8s_cri::v1::Image>, max: Option<usize>) -> Value {
    held.sort_by_key(|i| std::cmp::Reverse(i.size));
    let listed = held.into_iter().take(max.unwrap_or(usize::MAX)).map(|i| {
        let names: Vec<String> = (i.repo_digests.into_iter().chain(i.repo_tags))
            .take(NAMES_PER_IMAGE)
            .collect();
        json!({"names": names, "sizeBytes": i.size})
    });
    Value::Array(listed.collect())
}

/// Whether the node's `stored` status differs from the agent's `status`
/// in any field the agent sets, but for its conditions' heartbeat times.
pub fn changed(status: &Value, stored: &Value) -> bool {
    let Some(fields) = status.as_object() else {
        return true;
    };
    let without_beat = |c: &Value| {
        let mut c = c.clone();
        if let Some(c) = c.as_object_mut() {
            c.remove("lastHeartbeatTime");
        }
        c
    };
    fields.iter().any(|(k, v)| match k.as_str() {
        "conditions" => v.as_array().into_iter().flatten().any(|c| {
            let same_type = stored["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["type"] == c["type"]);
            same_type.is_none_or(|s| without_beat(s) != without_beat(c))
        }),
        _ => stored.get(k) != Some(v),
    })
}

/// Carries each condition's `lastTransitionTime` over from `previous` (the
/// node's status as last read) where the condition's status is the same:
/// as for the kubelet, a transition is a change of status, not a heartbeat.
pub fn keep_transitions(status: &mut Value, previous: &Value) {
    let before = previous["conditions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        let same = before
            .iter()
            .find(|b| b["type"] == c["type"] && b["status"] == c["status"]);
        if let Some(since) = same.and_then(|b| b.get("lastTransitionTime")) {
            c["lastTransitionTime"] = since.clone();
        }
    }
}

/// Writes the node's status as a strategic merge patch: conditions and
/// addresses merge by type, so a condition another component set on the
/// node (a network plugin's, a problem detector's) stays.
pub async fn report(nodes: &Api<Node>, name: &str, status: Value) -> Result<Node, kube::Error> {
    let patch = json!({"status": status});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
}

/// Registers a node (a whole Node object), or refreshes its status if it
/// exists.
pub async fn register(client: &Client, node: Value) -> Result<Node, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut status = node["status"].clone();
    let node: Node = serde_json::from_value(node).expect("a well-formed node");
    match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => Ok(n),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let stored = match &node.metadata.annotations {
                Some(a) => {
                    let patch = json!({"metadata": {"annotations": a}});
                    nodes
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?
                }
                None => nodes.get(name).await?,
            };
            keep_transitions(&mut status, &json!(stored.status));
            report(&nodes, name, status).await
        }
        Err(e) => Err(e),
    }
}

/// Keeps one node's Lease in `kube-node-lease` renewed as the kubelet
/// does: read (or created) once, then each renewal replaces the last copy
/// with a new `renewTime`. A failed renewal makes the next one read the
/// Lease again, so a conflict costs one extra request, not a lost beat.
/// The Lease is owned by its Node, so that it goes with the Node.
pub struct LeaseKeeper {
    leases: Api<Lease>,
    name: String,
    owner: Option<OwnerReference>,
    last: Option<Lease>,
}

impl LeaseKeeper {
    /// The keeper of the Lease of node `name`, whose uid is `node_uid`.
    pub fn new(client: &Client, name: &str, node_uid: &str) -> Self {
        let owner = (!node_uid.is_empty()).then(|| OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.to_owned(),
            uid: node_uid.to_owned(),
            ..Default::default()
        });
        Self {
            leases: Api::namespaced(client.clone(), "kube-node-lease"),
            name: name.to_owned(),
            owner,
            last: None,
        }
    }

    pub async fn renew(&mut self) -> Result<(), kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let current = match self.last.take() {
            Some(lease) => Some(lease),
            None => self.leases.get_opt(&self.name).await?,
        };
        let renewed = match current {
            Some(mut lease) => {
                let owners = &mut lease.metadata.owner_references;
                if owners.as_ref().is_none_or(Vec::is_empty) {
                    *owners = self.owner.clone().map(|o| vec![o]);
                }
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.holder_identity = Some(self.name.clone());
                spec.lease_duration_seconds = Some(LEASE_SECONDS);
                spec.renew_time = Some(now);
                self.leases
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await?
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some("kube-node-lease".into()),
                        owner_references: self.owner.clone().map(|o| vec![o]),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.name.clone()),
                        lease_duration_seconds: Some(LEASE_SECONDS),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                self.leases.create(&PostParams::default(), &lease).await?
            }
        };
        self.last = Some(renewed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status of node `n1`, offering its capacity, under no pressure.
    fn reported(cap: &Value, runtime: &Result<String, String>) -> Value {
        status("n1", "10.0.0.1", (cap, cap), runtime, &[])
    }

    #[test]
    fn ready_says_why_the_runtime_is_down() {
        let cap = json!({"cpu": "2", "memory": "1Gi", "pods": "110"});
        let up = reported(&cap, &Ok("containerd".into()));
        let ready = |s: &Value| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(ready(&up)["status"], "True");
        let down = reported(&cap, &Err("containerd not found".into()));
        assert_eq!(ready(&down)["status"], "False");
        assert!(ready(&down)["message"]
            .as_str()
            .unwrap()
            .contains("containerd not found"));
        assert_eq!(
            down["addresses"][0],
            json!({"type": "InternalIP", "address": "10.0.0.1"})
        );
        assert_eq!(down["allocatable"], cap);
    }

    #[test]
    fn pods_are_offered_the_capacity_less_reservations_and_hard_thresholds() {
        let cap = json!({"cpu": "2", "memory": "2097152Ki", "ephemeral-storage": "1000000000", "pods": "110"});
        let defaults = crate::eviction::Config::default();
        let none = BTreeMap::new();
        let offered = allocatable(&cap, &none, &defaults);
        // 100Mi of memory and 5 % of the disk stay free.
        assert_eq!(
            offered,
            json!({"cpu": "2", "memory": "1948Mi", "ephemeral-storage": "950000000", "pods": "110"})
        );
        let kept = reserved(&["cpu=100m,memory=100Mi", "cpu=400m,ephemeral-storage=1G"]).unwrap();
        let offered = allocatable(&cap, &kept, &defaults);
        assert_eq!(offered["cpu"], "1500m");
        assert_eq!(offered["memory"], "1848Mi");
        assert_eq!(offered["ephemeral-storage"], "0");
        assert_eq!(
            reserved(&["pid=100"]).unwrap_err(),
            "cannot reserve \"pid\" resource"
        );
        assert!(reserved(&["memory=-1"])
            .unwrap_err()
            .contains("cannot be negative"));
    }

    #[test]
    fn images_are_listed_largest_first_with_digests_then_tags() {
        let image = |tags: &[&str], digests: &[&str], size: u64| k8s_cri::v1::Image {
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
            size,
            ..Default::default()
        };
        let many: Vec<String> = (0..7).map(|i| format!("r/x:{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let held = vec![
            image(&["r/small:1"], &[], 10),
            image(&["r/big:1"], &["r/big@sha256:ab"], 30),
            image(&many, &[], 20),
        ];
        let listed = images(held.clone(), None);
        assert_eq!(
            listed[0],
            json!({"names": ["r/big@sha256:ab", "r/big:1"], "sizeBytes": 30})
        );
        assert_eq!(
            listed[1]["names"].as_array().unwrap().len(),
            NAMES_PER_IMAGE
        );
        assert_eq!(listed[2]["sizeBytes"], 10);
        assert_eq!(images(held, Some(1)).as_array().unwrap().len(), 1);
    }

    #[test]
    fn only_a_change_beyond_heartbeat_times_is_a_change() {
        let cap = json!({"cpu": "2", "memory": "1Gi", "pods": "110"});
        let mut stored = reported(&cap, &Ok("containerd".into()));
        // Another component's condition is not the agent's to compare.
        stored["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "NetworkUnavailable", "status": "False"}));
        let mut beat = reported(&cap, &Ok("containerd".into()));
        keep_transitions(&mut beat, &stored);
        for c in beat["conditions"].as_array_mut().unwrap() {
            c["lastHeartbeatTime"] = json!("2030-01-01T00:00:00Z");
        }
        assert!(!changed(&beat, &stored));
        let mut unknown = stored.clone();
        unknown["conditions"][3]["status"] = json!("Unknown");
        assert!(changed(&beat, &unknown), "Ready set by another");
        let mut smaller = stored.clone();
        smaller["allocatable"]["cpu"] = json!("1");
        assert!(changed(&beat, &smaller));
        let mut without = stored;
        without["conditions"].as_array_mut().unwrap().remove(0);
        assert!(changed(&beat, &without), "a condition gone");
    }

    #[test]
    fn a_heartbeat_keeps_the_transitions_and_the_conditions_of_others() {
        let cap = json!({"cpu": "2", "memory": "1Gi", "pods": "110"});
        let then = "2026-01-01T00:00:00Z";
        let condition = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": then, "lastHeartbeatTime": then});
        let stored = json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"conditions": [
                condition("Ready", "False"),
                condition("NetworkUnavailable", "False"),
                condition("DiskPressure", "False"),
            ]},
        });
        let mut beat = reported(&cap, &Ok("containerd".into()));
        keep_transitions(&mut beat, &stored["status"]);
        let nodes = skiff_core::registry::lookup("", "v1", "nodes").unwrap();
        let root = skiff_core::schema::Root::of(nodes);
        let patch = json!({"status": beat});
        let merged = skiff_core::strategic::patch(&stored, &patch, root.shape()).unwrap();
        let conditions = merged["status"]["conditions"].as_array().unwrap();
        let of = |t: &str| conditions.iter().find(|c| c["type"] == t).unwrap();
        // Set by another component: kept.
        assert_eq!(
            of("NetworkUnavailable"),
            &condition("NetworkUnavailable", "False")
        );
        // Unchanged: the transition stays, the heartbeat moves.
        assert_eq!(of("DiskPressure")["lastTransitionTime"], then);
        assert_ne!(of("DiskPressure")["lastHeartbeatTime"], then);
        // Changed: a new transition.
        assert_eq!(of("Ready")["status"], "True");
        assert_ne!(of("Ready")["lastTransitionTime"], then);
        assert_eq!(conditions.len(), 5, "{conditions:?}");
    }

    #[test]
    fn capacity_reads_this_machine() {
        let cap = capacity(Path::new("/"));
        assert!(cap["cpu"].as_str().unwrap().parse::<usize>().unwrap() >= 1);
        assert!(cap["memory"].as_str().unwrap().ends_with("Ki"));
        assert_eq!(cap["pods"], "110");
    }
}
