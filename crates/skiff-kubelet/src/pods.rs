//! Pods on a real node, level-triggered: for each pod bound here, compare
//! the spec with what the runtime reports and take the next step (sandbox,
//! image, container, restart), then report the status. The runtime's state
//! is the truth, so a restarted agent picks up where it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::Client;
use serde_json::{json, Value};

use crate::cri::{Cri, Error};
use crate::events::{container_path, Recorder, Type};
use crate::pod_inputs;
use crate::probes::Prober;
use crate::security;

const UID_LABEL: &str = "io.kubernetes.pod.uid";
pub(crate) const NAME_LABEL: &str = "io.kubernetes.container.name";
/// How many pods are synced at once.
const PARALLEL_SYNCS: usize = 16;
/// How often every pod is compared with the runtime, besides API events.
const RESYNC: Duration = Duration::from_secs(1);

/// What the runtime reports of one sandbox, read once per pass.
struct Observed {
    pod_ip: String,
    /// The latest container of each name, with its status.
    latest: HashMap<String, cri::ContainerStatus>,
    /// The one before it, if any.
    previous: HashMap<String, cri::ContainerStatus>,
}

pub(crate) fn attempt_of_container(c: &cri::Container) -> u32 {
    c.metadata.as_ref().map_or(0, |m| m.attempt)
}

fn attempt_of(status: &cri::ContainerStatus) -> u32 {
    status.metadata.as_ref().map_or(0, |m| m.attempt)
}

/// Where a pod's init containers are.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    Done,
    Running,
    /// One failed and the pod's restartPolicy is Never.
    Failed,
}

/// What starting any container of one pod needs.
struct Launch<'a> {
    pod: &'a Pod,
    sandbox: &'a str,
    config: &'a cri::PodSandboxConfig,
    volumes: &'a Result<std::collections::BTreeMap<String, pod_inputs::Volume>, String>,
}

fn exited(status: &cri::ContainerStatus) -> bool {
    status.state == cri::ContainerState::ContainerExited as i32
}

/// Upstream's restart back-off: the first restart is immediate, then 10 s
/// doubling per restart, up to 5 min.
fn restart_delay(attempt: u32) -> chrono::Duration {
    match attempt {
        0 => chrono::Duration::zero(),
        n => chrono::Duration::seconds((10i64 << (n - 1).min(5)).min(300)),
    }
}

/// Whether an exited container's back-off is over.
fn restart_due(status: &cri::ContainerStatus) -> bool {
    let finished = chrono::DateTime::from_timestamp_nanos(status.finished_at);
    chrono::Utc::now() >= finished + restart_delay(attempt_of(status))
}

