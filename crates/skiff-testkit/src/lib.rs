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
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The lowest port [`free_port`] gives: above the ports system services
/// listen on.
const LOWEST_PORT: u32 = 10_000;

/// A port free on 127.0.0.1 now, below the kernel's ephemeral range: an
/// outgoing connection (a server's own clients, while it starts) cannot
/// take it before the server under test binds it. Calls walk the ports
/// from an offset drawn from the pid, so test processes start apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = ephemeral_start().saturating_sub(LOWEST_PORT);
    if span < 1_000 {
        return TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
    }
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOWEST_PORT + (offset + step) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 below the ephemeral range")
}

/// The first port of the kernel's ephemeral range (32768 when unreadable).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for port in ports {
            assert!(u32::from(port) < ephemeral_start(), "{port}");
            // Another test process's `free_port` may be probing the same
            // port this instant (it binds and lets go at once).
            wait_for("the port to be bindable", Duration::from_secs(2), || {
                TcpListener::bind(("127.0.0.1", port)).ok()
            });
        }
    }
}
