//! The controller manager: shared informers, every controller's queue and
//! workers, all behind one leader election.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use kube::Client;

use crate::deployment::DeploymentController;
use crate::leader;
use crate::replicaset::ReplicaSetController;
use crate::runtime::api::KubeCluster;
use crate::runtime::cache::Informer;
use crate::runtime::controller::{self, Reconcile};
use crate::runtime::queue::Queue;

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
    pub election: leader::Timing,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            workers: 5,
            node_monitor_grace: Duration::from_secs(40),
            cluster_cidr: "10.42.0.0/16".into(),
            election: leader::Timing::default(),
        }
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Informers to start, and the caches to wait for before workers start.
#[derive(Default)]
struct Wiring {
    watches: Vec<Task>,
    synced: Vec<Task>,
    workers: Vec<Task>,
}

impl Wiring {
    fn watch<K>(&mut self, informer: Informer<K>, api: Api<K>)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let cache = informer.cache();
        self.synced
            .push(Box::pin(async move { cache.wait_synced().await }));
        self.watches
            .push(Box::pin(informer.run(api, watcher::Config::default())));
    }

    fn workers<R: Reconcile>(&mut self, r: R, queue: Arc<Queue>, n: usize) {
        self.workers
            .push(Box::pin(controller::run(Arc::new(r), queue, n)));
    }
}

/// Runs every controller while this process holds the leader lease.
pub async fn run(client: Client, config: Config) {
    let identity = leader::identity("controller-manager");
    let (mut leading, _election) = leader::elect(
        client.clone(),
        "kube-system",
        "kube-controller-manager",
        identity,
        config.election.clone(),
    );
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("controller manager leading");
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(run_all(client.clone(), config.clone()));
        let _ = leading.wait_for(|l| !*l).await;
        tracing::warn!("controller manager lost its lease; stopping controllers");
        tasks.abort_all();
    }
}

async fn run_all(client: Client, config: Config) {
    let cluster = Arc::new(KubeCluster::new(client.clone()));
    let mut pods = Informer::<Pod>::default();
    let mut sets = Informer::<ReplicaSet>::default();
    let mut deployments = Informer::<Deployment>::default();
    let mut w = Wiring::default();

    let q = Queue::new();
    let rs = ReplicaSetController::new(&mut sets, &mut pods, cluster.clone(), q.clone());
    w.workers(rs, q, config.workers);
    let q = Queue::new();
    let d = DeploymentController::new(
        &mut deployments,
        &mut sets,
        &pods,
        cluster.clone(),
        q.clone(),
    );
    w.workers(d, q, config.workers);

    w.watch(pods, Api::all(client.clone()));
    w.watch(sets, Api::all(client.clone()));
    w.watch(deployments, Api::all(client.clone()));

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
