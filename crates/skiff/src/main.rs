//! `skiff`: the one binary. It parses the command line and wires the
//! components together; the logic lives in the component crates.

mod image;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// jemalloc: the server builds and drops JSON values all the time, and in
/// `bench schedule` jemalloc takes about 6 % of its CPU where mimalloc
/// took 16 %. It does not ask for transparent huge pages, so an idle
/// agent's heap stays small (3.2 MiB with a real node, as with mimalloc
/// built without them).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A small Kubernetes-compatible orchestrator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane (API server, store, scheduler, controllers) and a node agent.
    Server(Box<ServerArgs>),
    /// Runs a node agent: real containers through containerd, or simulated nodes (`--simulate N`).
    Agent(Box<AgentArgs>),
    /// Images in a node's containerd: import an archive, list.
    Image {
        #[command(subcommand)]
        what: image::Command,
    },
    /// Runs the controller manager alone, against any API server.
    ControllerManager(ControllerManagerArgs),
    /// Runs the scheduler alone, against any API server.
    Scheduler(SchedulerArgs),
    /// Defragments an etcd datastore: gives the file system back the space
    /// compaction freed (as `etcdctl defrag`; run it on each member).
    Defragment {
        /// The etcd member, e.g. `http://127.0.0.1:2379`.
        #[arg(long)]
        datastore_endpoint: String,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the store, credentials and kubeconfig live.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// The address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The API server's HTTPS port.
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// etcd endpoints (comma-separated, e.g. http://127.0.0.1:2379) instead
    /// of the embedded store.
    #[arg(long)]
    datastore_endpoint: Option<String>,
    /// How requests are authorized: Node,RBAC (nodes by the Node
    /// authorizer, everyone by roles), RBAC, or AlwaysAllow (any
    /// authenticated user may do anything; for benchmarks).
    #[arg(long, default_value = "Node,RBAC")]
    authorization_mode: skiff_apiserver::AuthorizationMode,
    /// Write an audit.k8s.io/v1 Event per request to this file (JSON lines).
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// The audit.k8s.io/v1 Policy deciding each request's level; without
    /// it every request is logged at Metadata.
    #[arg(long, requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// An apiserver.config.k8s.io/v1 EncryptionConfiguration: the
    /// resources encrypted at rest (providers aesgcm and identity).
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// Non-mutating requests in flight at most (0: no cap); beyond it
    /// requests are answered 429 with Retry-After. Watches, exec, attach,
    /// port-forward, proxy and logs are not counted.
    #[arg(long, default_value_t = 400)]
    max_requests_inflight: usize,
    /// Mutating requests in flight at most (0: no cap).
    #[arg(long, default_value_t = 200)]
    max_mutating_requests_inflight: usize,
    /// How long a client connection may sit with no request in flight
    /// before the server closes it (upstream's 90 s).
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    idle_connection_timeout: std::time::Duration,
    /// The most MiB of object versions the watch cache keeps for watchers
    /// that resume from a past revision (beyond, they get 410 and list).
    #[arg(long, default_value_t = 64)]
    watch_cache_size_mb: usize,
    /// How often the store's history is compacted (0 never).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    compaction_interval: std::time::Duration,
    /// How long an event is kept after it was last written (0 for ever).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    event_ttl: std::time::Duration,
    /// How often the agents' resource metrics are scraped for
    /// `metrics.k8s.io` (`kubectl top`, autoscaling); 0 never.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    metrics_resolution: std::time::Duration,
    /// How often each HorizontalPodAutoscaler is reconciled.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How long a scale-down waits for the highest recommendation in it,
    /// unless an autoscaler's behavior says otherwise.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// Do not run the scheduler inside the server.
    #[arg(long)]
    disable_scheduler: bool,
    /// Score every feasible node rather than upstream's adaptive share.
    #[arg(long)]
    scheduler_score_all_nodes: bool,
    /// Do not run the controller manager inside the server.
    #[arg(long)]
    disable_controller_manager: bool,
    /// Do not run a node agent (with its own containerd) inside the server.
    #[arg(long)]
    disable_agent: bool,
    /// The port of the embedded agent's endpoint (logs, exec); 0 picks one.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// A registry (`host:port`) the embedded agent pulls from over plain
    /// HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// The embedded agent's sandbox image (default: Skiff's own, made by
    /// the agent itself).
    #[arg(long, default_value = skiff_kubelet::pause_image::DEFAULT)]
    pause_image: String,
    /// The embedded agent's upkeep of its node.
    #[command(flatten)]
    upkeep: NodeUpkeep,
    /// How long a node may miss Lease renewals before it is unreachable.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// The range each node's podCIDR is taken from.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// The range Service ClusterIPs are taken from.
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: skiff_core::cidr::Cidr,
    /// Do not run the cluster DNS server.
    #[arg(long)]
    disable_dns: bool,
    /// The port the cluster DNS server listens on (at the bind address);
    /// the `kube-dns` Service forwards port 53 there. 0 picks one.
    #[arg(long, default_value_t = 53)]
    dns_port: u16,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The `resolv.conf` whose nameservers cluster DNS asks for names
    /// outside the cluster domain (as CoreDNS forwards them); "" refuses
    /// those names instead.
    #[arg(long, default_value = "/etc/resolv.conf")]
    upstream_resolv_conf: String,
    /// Do not run the built-in ingress controller.
    #[arg(long)]
    disable_ingress: bool,
    /// The ingress controller's HTTP port (at the bind address); 0 picks one.
    #[arg(long, default_value_t = 80)]
    ingress_port: u16,
    /// The ingress controller's HTTPS port; 0 picks one.
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
}

