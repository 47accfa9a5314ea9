//! A real `skiff server` in a temporary data dir, driven by the real
//! kubectl (v1.35, from `$KUBECTL` or `~/.local/bin/kubectl`).

#![allow(dead_code)]

use std::net::TcpListener;

pub use skiff_testkit::containerd::stop as stop_containerd;
pub use skiff_testkit::process::Process;
pub use skiff_testkit::{free_port, unmount_under, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Whether the server runs its node agent (real containers); tests
    /// that use simulated nodes leave it out.
    with_agent: bool,
    /// Environment the server starts with, besides the test's.
    pub env: Vec<(String, String)>,
}

/// The kubectl the tests use; it must be the upstream v1.35 client.
pub fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let p = Path::new(&home).join(".local/bin/kubectl");
    assert!(
        p.exists(),
        "kubectl v1.35 not found at {}: run ../shared/tools/install-kube-clients.sh or set KUBECTL",
        p.display()
    );
    p
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with(false, &[])
    }

    /// A server without node agent, with `extra` flags.
    pub fn start_with_flags(extra: &[&str]) -> Self {
        Self::start_with(false, extra)
    }

    /// A server with its node agent and containerd, and `extra` flags.
    pub fn start_with_agent(extra: &[&str]) -> Self {
        Self::start_with(true, extra)
    }

    fn start_with(with_agent: bool, extra: &[&str]) -> Self {
        let mut c = Self::unstarted(with_agent);
        c.spawn(extra);
        c
    }

    /// A data dir and port for a server that [`Cluster::spawn`] starts.
    pub fn unstarted(with_agent: bool) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
            with_agent,
            env: Vec::new(),
        }
    }

    /// Starts the server on the same data dir and port again.
    pub fn spawn(&mut self, extra: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["server", "--data-dir"])
            .arg(self.dir.path())
            .args(["--https-port", &self.port.to_string(), "--dns-port", "0"])
            // Names outside the cluster are refused, not asked off the
            // machine.
            .args(["--upstream-resolv-conf", ""])
            .args(extra)
            .args(if self.with_agent {
                &["--kubelet-port", "0"][..]
            } else {
                &["--disable-agent"][..]
            })
            // The test images are imported, not pulled: once collected
            // they could not come back. Only the test of collection asks
            // for it.
            .args(
                (self.with_agent && !extra.contains(&"--image-gc-high-threshold"))
                    .then_some(["--image-gc-high-threshold", "100"])
                    .into_iter()
                    .flatten(),
            )
            .args((!extra.contains(&"--ingress-port")).then_some("--disable-ingress"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff server");
        self.child = Some(child);
        wait_for(
            "the API server to answer /readyz",
            Duration::from_secs(30),
            || {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                (out.status.success() && out.stdout == b"ok").then_some(())
            },
        );
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tls/admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("tls/ca.crt")).unwrap()
    }

    /// An HTTPS client that trusts the server's CA, to build on.
    pub fn https(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem()).unwrap())
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_path());
        cmd.env("KUBECONFIG", self.kubeconfig())
            .env_remove("KUBE_EDITOR")
            .args(args);
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Runs kubectl with only `token` as its credential: a kubeconfig
    /// with a client certificate would authenticate as the certificate's
    /// user whatever token is added (client certificates come first, as
    /// upstream).
    pub fn kubectl_as(&self, token: &str, args: &[&str]) -> Output {
        let path = self.dir.path().join("token.kubeconfig");
        if !path.exists() {
            use base64::Engine;
            let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem());
            let config = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\ncontexts:\n- name: skiff\n  context: {{cluster: skiff, user: token}}\ncurrent-context: skiff\nusers:\n- name: token\n  user: {{}}\n",
                self.url()
            );
            std::fs::write(&path, config).unwrap();
        }
        Command::new(kubectl_path())
            .env("KUBECONFIG", &path)
            .args(["--token", token])
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl with `stdin` as its input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `skiff agent --simulate` process, killed on drop.
pub type Agent = Process;

pub fn agent(c: &Cluster, prefix: &str, count: usize, extra: &[&str]) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["agent", "--kubeconfig"])
        .arg(c.kubeconfig())
        .args(["--simulate", &count.to_string(), "--node-prefix", prefix])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start skiff agent");
    let agent = Process(child);
    wait_for(
        "simulated nodes to register",
        Duration::from_secs(30),
        || {
            let nodes = c.json(&["get", "nodes"]);
            let n = nodes["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["metadata"]["name"].as_str().unwrap().starts_with(prefix))
                .count();
            (n == count).then_some(())
        },
    );
    agent
}

