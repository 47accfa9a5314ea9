//! The runtime's floor for `skiff-bench pods`: the same number of
//! sandboxes and containers, all at once, straight through CRI with no
//! orchestrator in between. What the agent adds is the difference.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_cri::v1 as cri;
use skiff_kubelet::cri::Cri;
use skiff_kubelet::runtime::ContainerRuntime;

/// Starts `count` sandboxes each with one `sleep` container of `image`;
/// returns how long each took from the start of all, then removes them.
pub async fn measure(
    socket: &Path,
    log_dir: &Path,
    image: &str,
    count: usize,
) -> Result<Vec<Duration>> {
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(Cri::connect(socket).await?);
    let began = Instant::now();
    let starts = (0..count).map(|i| {
        let runtime = runtime.clone();
        async move {
            let name = format!("floor-{i}");
            let log_directory = log_dir.join(&name);
            std::fs::create_dir_all(&log_directory)?;
            // No pod uid label: the node agent leaves these alone.
            let sandbox = cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: name.clone(),
                    uid: name.clone(),
                    namespace: "bench".into(),
                    attempt: 0,
                }),
                hostname: name.clone(),
                log_directory: log_directory.display().to_string(),
                linux: Some(cri::LinuxPodSandboxConfig::default()),
                ..Default::default()
            };
            let container = cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                log_path: "c.log".into(),
                linux: Some(cri::LinuxContainerConfig::default()),
                ..Default::default()
            };
            let id = runtime.run_sandbox(&sandbox, "").await?;
            let c = runtime.create_container(&id, &container, &sandbox).await?;
            runtime.start_container(&c).await?;
            Ok::<_, anyhow::Error>((id, began.elapsed()))
        }
    });
    let started = futures::future::join_all(starts).await;
    let mut took: Vec<Duration> = started.iter().flatten().map(|(_, d)| *d).collect();
    for (id, _) in started.into_iter().flatten() {
        let _ = runtime.stop_sandbox(&id).await;
        let _ = runtime.remove_sandbox(&id).await;
    }
    anyhow::ensure!(
        took.len() == count,
        "only {} of {count} started straight through CRI",
        took.len()
    );
    took.sort();
    Ok(took)
}
