//! An in-memory [`ContainerRuntime`]: sandboxes get addresses, containers
//! run until told to exit, images come from a scripted registry. For unit
//! tests of the pod workers, with no root and no containerd.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_cri::v1 as cri;
use tonic::Status;

use super::{ContainerRuntime, Process, Result};

/// What pulling an image from the fake registry does.
#[derive(Clone, Debug)]
pub enum Pull {
    /// The image arrives, running as this user (`""` for the image's
    /// default, root).
    Succeeds {
        user: String,
    },
    Fails(String),
    /// The pull never returns.
    Hangs,
}

#[derive(Default)]
struct State {
    next_id: u64,
    sandboxes: BTreeMap<String, (cri::PodSandbox, String)>,
    containers: BTreeMap<String, (cri::Container, cri::ContainerStatus)>,
    images: BTreeMap<String, cri::Image>,
    registry: BTreeMap<String, Pull>,
    pulls: Vec<String>,
    looks: usize,
}

/// Whether a pod's containers, by pod uid, exit 0 as soon as they start.
pub type Completes = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// The fake runtime; cheap to share behind an `Arc`.
pub struct FakeRuntime {
    state: Mutex<State>,
    /// Tells subscribers the uid of each pod whose container started or
    /// exited.
    changes: tokio::sync::broadcast::Sender<String>,
    /// Simulated nodes hold every image.
    every_image: bool,
    /// The first three octets of sandbox addresses.
    network: Option<[u8; 3]>,
    completes: Option<Completes>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

/// Simulated containers run nothing that could be exec'ed or attached to.
fn no_processes() -> Status {
    Status::unimplemented("a simulated node's containers run no processes")
}

fn not_found(what: &str, id: &str) -> Status {
    Status::not_found(format!("{what} {id:?} not found"))
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            changes: tokio::sync::broadcast::channel(64).0,
            every_image: false,
            network: None,
            completes: None,
        }
    }
}

impl FakeRuntime {
    /// The pod uid of a container's sandbox.
    fn pod_of(state: &State, container: &str) -> Option<String> {
        let (c, _) = state.containers.get(container)?;
        let (sandbox, _) = state.sandboxes.get(&c.pod_sandbox_id)?;
        Some(sandbox.metadata.as_ref()?.uid.clone())
    }