fn stamp(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The `terminated` state of an exited container.
fn terminated(s: &cri::ContainerStatus) -> Value {
    let reason = match (s.reason.as_str(), s.exit_code) {
        ("", 0) => "Completed",
        ("", _) => "Error",
        (r, _) => r,
    };
    json!({"terminated": {"exitCode": s.exit_code, "reason": reason,
        "startedAt": stamp(s.started_at), "finishedAt": stamp(s.finished_at),
        "containerID": format!("containerd://{}", s.id)}})
}

/// One container's status from what the runtime shows of it; `waiting`
/// holds why a container is not (re)started, `probed` its readiness.
fn container_status(
    c: &Container,
    seen: &Observed,
    waiting: &HashMap<String, String>,
    probed: &HashMap<String, bool>,
    before_start: &str,
) -> Value {
    let why = waiting.get(&c.name);
    let split = |w: &str| {
        let (reason, message) = w.split_once(": ").unwrap_or((w, ""));
        (reason.to_owned(), message.to_owned())
    };
    let state;
    let mut last = Value::Null;
    let (id, restarts) = match seen.latest.get(&c.name) {
        None => {
            let (reason, message) =
                why.map_or((before_start.to_owned(), String::new()), |w| split(w));
            state = json!({"waiting": {"reason": reason, "message": message}});
            (String::new(), 0)
        }
        Some(s) => {
            if s.state == cri::ContainerState::ContainerRunning as i32 {
                state = json!({"running": {"startedAt": stamp(s.started_at)}});
            } else if exited(s) {
                let terminated = terminated(s);
                match why {
                    Some(w) => {
                        let (reason, mut message) = split(w);
                        if reason == "CrashLoopBackOff" {
                            message = format!("back-off restarting failed container {}", c.name);
                        }
                        state = json!({"waiting": {"reason": reason, "message": message}});
                        last = terminated;
                    }
                    None => state = terminated,
                }
            } else {
                state = json!({"waiting": {"reason": "ContainerCreating"}});
            }
            (s.id.clone(), attempt_of(s))
        }
    };
    let is_running = state["running"].is_object();
    let ready = is_running && probed.get(&c.name).copied().unwrap_or(true);
    let mut status = json!({
        "name": c.name, "image": c.image, "imageID": "",
        "containerID": if id.is_empty() { Value::Null } else { json!(format!("containerd://{id}")) },
        "ready": ready, "started": is_running, "restartCount": restarts, "state": state,
    });
    if last.is_null() {
        if let Some(p) = seen.previous.get(&c.name).filter(|p| exited(p)) {
            last = terminated(p);
        }
    }
    if !last.is_null() {
        status["lastState"] = last;
    }
    status
}

/// Pods bound to this node, by uid.
type Pods = Arc<Mutex<HashMap<String, Pod>>>;

pub struct Worker {
    pub client: Client,
    pub cri: Cri,
    pub node: String,
    pub node_ip: String,
    pub log_dir: std::path::PathBuf,
    /// What pods with `dnsPolicy: ClusterFirst` resolve with.
    dns: Option<crate::agent::Dns>,
    /// The last status written per pod uid.
    reported: Mutex<HashMap<String, Value>>,
    prober: Prober,
    /// Failed pulls by pod uid and container: when to try again, and how
    /// many failed.
    pull_backoff: Mutex<HashMap<(String, String), (std::time::Instant, u32)>>,
    /// Service account tokens projected into pods.
    tokens: pod_inputs::Tokens,
    events: Recorder,
}

impl Worker {
    pub fn new(
        client: Client,
        cri: Cri,
        node: String,
        node_ip: String,
        log_dir: std::path::PathBuf,
        dns: Option<crate::agent::Dns>,
    ) -> Self {
        let (client_for_events, node_for_events) = (client.clone(), node.clone());
        Self {
            dns,
            client,
            cri,
            node,
            node_ip,
            log_dir,
            reported: Mutex::default(),
            prober: Prober::default(),
            pull_backoff: Mutex::default(),
            tokens: pod_inputs::Tokens::default(),
            events: Recorder::start(client_for_events, &node_for_events),
        }
    }

    /// Follows the pods bound here and keeps syncing them.
    pub async fn run(self: Arc<Self>) {
        let pods: Pods = Arc::default();
        let wake = Arc::new(tokio::sync::Notify::new());
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        // Until the first full list arrives, the worker does nothing: an
        // empty map would make every running pod look orphaned.
        let listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, w, l) = (pods.clone(), wake.clone(), listed.clone());
        tokio::spawn(async move {
            let mut events = watcher::watcher(api, config).boxed();
            let mut relist: HashMap<String, Pod> = HashMap::new();
            while let Some(e) = events.next().await {
                let mut map = p.lock().unwrap_or_else(|e| e.into_inner());
                let uid = |pod: &Pod| pod.metadata.uid.clone().unwrap_or_default();
                match e {
                    Ok(Event::Init) => relist.clear(),
                    Ok(Event::InitApply(pod)) => {
                        relist.insert(uid(&pod), pod);
                    }
                    Ok(Event::InitDone) => {
                        *map = std::mem::take(&mut relist);
                        l.store(true, std::sync::atomic::Ordering::Release);
                    }
                    Ok(Event::Apply(pod)) => {
                        map.insert(uid(&pod), pod);
                    }
                    Ok(Event::Delete(pod)) => {
                        map.remove(&uid(&pod));
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch"),
                }
                w.notify_one();
            }
        });
        while !listed.load(std::sync::atomic::Ordering::Acquire) {
            wake.notified().await;
        }
        loop {
            let snapshot: Vec<Pod> = pods
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            // Pods are independent: sync several at once, each once a pass.
            let this = &*self;
            futures::stream::iter(&snapshot)
                .for_each_concurrent(PARALLEL_SYNCS, |pod| async move {
                    if let Err(e) = this.sync(pod).await {
                        tracing::warn!(pod = ?pod.metadata.name, error = %e, "pod sync");
                    }
                })
                .await;
            let known: Vec<String> = snapshot
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            if let Ok(all) = self
                .cri
                .runtime
                .clone()
                .list_containers(cri::ListContainersRequest { filter: None })
                .await
            {
                let ids: Vec<String> = all
                    .into_inner()
                    .containers
                    .into_iter()
                    .map(|c| c.id)
                    .collect();
                self.prober.retain(&ids);
                self.pull_backoff
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|(uid, _), _| known.contains(uid));
                self.tokens.retain(&known);
                self.events.retain(&known);
            }
            if let Err(e) = self.remove_orphans(&known).await {
                tracing::debug!(error = %e, "orphan sandboxes");
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    }

    async fn sandboxes(&self, uid: &str) -> Result<Vec<cri::PodSandbox>, Error> {
        let filter = cri::PodSandboxFilter {
            label_selector: [(UID_LABEL.to_owned(), uid.to_owned())].into(),
            ..Default::default()
        };
        let r = self
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await?;
        Ok(r.into_inner().items)
    }

    async fn containers(&self, sandbox: &str) -> Result<Vec<cri::Container>, Error> {
        let filter = cri::ContainerFilter {
            pod_sandbox_id: sandbox.to_owned(),
            ..Default::default()
        };
        let r = self
            .cri
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            })
            .await?;
        Ok(r.into_inner().containers)
    }

    /// Stops and removes a pod's containers and sandboxes: each running
    /// container gets its preStop hook, then SIGTERM, then SIGKILL once the
    /// grace period is over.
    async fn tear_down(&self, uid: &str, pod: Option<&Pod>, grace: i64) -> Result<(), Error> {
        let mut rt = self.cri.runtime.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(grace.max(0) as u64);
        for sb in self.sandboxes(uid).await? {
            let running: Vec<cri::Container> = self
                .containers(&sb.id)
                .await?
                .into_iter()
                .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
                .collect();
            let pod_ip = match pod {
                Some(_) => self
                    .observe(&sb.id)
                    .await
                    .map(|o| o.pod_ip)
                    .unwrap_or_default(),
                None => String::new(),
            };
            let stops = running.iter().map(|c| {
                let mut rt = rt.clone();
                let pod_ip = pod_ip.clone();
                async move {
                    let spec = pod.and_then(|p| {
                        let name = c.labels.get(NAME_LABEL)?;
                        p.spec.as_ref()?.containers.iter().find(|s| &s.name == name)
                    });
                    if let (Some(pod), Some(spec)) = (pod, spec) {
                        let message = format!("Stopping container {}", spec.name);
                        self.event(pod, &spec.name, Type::Normal, "Killing", &message);
                    }
                    let pre_stop = spec.and_then(|s| s.lifecycle.as_ref()?.pre_stop.as_ref());
                    if let (Some(spec), Some(hook)) = (spec, pre_stop) {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        if let Err(why) =
                            crate::probes::hook(&self.cri, spec, hook, &c.id, &pod_ip, left).await
                        {
                            tracing::info!(container = %spec.name, %why, "preStop hook failed");
                        }
                    }
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    rt.stop_container(cri::StopContainerRequest {
                        container_id: c.id.clone(),
                        timeout: left.as_secs() as i64,
                    })
                    .await
                }
            });
            for stopped in futures::future::join_all(stops).await {
                stopped?;
            }
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: sb.id.clone(),
            })
            .await?;
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sb.id.clone(),
            })
            .await?;
        }
        Ok(())
    }

    async fn remove_orphans(&self, known: &[String]) -> Result<(), Error> {
        let r = self
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await?;
        for sb in r.into_inner().items {
            if let Some(uid) = sb.labels.get(UID_LABEL) {
                if !known.contains(uid) {
                    self.tear_down(uid, None, 0).await?;
                    pod_inputs::release(&self.log_dir.join(uid));
                }
            }
        }
        Ok(())
    }

    /// Where the runtime writes the pod's container logs.
    fn sandbox_log_dir(&self, pod: &Pod) -> std::path::PathBuf {
        let m = &pod.metadata;
        let part = |v: &Option<String>| v.clone().unwrap_or_default();
        self.log_dir.join(format!(
            "{}_{}_{}",
            part(&m.namespace),
            part(&m.name),
            part(&m.uid)
        ))
    }

    fn sandbox_config(
        &self,
        pod: &Pod,
        attempt: u32,
        security: cri::LinuxSandboxSecurityContext,
    ) -> cri::PodSandboxConfig {
        let m = &pod.metadata;
        let (name, ns, uid) = (
            m.name.clone().unwrap_or_default(),
            m.namespace.clone().unwrap_or_default(),
            m.uid.clone().unwrap_or_default(),
        );
        let log_directory = self.sandbox_log_dir(pod);
        let _ = std::fs::create_dir_all(&log_directory);
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: ns.clone(),
                attempt,
            }),
            // A pod on the node's network has the node's name, as upstream.
            hostname: match pod.spec.as_ref() {
                Some(s) if s.host_network == Some(true) => String::new(),
                spec => spec
                    .and_then(|s| s.hostname.clone())
                    .unwrap_or(name.clone()),
            },
            log_directory: log_directory.display().to_string(),
            labels: [
                (UID_LABEL.to_owned(), uid),
                ("io.kubernetes.pod.name".to_owned(), name),
                ("io.kubernetes.pod.namespace".to_owned(), ns.clone()),
            ]
            .into(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(security),
                sysctls: pod.spec.as_ref().map(security::sysctls).unwrap_or_default(),
                ..Default::default()
            }),
            dns_config: self.dns_config(pod, &ns),
            ..Default::default()
        }
    }

    /// `resolv.conf` for the pod: the cluster DNS with the namespace's
    /// search path for `ClusterFirst` (the default), the node's own for
    /// `Default`.
    fn dns_config(&self, pod: &Pod, ns: &str) -> Option<cri::DnsConfig> {
        let spec = pod.spec.as_ref()?;
        let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
        let host_network = spec.host_network == Some(true);
        let cluster = match policy {
            "ClusterFirst" => !host_network,
            "ClusterFirstWithHostNet" => true,
            _ => false,
        };
        let dns = self.dns.as_ref().filter(|_| cluster)?;
        let d = &dns.domain;
        Some(cri::DnsConfig {
            servers: vec![dns.server.clone()],
            searches: vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()],
            options: vec!["ndots:5".into()],
        })
    }

    /// An event about `pod`, or about its container `container` when not
    /// empty.
    fn event(&self, pod: &Pod, container: &str, kind: Type, reason: &str, message: &str) {
        let path = if container.is_empty() {
            String::new()
        } else {
            container_path(container)
        };
        self.events.record(pod, &path, kind, reason, message);
    }

    /// Makes sure the image is present, pulling it as the policy says;
    /// failed pulls back off 10 s doubling to 5 min (`ImagePullBackOff`).
    /// Each step is an event, with upstream's reasons and messages.
    /// Returns who the image runs as, read from the same status.
    async fn ensure_image(&self, pod: &Pod, c: &Container) -> Result<security::ImageUser, String> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let event =
            |kind, reason: &str, message: &str| self.event(pod, &c.name, kind, reason, message);
        let image = c.image.clone().unwrap_or_default();
        let spec = cri::ImageSpec {
            image: image.clone(),
            ..Default::default()
        };
        let present = self.image_status(&spec).await?;
        let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
        if let (Some(found), false) = (&present, policy == "Always") {
            let message = format!("Container image {image:?} already present on machine");
            event(Type::Normal, "Pulled", &message);
            return Ok(security::ImageUser::of(found));
        }
        if policy == "Never" {
            let message =
                format!("Container image {image:?} is not present with pull policy of Never");
            event(Type::Warning, "ErrImageNeverPull", &message);
            event(Type::Warning, "Failed", "Error: ErrImageNeverPull");
            return Err(format!("ErrImageNeverPull: {message}"));
        }
        let key = (uid.to_owned(), c.name.clone());
        let backoff = || self.pull_backoff.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((until, _)) = backoff().get(&key) {
            if std::time::Instant::now() < *until {
                let message = format!("Back-off pulling image {image:?}");
                event(Type::Normal, "BackOff", &message);
                event(Type::Warning, "Failed", "Error: ImagePullBackOff");
                return Err(format!("ImagePullBackOff: {message}"));
            }
        }
        event(Type::Normal, "Pulling", &format!("Pulling image {image:?}"));
        let began = std::time::Instant::now();
        let pulled = self
            .cri
            .images
            .clone()
            .pull_image(cri::PullImageRequest {
                image: Some(spec.clone()),
                ..Default::default()
            })
            .await;
        match pulled {
            Ok(_) => {
                backoff().remove(&key);
                let took = began.elapsed().as_secs_f64();
                let message = format!(
                    "Successfully pulled image {image:?} in {took:.3}s ({took:.3}s including waiting)"
                );
                event(Type::Normal, "Pulled", &message);
                let pulled = self.image_status(&spec).await?;
                Ok(pulled
                    .as_ref()
                    .map(security::ImageUser::of)
                    .unwrap_or_default())
            }
            Err(_) if present.is_some() => Ok(present
                .as_ref()
                .map(security::ImageUser::of)
                .unwrap_or_default()),
            Err(e) => {
                let mut b = backoff();
                let failures = b.get(&key).map_or(0, |(_, n)| *n);
                let delay = Duration::from_secs((10u64 << failures.min(5)).min(300));
                b.insert(key, (std::time::Instant::now() + delay, failures + 1));
                let message = format!("Failed to pull image {image:?}: {}", e.message());
                event(Type::Warning, "Failed", &message);
                event(Type::Warning, "Failed", "Error: ErrImagePull");
                Err(format!("ErrImagePull: {}", e.message()))
            }
        }
    }

    async fn start_container(
        &self,
        at: &Launch<'_>,
        c: &Container,
        attempt: u32,
        env: Vec<cri::KeyValue>,
        mounts: Vec<cri::Mount>,
        security: cri::LinuxContainerSecurityContext,
    ) -> Result<(), Error> {
        let limits = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        let milli = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
            q.and_then(|q| skiff_core::quantity::parse_milli(&q.0))
        };
        let cpu_request = milli(requests.get("cpu")).or(milli(limits.get("cpu")));
        let resources = cri::LinuxContainerResources {
            cpu_shares: cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2) as i64),
            cpu_period: if limits.contains_key("cpu") {
                100_000
            } else {
                0
            },
            cpu_quota: milli(limits.get("cpu")).map_or(0, |m| (m * 100) as i64),
            memory_limit_in_bytes: milli(limits.get("memory")).map_or(0, |m| (m / 1000) as i64),
            ..Default::default()
        };
        let name = c.name.clone();
        let container = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.clone(),
                attempt,
            }),
            image: Some(cri::ImageSpec {
                image: c.image.clone().unwrap_or_default(),
                ..Default::default()
            }),
            command: c.command.clone().unwrap_or_default(),
            args: c.args.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: env,
            mounts,
            labels: [
                (NAME_LABEL.to_owned(), name.clone()),
                (
                    UID_LABEL.to_owned(),
                    at.config.labels.get(UID_LABEL).cloned().unwrap_or_default(),
                ),
            ]
            .into(),
            log_path: format!("{name}/{attempt}.log"),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(resources),
                security_context: Some(security),
            }),
            ..Default::default()
        };
        let mut rt = self.cri.runtime.clone();
        let id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: at.sandbox.to_owned(),
                config: Some(container),
                sandbox_config: Some(at.config.clone()),
            })
            .await?
            .into_inner()
            .container_id;
        let created = format!("Created container: {name}");
        self.event(at.pod, &name, Type::Normal, "Created", &created);
        rt.start_container(cri::StartContainerRequest { container_id: id })
            .await?;
        let started = format!("Started container {name}");
        self.event(at.pod, &name, Type::Normal, "Started", &started);
        Ok(())
    }

    /// One step for one pod, then its status.
    async fn sync(&self, pod: &Pod) -> Result<(), Error> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
            self.tear_down(&uid, Some(pod), grace).await?;
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let _ = api
                .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
                .await;
            self.reported
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
            // Only the pod's own directories: hostPath volumes live elsewhere.
            pod_inputs::release(&self.log_dir.join(&uid));
            let _ = std::fs::remove_dir_all(self.log_dir.join(&uid));
            let _ = std::fs::remove_dir_all(self.sandbox_log_dir(pod));
            return Ok(());
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        if matches!(phase, "Succeeded" | "Failed") {
            return Ok(());
        }
        let ready_sandbox = self
            .sandboxes(&uid)
            .await?
            .into_iter()
            .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32);
        let security = match security::sandbox(&spec) {
            Ok(s) => s,
            Err(why) => {
                // Nothing runs with less isolation than asked for.
                self.event(pod, "", Type::Warning, "Failed", &format!("Error: {why}"));
                let waiting = spec
                    .containers
                    .iter()
                    .map(|c| (c.name.clone(), format!("CreateContainerConfigError: {why}")))
                    .collect();
                let seen = Observed {
                    pod_ip: String::new(),
                    latest: HashMap::new(),
                    previous: HashMap::new(),
                };
                return self
                    .report(pod, &seen, &waiting, &HashMap::new(), Init::Done)
                    .await;
            }
        };
        let config = self.sandbox_config(pod, 0, security);
        let sandbox = match ready_sandbox {
            Some(s) => s.id,
            None => {
                let made = self
                    .cri
                    .runtime
                    .clone()
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(config.clone()),
                        runtime_handler: String::new(),
                    })
                    .await;
                match made {
                    Ok(made) => made.into_inner().pod_sandbox_id,
                    Err(e) => {
                        let message = format!("Failed to create pod sandbox: {}", e.message());
                        self.event(pod, "", Type::Warning, "FailedCreatePodSandBox", &message);
                        return Err(e.into());
                    }
                }
            }
        };
        let restart = spec.restart_policy.as_deref().unwrap_or("Always");
        let mut waiting: HashMap<String, String> = HashMap::new();
        // Volumes are refreshed on every pass, so mounted ConfigMaps and
        // Secrets follow their objects.
        let volume_dir = self.log_dir.join(&uid).join("volumes");
        let volumes = pod_inputs::volumes(&self.client, pod, &volume_dir, &self.tokens).await;
        let mut seen = self.observe(&sandbox).await?;
        let mut started = false;
        let launch = Launch {
            pod,
            sandbox: &sandbox,
            config: &config,
            volumes: &volumes,
        };
        // Init containers run one at a time, in order, each to success.
        let mut init = Init::Done;
        for c in spec.init_containers.iter().flatten() {
            let latest = seen.latest.get(&c.name);
            if latest.is_some_and(|s| exited(s) && s.exit_code == 0) {
                continue;
            }
            init = Init::Running;
            match latest {
                None => started |= self.launch(&launch, c, 0, &seen.pod_ip, &mut waiting).await,
                Some(s) if exited(s) && restart == "Never" => init = Init::Failed,
                Some(s) if exited(s) => match restart_due(s) {
                    true => {
                        started |= self
                            .launch(&launch, c, attempt_of(s) + 1, &seen.pod_ip, &mut waiting)
                            .await
                    }
                    false => self.back_off(pod, c, &mut waiting),
                },
                Some(_) => {}
            }
            break;
        }
        for c in spec.containers.iter().filter(|_| init == Init::Done) {
            let latest = seen.latest.get(&c.name);
            let start_as = match latest {
                None => Some(0),
                Some(status) if exited(status) => {
                    let again =
                        restart == "Always" || (restart == "OnFailure" && status.exit_code != 0);
                    if again && restart_due(status) {
                        Some(attempt_of(status) + 1)
                    } else {
                        if again {
                            self.back_off(pod, c, &mut waiting);
                        }
                        None
                    }
                }
                Some(_) => None,
            };
            if let Some(attempt) = start_as {
                started |= self
                    .launch(&launch, c, attempt, &seen.pod_ip, &mut waiting)
                    .await;
            }
        }
        if started {
            seen = self.observe(&sandbox).await?;
        }
        let ready = self.probe(pod, &seen).await?;
        self.report(pod, &seen, &waiting, &ready, init).await
    }

    /// The runtime's record of an image, if it has it.
    async fn image_status(&self, spec: &cri::ImageSpec) -> Result<Option<cri::Image>, String> {
        let status = self
            .cri
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .map_err(|e| e.message().to_owned())?;
        Ok(status.into_inner().image)
    }

    /// Marks a container that waits to restart (`CrashLoopBackOff`).
    fn back_off(&self, pod: &Pod, c: &Container, waiting: &mut HashMap<String, String>) {
        let m = &pod.metadata;
        let part = |v: &Option<String>| v.clone().unwrap_or_default();
        let message = format!(
            "Back-off restarting failed container {} in pod {}_{}({})",
            c.name,
            part(&m.name),
            part(&m.namespace),
            part(&m.uid)
        );
        self.event(pod, &c.name, Type::Warning, "BackOff", &message);
        waiting.insert(c.name.clone(), "CrashLoopBackOff".into());
    }

    /// Starts one container (image, configuration, mounts); a reason it
    /// cannot start goes to `waiting`. Returns whether it started.
    async fn launch(
        &self,
        at: &Launch<'_>,
        c: &Container,
        attempt: u32,
        pod_ip: &str,
        waiting: &mut HashMap<String, String>,
    ) -> bool {
        let image_user = match self.ensure_image(at.pod, c).await {
            Ok(user) => user,
            Err(why) => {
                waiting.insert(c.name.clone(), why);
                return false;
            }
        };
        let failed = |why: &str| {
            self.event(
                at.pod,
                &c.name,
                Type::Warning,
                "Failed",
                &format!("Error: {why}"),
            );
        };
        let volumes = match at.volumes {
            Ok(v) => v,
            Err(why) => {
                let message = format!("MountVolume.SetUp failed: {why}");
                self.event(at.pod, "", Type::Warning, "FailedMount", &message);
                waiting.insert(c.name.clone(), format!("CreateContainerConfigError: {why}"));
                return false;
            }
        };
        let env = match pod_inputs::env(&self.client, at.pod, c, pod_ip).await {
            Ok(env) => env,
            Err(why) => {
                failed(&why);
                waiting.insert(c.name.clone(), format!("CreateContainerConfigError: {why}"));
                return false;
            }
        };
        let mounts = match pod_inputs::mounts(c, volumes) {
            Ok(m) => m,
            Err(why) => {
                failed(&why);
                waiting.insert(c.name.clone(), format!("CreateContainerConfigError: {why}"));
                return false;
            }
        };
        let spec = at.pod.spec.clone().unwrap_or_default();
        let security = match security::container(&spec, c, &image_user) {
            Ok(s) => s,
            Err(why) => {
                failed(&why);
                waiting.insert(c.name.clone(), format!("CreateContainerConfigError: {why}"));
                return false;
            }
        };
        match self
            .start_container(at, c, attempt, env, mounts, security)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                failed(&e.to_string());
                waiting.insert(c.name.clone(), format!("CreateContainerError: {e}"));
                false
            }
        }
    }

    /// One look at a sandbox: its IP and the latest container of each name
    /// with its status, read once per pass.
    async fn observe(&self, sandbox: &str) -> Result<Observed, Error> {
        let mut rt = self.cri.runtime.clone();
        let pod_ip = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.to_owned(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        let mut by_name: HashMap<String, Vec<cri::Container>> = HashMap::new();
        for x in self.containers(sandbox).await? {
            if let Some(name) = x.labels.get(NAME_LABEL) {
                by_name.entry(name.clone()).or_default().push(x);
            }
        }
        let (mut latest, mut previous) = (HashMap::new(), HashMap::new());
        for (name, mut attempts) in by_name {
            attempts.sort_by_key(attempt_of_container);
            // As upstream's container GC: only the last dead container of
            // each name is kept, for `lastState` and `logs --previous`.
            let old = attempts.len().saturating_sub(2);
            for dead in attempts.drain(..old) {
                if dead.state == cri::ContainerState::ContainerExited as i32 {
                    let _ = rt
                        .remove_container(cri::RemoveContainerRequest {
                            container_id: dead.id,
                        })
                        .await;
                }
            }
            for (i, x) in attempts.iter().rev().enumerate() {
                let status = rt
                    .container_status(cri::ContainerStatusRequest {
                        container_id: x.id.clone(),
                        verbose: false,
                    })
                    .await?
                    .into_inner()
                    .status
                    .unwrap_or_default();
                let into = if i == 0 { &mut latest } else { &mut previous };
                into.insert(name.clone(), status);
            }
        }
        Ok(Observed {
            pod_ip,
            latest,
            previous,
        })
    }

    /// Runs the probes of the pod's running containers, killing those whose
    /// liveness or startup probe failed; returns readiness by container.
    async fn probe(&self, pod: &Pod, seen: &Observed) -> Result<HashMap<String, bool>, Error> {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut ready = HashMap::new();
        for c in &spec.containers {
            let Some(status) = seen
                .latest
                .get(&c.name)
                .filter(|s| s.state == cri::ContainerState::ContainerRunning as i32)
            else {
                continue;
            };
            let age =
                chrono::Utc::now() - chrono::DateTime::from_timestamp_nanos(status.started_at);
            let started = std::time::Instant::now()
                .checked_sub(age.to_std().unwrap_or_default())
                .unwrap_or_else(std::time::Instant::now);
            let outcome = self
                .prober
                .check(&self.cri, c, &status.id, started, &seen.pod_ip)
                .await;
            for failure in &outcome.failures {
                self.event(pod, &c.name, Type::Warning, "Unhealthy", failure);
            }
            if let Some(probe) = outcome.kill {
                tracing::info!(pod = ?pod.metadata.name, container = %c.name, probe, "killing the container");
                let message = format!(
                    "Container {} failed {} probe, will be restarted",
                    c.name,
                    probe.to_lowercase()
                );
                self.event(pod, &c.name, Type::Normal, "Killing", &message);
                let grace = spec.termination_grace_period_seconds.unwrap_or(30);
                self.cri
                    .runtime
                    .clone()
                    .stop_container(cri::StopContainerRequest {
                        container_id: status.id.clone(),
                        timeout: grace,
                    })
                    .await?;
            }
            ready.insert(c.name.clone(), outcome.ready);
        }
        Ok(ready)
    }

    async fn report(
        &self,
        pod: &Pod,
        seen: &Observed,
        waiting: &HashMap<String, String>,
        probed: &HashMap<String, bool>,
        init: Init,
    ) -> Result<(), Error> {
        let spec = pod.spec.clone().unwrap_or_default();
        // A pod on the node's network has the node's address.
        let ip = if spec.host_network == Some(true) && seen.pod_ip.is_empty() {
            self.node_ip.clone()
        } else {
            seen.pod_ip.clone()
        };
        let restart = spec.restart_policy.as_deref().unwrap_or("Always");
        let init_statuses: Vec<Value> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| container_status(c, seen, waiting, probed, "PodInitializing"))
            .collect();
        let before_start = if init == Init::Done {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let statuses: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| container_status(c, seen, waiting, probed, before_start))
            .collect();
        let count = |f: &dyn Fn(&Value) -> bool| statuses.iter().filter(|s| f(s)).count();
        let running = count(&|s| s["state"]["running"].is_object());
        let succeeded = count(&|s| s["state"]["terminated"]["exitCode"] == 0);
        let failed = count(&|s| {
            s["state"]["terminated"]["exitCode"]
                .as_i64()
                .is_some_and(|c| c != 0)
        });
        let ready_count = count(&|s| s["ready"] == true);
        let total = spec.containers.len();
        let phase = if init == Init::Failed {
            "Failed"
        } else if init == Init::Running {
            "Pending"
        } else if running == total {
            "Running"
        } else if succeeded == total && restart != "Always" {
            "Succeeded"
        } else if failed > 0 && succeeded + failed == total && restart == "Never" {
            "Failed"
        } else if running + succeeded + failed > 0 {
            "Running"
        } else {
            "Pending"
        };
        let ready = ready_count == total;
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
        let host_ip = self.node_ip.clone();
        let mut status = json!({
            "phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
            "conditions": [cond("PodReadyToStartContainers", !ip.is_empty()), cond("Initialized", init == Init::Done), cond("Ready", ready), cond("ContainersReady", ready), cond("PodScheduled", true)],
            "containerStatuses": statuses,
            "initContainerStatuses": init_statuses,
            "startTime": pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.to_string()).unwrap_or(now.clone()),
        });
        if !ip.is_empty() {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // Compare without timestamps of conditions, which change every pass.
        let comparable = |s: &Value| {
            let mut s = s.clone();
            for c in s["conditions"].as_array_mut().into_iter().flatten() {
                c.as_object_mut().map(|o| o.remove("lastTransitionTime"));
            }
            s
        };
        let same = self
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid)
            .is_some_and(|r| comparable(r) == comparable(&status));
        if same {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            Ok(_) => {
                self.reported
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(uid, status);
            }
            Err(e) => tracing::debug!(error = %e, "could not report pod status"),
        }
        Ok(())
    }
}
