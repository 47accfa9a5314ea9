//! Stopping the containerd an agent started, its containers and their
//! shims, by pid: the agent writes containerd's, each task's bundle holds
//! its init process's, and each shim names this containerd's socket on
//! its command line (a shim outlives its container's exit). The network
//! namespaces containerd made for the pods go too (with them, the pods'
//! veths), found by the names its sandboxes' bundles and its metadata
//! hold.

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
    // A sandbox's bundle names its namespace while its task lives;
    // containerd's metadata names it as long as the sandbox exists (one
    // stopped half-way, its task gone, still holds it).
    let sources = bundles.iter().map(|b| b.join("config.json"));
    let metadata = dir.join("root/io.containerd.metadata.v1.bolt/meta.db");
    let mut networks: Vec<PathBuf> = sources
        .chain([metadata])
        .filter_map(|f| std::fs::read(f).ok())
        .flat_map(|bytes| pod_networks(&bytes))
        .collect();
    networks.sort();
    networks.dedup();
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

/// The network namespaces containerd made for pods that `bytes` name
/// (`/var/run/netns/cni-<uuid>`), in a sandbox's bundle spec or in
/// containerd's metadata file; names that could be another's are not
/// taken.
fn pod_networks(bytes: &[u8]) -> Vec<PathBuf> {
    const PREFIX: &[u8] = b"/run/netns/cni-";
    let mut found = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.windows(PREFIX.len()).position(|w| w == PREFIX) {
        rest = &rest[at + PREFIX.len()..];
        let len = rest
            .iter()
            .take_while(|b| b.is_ascii_hexdigit() || **b == b'-')
            .count();
        if len > 0 {
            let uuid = std::str::from_utf8(&rest[..len]).expect("ASCII");
            found.push(Path::new("/run/netns").join(format!("cni-{uuid}")));
        }
    }
    found
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
    /// Returned once the shell runs: before its exec, a child still has
    /// its parent's command line, which names no socket.
    fn shim(bin: &Path, socket: &Path) -> Child {
        let child = Command::new(bin)
            .args(["-c", "read x", "containerd-shim", "-address"])
            .arg(socket)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let cmdline = PathBuf::from(format!("/proc/{}/cmdline", child.id()));
        let wanted = socket.as_os_str().as_encoded_bytes();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read(&cmdline).is_ok_and(|c| c.windows(wanted.len()).any(|w| w == wanted)) {
            assert!(Instant::now() < deadline, "the stand-in shim did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    #[test]
    fn pod_networks_are_read_from_any_bytes_that_name_them() {
        let bytes = b"\x00\x07/var/run/netns/cni-1b2d-e8fe\x12\xff/run/netns/cni-\x00\
            /var/run/netns/other-1\x00/run/netns/cni-ab\"}";
        let expected = ["/run/netns/cni-1b2d-e8fe", "/run/netns/cni-ab"];
        assert_eq!(pod_networks(bytes), expected.map(PathBuf::from));
    }

    #[test]
    fn a_pod_network_named_only_in_the_metadata_is_removed() {
        let dir = std::env::temp_dir().join(format!("skiff-testkit-netns-{}", std::process::id()));
        let metadata = dir.join("containerd/root/io.containerd.metadata.v1.bolt");
        std::fs::create_dir_all(&metadata).unwrap();
        let name = format!("cni-5c1ff-{:x}", std::process::id());
        let made = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(made.unwrap().success(), "ip netns add {name}");
        // A sandbox stopped half-way: no task, so no bundle; its record in
        // containerd's metadata still names the namespace.
        let record = format!("\u{1}sandbox\0{{\"NetNSPath\":\"/var/run/netns/{name}\"}}\0");
        std::fs::write(metadata.join("meta.db"), record).unwrap();
        stop(&dir);
        let left = Path::new("/run/netns").join(&name).exists();
        if left {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!left, "{name} was left");
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
