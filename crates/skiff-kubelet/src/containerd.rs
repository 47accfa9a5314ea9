//! The agent's own containerd, as k3s runs one: a generated config with its
//! own root, state and socket under the agent's data dir, runc, overlayfs,
//! the CNI bridge for the node's podCIDR, and `restrict_oom_score_adj`
//! (root here lacks CAP_SYS_RESOURCE, see ../shared/facts/node-runtime.md).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Where Debian's containernetworking-plugins live.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// Why containerd did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("finding a loopback port for containerd's streaming server: {0}")]
    StreamPort(std::io::Error),
    #[error("starting containerd (is Debian's containerd package installed?): {0}")]
    Spawn(std::io::Error),
    #[error("containerd exited at start; see {0}")]
    Exited(PathBuf),
    #[error("containerd did not open {0} within 20 s")]
    NoSocket(PathBuf),
}

/// Paths of one agent's containerd.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("containerd"),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// runc's state directory for the CRI namespace, which `runc exec`
    /// needs.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc").join("k8s.io")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("containerd.pid")
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    let wrap = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(wrap)?;
    }
    std::fs::write(path, text).map_err(wrap)
}

/// containerd's configuration for this agent, whose pod sandboxes run
/// `sandbox_image` and whose streaming server (attach, exec on a
/// terminal) listens on loopback at `stream_port`.
pub fn config(layout: &Layout, sandbox_image: &str, stream_port: u16) -> String {
    let d = layout.dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "{stream_port}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#
    )
}

/// The CNI network for the node's pods: a bridge with host-local
/// addresses from the node's podCIDR.
pub fn cni_config(layout: &Layout, bridge: &str, pod_cidr: &str) -> String {
    let ipam_dir = layout.dir.join("cni-ipam");
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "skiff",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": ipam_dir}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

/// containerd's `hosts.toml` that lets it pull from `host` (`addr:port`)
/// over plain HTTP.
pub fn registry_hosts(host: &str) -> String {
    format!("server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
}

/// The registry of Skiff's own images, which exist only where they were
/// made or imported.
pub const LOCAL_REGISTRY: &str = "skiff.local";

/// `hosts.toml` for [`LOCAL_REGISTRY`]: a closed port on loopback, so that
/// a pull of a missing local image fails at once and never leaves the
/// machine.
pub fn local_registry_hosts() -> String {
    "server = \"http://127.0.0.1:1\"\n".to_owned()
}

/// Lets containerd pull from each of `hosts` over plain HTTP, and never
/// look for [`LOCAL_REGISTRY`] on the network.
pub fn write_registries(layout: &Layout, hosts: &[String]) -> Result<(), Error> {
    write(
        &layout
            .dir
            .join("certs.d")
            .join(LOCAL_REGISTRY)
            .join("hosts.toml"),
        &local_registry_hosts(),
    )?;
    for host in hosts {
        write(
            &layout.dir.join("certs.d").join(host).join("hosts.toml"),
            &registry_hosts(host),
        )?;
    }
    Ok(())
}

/// Writes the CNI network for `pod_cidr`.
pub fn write_cni(layout: &Layout, bridge: &str, pod_cidr: &str) -> Result<(), Error> {
    write(
        &layout.cni_conf_dir().join("10-skiff.conflist"),
        &cni_config(layout, bridge, pod_cidr),
    )
}

/// Stops a containerd an earlier agent on this data dir left running (it
/// died without stopping its child). Its containers keep running under
/// their shims, and the new containerd takes them over.
async fn stop_stale(layout: &Layout) {
    let Ok(pid) = std::fs::read_to_string(layout.pid_file()) else {
        return;
    };
    let pid = pid.trim();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let ours = std::fs::read(proc_dir.join("cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*layout.config().to_string_lossy()));
    if !ours {
        return;
    }
    tracing::info!(pid, "stopping the containerd a previous agent left running");
    let _ = Command::new("kill").args(["-TERM", pid]).status().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if proc_dir.exists() {
        let _ = Command::new("kill").args(["-KILL", pid]).status().await;
    }
}

/// Starts containerd and waits for its socket. The child dies with the
/// returned handle.
pub async fn start(layout: &Layout, sandbox_image: &str) -> Result<Child, Error> {
    stop_stale(layout).await;
    let stream_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(Error::StreamPort)?;
    write(
        &layout.config(),
        &config(layout, sandbox_image, stream_port),
    )?;
    let log = std::fs::File::create(layout.log()).map_err(|source| Error::Write {
        path: layout.log(),
        source,
    })?;
    let log2 = log.try_clone().map_err(|source| Error::Write {
        path: layout.log(),
        source,
    })?;
    let _ = std::fs::remove_file(layout.socket());
    let mut child = Command::new("containerd")
        .arg("--config")
        .arg(layout.config())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::Spawn)?;
    if let Some(pid) = child.id() {
        write(&layout.pid_file(), &pid.to_string())?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::UnixStream::connect(layout.socket())
            .await
            .is_ok()
        {
            return Ok(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Err(Error::Exited(layout.log()));
        }
        if Instant::now() > deadline {
            return Err(Error::NoSocket(layout.socket()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_under_the_data_dir() {
        let layout = Layout::new(Path::new("/data/agent"));
        let c = config(&layout, "example.local/pause:2", 41000);
        assert!(c.contains("root = \"/data/agent/containerd/root\""));
        assert!(c.contains("address = \"/data/agent/containerd/containerd.sock\""));
        assert!(
            c.contains("restrict_oom_score_adj = true"),
            "root here lacks CAP_SYS_RESOURCE"
        );
        assert!(c.contains("sandbox_image = \"example.local/pause:2\""));
        assert!(c.contains("stream_server_address = \"127.0.0.1\""));
        assert!(c.contains("stream_server_port = \"41000\""));
        let cni: serde_json::Value =
            serde_json::from_str(&cni_config(&layout, "br9", "10.42.3.0/24")).unwrap();
        assert_eq!(cni["plugins"][0]["bridge"], "br9");
        assert_eq!(
            cni["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        assert_eq!(cni["plugins"][0]["ipMasq"], false);
        let hosts = registry_hosts("127.0.0.1:5000");
        assert!(
            hosts.starts_with("server = \"http://127.0.0.1:5000\""),
            "{hosts}"
        );
    }
}
