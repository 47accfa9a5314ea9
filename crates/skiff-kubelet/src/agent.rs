//! The real agent: registers this machine as a node, runs its own
//! containerd (or uses a given CRI endpoint), heartbeats, and runs the pods
//! bound to it. When the runtime cannot start, the node still registers
//! and reports NotReady with the reason.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::Client;
use serde_json::json;

use crate::containerd::{self, Layout};
use crate::cri::Cri;
use crate::local_path::LocalPath;
use crate::node;
use crate::pause_image;
use crate::pods::Worker;
use crate::runtime::ContainerRuntime;
use crate::server::{self, Streams};
use skiff_core::volumes::LOCAL_PATH_ROOT;

#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    pub node_ip: String,
    pub data_dir: PathBuf,
    /// An existing CRI socket instead of the agent's own containerd.
    pub runtime_endpoint: Option<PathBuf>,
    /// The CNI bridge's name.
    pub bridge: String,
    /// The cluster CA, whose client certificates the agent's endpoint
    /// accepts.
    pub ca_pem: String,
    /// The port of the agent's endpoint (logs, exec); 0 picks a free one.
    pub port: u16,
    /// Registries (`host:port`) to pull from over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Cluster DNS for pods with `dnsPolicy: ClusterFirst`.
    pub dns: Option<Dns>,
    /// The sandbox image; the built-in [`pause_image::DEFAULT`] is
    /// imported when missing.
    pub pause_image: String,
    /// The agent's Prometheus registry, served at its endpoint's
    /// `/metrics`.
    pub metrics: skiff_core::metrics::Registry,
    /// How the node keeps itself: status reports, images, logs,
    /// pressure.
    pub upkeep: Upkeep,
}

/// How the node keeps itself over time (upstream's kubelet settings of
/// the same names).
#[derive(Clone, Debug)]
pub struct Upkeep {
    /// How often the node's status is written when nothing in it changed
    /// but heartbeat times (upstream's `nodeStatusReportFrequency`); the
    /// Lease is the heartbeat between.
    pub status_report_every: Duration,
    /// When unused images are removed.
    pub image_gc: crate::image_gc::Policy,
    /// When container logs rotate, and how many files stay.
    pub container_logs: crate::log_rotation::Policy,
    /// When the node is under pressure, and evicts.
    pub eviction: crate::eviction::Config,
    /// How many images the node's status lists (none: all).
    pub max_images: Option<usize>,
    /// What pods are not offered, by resource, in thousandths.
    pub reserved: std::collections::BTreeMap<String, i128>,
}

/// The cluster DNS server and domain pods are given.
#[derive(Clone, Debug)]
pub struct Dns {
    pub server: String,
    pub domain: String,
}

/// How often readiness is checked while the node is not Ready.
const READINESS_POLL: Duration = Duration::from_millis(100);

