//! The controller manager: shared informers, every controller's queue and
//! workers, all behind one leader election.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    ReplicationController, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::watcher;
use kube::Client;

use crate::certificates;
use crate::credentials::Credentials;
use crate::cronjob::CronJobController;
use crate::csr_cleaner::CsrCleaner;
use crate::daemonset::DaemonSetController;
use crate::deployment::DeploymentController;
use crate::endpoints::EndpointsController;
use crate::gc::GarbageCollector;
use crate::hpa::{HpaController, KubeTargets};
use crate::ipam::IpamController;
use crate::job::JobController;
use crate::mirroring::MirroringController;
use crate::namespace::NamespaceController;
use crate::node_lifecycle::NodeLifecycleController;
use crate::podgc::PodGcController;
use crate::replicaset::ReplicaSetController;
use crate::resourcequota::ResourceQuotaController;
use crate::root_ca::RootCaPublisher;
use crate::serviceaccount::ServiceAccountController;
use crate::statefulset::StatefulSetController;
use crate::volume;
use skiff_runtime::api::KubeCluster;
use skiff_runtime::cache::{Informer, Object};
use skiff_runtime::controller::{self, Reconcile};
use skiff_runtime::leader;
use skiff_runtime::lean::{ForControllers, Leaves, ManagedFields};
use skiff_runtime::metrics::WorkQueueMetrics;
use skiff_runtime::queue::Queue;

/// Settings of the controller manager.
#[derive(Clone, Debug)]
pub struct Config {
    /// Workers per controller.
    pub workers: usize,
    /// How long a node may go without renewing its Lease before it is
    /// considered unreachable.
    pub node_monitor_grace: Duration,
    /// The range node podCIDRs come from.
    pub cluster_cidr: String,
    /// The cluster CA (PEM) published in every namespace as
    /// `kube-root-ca.crt`; none publishes nothing.
    pub root_ca: Option<String>,
    /// The cluster CA's certificate and key (PEM), to sign certificate
    /// requests; without it none are signed.
    pub signing_ca: Option<(String, String)>,
    pub election: leader::Timing,
    /// How often each HorizontalPodAutoscaler is reconciled.
    pub hpa_sync_period: Duration,
    /// The scale-down stabilization of autoscalers that set none.
    pub hpa_downscale_stabilization: Duration,
    /// The process's Prometheus registry, which the work queues add to.
    pub metrics: skiff_core::metrics::Registry,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            workers: 5,
            node_monitor_grace: Duration::from_secs(40),
            cluster_cidr: "10.42.0.0/16".into(),
            root_ca: None,
            signing_ca: None,
            election: leader::Timing::default(),
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            metrics: skiff_core::metrics::Registry::default(),
        }
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Informers to start, and the caches to wait for before workers start.
struct Wiring {
    watches: Vec<Task>,
    synced: Vec<Task>,
    workers: Vec<Task>,
    metrics: WorkQueueMetrics,
}

impl Wiring {
    fn watch<K>(&mut self, informer: Informer<K>, api: Api<K>)
    where
        K: Object,
    {
        self.watch_without::<K, ManagedFields>(informer, api);
    }

    /// As [`Wiring::watch`], reading objects without what `L` leaves out.
    fn watch_without<K, L>(&mut self, informer: Informer<K>, api: Api<K>)
    where
        K: Object,
        L: Leaves,
    {
        let cache = informer.cache();
        self.synced
            .push(Box::pin(async move { cache.wait_synced().await }));
        self.watches.push(Box::pin(
            informer.run_without::<L>(api, watcher::Config::default()),
        ));
    }

    /// As [`Wiring::watch`], of the objects `config` selects.
    fn watch_some<K>(&mut self, informer: Informer<K>, api: Api<K>, config: watcher::Config)
    where
        K: Object,
    {
        let cache = informer.cache();
        self.synced
            .push(Box::pin(async move { cache.wait_synced().await }));
        self.watches.push(Box::pin(informer.run(api, config)));
    }

    fn workers<R: Reconcile>(&mut self, r: R, queue: Arc<Queue>, n: usize) {
        queue.instrument(self.metrics.of(r.name()));
        self.workers
            .push(Box::pin(controller::run(Arc::new(r), queue, n)));
    }
}