/// How a real node keeps itself: its status writes, images and logs
/// (upstream's kubelet flags of the same names).
#[derive(clap::Args, Debug)]
struct NodeUpkeep {
    /// How often the node's status is written when only heartbeat times
    /// changed (the Lease is the heartbeat).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    node_status_report_frequency: std::time::Duration,
    #[command(flatten)]
    image_gc: ImageGcArgs,
    #[command(flatten)]
    container_logs: ContainerLogArgs,
    #[command(flatten)]
    eviction: EvictionArgs,
    /// What the node keeps for Kubernetes' own processes rather than
    /// pods (`cpu=100m,memory=256Mi,ephemeral-storage=1Gi`).
    #[arg(long, default_value = "")]
    kube_reserved: String,
    /// What the node keeps for the system rather than pods, as
    /// `--kube-reserved`.
    #[arg(long, default_value = "")]
    system_reserved: String,
    /// How many images, largest first, the node's status lists (-1: all).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true,
        value_parser = clap::value_parser!(i64).range(-1..))]
    node_status_max_images: i64,
}

/// When the node is under pressure and evicts pods (upstream's kubelet
/// flags).
#[derive(clap::Args, Debug)]
struct EvictionArgs {
    /// Thresholds that evict at once when met (`signal<value,…`: signals
    /// memory.available, nodefs.available, nodefs.inodesFree,
    /// imagefs.available, imagefs.inodesFree, pid.available; values a
    /// quantity or a percentage of the capacity; empty: none).
    #[arg(long, default_value = skiff_kubelet::eviction::DEFAULT_HARD)]
    eviction_hard: String,
    /// Thresholds that evict once met for their grace period.
    #[arg(long, default_value = "")]
    eviction_soft: String,
    /// The grace period of each soft threshold (`signal=1m30s,…`).
    #[arg(long, default_value = "")]
    eviction_soft_grace_period: String,
    /// What must be available beyond a threshold before its pressure
    /// counts as relieved (`signal=value,…`).
    #[arg(long, default_value = "")]
    eviction_minimum_reclaim: String,
    /// How long a pressure condition stays after its threshold was last
    /// met.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    eviction_pressure_transition_period: std::time::Duration,
    /// The longest grace period (seconds) of a pod evicted for a soft
    /// threshold; negative: the pod's own.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    eviction_max_pod_grace_period: i64,
}

