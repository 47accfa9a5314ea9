//! A container's termination message, as upstream's kubelet keeps it: a
//! file of its own mounted at its `terminationMessagePath`, read once it
//! has exited (at most 4 KiB); with `FallbackToLogsOnError`, a failed
//! container that wrote none is told by the tail of its log.

use std::path::Path;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Container;

/// The most of a message file that is read.
const MAX_MESSAGE: u64 = 4096;
/// The most of a log that stands for a message: its last lines and bytes.
const LOG_LINES: i64 = 80;
const LOG_BYTES: usize = 2048;
/// How much of a log's end is read for its tail: 80 records of a
/// runtime's log lines, their time and stream included, fit well.
const LOG_WINDOW: u64 = 64 * 1024;

/// Where the container writes its message.
fn path_in_container(c: &Container) -> &str {
    c.termination_message_path
        .as_deref()
        .unwrap_or("/dev/termination-log")
}

/// The empty file for one run of the container, at `file`, and its mount;
/// none where the container names no path.
pub fn mount(c: &Container, file: &Path) -> Result<Option<cri::Mount>, String> {
    let at = path_in_container(c);
    if at.is_empty() {
        return Ok(None);
    }
    use std::os::unix::fs::PermissionsExt;
    let made = file.parent().map_or(Ok(()), std::fs::create_dir_all);
    made.and_then(|()| std::fs::write(file, b""))
        // Whoever the container runs as may write it.
        .and_then(|()| std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o666)))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Some(cri::Mount {
        container_path: at.to_owned(),
        host_path: file.display().to_string(),
        ..Default::default()
    }))
}

/// The message of an exited container whose runtime status is `status`,
/// if it left one.
pub fn message(c: &Container, status: &cri::ContainerStatus) -> Option<String> {
    use std::io::Read;
    let at = path_in_container(c);
    let file = status.mounts.iter().find(|m| m.container_path == at);
    let mut written = String::new();
    if let Some(file) = file.filter(|_| !at.is_empty()) {
        let opened = std::fs::File::open(&file.host_path);
        let read = opened.and_then(|f| f.take(MAX_MESSAGE).read_to_string(&mut written));
        read.ok()?;
    }
    let fallback = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if written.is_empty() && fallback && status.exit_code != 0 {
        let log = log_end(Path::new(&status.log_path)).ok()?;
        let tail = crate::logs::last_lines(&log, LOG_LINES);
        let cut = tail.len().saturating_sub(LOG_BYTES);
        let start = (cut..=tail.len())
            .find(|&i| tail.is_char_boundary(i))
            .unwrap_or(0);
        written = tail[start..].to_owned();
    }
    (!written.is_empty()).then_some(written)
}

/// The whole lines within the last [`LOG_WINDOW`] bytes of a log: enough
/// for its tail, without reading a long log whole at every look.
fn log_end(path: &Path) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let from = file.metadata()?.len().saturating_sub(LOG_WINDOW);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let whole = match from {
        0 => 0,
        _ => bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1),
    };
    Ok(String::from_utf8_lossy(&bytes[whole..]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_from_its_file_or_else_the_failed_containers_log() {
        let dir = std::env::temp_dir().join(format!("skiff-termination-{}", std::process::id()));
        let c = |policy: &str| -> Container {
            serde_json::from_value(
                serde_json::json!({"name": "c", "terminationMessagePolicy": policy}),
            )
            .unwrap()
        };
        let file = dir.join("c/0");
        let mounted = mount(&c("File"), &file).unwrap().unwrap();
        assert_eq!(mounted.container_path, "/dev/termination-log");
        let log = dir.join("0.log");
        let lines: String = (0..100)
            .map(|i| format!("2026-01-01T00:00:00Z stdout F line {i}\n"))
            .collect();
        std::fs::write(&log, lines).unwrap();
        let status = |code| cri::ContainerStatus {
            exit_code: code,
            mounts: vec![mounted.clone()],
            log_path: log.display().to_string(),
            ..Default::default()
        };
        assert_eq!(message(&c("File"), &status(1)), None);
        let fallback = message(&c("FallbackToLogsOnError"), &status(1)).unwrap();
        assert!(
            fallback.starts_with("line 20\n") && fallback.ends_with("line 99\n"),
            "{fallback}"
        );
        assert_eq!(message(&c("FallbackToLogsOnError"), &status(0)), None);
        std::fs::write(&file, "x".repeat(5000)).unwrap();
        let written = message(&c("FallbackToLogsOnError"), &status(1)).unwrap();
        assert_eq!(written.len(), 4096);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
