//! The Kubernetes API server: the cluster's one entry point.
//!
//! HTTPS (rustls) → authentication → REST handlers over the [`Store`]
//! (behind its watch cache) → JSON or Table replies, watch streams,
//! discovery and OpenAPI. Only this crate touches the store.

mod admission;
mod audit;
mod auth;
mod authz;
mod bootstrap;
mod compaction;
mod connect;
mod crds;
mod discovery;
mod encryption;
mod event_ttl;
mod handlers;
mod impersonation;
mod inflight;
mod loopback;
mod metrics;
mod node_proxy;
mod openapi;
mod pki;
mod request;
mod resource_metrics;
mod response;
mod serve;
mod services;
mod storage;
mod tokens;
mod watch;

pub use loopback::Loopback;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use skiff_store::{Embedded, Etcd, Store, WatchCache};

/// How to start a server.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub https_port: u16,
    /// etcd endpoints; the embedded store under `data_dir` when absent.
    pub datastore_endpoint: Option<String>,
    /// How much history the watch cache keeps for resuming watchers.
    pub watch_cache: skiff_store::HistoryLimits,
    /// Where Service ClusterIPs come from; the first is the `kubernetes`
    /// Service's.
    pub service_cidr: skiff_core::cidr::Cidr,
    pub authorization: AuthorizationMode,
    /// Where audit events go, as JSON lines; no auditing when absent.
    pub audit_log: Option<PathBuf>,
    /// The audit policy; every request at Metadata when absent.
    pub audit_policy: Option<PathBuf>,
    /// How often the store's history is compacted; never when absent.
    pub compaction_interval: Option<std::time::Duration>,
    /// How long an event lives after its last write; for ever when absent.
    pub event_ttl: Option<std::time::Duration>,
    /// An EncryptionConfiguration: which resources are encrypted at rest.
    pub encryption_config: Option<PathBuf>,
    /// Non-mutating requests in flight at most (0: no cap); beyond, 429.
    pub max_requests_inflight: usize,
    /// Mutating requests in flight at most (0: no cap); beyond, 429.
    pub max_mutating_requests_inflight: usize,
    /// How long a connection may sit with no request in flight before it
    /// is closed.
    pub idle_connection_timeout: std::time::Duration,
    /// How often the agents' resource metrics are scraped (the window
    /// of `metrics.k8s.io`); never when zero.
    pub metrics_resolution: std::time::Duration,
    /// The process's Prometheus registry, which the server adds its
    /// metrics to and serves at `/metrics`.
    pub metrics: skiff_core::metrics::Registry,
}

/// How requests are authorized (`--authorization-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// The Node authorizer (what each node may read and write), then
    /// roles and bindings, as upstream's default.
    #[default]
    NodeRbac,
    /// Roles and bindings only: nodes get what RBAC grants them.
    Rbac,
    /// Everything any authenticated user asks (benchmarks only).
    AlwaysAllow,
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "Node,RBAC" => Ok(Self::NodeRbac),
            "RBAC" => Ok(Self::Rbac),
            "AlwaysAllow" => Ok(Self::AlwaysAllow),
            other => Err(format!("{other:?} is not Node,RBAC, RBAC or AlwaysAllow")),
        }
    }
}

/// The control plane's own components, each acting as its upstream user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Scheduler,
    ControllerManager,
    Proxy,
    Dns,
    Ingress,
}

impl Component {
    pub fn user(self) -> &'static str {
        match self {
            Self::Scheduler => "system:kube-scheduler",
            Self::ControllerManager => "system:kube-controller-manager",
            Self::Proxy => "system:kube-proxy",
            Self::Dns => "system:coredns",
            Self::Ingress => "system:skiff-ingress",
        }
    }

    /// The name the component sends as its `User-Agent`, which the server
    /// takes as the field manager of its writes (upstream's names where
    /// upstream has the component).
    pub fn agent(self) -> &'static str {
        match self {
            Self::Scheduler => "kube-scheduler",
            Self::ControllerManager => "kube-controller-manager",
            Self::Proxy => "kube-proxy",
            Self::Dns => "skiff-dns",
            Self::Ingress => "skiff-ingress",
        }
    }
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            bind_address: IpAddr::from([127, 0, 0, 1]),
            https_port: 6443,
            datastore_endpoint: None,
            watch_cache: skiff_store::HistoryLimits::default(),
            service_cidr: "10.43.0.0/16".parse().expect("a valid default range"),
            authorization: AuthorizationMode::default(),
            audit_log: None,
            audit_policy: None,
            compaction_interval: Some(std::time::Duration::from_secs(300)),
            event_ttl: Some(std::time::Duration::from_secs(3600)),
            max_requests_inflight: 400,
            idle_connection_timeout: std::time::Duration::from_secs(90),
            max_mutating_requests_inflight: 200,
            encryption_config: None,
            metrics_resolution: std::time::Duration::from_secs(15),
            metrics: skiff_core::metrics::Registry::default(),
        }
    }
}

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    #[error("store: {0}")]
    Store(#[from] skiff_store::Error),
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("bootstrap: {0}")]
    Bootstrap(skiff_core::ApiError),
    #[error("audit: {0}")]
    Audit(String),
    #[error("encryption: {0}")]
    Encryption(String),
}

/// A running API server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    serving: tokio::task::JoinHandle<()>,
    api: Arc<handlers::Api>,
    creds: pki::Credentials,
    data_dir: PathBuf,
    url: String,
}

impl Server {
    /// A kubeconfig for one of the control plane's components, with a
    /// client certificate for its own user.
    pub fn kubeconfig_for(&self, component: Component) -> Result<PathBuf, Error> {
        self.creds
            .write_component_kubeconfig(&self.data_dir, &self.url, component.user(), &[])
    }

