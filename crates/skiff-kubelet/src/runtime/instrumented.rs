//! A runtime whose every call is timed and counted in the agent's
//! metrics (`kubelet_runtime_operations_duration_seconds`), around any
//! other runtime.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use k8s_cri::v1 as cri;

use super::{ContainerRuntime, Events, Process, Result};
use crate::metrics::AgentMetrics;

pub struct Instrumented {
    pub inner: Arc<dyn ContainerRuntime>,
    pub metrics: AgentMetrics,
}

impl Instrumented {
    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .operation(operation, started.elapsed(), result.is_err());
        result
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for Instrumented {
    async fn sandboxes(&self, labels: &[(&str, &str)]) -> Result<Vec<cri::PodSandbox>> {
        self.timed("list_podsandbox", self.inner.sandboxes(labels))
            .await
    }

    async fn sandbox_ip(&self, id: &str) -> Result<String> {
        self.timed("podsandbox_status", self.inner.sandbox_ip(id))
            .await
    }

    async fn run_sandbox(&self, config: &cri::PodSandboxConfig, handler: &str) -> Result<String> {
        self.timed("run_podsandbox", self.inner.run_sandbox(config, handler))
            .await
    }

    async fn stop_sandbox(&self, id: &str) -> Result<()> {
        self.timed("stop_podsandbox", self.inner.stop_sandbox(id))
            .await
    }

    async fn remove_sandbox(&self, id: &str) -> Result<()> {
        self.timed("remove_podsandbox", self.inner.remove_sandbox(id))
            .await
    }

    async fn containers(&self, sandbox: Option<&str>) -> Result<Vec<cri::Container>> {
        self.timed("list_containers", self.inner.containers(sandbox))
            .await
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        self.timed("container_status", self.inner.container_status(id))
            .await
    }

    async fn create_container(
        &self,
        sandbox: &str,
        config: &cri::ContainerConfig,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> Result<String> {
        let call = self.inner.create_container(sandbox, config, sandbox_config);
        self.timed("create_container", call).await
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        self.timed("start_container", self.inner.start_container(id))
            .await
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        self.timed("stop_container", self.inner.stop_container(id, timeout))
            .await
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.timed("remove_container", self.inner.remove_container(id))
            .await
    }

    async fn update_container_resources(
        &self,
        id: &str,
        resources: &cri::LinuxContainerResources,
    ) -> Result<()> {
        let update = self.inner.update_container_resources(id, resources);
        self.timed("update_container_resources", update).await
    }

    async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse> {
        self.timed("exec_sync", self.inner.exec_sync(id, command, timeout))
            .await
    }

    async fn spawn(&self, id: &str, command: &[String], stdin: bool) -> Result<Process> {
        self.inner.spawn(id, command, stdin).await
    }

    async fn exec_url(&self, request: cri::ExecRequest) -> Result<String> {
        self.timed("exec", self.inner.exec_url(request)).await
    }

    async fn attach_url(&self, request: cri::AttachRequest) -> Result<String> {
        self.timed("attach", self.inner.attach_url(request)).await
    }

    async fn stats(&self) -> Result<Vec<cri::ContainerStats>> {
        self.timed("list_container_stats", self.inner.stats()).await
    }

    async fn events(&self) -> Option<Events> {
        self.inner.events().await
    }

    async fn recursive_read_only_mounts(&self) -> bool {
        self.inner.recursive_read_only_mounts().await
    }

    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>> {
        self.timed("image_status", self.inner.image_status(image))
            .await
    }

    async fn pull_image(&self, image: &str, auth: Option<&cri::AuthConfig>) -> Result<()> {
        self.timed("pull_image", self.inner.pull_image(image, auth))
            .await
    }

    async fn images(&self) -> Result<Vec<cri::Image>> {
        self.timed("list_images", self.inner.images()).await
    }

    async fn remove_image(&self, id: &str) -> Result<()> {
        self.timed("remove_image", self.inner.remove_image(id))
            .await
    }

    async fn image_filesystems(&self) -> Result<Vec<cri::FilesystemUsage>> {
        self.timed("image_fs_info", self.inner.image_filesystems())
            .await
    }

    async fn reopen_container_log(&self, id: &str) -> Result<()> {
        self.timed("reopen_container_log", self.inner.reopen_container_log(id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_timed_and_failures_counted() {
        let registry = skiff_core::metrics::Registry::default();
        let runtime = Instrumented {
            inner: Arc::new(super::super::fake::FakeRuntime::default()),
            metrics: AgentMetrics::new(&registry),
        };
        runtime.sandboxes(&[]).await.unwrap();
        assert!(runtime.start_container("missing").await.is_err());
        let text = skiff_core::metrics::encode(&registry);
        assert!(
            text.contains("kubelet_runtime_operations_duration_seconds_count{operation_type=\"list_podsandbox\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "kubelet_runtime_operations_errors_total{operation_type=\"start_container\"} 1"
        ));
    }
}