    /// The runtime of a simulated node: every image is present, sandboxes
    /// get addresses in `network`.0/24, and the containers of pods that
    /// `completes` names exit 0 at once.
    pub fn simulating(network: [u8; 3], completes: Completes) -> Self {
        Self {
            every_image: true,
            network: Some(network),
            completes: Some(completes),
            ..Default::default()
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts an image on the node, as `skiff image import` would.
    pub fn add_image(&self, image: &str) {
        let record = cri::Image {
            id: format!("sha256:{image}"),
            repo_tags: vec![image.to_owned()],
            ..Default::default()
        };
        self.state().images.insert(image.to_owned(), record);
    }

    /// Says what pulling `image` does.
    pub fn registry(&self, image: &str, pull: Pull) {
        self.state().registry.insert(image.to_owned(), pull);
    }

    /// Every pull asked for so far, in order.
    pub fn pulls(&self) -> Vec<String> {
        self.state().pulls.clone()
    }

    /// Ends a running container with this exit code.
    pub fn exit(&self, id: &str, code: i32) {
        let mut state = self.state();
        let Some((c, s)) = state.containers.get_mut(id) else {
            return;
        };
        if s.state != cri::ContainerState::ContainerRunning as i32 {
            return;
        }
        c.state = cri::ContainerState::ContainerExited as i32;
        s.state = c.state;
        s.exit_code = code;
        s.finished_at = now();
        if let Some(uid) = Self::pod_of(&state, id) {
            let _ = self.changes.send(uid);
        }
    }

    /// The pod's sandbox dies (its pause process ends); its containers
    /// keep running, as real ones would until stopped.
    pub fn sandbox_dies(&self, uid: &str) {
        let mut state = self.state();
        for (s, _) in state.sandboxes.values_mut() {
            if s.metadata.as_ref().is_some_and(|m| m.uid == uid) {
                s.state = cri::PodSandboxState::SandboxNotready as i32;
            }
        }
        let _ = self.changes.send(uid.to_owned());
    }

    /// The attempt numbers of the pod's sandboxes that are ready.
    pub fn ready_sandboxes(&self, uid: &str) -> Vec<u32> {
        let state = self.state();
        state
            .sandboxes
            .values()
            .filter(|(s, _)| s.state == cri::PodSandboxState::SandboxReady as i32)
            .filter_map(|(s, _)| s.metadata.as_ref().filter(|m| m.uid == uid))
            .map(|m| m.attempt)
            .collect()
    }

    /// The latest container named `name` in the pod with this uid.
    pub fn container_named(&self, uid: &str, name: &str) -> Option<cri::ContainerStatus> {
        let state = self.state();
        let sandboxes: Vec<&String> = state
            .sandboxes
            .iter()
            .filter(|(_, (s, _))| s.metadata.as_ref().is_some_and(|m| m.uid == uid))
            .map(|(id, _)| id)
            .collect();
        state
            .containers
            .values()
            .filter(|(c, _)| sandboxes.contains(&&c.pod_sandbox_id))
            .filter(|(c, _)| c.metadata.as_ref().is_some_and(|m| m.name == name))
            .max_by_key(|(c, _)| c.metadata.as_ref().map(|m| m.attempt))
            .map(|(_, s)| s.clone())
    }

    /// How many times a sandbox's containers were listed: each is one
    /// look of a pod worker at its pod.
    pub fn looks(&self) -> usize {
        self.state().looks
    }

    /// How many sandboxes exist, in any state.
    pub fn sandbox_count(&self) -> usize {
        self.state().sandboxes.len()
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn sandboxes(&self, labels: &[(&str, &str)]) -> Result<Vec<cri::PodSandbox>> {
        let state = self.state();
        Ok(state
            .sandboxes
            .values()
            .map(|(s, _)| s)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .cloned()
            .collect())
    }

    async fn sandbox_ip(&self, id: &str) -> Result<String> {
        let state = self.state();
        let (_, ip) = state
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        Ok(ip.clone())
    }

    async fn run_sandbox(&self, config: &cri::PodSandboxConfig, handler: &str) -> Result<String> {
        // As the agent configures containerd: one runtime, `runc`.
        if !matches!(handler, "" | "runc") {
            return Err(Status::unknown(format!(
                "failed to get sandbox runtime: no runtime for {handler:?} is configured"
            )));
        }
        let mut state = self.state();
        state.next_id += 1;
        let n = state.next_id;
        let id = format!("sandbox-{n}");
        let host = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|n| n.network == cri::NamespaceMode::Node as i32);
        let ip = match (host, self.network) {
            (true, _) => String::new(),
            (false, Some([a, b, c])) => format!("{a}.{b}.{c}.{}", n % 253 + 2),
            (false, None) => format!("10.88.{}.{}", n / 250, n % 250 + 2),
        };
        let sandbox = cri::PodSandbox {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: cri::PodSandboxState::SandboxReady as i32,
            created_at: now(),
            labels: config.labels.clone(),
            runtime_handler: handler.to_owned(),
            ..Default::default()
        };
        state.sandboxes.insert(id.clone(), (sandbox, ip));
        Ok(id)
    }

    async fn stop_sandbox(&self, id: &str) -> Result<()> {
        let mut state = self.state();
        let ids: Vec<String> = state
            .containers
            .iter()
            .filter(|(_, (c, _))| c.pod_sandbox_id == id)
            .map(|(id, _)| id.clone())
            .collect();
        drop(state);
        for c in ids {
            self.exit(&c, 137);
        }
        state = self.state();
        let (s, _) = state
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        s.state = cri::PodSandboxState::SandboxNotready as i32;
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<()> {
        let mut state = self.state();
        state.containers.retain(|_, (c, _)| c.pod_sandbox_id != id);
        state.sandboxes.remove(id);
        Ok(())
    }

    async fn containers(&self, sandbox: Option<&str>) -> Result<Vec<cri::Container>> {
        let mut state = self.state();
        state.looks += usize::from(sandbox.is_some());
        Ok(state
            .containers
            .values()
            .map(|(c, _)| c)
            .filter(|c| sandbox.is_none_or(|s| c.pod_sandbox_id == s))
            .cloned()
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let state = self.state();
        let (_, s) = state
            .containers
            .get(id)
            .ok_or_else(|| not_found("container", id))?;
        Ok(s.clone())
    }

    async fn create_container(
        &self,
        sandbox: &str,
        config: &cri::ContainerConfig,
        _: &cri::PodSandboxConfig,
    ) -> Result<String> {
        let mut state = self.state();
        if !state.sandboxes.contains_key(sandbox) {
            return Err(not_found("sandbox", sandbox));
        }
        let image = config.image.as_ref().map(|i| i.image.clone());
        if !self.every_image && !image.as_ref().is_some_and(|i| state.images.contains_key(i)) {
            return Err(Status::failed_precondition(format!(
                "image {:?} is not on the node",
                image.unwrap_or_default()
            )));
        }
        state.next_id += 1;
        let id = format!("container-{}", state.next_id);
        let created = cri::ContainerState::ContainerCreated as i32;
        let container = cri::Container {
            id: id.clone(),
            pod_sandbox_id: sandbox.to_owned(),
            metadata: config.metadata.clone(),
            image: config.image.clone(),
            state: created,
            created_at: now(),
            labels: config.labels.clone(),
            ..Default::default()
        };
        let status = cri::ContainerStatus {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: created,
            created_at: now(),
            image: config.image.clone(),
            labels: config.labels.clone(),
            resources: config.linux.as_ref().map(|l| cri::ContainerResources {
                linux: l.resources.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        state.containers.insert(id.clone(), (container, status));
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let mut state = self.state();
        let (c, s) = state
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("container", id))?;
        c.state = cri::ContainerState::ContainerRunning as i32;
        s.state = c.state;
        s.started_at = now();
        let uid = c.labels.get(crate::cri_config::UID_LABEL).cloned();
        drop(state);
        if let (Some(completes), Some(uid)) = (&self.completes, uid) {
            if completes(&uid) {
                self.exit(id, 0);
            }
        }
        Ok(())
    }

    async fn stop_container(&self, id: &str, _timeout: i64) -> Result<()> {
        self.exit(id, 137);
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.state().containers.remove(id);
        Ok(())
    }

    async fn update_container_resources(
        &self,
        id: &str,
        resources: &cri::LinuxContainerResources,
    ) -> Result<()> {
        let mut state = self.state();
        let (_, status) = state
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("container", id))?;
        status.resources = Some(cri::ContainerResources {
            linux: Some(resources.clone()),
            ..Default::default()
        });
        Ok(())
    }

    async fn exec_sync(&self, id: &str, _: &[String], _: i64) -> Result<cri::ExecSyncResponse> {
        let running = self.container_status(id).await?.state;
        Ok(cri::ExecSyncResponse {
            exit_code: if running == cri::ContainerState::ContainerRunning as i32 {
                0
            } else {
                1
            },
            ..Default::default()
        })
    }

    async fn spawn(&self, _: &str, _: &[String], _: bool) -> Result<Process> {
        Err(no_processes())
    }

    async fn exec_url(&self, _: cri::ExecRequest) -> Result<String> {
        Err(no_processes())
    }

    async fn attach_url(&self, _: cri::AttachRequest) -> Result<String> {
        Err(no_processes())
    }

    /// Every container, using nothing.
    async fn stats(&self) -> Result<Vec<cri::ContainerStats>> {
        let state = self.state();
        Ok(state
            .containers
            .values()
            .map(|(c, _)| cri::ContainerStats {
                attributes: Some(cri::ContainerAttributes {
                    id: c.id.clone(),
                    metadata: c.metadata.clone(),
                    labels: c.labels.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect())
    }

    async fn events(&self) -> Option<super::Events> {
        use futures::StreamExt;
        let changes = self.changes.subscribe();
        let uids = futures::stream::unfold(changes, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(uid) => return Some((uid, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Some(uids.boxed())
    }

    async fn recursive_read_only_mounts(&self) -> bool {
        false
    }

    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>> {
        if self.every_image {
            return Ok(Some(cri::Image {
                id: format!("sha256:{image}"),
                repo_tags: vec![image.to_owned()],
                ..Default::default()
            }));
        }
        Ok(self.state().images.get(image).cloned())
    }

    async fn pull_image(&self, image: &str, _auth: Option<&cri::AuthConfig>) -> Result<()> {
        // A pull takes a moment, as a real one does.
        tokio::task::yield_now().await;
        let pull = {
            let mut state = self.state();
            state.pulls.push(image.to_owned());
            state.registry.get(image).cloned()
        };
        match pull {
            Some(Pull::Succeeds { user }) => {
                self.add_image(image);
                if let Some(i) = self.state().images.get_mut(image) {
                    i.username = user;
                }
                Ok(())
            }
            Some(Pull::Fails(why)) => Err(Status::unknown(why)),
            Some(Pull::Hangs) => std::future::pending().await,
            None => Err(Status::not_found(format!(
                "failed to resolve reference {image:?}: not found"
            ))),
        }
    }

    async fn images(&self) -> Result<Vec<cri::Image>> {
        Ok(self.state().images.values().cloned().collect())
    }

    async fn remove_image(&self, id: &str) -> Result<()> {
        self.state().images.retain(|_, i| i.id != id);
        Ok(())
    }

    async fn image_filesystems(&self) -> Result<Vec<cri::FilesystemUsage>> {
        Ok(Vec::new())
    }

    async fn reopen_container_log(&self, _id: &str) -> Result<()> {
        Ok(())
    }
}
