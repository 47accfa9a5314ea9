//! Stopping the containerd an agent started, and its shims, by the pids
//! they wrote.

use std::path::Path;
use std::time::Duration;

use crate::process;

/// Stops the containerd of the agent at `agent_dir` (a server's data dir
/// or an agent's) and the shims under its state dir.
pub fn stop(agent_dir: &Path) {
    let dir = agent_dir.join("containerd");
    if let Some(pid) = read_pid(&dir.join("containerd.pid")) {
        process::stop(pid, Duration::from_secs(10));
    }
    // The shims outlive containerd; their pid files stay.
    // state/io.containerd.runtime.v2.task/<namespace>/<id>/shim.pid
    let tasks = dir.join("state/io.containerd.runtime.v2.task");
    for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            if let Some(pid) = read_pid(&task.path().join("shim.pid")) {
                process::signal(pid, "KILL");
            }
        }
    }
}

/// The pid in `path`, if that process is still a containerd or a shim
/// (a pid left in a file may have been reused since).
fn read_pid(path: &Path) -> Option<u32> {
    let pid = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    comm.starts_with("containerd").then_some(pid)
}
