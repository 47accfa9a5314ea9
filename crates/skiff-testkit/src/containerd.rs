//! Stopping the containerd an agent started, its containers and their
//! shims, by pid: the agent writes containerd's, each task's bundle holds
//! its init process's, and each shim names this containerd's socket on
//! its command line (a shim outlives its container's exit). The network
//! namespaces containerd made for the pods go too (with them, the pods'
//! veths).

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
    let shims = shims_of(&dir.join("containerd.sock"));
    if let Some(pid) = read_pid(&dir.join("containerd.pid")).filter(|p| named(*p, "containerd")) {
        process::stop(pid, Duration::from_secs(10));
    }
    let inits = bundles.iter().filter_map(|b| read_pid(&b.join("init.pid")));
    for pid in inits.chain(shims) {
        process::signal(pid, "KILL");
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

/// The shims serving the containerd at `socket`: each has the socket's
/// path as an argument.
fn shims_of(socket: &Path) -> Vec<u32> {
    let socket = socket.as_os_str().as_encoded_bytes();
    let pids = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    pids.filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| named(*pid, "containerd-shim"))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|args| args.split(|b| *b == 0).any(|a| a == socket))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Stdio};
    use std::time::Instant;

    /// A stand-in shim: a shell named `containerd-shim-…`, waiting on its
    /// input, with `socket` among its arguments as a shim has.
    fn shim(bin: &Path, socket: &Path) -> Child {
        Command::new(bin)
            .args(["-c", "read x", "containerd-shim", "-address"])
            .arg(socket)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_shim_whose_container_is_gone_is_stopped_by_its_socket() {
        let dir = std::env::temp_dir().join(format!("skiff-testkit-shim-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("agent/containerd")).unwrap();
        let bin = dir.join("containerd-shim-test");
        // A link, not a copy: a copy's open file would make another
        // test's fork hold it busy.
        std::os::unix::fs::symlink("/bin/sh", &bin).unwrap();
        let mut ours = shim(&bin, &dir.join("agent/containerd/containerd.sock"));
        let mut other = shim(&bin, &dir.join("other/containerd.sock"));
        // No bundle names either shim's container: only the socket does.
        stop(&dir.join("agent"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = ours.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let other_alive = other.try_wait().unwrap().is_none();
        let _ = ours.kill();
        let _ = other.kill();
        let _ = (ours.wait(), other.wait());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(status.and_then(|s| s.signal()), Some(9));
        assert!(other_alive, "another containerd's shim was stopped");
    }
}
