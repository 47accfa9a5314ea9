//! What every test and benchmark shares: free ports, waits with a
//! deadline, child processes stopped by pid (`skiff`, etcd, the agents'
//! containerd and shims), what they cost in CPU and memory, and the test
//! images. Only the standard library: usable from sync tests and async
//! benchmarks alike.

pub mod containerd;
pub mod etcd;
pub mod images;
pub mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Polls `check` every 50 ms until it returns `Some`; panics naming
/// `what` after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bytes of a data dir's embedded database with its write-ahead log.
pub fn database_bytes(dir: &Path) -> u64 {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Lazily unmounts everything mounted under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut ours: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let _ = std::process::Command::new("umount")
            .args(["-l", m])
            .status();
    }
}

/// The repository's root (for its scripts).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