impl NodeUpkeep {
    /// The node's upkeep settings, read and checked.
    fn read(&self) -> anyhow::Result<skiff_kubelet::agent::Upkeep> {
        let reserved = [&self.kube_reserved, &self.system_reserved];
        Ok(skiff_kubelet::agent::Upkeep {
            status_report_every: self.node_status_report_frequency,
            image_gc: self.image_gc.policy()?,
            container_logs: self.container_logs.policy()?,
            eviction: self.eviction.config()?,
            max_images: usize::try_from(self.node_status_max_images).ok(),
            reserved: skiff_kubelet::node::reserved(&reserved.map(String::as_str))
                .map_err(anyhow::Error::msg)?,
        })
    }
}

impl EvictionArgs {
    fn config(&self) -> anyhow::Result<skiff_kubelet::eviction::Config> {
        skiff_kubelet::eviction::Config::parse(
            &self.eviction_hard,
            &self.eviction_soft,
            &self.eviction_soft_grace_period,
            &self.eviction_minimum_reclaim,
            self.eviction_pressure_transition_period,
            self.eviction_max_pod_grace_period,
        )
        .map_err(anyhow::Error::msg)
    }
}

/// When a node removes images no container uses.
#[derive(clap::Args, Debug)]
struct ImageGcArgs {
    /// The image filesystem's usage (percent) from which unused images
    /// are removed (100: only once the filesystem is full).
    #[arg(long, default_value_t = 85)]
    image_gc_high_threshold: u8,
    /// The usage (percent) that removing images goes down to.
    #[arg(long, default_value_t = 80)]
    image_gc_low_threshold: u8,
    /// How long an image stays at least once the node first saw it.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    image_minimum_gc_age: std::time::Duration,
    /// How long an unused image may stay whatever the usage; 0s: no limit.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    image_maximum_gc_age: std::time::Duration,
}

impl ImageGcArgs {
    fn policy(&self) -> anyhow::Result<skiff_kubelet::image_gc::Policy> {
        let policy = skiff_kubelet::image_gc::Policy {
            high: self.image_gc_high_threshold,
            low: self.image_gc_low_threshold,
            min_age: self.image_minimum_gc_age,
            max_age: Some(self.image_maximum_gc_age).filter(|age| !age.is_zero()),
        };
        policy.check().map_err(anyhow::Error::msg)?;
        Ok(policy)
    }
}

/// When a node rotates container logs.
#[derive(clap::Args, Debug)]
struct ContainerLogArgs {
    /// The size (a quantity: 10Mi) at which a container's log rotates.
    #[arg(long, default_value = "10Mi")]
    container_log_max_size: String,
    /// How many log files a container keeps, its live log included.
    #[arg(long, default_value_t = 5)]
    container_log_max_files: usize,
}

impl ContainerLogArgs {
    fn policy(&self) -> anyhow::Result<skiff_kubelet::log_rotation::Policy> {
        let size = &self.container_log_max_size;
        let milli = skiff_core::quantity::parse_milli(size)
            .filter(|m| *m >= 0)
            .ok_or_else(|| {
                anyhow::anyhow!("--container-log-max-size {size:?} is not a quantity")
            })?;
        let policy = skiff_kubelet::log_rotation::Policy {
            max_size: u64::try_from(milli / 1000).unwrap_or(0),
            max_files: self.container_log_max_files,
        };
        policy.check().map_err(anyhow::Error::msg)?;
        Ok(policy)
    }
}

/// `40s`, `2m`, `500ms` or a number of seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 40s"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        "h" => Ok(std::time::Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?} is not a duration like 40s")),
    }
}

#[derive(clap::Args)]
struct ControllerManagerArgs {
    /// A kubeconfig for the API server (e.g. `<data-dir>/kubeconfig.yaml`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// How long a node may miss Lease renewals before it is unreachable.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// The range each node's podCIDR is taken from.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// The CA certificate (PEM) that signs approved certificate requests
    /// (e.g. `<data-dir>/tls/ca.crt`).
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The CA's key (e.g. `<data-dir>/tls/ca.key`).
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// How often each HorizontalPodAutoscaler is reconciled.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How long a scale-down waits for the highest recommendation in it,
    /// unless an autoscaler's behavior says otherwise.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
}