    /// In-process connections for one of the control plane's components,
    /// served as its user (as [`Self::kubeconfig_for`]'s certificate).
    pub fn loopback(&self, component: Component) -> Loopback {
        Loopback::new(self.api.clone(), component.user())
    }

    /// A kubeconfig for the server's own node agent: the node's identity
    /// (`system:node:<name>` in `system:nodes`), as a joining node gets
    /// through the CSR API.
    pub fn node_kubeconfig(&self, node: &str) -> Result<PathBuf, Error> {
        self.creds.write_component_kubeconfig(
            &self.data_dir,
            &self.url,
            &format!("system:node:{node}"),
            &["system:nodes"],
        )
    }

    /// The cluster CA's certificate and key (PEM), for the CSR signer.
    pub fn signing_ca(&self) -> (String, String) {
        (self.creds.ca_pem.clone(), self.creds.ca_key_pem.clone())
    }

    /// Serves until the task is dropped or fails.
    pub async fn wait(self) {
        let _ = self.serving.await;
    }
}

/// Opens the store, makes or loads credentials, creates the built-in
/// namespaces and starts serving. Returns once the port is listening.
pub async fn start(config: Config) -> Result<Server, Error> {
    let dir = &config.data_dir;
    // The data dir holds the CA key and the store: its owner's only.
    let private = |source| Error::Io {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(private)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(private)?;
    }
    let backend: Arc<dyn Store> = match &config.datastore_endpoint {
        Some(endpoints) => Arc::new(Etcd::connect(endpoints).await?),
        None => Arc::new(Embedded::open(dir.join("state.db"))?),
    };
    let backend: Arc<dyn Store> = match &config.encryption_config {
        Some(path) => Arc::new(encryption::Encrypted {
            inner: backend,
            transformers: Arc::new(
                encryption::Transformers::load(path).map_err(Error::Encryption)?,
            ),
        }),
        None => backend,
    };
    let cache = WatchCache::new(backend, config.watch_cache, watch::INDEXES).await?;
    metrics::register_store(&config.metrics, cache.clone());
    let store: Arc<dyn Store> = cache;
    let creds = pki::Credentials::load_or_create(dir, config.bind_address)?;
    let issuer =
        Arc::new(tokens::Issuer::new(&creds.service_account_key).map_err(Error::Certificate)?);
    let host = if config.bind_address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        config.bind_address
    };
    let addr = SocketAddr::new(config.bind_address, config.https_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let url = format!("https://{}", SocketAddr::new(host, addr.port()));
    let kubeconfig = creds.write_kubeconfig(dir, &url)?;
    let rbac = Arc::new(authz::rbac::Rbac::default());
    let graph = Arc::new(authz::node::Graph::default());
    let authorizer: Arc<dyn authz::Authorizer> = match config.authorization {
        AuthorizationMode::NodeRbac => Arc::new(authz::Chain(vec![
            Arc::new(authz::node::NodeAuthorizer::new(graph.clone())),
            rbac.clone(),
        ])),
        AuthorizationMode::Rbac => rbac.clone(),
        AuthorizationMode::AlwaysAllow => Arc::new(authz::AlwaysAllow),
    };
    let mut api = handlers::Api::new(
        store.clone(),
        auth::Chain::standard(
            &creds,
            issuer.clone(),
            storage::Objects {
                store: store.clone(),
            },
        ),
        creds.ca_pem.clone(),
        node_proxy::NodeDialer::new(&creds)?,
        config.service_cidr,
        issuer,
        authorizer,
    );
    if let Some(path) = &config.audit_log {
        let policy = match &config.audit_policy {
            Some(p) => audit::Policy::load(p).map_err(Error::Audit)?,
            None => audit::Policy::metadata_only(),
        };
        api = api.with_audit(policy, audit::Log::open(path).map_err(Error::Audit)?);
    }
    let definitions = crds::Definitions::new(store.clone());
    let api = Arc::new(
        api.with_limits(inflight::Limits::new(
            config.max_requests_inflight,
            config.max_mutating_requests_inflight,
        ))
        .with_definitions(definitions.clone())
        .with_metrics(config.metrics.clone()),
    );
    bootstrap::run(&api, SocketAddr::new(host, addr.port()))
        .await
        .map_err(Error::Bootstrap)?;
    if config.authorization != AuthorizationMode::AlwaysAllow {
        let revision = rbac.load(store.as_ref()).await?;
        tokio::spawn(rbac.follow(store.clone(), revision));
    }
    if config.authorization == AuthorizationMode::NodeRbac {
        let revision = graph.load(store.as_ref()).await?;
        tokio::spawn(graph.follow(store.clone(), revision));
    }
    let revision = definitions.reload().await?;
    tokio::spawn(definitions.follow(revision));
    if !config.metrics_resolution.is_zero() {
        tokio::spawn(resource_metrics::scrape(
            api.resource_metrics.clone(),
            storage::Objects {
                store: store.clone(),
            },
            Arc::new(node_proxy::NodeDialer::new(&creds)?),
            config.metrics_resolution,
        ));
    }
    if let Some(ttl) = config.event_ttl.filter(|d| !d.is_zero()) {
        tokio::spawn(event_ttl::run(store.clone(), ttl));
    }
    if let Some(every) = config.compaction_interval.filter(|d| !d.is_zero()) {
        tokio::spawn(compaction::run(store, every));
    }
    let tls = serve::tls_config(&creds)?;
    let serving = tokio::spawn(serve::run(
        listener,
        tls,
        api.clone(),
        config.idle_connection_timeout,
    ));
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server ready");
    Ok(Server {
        addr,
        kubeconfig,
        serving,
        api,
        creds,
        data_dir: config.data_dir.clone(),
        url,
    })
}
