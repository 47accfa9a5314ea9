//! Container log rotation, as upstream's kubelet rotates: every 10 s, a
//! running container's log at or over the maximum size is renamed with a
//! timestamp (`0.log.20261207-181500`) and the runtime reopens it (CRI's
//! `ReopenContainerLog`). Rotated logs but the newest are gzipped, and a
//! container keeps at most the maximum number of files, its live log
//! included.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;

use crate::runtime::ContainerRuntime;

/// How often the logs are looked at.
pub const PERIOD: Duration = Duration::from_secs(10);

/// When logs rotate, and how many stay (upstream's `containerLogMaxSize`
/// and `containerLogMaxFiles`).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub max_size: u64,
    pub max_files: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_size: 10 << 20,
            max_files: 5,
        }
    }
}

impl Policy {
    /// Refuses what upstream's kubelet refuses.
    pub fn check(&self) -> Result<(), String> {
        if self.max_files <= 1 {
            return Err(format!(
                "--container-log-max-files {} must be greater than 1",
                self.max_files
            ));
        }
        if self.max_size == 0 {
            return Err("--container-log-max-size must be greater than 0".into());
        }
        Ok(())
    }
}

/// Rotates the logs of the running containers every [`PERIOD`], until
/// dropped.
pub async fn run(runtime: Arc<dyn ContainerRuntime>, policy: Policy) {
    let mut every = tokio::time::interval(PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = rotate_all(runtime.as_ref(), &policy).await {
            tracing::warn!(error = %e.message(), "rotating container logs");
        }
    }
}

async fn rotate_all(rt: &dyn ContainerRuntime, policy: &Policy) -> Result<(), tonic::Status> {
    let running = cri::ContainerState::ContainerRunning as i32;
    for c in rt.containers(None).await? {
        if c.state != running {
            continue;
        }
        let log = rt.container_status(&c.id).await?.log_path;
        if log.is_empty() {
            continue;
        }
        match std::fs::metadata(&log) {
            // Removed under the runtime: it writes a new one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = rt.reopen_container_log(&c.id).await;
            }
            Ok(m) if m.len() >= policy.max_size => {
                let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
                if let Err(e) = rotate(rt, &c.id, Path::new(&log), &stamp, policy).await {
                    tracing::warn!(log = %log, error = %e, "could not rotate a container log");
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The rotated files of `log` (`log.<stamp>`, gzipped or not, and what
/// an interrupted compression left), oldest first.
fn rotated(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Rotates `log` of container `id` as `log.<stamp>`: the rotated files
/// are tidied (off the async workers: gzip takes a while), then the log is
/// renamed and the runtime reopens it (the rename is undone if it cannot).
async fn rotate(
    rt: &dyn ContainerRuntime,
    id: &str,
    log: &Path,
    stamp: &str,
    policy: &Policy,
) -> Result<(), String> {
    let (owned, max_files) = (log.to_owned(), policy.max_files);
    tokio::task::spawn_blocking(move || tidy(&owned, max_files))
        .await
        .map_err(|e| e.to_string())??;
    let moved = PathBuf::from(format!("{}.{stamp}", log.display()));
    std::fs::rename(log, &moved).map_err(|e| io("renaming", log, e))?;
    if let Err(e) = rt.reopen_container_log(id).await {
        // Put back, to try again at the next look.
        std::fs::rename(&moved, log).map_err(|e| io("renaming back", &moved, e))?;
        return Err(format!("reopening the log: {}", e.message()));
    }
    Ok(())
}

/// Makes room for one more rotated file of `log`: what an interrupted
/// compression left goes, the oldest rotated files go so that with the
/// next one and the live log there are at most `max_files`, and the
/// others are gzipped.
fn tidy(log: &Path, max_files: usize) -> Result<(), String> {
    let mut old = Vec::new();
    for path in rotated(log) {
        let zipped = path.with_file_name(format!(
            "{}.gz",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        if has_extension(&path, "tmp") || (!has_extension(&path, "gz") && zipped.exists()) {
            std::fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
        } else {
            old.push(path);
        }
    }
    let excess = old.len().saturating_sub(max_files.saturating_sub(2));
    for path in old.drain(..excess) {
        std::fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
    }
    for path in old.iter().filter(|p| !has_extension(p, "gz")) {
        compress(path).map_err(|e| io("compressing", path, e))?;
    }
    Ok(())
}

/// Gzips `path` into `path.gz` through `path.tmp`, then removes it.
fn compress(path: &Path) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!("{name}.tmp"));
    let mut gz =
        flate2::write::GzEncoder::new(std::fs::File::create(&tmp)?, flate2::Compression::default());
    std::io::copy(&mut std::fs::File::open(path)?, &mut gz)?;
    gz.finish()?.flush()?;
    std::fs::rename(&tmp, path.with_file_name(format!("{name}.gz")))?;
    std::fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn rotation_keeps_at_most_max_files_and_gzips_all_but_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        let rt = FakeRuntime::default();
        let policy = Policy {
            max_size: 1,
            max_files: 3,
        };
        for (i, stamp) in ["20261207-100000", "20261207-100010", "20261207-100020"]
            .iter()
            .enumerate()
        {
            std::fs::write(&log, format!("line {i}\n")).unwrap();
            rotate(&rt, "c", &log, stamp, &policy).await.unwrap();
        }
        // The fake runtime reopens nothing: the live log is written anew.
        std::fs::write(&log, "line 3\n").unwrap();
        assert_eq!(
            names(dir.path()),
            ["0.log", "0.log.20261207-100010.gz", "0.log.20261207-100020"]
        );
        let mut text = String::new();
        let gz = std::fs::File::open(dir.path().join("0.log.20261207-100010.gz")).unwrap();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text).unwrap();
        assert_eq!(text, "line 1\n");
    }

    #[tokio::test]
    async fn leftovers_of_an_interrupted_compression_go() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        for name in ["0.log", "0.log.1.tmp", "0.log.2", "0.log.2.gz", "1.log.3"] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let rt = FakeRuntime::default();
        rotate(&rt, "c", &log, "9", &Policy::default())
            .await
            .unwrap();
        assert_eq!(names(dir.path()), ["0.log.2.gz", "0.log.9", "1.log.3"]);
    }

    #[test]
    fn settings_upstream_refuses_are_refused() {
        assert_eq!(Policy::default().check(), Ok(()));
        let one = Policy {
            max_files: 1,
            ..Policy::default()
        };
        assert!(one.check().unwrap_err().contains("greater than 1"));
    }
}