#[derive(clap::Args)]
struct SchedulerArgs {
    /// A kubeconfig for the API server (e.g. `<data-dir>/kubeconfig.yaml`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Score every feasible node rather than upstream's adaptive share.
    #[arg(long)]
    score_all_nodes: bool,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The API server, e.g. https://127.0.0.1:6443 (with a node token).
    #[arg(
        long,
        required_unless_present = "kubeconfig",
        conflicts_with = "kubeconfig"
    )]
    server: Option<String>,
    /// A file holding the node token (the server's `<data-dir>/node-token`):
    /// a bootstrap credential the agent trades for its own certificate.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// The node token itself.
    #[arg(long)]
    token: Option<String>,
    /// A kubeconfig to use as it is instead of joining with a token; what
    /// simulated nodes need (a credential that may act for all of them,
    /// e.g. the server's `kubeconfig.yaml`).
    #[arg(long, conflicts_with_all = ["token", "token_file"])]
    kubeconfig: Option<PathBuf>,
    /// Register this many simulated nodes; no containers run.
    #[arg(long, requires = "kubeconfig")]
    simulate: Option<usize>,
    /// Where the agent keeps its containerd, pod logs and state.
    #[arg(long, default_value = "/var/lib/skiff/agent")]
    data_dir: PathBuf,
    /// This node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// This node's InternalIP.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: String,
    /// Use this CRI socket instead of starting the agent's own containerd.
    #[arg(long)]
    container_runtime_endpoint: Option<PathBuf>,
    /// The port of the agent's endpoint (logs, exec); 0 picks one.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// A registry (`host:port`) to pull from over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// The sandbox image (default: Skiff's own, made by the agent itself).
    #[arg(long, default_value = skiff_kubelet::pause_image::DEFAULT)]
    pause_image: String,
    #[command(flatten)]
    upkeep: NodeUpkeep,
    /// The cluster's pod range (routed nowhere outside the nodes).
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: skiff_core::cidr::Cidr,
    /// The cluster's Service range (routed nowhere outside the proxy).
    #[arg(long, default_value = "10.43.0.0/16")]
    service_cidr: skiff_core::cidr::Cidr,
    /// The cluster DNS address pods are given (default: the service
    /// range's tenth address).
    #[arg(long)]
    cluster_dns: Option<String>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Simulated node names are `<prefix>-00000`, `<prefix>-00001`, …
    #[arg(long, default_value = "sim")]
    node_prefix: String,
    /// Each simulated node's cpu.
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Each simulated node's memory.
    #[arg(long, default_value = "16Gi")]
    memory: String,
    /// Each simulated node's pod slots.
    #[arg(long, default_value = "110")]
    max_pods: String,
    /// A label for every simulated node, `key=value` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// A taint for every simulated node, `key=value:Effect` (repeatable).
    #[arg(long = "taint", value_parser = parse_taint)]
    taints: Vec<(String, String, String)>,
    /// Spread the nodes over this many `topology.kubernetes.io/zone`s.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// How often the nodes renew their Leases.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat_interval: std::time::Duration,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.into(), v.into()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn parse_taint(s: &str) -> Result<(String, String, String), String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not key=value:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "{effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    Ok((k.into(), v.into(), effect.into()))
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let upkeep = args.upkeep.read()?;
    let node_name = args.node_name.clone().unwrap_or_else(host_name);
    let (client, ca_pem) = match (&args.kubeconfig, &args.token, &args.token_file) {
        (Some(path), _, _) => skiff_kubelet::join::from_kubeconfig(path).await?,
        (None, token, file) => {
            let token = match (token, file) {
                (Some(t), _) => t.clone(),
                (None, Some(path)) => skiff_kubelet::join::read_token(path)?,
                (None, None) => anyhow::bail!("give --token-file, --token or --kubeconfig"),
            };
            let server = args.server.as_deref().unwrap_or_default();
            skiff_kubelet::join::client(server, &token, &args.data_dir, &node_name).await?
        }
    };
    let Some(count) = args.simulate else {
        let config = skiff_kubelet::agent::Config {
            node_name,
            node_ip: args.node_ip,
            data_dir: args.data_dir,
            runtime_endpoint: args.container_runtime_endpoint,
            bridge: "skiff0".into(),
            ca_pem,
            port: args.kubelet_port,
            insecure_registries: args.insecure_registries,
            dns: Some(skiff_kubelet::agent::Dns {
                server: args
                    .cluster_dns
                    .unwrap_or_else(|| dns_address(&args.service_cidr)),
                domain: args.cluster_domain,
            }),
            pause_image: args.pause_image,
            metrics: Default::default(),
            upkeep,
        };
        let proxy = skiff_proxy::Config {
            node_name: config.node_name.clone(),
            unreachable: vec![args.cluster_cidr.to_string(), args.service_cidr.to_string()],
        };
        tokio::spawn(skiff_proxy::run(client.clone(), proxy));
        tokio::select! {
            r = skiff_kubelet::agent::run(client, config) => r?,
            _ = shutdown() => tracing::info!("shutting down"),
        }
        return Ok(());
    };
    let config = skiff_kubelet::simulated::Config {
        count,
        prefix: args.node_prefix,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.max_pods,
        labels: args.labels,
        taints: args.taints,
        zones: args.zones,
        heartbeat: args.heartbeat_interval,
    };
    tokio::select! {
        r = skiff_kubelet::simulated::run(client, config) => r?,
        _ = shutdown() => tracing::info!("shutting down"),
    }
    Ok(())
}

