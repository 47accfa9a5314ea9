//! Stopping the containerd an agent started, and its shims, by pid: the
//! agent writes containerd's, and each task's bundle holds its init
//! process's, whose parent is the task's shim. The network namespaces
//! containerd made for the pods go too (with them, the pods' veths).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process;

/// Stops the containerd of the agent at `agent_dir` (a server's data dir
/// or an agent's), the containers it ran and their shims, and removes the
/// pods' network namespaces that it left.
pub fn stop(agent_dir: &Path) {
    let dir = agent_dir.join("containerd");
    // state/io.containerd.runtime.v2.task/<namespace>/<id>: read before
    // anything stops (containerd removes the bundle of a task whose shim
    // dies).
    let namespaces = std::fs::read_dir(dir.join("state/io.containerd.runtime.v2.task"));
    let bundles: Vec<PathBuf> = namespaces
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|ns| std::fs::read_dir(ns.path()).into_iter().flatten().flatten())
        .map(|task| task.path())
        .collect();
    let networks: Vec<PathBuf> = bundles.iter().filter_map(|b| pod_network(b)).collect();
    if let Some(pid) = read_pid(&dir.join("containerd.pid")).filter(|p| named(*p, "containerd")) {
        process::stop(pid, Duration::from_secs(10));
    }
    for bundle in &bundles {
        let Some(init) = read_pid(&bundle.join("init.pid")) else {
            continue;
        };
        let shim = parent(init).filter(|p| named(*p, "containerd-shim"));
        process::signal(init, "KILL");
        if let Some(shim) = shim {
            process::signal(shim, "KILL");
        }
    }
    for netns in networks {
        let _ = Command::new("umount").arg(&netns).status();
        let _ = std::fs::remove_file(&netns);
    }
}

/// The network namespace containerd made for a pod, as the bundle of its
/// sandbox joins it (`/var/run/netns/cni-<uuid>`); a container's bundle
/// joins its sandbox's by process, and names none.
fn pod_network(bundle: &Path) -> Option<PathBuf> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    let network = spec["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")?;
    let path = network["path"].as_str()?;
    let name = path
        .strip_prefix("/var/run/netns/")
        .or_else(|| path.strip_prefix("/run/netns/"))?;
    let uuid = name.strip_prefix("cni-")?;
    let ours = !uuid.is_empty() && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ours.then(|| Path::new("/run/netns").join(name))
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid`'s command name starts with `name` (a pid left in a file
/// may have been reused since).
fn named(pid: u32, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(name))
}

fn parent(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("PPid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
