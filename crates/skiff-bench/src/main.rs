//! `skiff-bench`: the benchmarks (`cargo xtask bench WHAT`). Each starts
//! the `skiff` binary built beside this one (or `$SKIFF`) in a temporary
//! data dir and measures it from outside, as a client does. Every phase is
//! bounded in count and time; all traffic stays on 127.0.0.1 and in the
//! network namespaces the benchmarks create.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod autoscale;
mod crash;
mod crds;
mod floor;
mod leases;
mod network;
mod runtime_floor;
mod startup;
mod store;
mod volumes;

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::json;
use skiff_testkit::etcd::Etcd;
use skiff_testkit::free_port;
use skiff_testkit::process::{self, child_pid, cpu_time, peak_rss_kib, rss_kib};

#[derive(clap::Subcommand)]
pub enum What {
    /// The API server and its store.
    Api(ApiArgs),
    /// The scheduler, on simulated nodes (upstream's basic workload).
    Schedule(ScheduleArgs),
    /// The controller manager, in its own process: a large Deployment on
    /// simulated nodes, scaled up and down.
    Controllers(ControllersArgs),
    /// Pod startup on one real node (root, containerd): creation to Running.
    Pods(PodsArgs),
    /// Cluster DNS queries/s and proxy rule updates (root, nftables); with
    /// `--images`, HTTP through a ClusterIP against straight to the pod.
    Network(network::NetworkArgs),
    /// From `skiff server` on an empty data dir to `/readyz`, a Ready node
    /// and a first pod Running (root, containerd).
    Startup(startup::StartupArgs),
    /// The PersistentVolume controller binding many claims, and a
    /// StatefulSet's local-path volumes on one real node.
    Volumes(volumes::VolumesArgs),
    /// Creates of a custom resource (20-field schema, two CEL rules)
    /// against ConfigMaps.
    Crds(crds::CrdsArgs),
    /// Resource metrics' cost on an agent with many pods, and an
    /// autoscaler's reaction to load (root, containerd).
    Autoscale(autoscale::AutoscaleArgs),
    /// SIGKILLs of the server under concurrent writers, and a full disk
    /// (root): no acknowledged write lost.
    Crash(crash::CrashArgs),
    /// What `api`'s creates cost with no API server: the same clients and
    /// HTTPS to a server that only stores each body durably.
    Floor(floor::FloorArgs),
    /// The server `floor` starts in a child process.
    #[command(hide = true)]
    FloorServe(floor::ServeArgs),
    /// The embedded store alone: durable creates and updates from
    /// concurrent writers, in this process.
    Store(store::StoreArgs),
    /// A million Lease renewals: database size and server RSS, with and
    /// without compaction.
    Leases(leases::LeasesArgs),
    /// The HTTP client `bench network` runs inside a pod's network.
    #[command(hide = true)]
    HttpLoad(network::HttpLoadArgs),
}

#[derive(clap::Args)]
pub struct PodsArgs {
    /// Pods created at once.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// A folder with `busybox.tar`, as
    /// `scripts/build-test-images.sh DIR` makes them.
    #[arg(long)]
    images: std::path::PathBuf,
}

#[derive(clap::Args)]
pub struct ControllersArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    /// The Deployment's replicas.
    #[arg(long, default_value_t = 1_000)]
    replicas: usize,
}

#[derive(clap::Args)]
pub struct ScheduleArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// Pods created (cpu 100m, memory 128Mi each).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent clients creating pods.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Give every pod a zone spread constraint (maxSkew 1, DoNotSchedule).
    #[arg(long)]
    spread: bool,
    /// Make the scheduler score every feasible node.
    #[arg(long)]
    score_all_nodes: bool,
    /// Nodes are API objects only, as upstream's scheduler_perf makes
    /// them: no agent runs the bound pods (no status writes) or renews
    /// Leases, so the run measures the scheduler and the API server alone.
    #[arg(long)]
    without_agent: bool,
}

#[derive(clap::Args)]
pub struct ApiArgs {
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Pods created (and then listed).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// Objects created while the watchers listen.
    #[arg(long, default_value_t = 100)]
    watch_events: usize,
    /// Pod watches, one per node, as that many node agents hold them.
    #[arg(long, default_value_t = 2_000)]
    node_watchers: usize,
    /// The server's `--authorization-mode` (Node,RBAC, RBAC or AlwaysAllow).
    #[arg(long, default_value = "Node,RBAC")]
    authorization_mode: String,
    /// The server's `--encryption-provider-config` (e.g. one encrypting
    /// pods, to measure what encryption at rest costs the creates).
    #[arg(long)]
    encryption_provider_config: Option<std::path::PathBuf>,
    /// The API server without the controller manager that `skiff server`
    /// runs beside it (whose informers read every pod), as upstream's
    /// kube-apiserver runs alone.
    #[arg(long)]
    without_controller_manager: bool,
}

/// The Accept header of client-go's typed clients.
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf,application/json";
/// The Accept header of `kubectl get`.
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

#[derive(clap::Parser)]
#[command(
    name = "skiff-bench",
    about = "Measures a Skiff control plane and node agent"
)]
struct Cli {
    #[command(subcommand)]
    what: What,
}

fn main() -> Result<()> {
    use clap::Parser;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli.what))
}