/// The cluster CA (PEM) a kubeconfig trusts, for `kube-root-ca.crt`.
fn cluster_ca(kubeconfig: &std::path::Path) -> Option<String> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).ok()?;
    let cluster = config.clusters.first()?.cluster.as_ref()?;
    let data = cluster.certificate_authority_data.as_ref()?;
    let pem = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).ok()?;
    String::from_utf8(pem).ok()
}

/// The `kube-dns` Service's address: the service range's tenth.
fn dns_address(range: &skiff_core::cidr::Cidr) -> String {
    range.nth(10).map(|ip| ip.to_string()).unwrap_or_default()
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "skiff".into())
}

/// A client configuration for the server's own API, as the in-process
/// components use, sending `component`'s `User-Agent`.
async fn local_config(
    kubeconfig: &std::path::Path,
    component: &str,
) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    skiff_runtime::user_agent::set(&mut config, component);
    Ok(config)
}

/// A client for a component inside the server's process: the same
/// requests, served in memory as the component's user.
fn in_process(
    server: &skiff_apiserver::Server,
    component: skiff_apiserver::Component,
) -> kube::Client {
    let loopback = server.loopback(component);
    skiff_runtime::loopback::client(move || loopback.connect(), component.agent())
}

/// A client for a component outside the server's core, with its own
/// credentials and name.
async fn component_client(
    server: &skiff_apiserver::Server,
    component: skiff_apiserver::Component,
) -> anyhow::Result<kube::Client> {
    local_client(&server.kubeconfig_for(component)?, component.agent()).await
}

async fn local_client(
    kubeconfig: &std::path::Path,
    component: &str,
) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(
        local_config(kubeconfig, component).await?,
    )?)
}

