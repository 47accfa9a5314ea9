//! [`ContainerRuntime`] over CRI's gRPC services.

use std::process::Stdio;

use futures::FutureExt;
use k8s_cri::v1 as cri;
use tokio::process::Command;

use super::{ContainerRuntime, Process, Result};
use crate::cri::Cri;

#[async_trait::async_trait]
impl ContainerRuntime for Cri {
    async fn sandboxes(&self, labels: &[(&str, &str)]) -> Result<Vec<cri::PodSandbox>> {
        let filter = (!labels.is_empty()).then(|| cri::PodSandboxFilter {
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        });
        let request = cri::ListPodSandboxRequest { filter };
        Ok(self
            .runtime
            .clone()
            .list_pod_sandbox(request)
            .await?
            .into_inner()
            .items)
    }

    async fn sandbox_ip(&self, id: &str) -> Result<String> {
        let request = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        let status = self.runtime.clone().pod_sandbox_status(request).await?;
        Ok(status
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    async fn run_sandbox(&self, config: &cri::PodSandboxConfig, handler: &str) -> Result<String> {
        let request = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_owned(),
        };
        let made = self.runtime.clone().run_pod_sandbox(request).await?;
        Ok(made.into_inner().pod_sandbox_id)
    }

    async fn stop_sandbox(&self, id: &str) -> Result<()> {
        let pod_sandbox_id = id.to_owned();
        let request = cri::StopPodSandboxRequest { pod_sandbox_id };
        self.runtime.clone().stop_pod_sandbox(request).await?;
        Ok(())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<()> {
        let pod_sandbox_id = id.to_owned();
        let request = cri::RemovePodSandboxRequest { pod_sandbox_id };
        self.runtime.clone().remove_pod_sandbox(request).await?;
        Ok(())
    }

    async fn containers(&self, sandbox: Option<&str>) -> Result<Vec<cri::Container>> {
        let filter = sandbox.map(|id| cri::ContainerFilter {
            pod_sandbox_id: id.to_owned(),
            ..Default::default()
        });
        let request = cri::ListContainersRequest { filter };
        Ok(self
            .runtime
            .clone()
            .list_containers(request)
            .await?
            .into_inner()
            .containers)
    }

    async fn container_status(&self, id: &str) -> Result<cri::ContainerStatus> {
        let request = cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        let status = self.runtime.clone().container_status(request).await?;
        Ok(status.into_inner().status.unwrap_or_default())
    }

    async fn create_container(
        &self,
        sandbox: &str,
        config: &cri::ContainerConfig,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> Result<String> {
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.to_owned(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let made = self.runtime.clone().create_container(request).await?;
        Ok(made.into_inner().container_id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let container_id = id.to_owned();
        let request = cri::StartContainerRequest { container_id };
        self.runtime.clone().start_container(request).await?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let container_id = id.to_owned();
        let request = cri::StopContainerRequest {
            container_id,
            timeout,
        };
        self.runtime.clone().stop_container(request).await?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let container_id = id.to_owned();
        let request = cri::RemoveContainerRequest { container_id };
        self.runtime.clone().remove_container(request).await?;
        Ok(())
    }

    async fn update_container_resources(
        &self,
        id: &str,
        resources: &cri::LinuxContainerResources,
    ) -> Result<()> {
        let request = cri::UpdateContainerResourcesRequest {
            container_id: id.to_owned(),
            linux: Some(resources.clone()),
            ..Default::default()
        };
        let mut runtime = self.runtime.clone();
        runtime.update_container_resources(request).await?;
        Ok(())
    }

    async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse> {
        let request = cri::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: command.to_vec(),
            timeout,
        };
        Ok(self.runtime.clone().exec_sync(request).await?.into_inner())
    }

    /// Through `runc exec`, which starts the command inside the container
    /// with its environment, user and cgroup as containerd's shim does, and
    /// gives its exit code, which CRI's streaming protocol does not carry
    /// without a terminal.
    async fn spawn(&self, id: &str, command: &[String], stdin: bool) -> Result<Process> {
        let mut child = Command::new("runc")
            .arg("--root")
            .arg(&self.runc_root)
            .arg("exec")
            .arg(id)
            .args(command)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| tonic::Status::internal(format!("starting runc exec: {e}")))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(tonic::Status::internal("runc exec has no output pipes"));
        };
        Ok(Process {
            stdin: child
                .stdin
                .take()
                .map(|s| Box::pin(s) as std::pin::Pin<Box<_>>),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            exit: async move { child.wait().await.ok().and_then(|s| s.code()) }.boxed(),
        })
    }

    async fn exec_url(&self, request: cri::ExecRequest) -> Result<String> {
        Ok(self.runtime.clone().exec(request).await?.into_inner().url)
    }

    async fn attach_url(&self, request: cri::AttachRequest) -> Result<String> {
        Ok(self.runtime.clone().attach(request).await?.into_inner().url)
    }

    async fn stats(&self) -> Result<Vec<cri::ContainerStats>> {
        let request = cri::ListContainerStatsRequest { filter: None };
        Ok(self
            .runtime
            .clone()
            .list_container_stats(request)
            .await?
            .into_inner()
            .stats)
    }

    async fn events(&self) -> Option<super::Events> {
        use futures::StreamExt;
        let request = cri::GetEventsRequest {};
        let stream = match self.runtime.clone().get_container_events(request).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                tracing::debug!(error = %e.message(), "the runtime sends no container events");
                return None;
            }
        };
        let uids = stream.filter_map(|event| async move {
            let sandbox = event.ok()?.pod_sandbox_status?;
            Some(sandbox.metadata?.uid)
        });
        Some(uids.boxed())
    }

    async fn recursive_read_only_mounts(&self) -> bool {
        let request = cri::StatusRequest { verbose: false };
        let Ok(status) = self.runtime.clone().status(request).await else {
            return false;
        };
        let handlers = status.into_inner().runtime_handlers;
        let default = handlers.iter().find(|h| h.name.is_empty());
        default
            .and_then(|h| h.features.as_ref())
            .is_some_and(|f| f.recursive_read_only_mounts)
    }

    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>> {
        let request = cri::ImageStatusRequest {
            image: Some(spec(image)),
            verbose: false,
        };
        Ok(self
            .images
            .clone()
            .image_status(request)
            .await?
            .into_inner()
            .image)
    }

    async fn pull_image(&self, image: &str, auth: Option<&cri::AuthConfig>) -> Result<()> {
        let request = cri::PullImageRequest {
            image: Some(spec(image)),
            auth: auth.cloned(),
            ..Default::default()
        };
        self.images.clone().pull_image(request).await?;
        Ok(())
    }

    async fn images(&self) -> Result<Vec<cri::Image>> {
        let request = cri::ListImagesRequest { filter: None };
        Ok(self
            .images
            .clone()
            .list_images(request)
            .await?
            .into_inner()
            .images)
    }

    async fn remove_image(&self, id: &str) -> Result<()> {
        let request = cri::RemoveImageRequest {
            image: Some(spec(id)),
        };
        self.images.clone().remove_image(request).await?;
        Ok(())
    }

    async fn image_filesystems(&self) -> Result<Vec<cri::FilesystemUsage>> {
        let request = cri::ImageFsInfoRequest {};
        let info = self.images.clone().image_fs_info(request).await?;
        Ok(info.into_inner().image_filesystems)
    }

    async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let request = cri::ReopenContainerLogRequest {
            container_id: id.to_owned(),
        };
        self.runtime.clone().reopen_container_log(request).await?;
        Ok(())
    }
}

fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}
