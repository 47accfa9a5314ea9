//! Upstream's local storage eviction: a pod goes when an emptyDir on disk
//! holds more than its `sizeLimit`, when the pod's local storage (its
//! containers' writable layers and logs, and its emptyDirs on disk) passes
//! the sum of its containers' `ephemeral-storage` limits, or when one
//! container's passes its own limit. The agent looks every ten seconds,
//! as upstream's eviction manager does.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_core::quantity::{format_bytes, parse_units};

use crate::pod_inputs::Volume;
use crate::usage::PodUsage;

/// Why the pod must be evicted for the local storage it uses, if it must,
/// in upstream's order and words. `pod_dir` holds its containers' logs
/// (`<container>/<attempt>.log`); `usage` is the runtime's latest sample
/// of its containers (their writable layers).
pub fn over_limit(
    pod: &Pod,
    volumes: &BTreeMap<String, Volume>,
    pod_dir: &Path,
    usage: Option<&PodUsage>,
) -> Option<String> {
    if let Some(why) = empty_dir_over_limit(pod, volumes) {
        return Some(why);
    }
    let spec = pod.spec.as_ref()?;
    let limit = |c: &Container| {
        let q = c
            .resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("ephemeral-storage")?;
        parse_units(&q.0).map(|b| (b, q.0.clone()))
    };
    let running: Vec<&Container> = skiff_core::pod_containers::long_running(spec).collect();
    let limits: Vec<(i128, String)> = running.iter().filter_map(|c| limit(c)).collect();
    if limits.is_empty() {
        return None;
    }
    // Each container's writable layer and logs, measured once.
    let used: Vec<i128> = running
        .iter()
        .map(|c| {
            let layer = usage
                .and_then(|u| u.containers.iter().find(|s| s.name == c.name))
                .map_or(0, |s| s.writable_layer_bytes);
            i128::from(layer) + i128::from(disk_usage(&pod_dir.join(&c.name)))
        })
        .collect();
    let containers: i128 = used.iter().sum();
    let empty_dirs: i128 = empty_dirs_on_disk(pod)
        .filter_map(|v| volumes.get(&v.name))
        .map(|v| i128::from(disk_usage(&v.path)))
        .sum();
    let total: i128 = limits.iter().map(|(b, _)| b).sum();
    if containers + empty_dirs > total {
        let shown = match limits.as_slice() {
            [(_, one)] => one.clone(),
            _ => format_bytes(u64::try_from(total).unwrap_or(u64::MAX)),
        };
        return Some(format!(
            "Pod ephemeral local storage usage exceeds the total limit of containers {shown}. "
        ));
    }
    running.iter().zip(&used).find_map(|(c, used)| {
        let (bytes, shown) = limit(c)?;
        (*used > bytes).then(|| {
            format!(
                "Container {} exceeded its local ephemeral storage limit {shown:?}. ",
                c.name
            )
        })
    })
}

/// Why the pod must be evicted, if one of its emptyDirs on disk holds
/// more than its `sizeLimit` (in upstream's words).
fn empty_dir_over_limit(pod: &Pod, volumes: &BTreeMap<String, Volume>) -> Option<String> {
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(e) = &v.empty_dir else { continue };
        let Some(limit) = &e.size_limit else { continue };
        if e.medium.as_deref() == Some("Memory") {
            // tmpfs's own size bound holds it.
            continue;
        }
        let (Some(bytes), Some(volume)) = (
            skiff_core::quantity::parse_milli(&limit.0).map(|m| m / 1000),
            volumes.get(&v.name),
        ) else {
            continue;
        };
        if disk_usage(&volume.path) as i128 > bytes {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                v.name, limit.0
            ));
        }
    }
    None
}

/// The bytes the files under `dir` take on disk (as `du`), links not
/// followed.
/// What the pod's containers' logs and its emptyDirs on disk hold: its
/// use of the node's filesystem beside its writable layers, which the
/// eviction manager ranks pods by. `pod_dir` is as in [`over_limit`].
pub fn local_bytes(pod: &Pod, pod_dir: &Path) -> u64 {
    let containers = pod.spec.iter().flat_map(|s| {
        let init = s.init_containers.iter().flatten();
        init.chain(&s.containers).map(|c| pod_dir.join(&c.name))
    });
    let volumes = empty_dirs_on_disk(pod).map(|v| pod_dir.join("volumes").join(&v.name));
    containers.chain(volumes).map(|d| disk_usage(&d)).sum()
}