/// The `skiff` binary under test: `$SKIFF`, or the one built beside this.
fn skiff() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF") {
        return Ok(PathBuf::from(p));
    }
    let beside = std::env::current_exe()?.with_file_name("skiff");
    if !beside.exists() {
        bail!(
            "{} not found: build it (cargo build --profile dist -p skiff) or set SKIFF",
            beside.display()
        );
    }
    Ok(beside)
}

/// A client from a kubeconfig file.
async fn local_client(kubeconfig: &Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn run(what: What) -> Result<()> {
    match what {
        What::Api(args) => api(args).await,
        What::Schedule(args) => schedule(args).await,
        What::Controllers(args) => controllers(args).await,
        What::Pods(args) => pods(args).await,
        What::Network(args) => network::run(args).await,
        What::Startup(args) => startup::run(args).await,
        What::Crds(args) => crds::run(args).await,
        What::Autoscale(args) => autoscale::run(args).await,
        What::HttpLoad(args) => network::http_load(args).await,
        What::Volumes(args) => volumes::run(args).await,
        What::Crash(args) => crash::run(args).await,
        What::Leases(args) => leases::run(args).await,
        What::Store(args) => store::run(args).await,
        What::Floor(args) => floor::run(args).await,
        What::FloorServe(args) => floor::serve(args).await,
    }
}

/// A server child process and a client for it.
struct Server {
    child: Child,
    url: String,
    token: String,
    ca: reqwest::Certificate,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `skiff server` without its node agent and returns it with
    /// the time it took to answer `/readyz`.
    async fn start(dir: &Path, extra: &[&str]) -> Result<(Self, Duration)> {
        let mut args = vec!["--disable-agent"];
        args.extend(extra);
        Self::start_at(dir, &args, Instant::now()).await
    }

    /// Starts `skiff server` with `args` and returns it with the time from
    /// `started` until it answered `/readyz`.
    async fn start_at(dir: &Path, args: &[&str], started: Instant) -> Result<(Self, Duration)> {
        let port = free_port();
        let child = Command::new(skiff()?)
            .args(["server", "--data-dir"])
            .arg(dir)
            .args(["--https-port", &port.to_string()])
            // Names outside the cluster are refused, not asked off the
            // machine.
            .args(["--upstream-resolv-conf", ""])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()?;
        let url = format!("https://127.0.0.1:{port}");
        let mut server = None;
        let deadline = started + Duration::from_secs(30);
        let mut child = Some(child);
        while Instant::now() < deadline {
            if let (Ok(ca), Ok(token)) = (
                std::fs::read(dir.join("tls/ca.crt")),
                std::fs::read_to_string(dir.join("tls/admin.token")),
            ) {
                let ca = reqwest::Certificate::from_pem(&ca)?;
                let probe = reqwest::Client::builder()
                    .add_root_certificate(ca.clone())
                    .build()?;
                if let Ok(r) = probe.get(format!("{url}/readyz")).send().await {
                    if r.status().is_success() {
                        let ready = started.elapsed();
                        server = Some((
                            Self {
                                child: child.take().expect("child"),
                                url,
                                token: token.trim().into(),
                                ca,
                            },
                            ready,
                        ));
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if let Some(mut c) = child {
            let _ = c.kill();
            bail!("the server did not become ready in 30 s");
        }
        server.context("server")
    }

    fn client(&self) -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .add_root_certificate(self.ca.clone())
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(60))
            .build()?)
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    fn cpu_time(&self) -> Duration {
        cpu_time(self.child.id())
    }

    /// What a GET of `path` answers, as the admin; an error unless 2xx.
    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        let r = self
            .client()?
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Ok(r.error_for_status()?)
    }

    /// The JSON that a GET of `path` answers.
    async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        Ok(self.get(path).await?.json().await?)
    }

    /// The server's count of writes answered so far (`apiserver_request_total`
    /// for POST, PUT, PATCH, DELETE and APPLY), by verb, resource and
    /// subresource, summed over codes and scopes.
    async fn writes(&self) -> Result<HashMap<String, f64>> {
        let text = self.get("/metrics").await?.text().await?;
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
        let mut writes = HashMap::new();
        for s in scrape.samples {
            let (
                prometheus_parse::Value::Counter(n) | prometheus_parse::Value::Untyped(n),
                "apiserver_request_total",
            ) = (s.value, s.metric.as_str())
            else {
                continue;
            };
            let label = |name| s.labels.get(name).unwrap_or_default();
            let verb = label("verb");
            if !matches!(verb, "POST" | "PUT" | "PATCH" | "DELETE" | "APPLY") {
                continue;
            }
            let what = match label("subresource") {
                "" => format!("{verb} {}", label("resource")),
                sub => format!("{verb} {}/{sub}", label("resource")),
            };
            *writes.entry(what).or_default() += n;
        }
        Ok(writes)
    }
}

/// Starts the simulated nodes and waits until they are registered and
/// each has its Lease (the agent creates them after registering, and their
/// creation would otherwise share the measured load).
async fn simulated_nodes(
    server: &Server,
    dir: &Path,
    nodes: usize,
    extra: &[&str],
) -> Result<Child> {
    let mut agent = Command::new(skiff()?)
        .args(["agent", "--kubeconfig"])
        .arg(dir.join("kubeconfig.yaml"))
        .args(["--simulate", &nodes.to_string()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let client = server.client()?;
    let count = |path: &'static str| {
        let request = client
            .get(format!("{}{path}", server.url))
            .bearer_auth(&server.token);
        async move {
            let list: serde_json::Value = request.send().await?.json().await?;
            anyhow::Ok(list["items"].as_array().map_or(0, Vec::len))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if count("/api/v1/nodes").await? >= nodes
            && count("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases").await?
                >= nodes
        {
            return Ok(agent);
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            bail!("nodes did not register in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Deployment scaled up to `replicas` and back to zero, with the
/// controller manager in its own process so its CPU and memory show.
async fn controllers(args: ControllersArgs) -> Result<()> {
    let dir = tempdir()?;
    let (server, _) = Server::start(&dir, &["--disable-controller-manager"]).await?;
    let mut agent = simulated_nodes(
        &server,
        &dir,
        args.nodes,
        &["--cpu", "32", "--memory", "64Gi"],
    )
    .await?;
    let agent_idle_kib = rss_kib(agent.id());
    let mut manager = Command::new(skiff()?)
        .args(["controller-manager", "--kubeconfig"])
        .arg(dir.join("kubeconfig.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = manager.id();
    let client = server.client()?;
    let url = format!("{}/apis/apps/v1/namespaces/default/deployments", server.url);
    let get_status = || async {
        let d: serde_json::Value = client
            .get(format!("{url}/bench"))
            .bearer_auth(&server.token)
            .send()
            .await?
            .json()
            .await?;
        Ok::<_, anyhow::Error>(d)
    };
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench"},
        "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "bench"}},
                 "template": {"metadata": {"labels": {"app": "bench"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox",
                                       "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}},
    });
    let cpu0 = cpu_time(pid);
    let started = Instant::now();
    let r = client
        .post(&url)
        .bearer_auth(&server.token)
        .json(&deployment)
        .send()
        .await?;
    if r.status() != 201 {
        bail!("creating the deployment answered {}", r.status());
    }
    let deadline = started + Duration::from_secs(600);
    loop {
        let d = get_status().await?;
        if d["status"]["availableReplicas"].as_u64() == Some(args.replicas as u64) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the deployment was not available in 10 minutes: {}",
                d["status"]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let up = started.elapsed();
    let cpu_up = cpu_time(pid).saturating_sub(cpu0);
    let agent_kib = rss_kib(agent.id());
    println!(
        "{} nodes; deployment of {} replicas",
        args.nodes, args.replicas
    );
    println!(
        "apply → all available          {} (controller-manager CPU {:.2} s, {:.0}% of a core)",
        ms(up),
        cpu_up.as_secs_f64(),
        100.0 * cpu_up.as_secs_f64() / up.as_secs_f64()
    );
    let events: f64 = server
        .writes()
        .await?
        .iter()
        .filter(|(what, _)| what.ends_with(" events"))
        .map(|(_, n)| n)
        .sum();
    println!("event writes, all components   {events:.0}");
    let cpu1 = cpu_time(pid);
    let started = Instant::now();
    let r = client
        .patch(format!("{url}/bench"))
        .bearer_auth(&server.token)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"spec":{"replicas":0}}"#)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("scaling to 0 answered {}", r.status());
    }
    let pods_url = format!(
        "{}/api/v1/namespaces/default/pods?labelSelector=app%3Dbench",
        server.url
    );
    loop {
        let list: serde_json::Value = client
            .get(&pods_url)
            .bearer_auth(&server.token)
            .send()
            .await?
            .json()
            .await?;
        if list["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        if Instant::now() > started + Duration::from_secs(600) {
            bail!("pods were not gone in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let down = started.elapsed();
    let cpu_down = cpu_time(pid).saturating_sub(cpu1);
    println!(
        "scale to 0 → all pods gone     {} (controller-manager CPU {:.2} s, {:.0}% of a core)",
        ms(down),
        cpu_down.as_secs_f64(),
        100.0 * cpu_down.as_secs_f64() / down.as_secs_f64()
    );
    println!(
        "controller-manager RSS         {} MiB now, {} MiB peak",
        rss_kib(pid) / 1024,
        peak_rss_kib(pid) / 1024
    );
    println!(
        "server peak RSS                {} MiB",
        peak_rss_kib(server.child.id()) / 1024
    );
    println!(
        "simulated nodes' agent RSS     {} MiB registered ({} KiB per node), {} MiB with every replica running ({} KiB per pod worker)",
        agent_idle_kib / 1024,
        agent_idle_kib / args.nodes.max(1) as u64,
        agent_kib / 1024,
        agent_kib.saturating_sub(agent_idle_kib) / args.replicas.max(1) as u64
    );
    for child in [&mut manager, &mut agent] {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A real node for a benchmark: a separate `skiff agent` with its own
/// containerd, the images imported, Ready. Dropped, it stops the agent with
/// SIGTERM, so its proxy rules, routes and containerd go too.
struct RealNode {
    agent: Child,
    dir: std::path::PathBuf,
}

impl RealNode {
    async fn start(server: &Server, dir: &Path, images: &Path) -> Result<Self> {
        let agent = Command::new(skiff()?)
            .args(["agent", "--server", &server.url, "--token-file"])
            .arg(dir.join("node-token"))
            .arg("--data-dir")
            .arg(dir.join("agent"))
            .args(["--node-name", "bench", "--kubelet-port", "0"])
            // Its images are imported, not pulled: never collected.
            .args(["--image-gc-high-threshold", "100"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let node = Self {
            agent,
            dir: dir.join("agent"),
        };
        let socket = node.socket();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("containerd did not start; is it installed, and are we root?");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (skiff, agent_dir, images) = (skiff()?, node.dir.clone(), images.to_owned());
        tokio::task::spawn_blocking(move || {
            skiff_testkit::images::import(&skiff, &agent_dir, &images)
        })
        .await?
        .map_err(anyhow::Error::msg)?;
        let client = server.client()?;
        // The node is Ready once its network is configured.
        loop {
            let node: serde_json::Value = client
                .get(format!("{}/api/v1/nodes/bench", server.url))
                .bearer_auth(&server.token)
                .send()
                .await?
                .json()
                .await?;
            let ready = node["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("the node did not become Ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(node)
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// Waits until `until` for the runtime to run nothing: the agent
    /// removes the sandboxes of deleted pods.
    async fn wait_empty(&self, until: Instant) -> Result<()> {
        while Instant::now() < until {
            let tasks = Command::new("ctr")
                .arg("--address")
                .arg(self.socket())
                .args(["-n", "k8s.io", "tasks", "ls", "-q"])
                .output()?;
            if String::from_utf8_lossy(&tasks.stdout).trim().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        process::stop(self.agent.id(), Duration::from_secs(30));
        let _ = self.agent.wait();
        skiff_testkit::containerd::stop(&self.dir);
        let _ = Command::new("ip")
            .args(["link", "delete", "skiff0"])
            .status();
    }
}

/// Pod startup latency on one real node: a separate `skiff agent` with its
/// own containerd, images imported, pods created at once, each timed from
/// its create request to the watch event that shows it Running.
async fn pods(args: PodsArgs) -> Result<()> {
    let dir = tempdir()?;
    let (server, _) = Server::start(&dir, &[]).await?;
    let node = RealNode::start(&server, &dir, &args.images).await?;
    let agent = &node.agent;
    let client = server.client()?;
    let agent_idle = rss_kib(agent.id());
    let (agent_anon, agent_file) = process::rss_anon_file_kib(agent.id());
    let containerd_idle = child_pid(agent.id(), "containerd").map_or(0, rss_kib);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch = client
        .get(format!(
            "{}/api/v1/namespaces/default/pods?watch=true",
            server.url
        ))
        .bearer_auth(&server.token)
        .timeout(Duration::from_secs(300))
        .send()
        .await?;
    let watcher = tokio::spawn(async move {
        let mut stream = watch.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                if event["object"]["status"]["phase"] == "Running" {
                    let name = event["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    let _ = tx.send((name, Instant::now()));
                }
            }
        }
    });
    let url = format!("{}/api/v1/namespaces/default/pods", server.url);
    let mut sent = HashMap::new();
    let creates = (0..args.pods).map(|i| {
        let name = format!("start-{i}");
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "skiff.local/busybox:1",
                     "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}});
        let (client, url, token) = (&client, &url, &server.token);
        async move {
            let at = Instant::now();
            let r = client.post(url).bearer_auth(token).json(&body).send().await?;
            anyhow::ensure!(r.status() == 201, "create answered {}", r.status());
            Ok::<_, anyhow::Error>((name, at))
        }
    });
    for r in futures::future::join_all(creates).await {
        let (name, at) = r?;
        sent.insert(name, at);
    }
    let mut running = HashMap::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    while running.len() < args.pods {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some((name, at))) => {
                running.entry(name).or_insert(at);
            }
            _ => break,
        }
    }
    let mut latencies: Vec<Duration> = running
        .iter()
        .filter_map(|(n, at)| Some(at.saturating_duration_since(*sent.get(n)?)))
        .collect();
    latencies.sort();
    let first_sent = sent.values().min().copied();
    let all_running = running.values().max().copied();
    let span = match (first_sent, all_running) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    };
    println!("{} pods on one node, image present", args.pods);
    println!(
        "create → Running p50 / p99     {} / {} ({}/{} running)",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        running.len(),
        args.pods
    );
    println!("first create → all Running     {}", ms(span));
    println!(
        "idle RSS agent / containerd    {:.1} / {:.1} MiB (agent: {:.1} heap and stacks, {:.1} mapped files)",
        agent_idle as f64 / 1024.0,
        containerd_idle as f64 / 1024.0,
        agent_anon as f64 / 1024.0,
        agent_file as f64 / 1024.0,
    );
    watcher.abort();
    // Pods go before the agent, so no container outlives the run.
    let _ = client.delete(&url).bearer_auth(&server.token).send().await;
    let gone_by = Instant::now() + Duration::from_secs(60);
    while Instant::now() < gone_by {
        let list: serde_json::Value = client
            .get(&url)
            .bearer_auth(&server.token)
            .send()
            .await?
            .json()
            .await?;
        if list["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.wait_empty(gone_by).await?;
    let floor = runtime_floor::measure(
        &node.socket(),
        &dir.join("floor-logs"),
        "skiff.local/busybox:1",
        args.pods,
    )
    .await?;
    println!(
        "runtime floor p50 / p99 / all  {} / {} / {} ({} sandboxes + containers straight through CRI)",
        ms(percentile(&floor, 0.5)),
        ms(percentile(&floor, 0.99)),
        ms(floor.last().copied().unwrap_or_default()),
        args.pods
    );
    drop(node);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The RSS of a child of `parent` whose command is `name`.
/// Creates pods and measures, from a watch, when each is bound.
async fn schedule(args: ScheduleArgs) -> Result<()> {
    let dir = tempdir()?;
    // The scheduler alone, as upstream's scheduler_perf measures it.
    let extra: &[&str] = if args.score_all_nodes {
        &[
            "--disable-controller-manager",
            "--scheduler-score-all-nodes",
        ]
    } else {
        &["--disable-controller-manager"]
    };
    let (server, _) = Server::start(&dir, extra).await?;
    let client = server.client()?;
    let started = Instant::now();
    let mut agent = if args.without_agent {
        let url = format!("{}/api/v1/nodes", server.url);
        post_all(&server, &url, args.clients, (0..args.nodes).map(api_node)).await?;
        println!(
            "{} nodes created (no agent) in {}",
            args.nodes,
            ms(started.elapsed())
        );
        None
    } else {
        let agent = simulated_nodes(
            &server,
            &dir,
            args.nodes,
            &["--cpu", "4", "--memory", "32Gi", "--zones", "3"],
        )
        .await?;
        println!(
            "{} simulated nodes registered in {}",
            args.nodes,
            ms(started.elapsed())
        );
        let agent_rss = rss_kib(agent.id());
        println!(
            "agent RSS                      {} MiB ({} bytes per node)",
            agent_rss / 1024,
            agent_rss * 1024 / args.nodes as u64
        );
        Some(agent)
    };

    // Watch bindings before creating anything.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_url = format!(
        "{}/api/v1/namespaces/default/pods?watch=true&resourceVersion=0",
        server.url
    );
    let watch = client
        .get(&watch_url)
        .bearer_auth(&server.token)
        .timeout(Duration::from_secs(900))
        .send()
        .await?;
    let watcher = tokio::spawn(async move {
        let mut stream = watch.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                // Only the name and node are read, so that the bench's own
                // parsing takes as little of the shared CPU as it can.
                let Ok(event) = serde_json::from_slice::<WatchedPod>(&line) else {
                    continue;
                };
                if event.object.spec.node_name.is_some() {
                    let _ = tx.send((event.object.metadata.name, Instant::now()));
                }
            }
        }
    });

    let url = format!("{}/api/v1/namespaces/default/pods", server.url);
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let writes = server.writes().await?;
    let first = Instant::now();
    let cpu = server.cpu_time();
    let agent_cpu = agent.as_ref().map(|a| cpu_time(a.id()));
    let own_cpu = cpu_time(std::process::id());
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (client, url, token, sent) = (
            server.client()?,
            url.clone(),
            server.token.clone(),
            sent.clone(),
        );
        let (count, clients, spread) = (args.pods, args.clients, args.spread);
        tasks.push(tokio::spawn(async move {
            for i in (c..count).step_by(clients) {
                let name = format!("sched-{i}");
                let mut body = pod(&name);
                body["metadata"]["labels"] = json!({"app": "bench"});
                if spread {
                    body["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "bench"}}}]);
                }
                sent.lock().unwrap().insert(name, Instant::now());
                let r = client.post(&url).bearer_auth(&token).json(&body).send().await?;
                if r.status() != 201 {
                    bail!("create answered {}", r.status());
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = first.elapsed();
    let mut bound = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while bound.len() < args.pods {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, at))) => {
                bound.entry(name).or_insert(at);
            }
            _ => break,
        }
    }
    let last = bound.values().max().copied().unwrap_or(first);
    let pods = bound.len().max(1);
    let per_pod = (server.cpu_time() - cpu) / pods as u32;
    let agent_per_pod = agent
        .as_ref()
        .zip(agent_cpu)
        .map(|(a, before)| (cpu_time(a.id()) - before) / pods as u32);
    let own_per_pod = (cpu_time(std::process::id()) - own_cpu) / pods as u32;
    let after = server.writes().await?;
    let sent = sent.lock().unwrap();
    let mut latencies: Vec<Duration> = bound
        .iter()
        .filter_map(|(n, at)| Some(at.saturating_duration_since(*sent.get(n)?)))
        .collect();
    latencies.sort();
    let elapsed = last.saturating_duration_since(first);
    println!(
        "pods created in                {} ({:.0}/s)",
        ms(created),
        args.pods as f64 / created.as_secs_f64()
    );
    println!(
        "pods bound                     {}/{} in {} → {:.0} pods/s",
        bound.len(),
        args.pods,
        ms(elapsed),
        bound.len() as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "create-to-bound p50 / p99      {} / {}",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99))
    );
    println!("server CPU per pod             {}", fine_ms(per_pod));
    if let Some(agent) = agent_per_pod {
        println!("agent CPU per pod              {}", fine_ms(agent));
    }
    println!("bench client CPU per pod       {}", fine_ms(own_per_pod));
    let mut writes_per_pod: Vec<(String, f64)> = after
        .into_iter()
        .map(|(what, n)| {
            let n = n - writes.get(&what).copied().unwrap_or(0.0);
            (what, n / pods as f64)
        })
        .filter(|(_, n)| *n >= 0.01)
        .collect();
    writes_per_pod.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = writes_per_pod.iter().map(|(_, n)| n).sum();
    let each: Vec<String> = writes_per_pod
        .iter()
        .map(|(w, n)| format!("{w} {n:.2}"))
        .collect();
    println!(
        "writes per pod                 {total:.2} ({})",
        each.join(", ")
    );
    match &agent {
        Some(agent) => println!(
            "peak RSS server / agent        {} / {} MiB",
            peak_rss_kib(server.child.id()) / 1024,
            peak_rss_kib(agent.id()) / 1024
        ),
        None => println!(
            "peak RSS server                {} MiB",
            peak_rss_kib(server.child.id()) / 1024
        ),
    }
    watcher.abort();
    if let Some(agent) = agent.as_mut() {
        let _ = agent.kill();
        let _ = agent.wait();
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The fields of a watched pod event that `bench schedule` reads.
#[derive(serde::Deserialize)]
struct WatchedPod {
    object: WatchedObject,
}

#[derive(serde::Deserialize)]
struct WatchedObject {
    metadata: WatchedMeta,
    #[serde(default)]
    spec: WatchedSpec,
}

#[derive(serde::Deserialize)]
struct WatchedMeta {
    name: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WatchedSpec {
    node_name: Option<String>,
}

fn pod(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "shard": name.len().to_string()}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
    })
}

/// A node as upstream's scheduler_perf template makes it: Ready, 4 CPUs,
/// 32Gi, 110 pods, in one of three zones; nothing runs on it.
fn api_node(i: usize) -> serde_json::Value {
    let name = format!("bench-node-{i:05}");
    let resources = json!({"cpu": "4", "memory": "32Gi", "pods": "110"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
        }},
        "status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        }
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A cost per operation, to the microsecond: runs differ by less than a
/// hundredth of a millisecond.
fn fine_ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Creates `objects` at `url`, `clients` at a time; returns the rate and
/// the sorted latencies.
async fn post_all(
    server: &Server,
    url: &str,
    clients: usize,
    objects: impl IntoIterator<Item = serde_json::Value>,
) -> Result<(f64, Vec<Duration>)> {
    let client = server.client()?;
    let started = Instant::now();
    let results: Vec<Result<Duration>> = futures::stream::iter(objects)
        .map(|o| {
            let client = client.clone();
            async move {
                let t = Instant::now();
                let r = client
                    .post(url)
                    .bearer_auth(&server.token)
                    .json(&o)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("create: {} {}", r.status(), r.text().await?);
                }
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let mut latencies = results.into_iter().collect::<Result<Vec<_>>>()?;
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((rate, latencies))
}

/// Creates `count` pods from `clients` concurrent clients; returns the
/// rate and the sorted latencies.
async fn create_pods(
    server: &Server,
    clients: usize,
    count: usize,
    prefix: &str,
) -> Result<(f64, Vec<Duration>)> {
    let url = format!("{}/api/v1/namespaces/default/pods", server.url);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, url, token, prefix) = (
            server.client()?,
            url.clone(),
            server.token.clone(),
            prefix.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (c..count).step_by(clients) {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&pod(&format!("{prefix}-{i}")))
                    .send()
                    .await?;
                if r.status() != 201 {
                    bail!(
                        "create answered {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    all.sort();
    Ok((rate, all))
}

/// Starts a server and measures it over HTTPS: start-to-ready time, idle
/// RSS, durable creates/s from concurrent clients, GET latency, LIST of
/// every pod (as JSON, protobuf and kubectl's Table), and event delivery to many
/// watchers. With etcd on the PATH, creates/s on the etcd backend too.
async fn api(args: ApiArgs) -> Result<()> {
    let dir = tempdir()?;
    // The API server alone: no scheduler watching and caching every pod.
    let mut flags = vec![
        "--disable-scheduler".to_owned(),
        "--authorization-mode".to_owned(),
        args.authorization_mode.clone(),
    ];
    if let Some(path) = &args.encryption_provider_config {
        flags.push("--encryption-provider-config".into());
        flags.push(path.display().to_string());
        println!("encryption at rest             {}", path.display());
    }
    if args.without_controller_manager {
        flags.push("--disable-controller-manager".into());
        println!("controller manager             disabled");
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (server, ready) = Server::start(&dir, &flags).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("authorization mode             {}", args.authorization_mode);
    let idle_rss = server.rss_kib();
    println!("start to ready                 {}", ms(ready));
    println!("idle RSS                       {} MiB", idle_rss / 1024);

    let cpu = server.cpu_time();
    let own_cpu = cpu_time(std::process::id());
    let (rate, lat) = create_pods(&server, args.clients, args.pods, "pod").await?;
    let per_create = (server.cpu_time() - cpu) / args.pods as u32;
    let own_per_create = (cpu_time(std::process::id()) - own_cpu) / args.pods as u32;
    println!(
        "creates/s (embedded, {} clients) {rate:.0}  (p50 {}, p99 {})",
        args.clients,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    println!("server CPU per create          {}", fine_ms(per_create));
    println!("bench client CPU per create    {}", fine_ms(own_per_create));

    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (client, url, token, pods) = (
            server.client()?,
            server.url.clone(),
            server.token.clone(),
            args.pods,
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in 0..2_000usize {
                let name = format!("pod-{}", (i * 7919 + c * 104_729) % pods);
                let t = Instant::now();
                let r = client
                    .get(format!("{url}/api/v1/namespaces/default/pods/{name}"))
                    .bearer_auth(&token)
                    .send()
                    .await?;
                r.error_for_status()?.bytes().await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut gets = Vec::new();
    for t in tasks {
        gets.extend(t.await??);
    }
    gets.sort();
    println!(
        "GET p50 / p99                  {} / {}",
        ms(percentile(&gets, 0.5)),
        ms(percentile(&gets, 0.99))
    );

    let (lists, body) = timed_gets(&server, "/api/v1/pods", None).await?;
    let listed: serde_json::Value = serde_json::from_slice(&body)?;
    let n = listed["items"].as_array().map_or(0, Vec::len);
    if n < args.pods {
        bail!("LIST returned {n} pods, expected {}", args.pods);
    }
    println!(
        "LIST {} pods p50 / max       {} / {}",
        args.pods,
        ms(percentile(&lists, 0.5)),
        ms(*lists.last().unwrap())
    );
    // What client-go's typed clients ask for.
    let (lists, pb) = timed_gets(&server, "/api/v1/pods", Some(PROTOBUF)).await?;
    if !pb.starts_with(b"k8s\0") {
        bail!("the protobuf list is not protobuf");
    }
    println!(
        "LIST {} pods as protobuf p50 / max {} / {} ({} against {} KiB of JSON)",
        args.pods,
        ms(percentile(&lists, 0.5)),
        ms(*lists.last().unwrap()),
        pb.len() / 1024,
        body.len() / 1024
    );
    // What `kubectl get pods -A` asks for: Tables, 500 rows at a time.
    let (tables, body) = timed_gets(&server, "/api/v1/pods?limit=500", Some(TABLE)).await?;
    let table: serde_json::Value = serde_json::from_slice(&body)?;
    if table["rows"].as_array().map_or(0, Vec::len) == 0 {
        bail!("the Table list has no rows");
    }
    println!(
        "LIST as Table, first 500 p50   {}",
        ms(percentile(&tables, 0.5)),
    );
    let (tables, body) = timed_gets(&server, "/api/v1/pods", Some(TABLE)).await?;
    let table: serde_json::Value = serde_json::from_slice(&body)?;
    let rows = table["rows"].as_array().map_or(0, Vec::len);
    if rows < args.pods {
        bail!("the Table list has {rows} rows, expected {}", args.pods);
    }
    println!(
        "LIST {} pods as Table p50 / max {} / {}",
        args.pods,
        ms(percentile(&tables, 0.5)),
        ms(*tables.last().unwrap())
    );

    watchers(&server, &args).await?;
    node_watches(&server, &args).await?;
    println!(
        "RSS after load                 {} MiB",
        server.rss_kib() / 1024
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    etcd_creates(&args).await
}

/// What node agents' watches cost the server: pods created on one node
/// while every node's agent watches its own pods, then Nodes created while
/// each agent watches its own Node by name. Prints the server CPU per
/// create, and when the first watch has all of its objects.
async fn node_watches(server: &Server, args: &ApiArgs) -> Result<()> {
    const PODS: usize = 500;
    let listed = server.get_json("/api/v1/pods?limit=1").await?;
    let rv = listed["metadata"]["resourceVersion"]
        .as_str()
        .context("a list's resourceVersion")?
        .to_owned();
    let n = args.node_watchers;
    let watches = (0..n).map(|i| {
        format!(
            "{}/api/v1/pods?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dnode-{i}",
            server.url
        )
    });
    let on_node = (0..PODS).map(|i| {
        let mut pod = pod(&format!("on-node-{i}"));
        pod["spec"]["nodeName"] = json!("node-0");
        pod
    });
    let pods = format!("{}/api/v1/namespaces/default/pods", server.url);
    let (cpu, took) = watched_creates(server, args, watches, &pods, on_node, PODS).await?;
    println!(
        "{PODS} pods on 1 of {n} watched nodes: server CPU per create {}, all watched in {}",
        fine_ms(cpu),
        ms(took)
    );
    let watches = (0..n).map(|i| {
        format!(
            "{}/api/v1/nodes?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3D{}",
            server.url,
            api_node(i)["metadata"]["name"].as_str().unwrap_or_default()
        )
    });
    let nodes = format!("{}/api/v1/nodes", server.url);
    let (cpu, took) =
        watched_creates(server, args, watches, &nodes, (0..PODS).map(api_node), 1).await?;
    println!(
        "{PODS} Nodes under {n} watches by name: server CPU per create {}, the first watched in {}",
        fine_ms(cpu),
        ms(took)
    );
    Ok(())
}

/// Opens `watches`, creates `objects` at `url`, and returns the server CPU
/// per create and when the first watch had received `first` events.
async fn watched_creates(
    server: &Server,
    args: &ApiArgs,
    watches: impl Iterator<Item = String>,
    url: &str,
    objects: impl Iterator<Item = serde_json::Value>,
    first: usize,
) -> Result<(Duration, Duration)> {
    // 100 streams to a connection, as in `watchers`.
    let pool: Vec<reqwest::Client> = (0..args.node_watchers.div_ceil(100))
        .map(|_| server.client())
        .collect::<Result<_>>()?;
    let mut open = Vec::new();
    for (i, watch) in watches.enumerate() {
        let r = pool[i % pool.len()]
            .get(&watch)
            .bearer_auth(&server.token)
            .timeout(Duration::from_secs(300))
            .send()
            .await?
            .error_for_status()?;
        open.push(r);
    }
    let mut stream = open.swap_remove(0).bytes_stream();
    let received = tokio::spawn(async move {
        let (mut lines, mut buf) = (0, Vec::new());
        while lines < first {
            let chunk = stream.next().await.context("the watch ended")??;
            buf.extend_from_slice(&chunk);
            lines += buf.iter().filter(|b| **b == b'\n').count();
            buf.drain(..buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1));
        }
        Ok::<_, anyhow::Error>(Instant::now())
    });
    let objects: Vec<serde_json::Value> = objects.collect();
    let count = objects.len() as u32;
    let cpu = server.cpu_time();
    let started = Instant::now();
    post_all(server, url, args.clients, objects).await?;
    let per_create = (server.cpu_time() - cpu) / count;
    let done = tokio::time::timeout(Duration::from_secs(60), received).await???;
    Ok((per_create, done - started))
}

/// The name prefix of the objects the watchers wait for.
const WATCHED: &str = "watched-";

/// Opens the watchers, creates objects, and measures when each watcher
/// receives each one.
async fn watchers(server: &Server, args: &ApiArgs) -> Result<()> {
    // Watchers share a few HTTP/2 connections, 100 streams each.
    let pool: Vec<reqwest::Client> = (0..args.watchers.div_ceil(100))
        .map(|_| server.client())
        .collect::<Result<_>>()?;
    let client = server.client()?;
    let url = format!("{}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=0&allowWatchBookmarks=false", server.url);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut handles = Vec::new();
    for w in 0..args.watchers {
        let (client, url, token, tx, ready_tx) = (
            pool[w % pool.len()].clone(),
            url.clone(),
            server.token.clone(),
            tx.clone(),
            ready_tx.clone(),
        );
        let expect = args.watch_events;
        handles.push(tokio::spawn(async move {
            let r = client
                .get(&url)
                .bearer_auth(&token)
                .timeout(Duration::from_secs(120))
                .send()
                .await?;
            let _ = ready_tx.send(());
            let mut stream = r.bytes_stream();
            let mut buf = Vec::new();
            let mut seen = 0;
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk?);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let now = Instant::now();
                    let event: serde_json::Value = serde_json::from_slice(&line)?;
                    // Objects there before the watch (the namespace's root
                    // CA) come first as ADDED; only the created ones count.
                    let name = event["object"]["metadata"]["name"].as_str();
                    if let Some(name) = name.filter(|n| n.starts_with(WATCHED)) {
                        let _ = tx.send((name.to_owned(), now));
                        seen += 1;
                    }
                    if seen == expect {
                        return Ok::<_, anyhow::Error>(());
                    }
                }
            }
            Ok(())
        }));
    }
    drop(tx);
    for _ in 0..args.watchers {
        tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
            .await?
            .context("a watcher failed to start")?;
    }
    let create = format!("{}/api/v1/namespaces/default/configmaps", server.url);
    let mut sent = std::collections::HashMap::new();
    for i in 0..args.watch_events {
        let name = format!("{WATCHED}{i}");
        sent.insert(name.clone(), Instant::now());
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": i.to_string()}});
        client
            .post(&create)
            .bearer_auth(&server.token)
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut delays = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while delays.len() < args.watchers * args.watch_events {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, at))) => {
                if let Some(t0) = sent.get(&name) {
                    delays.push(at.saturating_duration_since(*t0));
                }
            }
            _ => break,
        }
    }
    for h in handles {
        h.abort();
    }
    delays.sort();
    println!(
        "watch delivery ({} watchers × {} events, {} received) p50 / p99 / max  {} / {} / {}",
        args.watchers,
        args.watch_events,
        delays.len(),
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        ms(delays.last().copied().unwrap_or_default())
    );
    Ok(())
}

/// Ten GETs of `path` (with `accept`, if given), one after another: their
/// times sorted, and the last body.
async fn timed_gets(
    server: &Server,
    path: &str,
    accept: Option<&str>,
) -> Result<(Vec<Duration>, bytes::Bytes)> {
    let client = server.client()?;
    let mut times = Vec::new();
    let mut body = bytes::Bytes::new();
    for _ in 0..10 {
        let t = Instant::now();
        let mut request = client
            .get(format!("{}{path}", server.url))
            .bearer_auth(&server.token);
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        body = request.send().await?.error_for_status()?.bytes().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((times, body))
}

/// The same create load against the etcd backend, when etcd is installed.
async fn etcd_creates(args: &ApiArgs) -> Result<()> {
    if Command::new("etcd").arg("--version").output().is_err() {
        println!("creates/s (etcd)               skipped: etcd is not installed");
        return Ok(());
    }
    let dir = tempdir()?;
    let etcd = Etcd::start(&dir)?;
    let client_url = etcd.url.clone();
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", etcd.port)).is_err() {
            if Instant::now() > deadline {
                bail!("etcd did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut flags = vec!["--datastore-endpoint", &client_url, "--disable-scheduler"];
        if args.without_controller_manager {
            flags.push("--disable-controller-manager");
        }
        let (server, _) = Server::start(&dir.join("skiff"), &flags).await?;
        let (rate, lat) = create_pods(&server, args.clients, args.pods.min(5_000), "etcd").await?;
        println!(
            "creates/s (etcd, {} clients)   {rate:.0}  (p50 {}, p99 {})",
            args.clients,
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("skiff-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
