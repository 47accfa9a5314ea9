//! The seam between the pod workers and a container runtime: the calls of
//! CRI's runtime and image services that running pods needs, with the
//! CRI implementation over containerd and an in-memory fake for tests and
//! simulated nodes.

mod cri_runtime;
pub mod fake;
pub mod instrumented;
pub mod relist;

use std::pin::Pin;

use futures::future::BoxFuture;
use k8s_cri::v1 as cri;
use tokio::io::{AsyncRead, AsyncWrite};

/// What a runtime call returns; the error carries the runtime's code and
/// message, as CRI's do.
pub type Result<T> = std::result::Result<T, tonic::Status>;

/// The uids of pods whose containers changed, as the runtime tells them.
pub type Events = futures::stream::BoxStream<'static, String>;

/// A command running in a container with its standard streams piped.
pub struct Process {
    /// Present when input was asked for; dropped, it closes the input.
    pub stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub stderr: Pin<Box<dyn AsyncRead + Send>>,
    /// Ends with the exit code (`None` when a signal ended the command);
    /// dropped before that, it kills the command.
    pub exit: BoxFuture<'static, Option<i32>>,
}

/// Sandboxes, containers and images, as CRI models them.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Sandboxes, all of them or those whose labels match `labels`.
    async fn sandboxes(&self, labels: &[(&str, &str)]) -> Result<Vec<cri::PodSandbox>>;
    /// The sandbox's pod IP, empty when it has none (host network).
    async fn sandbox_ip(&self, id: &str) -> Result<String>;
    /// Creates and starts a sandbox with the runtime `handler` names (the
    /// default one when empty); returns its id.
    async fn run_sandbox(&self, config: &cri::PodSandboxConfig, handler: &str) -> Result<String>;
    async fn stop_sandbox(&self, id: &str) -> Result<()>;
    async fn remove_sandbox(&self, id: &str) -> Result<()>;

    /// Containers, all of them or those of one sandbox.
    async fn containers(&self, sandbox: Option<&str>) -> Result<Vec<cri::Container>>;
    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus>;
    /// Creates a container in a sandbox; returns its id.
    async fn create_container(
        &self,
        sandbox: &str,
        config: &cri::ContainerConfig,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> Result<String>;
    async fn start_container(&self, id: &str) -> Result<()>;
    /// Sends SIGTERM, then SIGKILL after `timeout` seconds.
    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()>;
    async fn remove_container(&self, id: &str) -> Result<()>;
    /// Changes a running container's cgroup limits in place (a resize).
    async fn update_container_resources(
        &self,
        id: &str,
        resources: &cri::LinuxContainerResources,
    ) -> Result<()>;
    /// Runs a command in a container to its end (exec probes and hooks).
    async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse>;
    /// Starts a command in a running container, its streams piped
    /// (`kubectl exec` without a terminal).
    async fn spawn(&self, id: &str, command: &[String], stdin: bool) -> Result<Process>;
    /// The address on the runtime's streaming server where a command runs
    /// on a terminal (`kubectl exec -t`).
    async fn exec_url(&self, request: cri::ExecRequest) -> Result<String>;
    /// The address on the runtime's streaming server where a container's
    /// own streams are (`kubectl attach`).
    async fn attach_url(&self, request: cri::AttachRequest) -> Result<String>;

    /// CPU and memory statistics of every container.
    async fn stats(&self) -> Result<Vec<cri::ContainerStats>>;

    /// Container changes as they happen (CRI's GetContainerEvents); `None`
    /// when the runtime does not tell them, and the pod workers' periodic
    /// look is all there is (upstream's PLEG relist).
    async fn events(&self) -> Option<Events>;

    /// Whether the runtime makes a read-only mount recursively read-only
    /// when asked (its default handler's features; a runtime that does
    /// not say cannot).
    async fn recursive_read_only_mounts(&self) -> bool;

    /// The runtime's record of an image, if it holds it.
    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>>;
    /// Pulls `image`, with `auth` where the registry asks for it.
    async fn pull_image(&self, image: &str, auth: Option<&cri::AuthConfig>) -> Result<()>;
    /// Every image the runtime holds.
    async fn images(&self) -> Result<Vec<cri::Image>>;
    /// Removes the image `id`.
    async fn remove_image(&self, id: &str) -> Result<()>;
    /// Where the runtime keeps its images, as `ImageFsInfo` says.
    async fn image_filesystems(&self) -> Result<Vec<cri::FilesystemUsage>>;
    /// Has the runtime write the container's log to a new file at its
    /// path (the old one was moved away).
    async fn reopen_container_log(&self, id: &str) -> Result<()>;
}