/// Runs the node until the task is dropped.
pub async fn run(client: Client, config: Config) -> Result<(), kube::Error> {
    let layout = Layout::new(&config.data_dir);
    if let Err(e) = containerd::write_registries(&layout, &config.insecure_registries) {
        tracing::error!(error = %e, "could not write the registries' configuration");
    }
    let mut containerd_child = None;
    let socket = match &config.runtime_endpoint {
        Some(s) => Ok(s.clone()),
        None => match containerd::start(&layout, &config.pause_image).await {
            Ok(child) => {
                containerd_child = Some(child);
                Ok(layout.socket())
            }
            Err(e) => Err(e.to_string()),
        },
    };
    let cri = match &socket {
        Ok(s) => match Cri::connect(s).await {
            Ok(cri) if config.runtime_endpoint.is_none() => Ok(Cri {
                runc_root: layout.runc_root(),
                ..cri
            }),
            connected => connected.map_err(|e| e.to_string()),
        },
        Err(e) => Err(e.clone()),
    };
    if let (Ok(cri), Ok(socket)) = (&cri, &socket) {
        if config.pause_image == pause_image::DEFAULT {
            if let Err(e) =
                pause_image::ensure(cri, socket, &config.pause_image, &config.data_dir).await
            {
                tracing::error!(error = %e, "no pause image: pods cannot start");
            }
        }
    }
    let capacity = node::capacity(&config.data_dir);
    let allocatable =
        node::allocatable(&capacity, &config.upkeep.reserved, &config.upkeep.eviction);
    let arch = std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64");
    let labels = json!({"kubernetes.io/hostname": config.node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch});
    let readiness = match &cri {
        Ok(c) => c.ready().await.map(|_| "containerd".to_owned()),
        Err(e) => Err(e.clone()),
    };
    let offer = (&capacity, &allocatable);
    let status = node::status(&config.node_name, &config.node_ip, offer, &readiness, &[]);
    let pressure = Arc::new(crate::eviction::Pressure::default());
    let mut endpoint = None;
    let usage = Arc::new(crate::usage::Usage::default());
    let metrics = crate::metrics::AgentMetrics::new(&config.metrics);
    let runtime = cri.as_ref().ok().map(|cri| {
        Arc::new(crate::runtime::instrumented::Instrumented {
            inner: Arc::new(cri.clone()),
            metrics: metrics.clone(),
        }) as Arc<dyn ContainerRuntime>
    });
    if let Some(runtime) = &runtime {
        let streams = Arc::new(Streams {
            client: client.clone(),
            usage: usage.clone(),
            metrics: config.metrics.clone(),
            node_name: config.node_name.clone(),
            runtime: runtime.clone(),
        });
        let addr = SocketAddr::new(
            config
                .node_ip
                .parse()
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            config.port,
        );
        match server::start(addr, &config.ca_pem, &config.node_name, streams).await {
            Ok(started) => endpoint = Some(started),
            Err(e) => {
                tracing::error!(error = %e, "the agent's endpoint (logs, exec) did not start")
            }
        }
    }
    let mut status = status;
    if let Some((addr, _)) = &endpoint {
        status["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": addr.port()}});
    }
    let local_path = Arc::new(LocalPath {
        root: config.data_dir.join("local-path"),
        node: config.node_name.clone(),
    });
    let annotations = json!({LOCAL_PATH_ROOT: local_path.root.display().to_string()});
    let me = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": config.node_name, "labels": labels, "annotations": annotations},
        "status": status,
    });
    let registered = node::register(&client, me).await?;
    let node_uid = registered.metadata.uid.clone().unwrap_or_default();
    tracing::info!(node = %config.node_name, runtime = ?readiness, "node registered");

    // Status goes out at each heartbeat, and at once when readiness
    // changes: while NotReady, readiness is checked every
    // [`READINESS_POLL`] (the pod network comes up moments after
    // registration) and a wake-up checks it right away.
    let wake = Arc::new(tokio::sync::Notify::new());
    let heartbeat = {
        let (client, config, cri, wake, pressure) = (
            client.clone(),
            config.clone(),
            cri.clone(),
            wake.clone(),
            pressure.clone(),
        );
        let (capacity, allocatable) = (capacity.clone(), allocatable.clone());
        tokio::spawn(async move {
            let mut lease = node::LeaseKeeper::new(&client, &config.node_name, &node_uid);
            let nodes: Api<Node> = Api::all(client.clone());
            let mut next_beat = tokio::time::Instant::now();
            let mut reported = None;
            let mut last = json!(registered.status);
            let mut sent_at = tokio::time::Instant::now();
            let mut pressed = Vec::new();
            loop {
                let runtime = match &cri {
                    Ok(c) => c.ready().await.map(|_| "containerd".to_owned()),
                    Err(e) => Err(e.clone()),
                };
                let beat = tokio::time::Instant::now() >= next_beat;
                if beat {
                    if let Err(e) = lease.renew().await {
                        tracing::warn!(error = %e, "lease renewal failed");
                    }
                    next_beat = tokio::time::Instant::now() + node::HEARTBEAT;
                }
                let pressure = pressure.now();
                if beat || reported != Some(runtime.is_ok()) || pressure != pressed {
                    // As upstream's kubelet, against the status stored now:
                    // one another component changed (Ready=Unknown after
                    // missed Lease renewals) is written over at once.
                    let stored = nodes.get_status(&config.node_name).await;
                    if let Ok(n) = &stored {
                        last = json!(n.status);
                    }
                    let mut status = node::status(
                        &config.node_name,
                        &config.node_ip,
                        (&capacity, &allocatable),
                        &runtime,
                        &pressure,
                    );
                    // Unlisted, the images stored stay as they are.
                    if let Ok(c) = &cri {
                        match c.images().await {
                            Ok(held) => {
                                status["images"] = node::images(held, config.upkeep.max_images);
                            }
                            Err(e) => tracing::warn!(error = %e.message(), "listing images"),
                        }
                    }
                    node::keep_transitions(&mut status, &last);
                    let due = stored.is_err()
                        || reported != Some(runtime.is_ok())
                        || node::changed(&status, &last)
                        || sent_at.elapsed() >= config.upkeep.status_report_every;
                    if due {
                        match node::report(&nodes, &config.node_name, status).await {
                            Ok(n) => {
                                reported = Some(runtime.is_ok());
                                pressed = pressure;
                                last = json!(n.status);
                                sent_at = tokio::time::Instant::now();
                            }
                            Err(e) => tracing::warn!(error = %e, "node status update failed"),
                        }
                    }
                }
                let pause = if runtime.is_ok() {
                    next_beat - tokio::time::Instant::now()
                } else {
                    READINESS_POLL
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = wake.notified() => {}
                }
            }
        })
    };
    let Some(runtime) = runtime else {
        // No runtime: keep heartbeating NotReady.
        let _ = heartbeat.await;
        return Ok(());
    };
    // The pod network needs the node's podCIDR, which node IPAM assigns.
    let nodes: Api<Node> = Api::all(client.clone());
    let cidr = loop {
        let n = nodes.get(&config.node_name).await?;
        if let Some(c) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Err(e) = containerd::write_cni(&layout, &config.bridge, &cidr) {
        tracing::error!(error = %e, "could not write the CNI network");
    }
    wake.notify_one();
    // The node's own seccomp profiles, as upstream's `<root-dir>/seccomp`.
    let seccomp_root = config.data_dir.join("seccomp");
    if let Err(e) = std::fs::create_dir_all(&seccomp_root) {
        tracing::warn!(error = %e, dir = %seccomp_root.display(), "creating the seccomp profile directory");
    }
    let sweeper = {
        let (client, local_path) = (client.clone(), local_path.clone());
        tokio::spawn(async move { local_path.run(client).await })
    };
    let pods_dir = config.data_dir.join("pods");
    let image_volumes = Arc::new(crate::image_volumes::ImageVolumes::new(
        socket.clone().ok(),
        &pods_dir,
    ));
    let (reclaim, reclaims) = tokio::sync::mpsc::channel(1);
    let collector = tokio::spawn(
        crate::image_gc::Collector {
            runtime: runtime.clone(),
            policy: config.upkeep.image_gc.clone(),
            sandbox_image: config.pause_image.clone(),
            containerd: socket.clone().ok(),
            events: crate::events::Recorder::new(client.clone(), &config.node_name),
            metrics: metrics.clone(),
            image_volumes: image_volumes.clone(),
        }
        .run(reclaims),
    );
    let (ask, asks) = tokio::sync::mpsc::channel(1);
    let eviction = tokio::spawn(
        crate::eviction::Monitor {
            manager: crate::eviction::Manager::new(config.upkeep.eviction.clone()),
            pressure: pressure.clone(),
            runtime: runtime.clone(),
            data_dir: config.data_dir.clone(),
            images: reclaim,
            pods: ask,
            events: crate::events::Recorder::new(client.clone(), &config.node_name),
            metrics: metrics.clone(),
            changed: wake.clone(),
        }
        .run(),
    );
    let rotation = tokio::spawn(crate::log_rotation::run(
        runtime.clone(),
        config.upkeep.container_logs.clone(),
    ));
    let worker = Arc::new(
        Worker::new(
            client,
            runtime,
            config.node_name.clone(),
            config.node_ip.clone(),
            pods_dir,
            config.dns.clone(),
            usage,
        )
        .with_local_path(local_path)
        .with_image_volumes(image_volumes)
        .with_seccomp_root(seccomp_root)
        .with_metrics(metrics)
        .with_eviction(pressure, asks),
    );
    worker.run().await;
    sweeper.abort();
    collector.abort();
    eviction.abort();
    rotation.abort();
    if let Some((_, serving)) = endpoint {
        serving.abort();
    }
    drop(containerd_child);
    heartbeat.abort();
    Ok(())
}