/// The pod's emptyDirs that are not memory-backed.
fn empty_dirs_on_disk(pod: &Pod) -> impl Iterator<Item = &k8s_openapi::api::core::v1::Volume> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .filter(|v| (v.empty_dir.as_ref()).is_some_and(|e| e.medium.as_deref() != Some("Memory")))
}

fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::usage::ContainerUsage;

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("skiff-{name}-{}", std::process::id()))
    }

    #[test]
    fn an_empty_dir_over_its_size_limit_evicts_its_pod() {
        let dir = tempfile_dir("size-limit");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/big"), vec![1u8; 2 << 20]).unwrap();
        let volumes: BTreeMap<String, Volume> = ["small", "large", "ram"]
            .into_iter()
            .map(|n| {
                let v = Volume {
                    path: dir.clone(),
                    read_only: false,
                    block: false,
                };
                (n.to_owned(), v)
            })
            .collect();
        let pod = |name: &str, limit: &str, medium: Option<&str>| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
                "volumes": [{"name": name, "emptyDir": {"sizeLimit": limit, "medium": medium}}]}}))
            .unwrap()
        };
        assert_eq!(
            empty_dir_over_limit(&pod("small", "1Mi", None), &volumes).as_deref(),
            Some("Usage of EmptyDir volume \"small\" exceeds the limit \"1Mi\". ")
        );
        assert_eq!(
            empty_dir_over_limit(&pod("large", "4Mi", None), &volumes),
            None
        );
        assert_eq!(
            empty_dir_over_limit(&pod("ram", "1Mi", Some("Memory")), &volumes),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn containers_over_their_ephemeral_storage_limits_evict_their_pod() {
        let dir = tempfile_dir("ephemeral");
        std::fs::create_dir_all(dir.join("logs/app")).unwrap();
        std::fs::write(dir.join("logs/app/0.log"), vec![1u8; 1 << 20]).unwrap();
        let pod = |app: &str, side: Option<&str>| -> Pod {
            let limits =
                |l: Option<&str>| json!({"limits": l.map(|l| json!({"ephemeral-storage": l}))});
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "app", "resources": limits(Some(app))}, {"name": "side", "resources": limits(side)}]}}))
            .unwrap()
        };
        let sample = |app: u64, side: u64| PodUsage {
            containers: [("app", app), ("side", side)]
                .into_iter()
                .map(|(name, bytes)| ContainerUsage {
                    name: name.into(),
                    at: 0,
                    cpu_total_ns: 0,
                    nano_cores: None,
                    memory_working_set: 0,
                    writable_layer_bytes: bytes,
                })
                .collect(),
            ..Default::default()
        };
        let none = BTreeMap::new();
        let logs = dir.join("logs");
        let check = |p: &Pod, u: &PodUsage| over_limit(p, &none, &logs, Some(u));
        // 1 MiB of logs and 1 MiB of layer: within 4 MiB.
        assert_eq!(check(&pod("4Mi", None), &sample(1 << 20, 0)), None);
        // The pod's total counts the unlimited container too.
        assert_eq!(
            check(&pod("4Mi", None), &sample(1 << 20, 3 << 20)).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 4Mi. ")
        );
        // Within the pod's total, over the container's own.
        assert_eq!(
            check(&pod("2Mi", Some("8Mi")), &sample(2 << 20, 0)).as_deref(),
            Some("Container app exceeded its local ephemeral storage limit \"2Mi\". ")
        );
        assert_eq!(
            check(&pod("3Mi", Some("3Mi")), &sample(6 << 20, 0)).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 6Mi. ")
        );
        // Without limits nothing is measured.
        let free: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}}),
        )
        .unwrap();
        assert_eq!(check(&free, &sample(1 << 40, 0)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pods_logs_and_empty_dirs_on_disk_are_its_local_bytes() {
        let dir = tempfile_dir("local-bytes");
        for (path, bytes) in [("app/0.log", 1 << 20), ("volumes/scratch/f", 2 << 20)] {
            std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
            std::fs::write(dir.join(path), vec![1u8; bytes]).unwrap();
        }
        let pod = |medium: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "app"}],
                "volumes": [{"name": "scratch", "emptyDir": {"medium": medium}}]}}))
            .unwrap()
        };
        let counted = local_bytes(&pod(""), &dir);
        assert!(
            (3 << 20..(3 << 20) + (1 << 16)).contains(&counted),
            "{counted}"
        );
        // A memory-backed emptyDir is not on the disk.
        let counted = local_bytes(&pod("Memory"), &dir);
        assert!(
            (1 << 20..(1 << 20) + (1 << 16)).contains(&counted),
            "{counted}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