impl ServerArgs {
    fn config(&self) -> skiff_apiserver::Config {
        let mut config = skiff_apiserver::Config::new(&self.data_dir);
        config.bind_address = self.bind_address;
        config.https_port = self.https_port;
        config.datastore_endpoint = self.datastore_endpoint.clone();
        config.service_cidr = self.service_cidr;
        config.authorization = self.authorization_mode;
        config.audit_log = self.audit_log_path.clone();
        config.audit_policy = self.audit_policy_file.clone();
        config.compaction_interval = Some(self.compaction_interval);
        config.event_ttl = Some(self.event_ttl);
        config.watch_cache.bytes = self.watch_cache_size_mb << 20;
        config.encryption_config = self.encryption_provider_config.clone();
        config.max_requests_inflight = self.max_requests_inflight;
        config.max_mutating_requests_inflight = self.max_mutating_requests_inflight;
        config.idle_connection_timeout = self.idle_connection_timeout;
        config.metrics_resolution = self.metrics_resolution;
        config
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The command runs on one of the runtime's workers, not on this
    // thread: each task it woke from here would cost a thread switch (the
    // simulated nodes' dispatcher wakes a pod's worker at every event).
    runtime.block_on(async { tokio::spawn(run(cli.command)).await? })
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(args) => {
            // Read before anything starts: a wrong setting stops the
            // server at once.
            let upkeep = args.upkeep.read()?;
            // The control plane's components share one registry,
            // served at the API server's /metrics.
            let metrics = skiff_core::metrics::Registry::default();
            let mut config = args.config();
            config.metrics = metrics.clone();
            let server = skiff_apiserver::start(config).await?;
            let mut dns_task = None;
            use skiff_apiserver::Component;
            if !args.disable_scheduler {
                let client = in_process(&server, Component::Scheduler);
                let config = skiff_scheduler::Config {
                    score_all_nodes: args.scheduler_score_all_nodes,
                    metrics: metrics.clone(),
                    ..Default::default()
                };
                tokio::spawn(skiff_scheduler::run(client, config));
            }
            if !args.disable_controller_manager {
                let kubeconfig = server.kubeconfig_for(Component::ControllerManager)?;
                let kube = local_config(&kubeconfig, Component::ControllerManager.agent()).await?;
                let config = skiff_controllers::manager::Config {
                    node_monitor_grace: args.node_monitor_grace_period,
                    cluster_cidr: args.cluster_cidr.clone(),
                    root_ca: cluster_ca(&server.kubeconfig),
                    signing_ca: Some(server.signing_ca()),
                    hpa_sync_period: args.horizontal_pod_autoscaler_sync_period,
                    hpa_downscale_stabilization: args
                        .horizontal_pod_autoscaler_downscale_stabilization,
                    metrics: metrics.clone(),
                    ..Default::default()
                };
                let client = in_process(&server, Component::ControllerManager);
                tokio::spawn(skiff_controllers::manager::run(client, kube, config));
            }
            if !args.disable_dns {
                let client = component_client(&server, Component::Dns).await?;
                let admin = local_client(&server.kubeconfig, Component::Dns.agent()).await?;
                let addr = std::net::SocketAddr::new(args.bind_address, args.dns_port);
                let resolvers = match args.upstream_resolv_conf.as_str() {
                    "" => String::new(),
                    path => std::fs::read_to_string(path).unwrap_or_else(|e| {
                        tracing::warn!(%path, error = %e, "no resolvers for names outside the cluster");
                        String::new()
                    }),
                };
                let config = skiff_dns::Config {
                    addr,
                    domain: args.cluster_domain.clone(),
                    upstream: skiff_dns::upstream::Upstream::from_resolv_conf(&resolvers, addr),
                };
                match skiff_dns::start(client.clone(), config).await {
                    Ok((serving, task)) => {
                        tracing::info!(%serving, "cluster DNS ready");
                        let ip = dns_address(&args.service_cidr);
                        // Not fatal: a refused or failed write is tried
                        // again, and said why.
                        tokio::spawn(async move {
                            skiff_runtime::retry::until_ok(
                                "publishing the kube-dns Service",
                                std::time::Duration::from_millis(200),
                                std::time::Duration::from_secs(10),
                                || skiff_dns::publish(&admin, &ip, serving),
                            )
                            .await
                        });
                        dns_task = Some(task);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the cluster DNS server did not start")
                    }
                }
            }
            let mut ingress_task = None;
            if !args.disable_ingress {
                let client = component_client(&server, Component::Ingress).await?;
                let config = skiff_ingress::Config {
                    http: std::net::SocketAddr::new(args.bind_address, args.ingress_port),
                    https: std::net::SocketAddr::new(args.bind_address, args.ingress_https_port),
                };
                match skiff_ingress::start(client, config).await {
                    Ok((http, https, task)) => {
                        tracing::info!(%http, %https, "ingress controller ready");
                        ingress_task = Some(task);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the ingress controller did not start")
                    }
                }
            }
            if !args.disable_agent {
                let node_name = host_name();
                let client = local_client(&server.node_kubeconfig(&node_name)?, "kubelet").await?;
                let proxy_client = component_client(&server, Component::Proxy).await?;
                let config = skiff_kubelet::agent::Config {
                    node_name,
                    node_ip: args.bind_address.to_string(),
                    data_dir: args.data_dir.join("agent"),
                    runtime_endpoint: None,
                    bridge: "skiff0".into(),
                    ca_pem: std::fs::read_to_string(args.data_dir.join("tls/ca.crt"))?,
                    port: args.kubelet_port,
                    insecure_registries: args.insecure_registries.clone(),
                    dns: (!args.disable_dns).then(|| skiff_kubelet::agent::Dns {
                        server: dns_address(&args.service_cidr),
                        domain: args.cluster_domain.clone(),
                    }),
                    pause_image: args.pause_image.clone(),
                    metrics: Default::default(),
                    upkeep,
                };
                let proxy = skiff_proxy::Config {
                    node_name: config.node_name.clone(),
                    unreachable: vec![args.cluster_cidr.clone(), args.service_cidr.to_string()],
                };
                tokio::spawn(skiff_proxy::run(proxy_client, proxy));
                tokio::spawn(async move {
                    if let Err(e) = skiff_kubelet::agent::run(client, config).await {
                        tracing::error!(error = %e, "node agent stopped");
                    }
                });
            }
            tokio::select! {
                _ = server.wait() => {}
                _ = shutdown() => tracing::info!("shutting down"),
            }
            for task in [dns_task, ingress_task].into_iter().flatten() {
                task.abort();
            }
            Ok(())
        }
        Command::Agent(args) => agent(*args).await,
        Command::Image { what } => image::run(what).await,
        Command::Defragment { datastore_endpoint } => {
            let etcd = skiff_store::Etcd::connect(&datastore_endpoint).await?;
            let (before, after) = etcd.defragment().await?;
            let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
            println!(
                "{datastore_endpoint}: {:.1} MiB → {:.1} MiB",
                mib(before),
                mib(after)
            );
            Ok(())
        }
        Command::Scheduler(args) => {
            let client = local_client(
                &args.kubeconfig,
                skiff_apiserver::Component::Scheduler.agent(),
            )
            .await?;
            let config = skiff_scheduler::Config {
                score_all_nodes: args.score_all_nodes,
                ..Default::default()
            };
            tokio::select! {
                _ = skiff_scheduler::run(client, config) => {}
                _ = shutdown() => tracing::info!("shutting down"),
            }
            Ok(())
        }
        Command::ControllerManager(args) => {
            let kube = local_config(
                &args.kubeconfig,
                skiff_apiserver::Component::ControllerManager.agent(),
            )
            .await?;
            let signing_ca = match (
                &args.cluster_signing_cert_file,
                &args.cluster_signing_key_file,
            ) {
                (Some(cert), Some(key)) => Some((
                    std::fs::read_to_string(cert)?,
                    std::fs::read_to_string(key)?,
                )),
                _ => None,
            };
            let config = skiff_controllers::manager::Config {
                node_monitor_grace: args.node_monitor_grace_period,
                cluster_cidr: args.cluster_cidr,
                root_ca: cluster_ca(&args.kubeconfig),
                signing_ca,
                hpa_sync_period: args.horizontal_pod_autoscaler_sync_period,
                hpa_downscale_stabilization: args.horizontal_pod_autoscaler_downscale_stabilization,
                ..Default::default()
            };
            let client = kube::Client::try_from(kube.clone())?;
            tokio::select! {
                _ = skiff_controllers::manager::run(client, kube, config) => {}
                _ = shutdown() => tracing::info!("shutting down"),
            }
            Ok(())
        }
    }
}
