//! A real etcd (Debian's `etcd-server`) on free ports, for the store's
//! conformance suite and the benchmarks.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::free_port;
use crate::process::Process;

/// An etcd member of its own cluster, killed on drop.
pub struct Etcd {
    pub url: String,
    /// The client port of [`Etcd::url`].
    pub port: u16,
    _process: Process,
}

impl Etcd {
    /// Starts etcd with its data under `dir`; it answers at [`Etcd::url`]
    /// once the caller's client connects.
    pub fn start(dir: &Path) -> std::io::Result<Self> {
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let process = Process::spawn(
            Command::new("etcd")
                .arg("--data-dir")
                .arg(dir.join("etcd"))
                .args(["--listen-client-urls", &url])
                .args(["--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("default={peer}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("etcd must be installed (Debian package etcd-server): {e}"),
            )
        })?;
        Ok(Self {
            url,
            port: client,
            _process: process,
        })
    }
}