/// Each loop's service account (and `system:controller:` role), as
/// upstream names them; loops Skiff joins share one (the volume
/// controllers, the node lifecycle and its address allocation, the
/// Endpoints and EndpointSlice controllers).
const IDENTITIES: &[&str] = &[
    "replicaset-controller",
    "replication-controller",
    "deployment-controller",
    "statefulset-controller",
    "daemon-set-controller",
    "job-controller",
    "cronjob-controller",
    "namespace-controller",
    "service-account-controller",
    "disruption-controller",
    "resourcequota-controller",
    "root-ca-cert-publisher",
    "certificate-controller",
    "node-controller",
    "endpoint-controller",
    "endpointslicemirroring-controller",
    "persistent-volume-binder",
    "ephemeral-volume-controller",
    "horizontal-pod-autoscaler",
    "pod-garbage-collector",
    "generic-garbage-collector",
];

/// The loops' clients, each with its own identity.
struct Writers(HashMap<&'static str, Client>);

impl Writers {
    async fn new(credentials: &Credentials) -> Self {
        let mut clients = HashMap::new();
        for name in IDENTITIES {
            clients.insert(*name, credentials.client(name).await);
        }
        Self(clients)
    }

    fn client(&self, name: &str) -> Client {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("{name} is one of IDENTITIES"))
            .clone()
    }

    fn cluster(&self, name: &str) -> Arc<dyn skiff_runtime::api::Cluster> {
        Arc::new(KubeCluster::new(self.client(name)))
    }
}

/// Runs every controller while this process holds the leader lease: the
/// informers read through `client` (the manager's identity), each loop
/// writes as its own service account, reaching the server as `kube` says.
pub async fn run(client: Client, kube: kube::Config, config: Config) {
    let writers = Arc::new(Writers::new(&Credentials::new(client.clone(), &kube)).await);
    let identity = leader::identity("controller-manager");
    let (mut leading, _election) = leader::elect(
        client.clone(),
        "kube-system",
        "kube-controller-manager",
        identity,
        config.election.clone(),
    );
    let metrics = WorkQueueMetrics::new(&config.metrics);
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("controller manager leading");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(run_all(
            client.clone(),
            writers.clone(),
            config.clone(),
            metrics.clone(),
        ));
        let _ = leading.wait_for(|l| !*l).await;
        tracing::warn!("controller manager lost its lease; stopping controllers");
        tasks.abort_all();
    }
}