/// Applies a manifest with `kubectl apply -f -`.
impl Cluster {
    /// Applies `manifest`, asserts kubectl fails, returns its stderr.
    pub fn fails_stdin(&self, manifest: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(!out.status.success(), "applying {manifest} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// Asserts that a command exited 0, showing `what` and its stderr if not.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn create(c: &Cluster, manifest: &str) {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert_success(&out, "apply");
}

/// The busybox image as a docker archive, built from Debian
/// packages by `scripts/build-test-images.sh`.
pub fn build_images() -> tempfile::TempDir {
    let images = tempfile::tempdir().unwrap();
    skiff_testkit::images::build(images.path()).unwrap();
    images
}

/// Loads the test images into the containerd of the agent at
/// `agent_dir` (a server's data dir or an agent's).
pub fn import_images(agent_dir: &Path, images: &Path) {
    let skiff = Path::new(env!("CARGO_BIN_EXE_skiff"));
    skiff_testkit::images::import(skiff, agent_dir, images).unwrap();
}

/// The helm the tests use: upstream's v4.
pub fn helm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HELM") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let p = Path::new(&home).join(".local/bin/helm");
    assert!(
        p.exists(),
        "helm v4 not found at {}: run ../shared/tools/install-kube-clients.sh or set HELM",
        p.display()
    );
    p
}

/// A pod as JSON.
pub fn pod(c: &Cluster, name: &str) -> serde_json::Value {
    c.json(&["get", "pod", name])
}

/// Asserts this test can run real containers: root, and the Debian
/// packages `scripts/setup.sh --test` installs.
pub fn check_prerequisites() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(root, "the real-container tests need root");
    for tool in [
        "containerd",
        "runc",
        "ctr",
        "umoci",
        "skopeo",
        "busybox",
        "docker-registry",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap()
            .status
            .success();
        assert!(found, "{tool} is missing: run .ci/run or apt-get install containerd runc containernetworking-plugins busybox-static umoci skopeo docker-registry");
    }
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "containernetworking-plugins is missing"
    );
}

/// A server whose node agent runs real containers, with the busybox image
/// imported into its containerd; dropped, it stops what the agent started,
/// then the server.
pub struct RealCluster {
    _cleanup: Cleanup,
    pub c: Cluster,
}

/// Starts a [`RealCluster`] (root and `scripts/setup.sh --test` needed).
pub fn real_cluster(extra: &[&str]) -> RealCluster {
    check_prerequisites();
    let images = build_images();
    let c = Cluster::start_with_agent(extra);
    let cleanup = Cleanup(c.dir.path().to_owned());
    wait_for("containerd's socket", Duration::from_secs(90), || {
        let socket = c.dir.path().join("agent/containerd/containerd.sock");
        socket.exists().then_some(())
    });
    import_images(c.dir.path(), images.path());
    RealCluster {
        _cleanup: cleanup,
        c,
    }
}

/// Whether any file under `dir` holds `needle`.
pub fn found_under(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return found_under(&path, needle);
        }
        std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

/// Stops what the test started outside the server: its containerd (by its
/// own config path) and its bridge.
pub struct Cleanup(pub std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        stop_containerd(&self.0.join("agent"));
        unmount_under(&self.0);
        let _ = Command::new("ip")
            .args(["link", "delete", "skiff0"])
            .status();
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", "skiff"])
            .stderr(std::process::Stdio::null())
            .status();
        for range in ["10.42.0.0/16", "10.43.0.0/16"] {
            let _ = Command::new("ip")
                .args(["route", "delete", "unreachable", range])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// A TCP relay to the API server whose connections a test can cut: while
/// cut, every open connection is shut and new ones are closed at once.
pub struct Relay {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    pub fn to(target: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Self {
            port,
            cut: Default::default(),
            open: Default::default(),
        };
        let (cut, open) = (relay.cut.clone(), relay.open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut open = open.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        relay
    }

    /// Shuts every open connection and refuses new ones until
    /// [`Relay::mend`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn mend(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// A copy of the cluster's kubeconfig that reaches it through here.
    pub fn kubeconfig(&self, c: &Cluster) -> PathBuf {
        let text = std::fs::read_to_string(c.kubeconfig()).unwrap();
        let text = text.replace(&c.url(), &format!("https://127.0.0.1:{}", self.port));
        let path = c.dir.path().join(format!("relay-{}.yaml", self.port));
        std::fs::write(&path, text).unwrap();
        path
    }
}