async fn run_all(client: Client, writers: Arc<Writers>, config: Config, metrics: WorkQueueMetrics) {
    let cluster = |name: &str| writers.cluster(name);
    let n = config.workers;
    let mut pods = Informer::<Pod>::trimmed(crate::pods::trim);
    let mut nodes = Informer::<Node>::default();
    let mut leases = Informer::<Lease>::default();
    let mut namespaces = Informer::<Namespace>::default();
    let mut accounts = Informer::<ServiceAccount>::default();
    let mut services = Informer::<Service>::default();
    let mut endpoints = Informer::<Endpoints>::default();
    let mut slices = Informer::<EndpointSlice>::default();
    let mut sets = Informer::<ReplicaSet>::default();
    let mut rcs = Informer::<ReplicationController>::default();
    let mut deployments = Informer::<Deployment>::default();
    let mut statefulsets = Informer::<StatefulSet>::default();
    let mut daemonsets = Informer::<DaemonSet>::default();
    let mut revisions = Informer::<ControllerRevision>::default();
    let mut claims = Informer::<PersistentVolumeClaim>::default();
    let mut volumes = Informer::<PersistentVolume>::default();
    let mut classes = Informer::<StorageClass>::default();
    let mut jobs = Informer::<Job>::default();
    let mut cronjobs = Informer::<CronJob>::default();
    let mut w = Wiring {
        watches: Vec::new(),
        synced: Vec::new(),
        workers: Vec::new(),
        metrics,
    };

    let q = Queue::new();
    let c = ReplicaSetController::new(
        &mut sets,
        &mut pods,
        cluster("replicaset-controller"),
        q.clone(),
    );
    w.workers(c, q, n);
    let q = Queue::new();
    let c = ReplicaSetController::new(
        &mut rcs,
        &mut pods,
        cluster("replication-controller"),
        q.clone(),
    );
    w.workers(c, q, n);
    let q = Queue::new();
    let c = DeploymentController::new(
        &mut deployments,
        &mut sets,
        &pods,
        cluster("deployment-controller"),
        q.clone(),
    );
    w.workers(c, q, n);
    let q = Queue::new();
    let c = StatefulSetController::new(
        &mut statefulsets,
        &mut pods,
        &mut revisions,
        &claims,
        cluster("statefulset-controller"),
        q.clone(),
    );
    w.workers(c, q, n);
    let q = Queue::new();
    let c = DaemonSetController::new(
        &mut daemonsets,
        &mut pods,
        &mut nodes,
        &mut revisions,
        cluster("daemon-set-controller"),
        q.clone(),
    );
    w.workers(c, q, n);
    let q = Queue::new();
    let c = JobController::new(&mut jobs, &mut pods, cluster("job-controller"), q.clone());
    w.workers(c, q, n);
    let q = Queue::new();
    let c = CronJobController::new(
        &mut cronjobs,
        &mut jobs,
        cluster("cronjob-controller"),
        q.clone(),
    );
    w.workers(c, q, 1);
    let q = Queue::new();
    let c = NamespaceController::new(&mut namespaces, cluster("namespace-controller"), q.clone());
    w.workers(c, q, n);
    let q = Queue::new();
    let c = ServiceAccountController::new(
        &mut namespaces,
        &mut accounts,
        cluster("service-account-controller"),
        q.clone(),
    );
    w.workers(c, q, 1);
    let mut budgets = Informer::<PodDisruptionBudget>::default();
    // Only which resources a definition serves is read: not its schemas.
    let definitions = Informer::<CustomResourceDefinition>::trimmed(|d| {
        for v in &mut d.spec.versions {
            v.schema = None;
        }
    });
    let q = Queue::new();
    let owners = crate::disruption::Owners {
        sets: sets.cache(),
        rcs: rcs.cache(),
        deployments: deployments.cache(),
        statefulsets: statefulsets.cache(),
        definitions: definitions.cache(),
    };
    let c = crate::disruption::DisruptionController::new(
        &mut budgets,
        &mut pods,
        owners,
        cluster("disruption-controller"),
        q.clone(),
    );
    w.workers(c, q, 1);
    let mut quotas = Informer::<ResourceQuota>::default();
    let q = Queue::new();
    let c = ResourceQuotaController::new(
        &mut quotas,
        &mut pods,
        cluster("resourcequota-controller"),
        q.clone(),
    );
    w.workers(c, q, 1);
    let mut root_maps = Informer::<ConfigMap>::default();
    if let Some(ca) = config.root_ca.clone() {
        let q = Queue::new();
        let c = RootCaPublisher::new(
            &mut namespaces,
            &mut root_maps,
            cluster("root-ca-cert-publisher"),
            q.clone(),
            ca,
        );
        w.workers(c, q, 1);
    }
    let mut requests = Informer::<CertificateSigningRequest>::default();
    let q = Queue::new();
    let c =
        certificates::Approver::new(&mut requests, cluster("certificate-controller"), q.clone());
    w.workers(c, q, 1);
    let q = Queue::new();
    let c = CsrCleaner::new(&mut requests, cluster("certificate-controller"), q.clone());
    w.workers(c, q, 1);
    if let Some((cert, key)) = &config.signing_ca {
        match skiff_core::certs::Authority::new(cert, key) {
            Ok(authority) => {
                let q = Queue::new();
                let c = certificates::Signer::new(
                    &mut requests,
                    cluster("certificate-controller"),
                    q.clone(),
                    authority,
                );
                w.workers(c, q, 1);
            }
            Err(e) => {
                tracing::error!(error = %e, "the signing CA is unusable; no certificates are signed")
            }
        }
    }
    let q = Queue::new();
    let c = NodeLifecycleController::new(
        &mut nodes,
        &mut leases,
        &mut pods,
        cluster("node-controller"),
        q.clone(),
        config.node_monitor_grace,
    );
    w.workers(c, q, n);
    let q = Queue::new();
    let c = EndpointsController::new(
        &mut services,
        &mut pods,
        &mut nodes,
        &endpoints,
        &mut slices,
        cluster("endpoint-controller"),
        q.clone(),
    );
    w.workers(c, q, n);
    let q = Queue::new();
    let c = MirroringController::new(
        &mut services,
        &mut endpoints,
        &mut slices,
        cluster("endpointslicemirroring-controller"),
        q.clone(),
    );
    w.workers(c, q, n);
    let (claim_queue, volume_queue) = (Queue::new(), Queue::new());
    let informers = volume::Informers {
        claims: &mut claims,
        volumes: &mut volumes,
        classes: &mut classes,
        nodes: &nodes,
        pods: &mut pods,
    };
    let shared = volume::Shared::new(
        informers,
        cluster("persistent-volume-binder"),
        claim_queue.clone(),
        volume_queue.clone(),
    );
    let c = volume::ClaimController {
        shared: shared.clone(),
    };
    w.workers(c, claim_queue, n);
    w.workers(volume::VolumeController { shared }, volume_queue, n);
    let q = Queue::new();
    let c = volume::EphemeralController::new(
        &mut pods,
        &mut claims,
        cluster("ephemeral-volume-controller"),
        q.clone(),
    );
    w.workers(c, q, n);
    let mut hpas = Informer::<HorizontalPodAutoscaler>::default();
    let q = Queue::new();
    let c = HpaController::new(
        &mut hpas,
        &pods,
        cluster("horizontal-pod-autoscaler"),
        Arc::new(KubeTargets::new(
            writers.client("horizontal-pod-autoscaler"),
        )),
        q.clone(),
        (config.hpa_sync_period, config.hpa_downscale_stabilization),
    );
    w.workers(c, q, n);
    let q = Queue::new();
    let c = PodGcController::new(
        &mut pods,
        &mut nodes,
        cluster("pod-garbage-collector"),
        q.clone(),
    );
    w.workers(c, q, 1);
    match config.cluster_cidr.parse() {
        Ok(range) => {
            let q = Queue::new();
            let c = IpamController::new(&mut nodes, cluster("node-controller"), q.clone(), range);
            w.workers(c, q, 1);
        }
        Err(e) => tracing::error!(error = %e, "--cluster-cidr is invalid; nodes get no podCIDR"),
    }
    let q = Queue::new();
    let gc = GarbageCollector::new(cluster("generic-garbage-collector"), q.clone());
    gc.watch(&mut pods);
    gc.watch(&mut sets);
    gc.watch(&mut rcs);
    gc.watch(&mut deployments);
    gc.watch(&mut slices);
    gc.watch(&mut statefulsets);
    gc.watch(&mut daemonsets);
    gc.watch(&mut revisions);
    gc.watch(&mut claims);
    gc.watch(&mut jobs);
    gc.watch(&mut cronjobs);
    gc.watch(&mut services);
    w.watches.extend(gc.follow_the_rest(&client));
    w.workers(gc, q, n);

    w.watch_without::<_, ForControllers>(pods, Api::all(client.clone()));
    w.watch(nodes, Api::all(client.clone()));
    w.watch(leases, Api::namespaced(client.clone(), "kube-node-lease"));
    w.watch(namespaces, Api::all(client.clone()));
    w.watch(accounts, Api::all(client.clone()));
    w.watch(quotas, Api::all(client.clone()));
    w.watch(budgets, Api::all(client.clone()));
    w.watch(definitions, Api::all(client.clone()));
    if config.root_ca.is_some() {
        let only =
            watcher::Config::default().fields(&format!("metadata.name={}", crate::root_ca::NAME));
        w.watch_some(root_maps, Api::all(client.clone()), only);
    }
    w.watch(requests, Api::all(client.clone()));
    w.watch(services, Api::all(client.clone()));
    w.watch(endpoints, Api::all(client.clone()));
    w.watch(slices, Api::all(client.clone()));
    w.watch(sets, Api::all(client.clone()));
    w.watch(rcs, Api::all(client.clone()));
    w.watch(deployments, Api::all(client.clone()));
    w.watch(statefulsets, Api::all(client.clone()));
    w.watch(daemonsets, Api::all(client.clone()));
    w.watch(revisions, Api::all(client.clone()));
    w.watch(claims, Api::all(client.clone()));
    w.watch(volumes, Api::all(client.clone()));
    w.watch(classes, Api::all(client.clone()));
    w.watch(jobs, Api::all(client.clone()));
    w.watch(cronjobs, Api::all(client.clone()));
    w.watch(hpas, Api::all(client.clone()));

    let mut tasks = tokio::task::JoinSet::new();
    for t in w.watches {
        tasks.spawn(t);
    }
    futures::future::join_all(w.synced).await;
    tracing::info!("controller caches synced");
    for t in w.workers {
        tasks.spawn(t);
    }
    while tasks.join_next().await.is_some() {}
}
