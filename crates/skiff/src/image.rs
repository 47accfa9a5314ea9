//! `skiff image import|ls`: images in a node agent's own containerd, found
//! from the server's data dir (its embedded agent) or an agent's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use skiff_kubelet::containerd::Layout;

#[derive(Subcommand)]
pub enum Command {
    /// Imports a docker-archive or OCI archive into the agent's containerd.
    Import {
        /// The server's data dir (its embedded agent) or an agent's.
        #[arg(long, default_value = "/var/lib/skiff")]
        data_dir: PathBuf,
        file: PathBuf,
    },
    /// Lists the images the agent's containerd holds, with their sizes.
    Ls {
        /// The server's data dir (its embedded agent) or an agent's.
        #[arg(long, default_value = "/var/lib/skiff")]
        data_dir: PathBuf,
    },
}

/// How long a containerd has to answer.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Import { data_dir, file } => {
            let socket = socket(&data_dir).await?;
            let out = tokio::process::Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&file)
                .output()
                .await
                .context("running ctr (Debian's containerd package)")?;
            if !out.status.success() {
                let why = String::from_utf8_lossy(&out.stderr);
                let first = why.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                bail!("could not import {}: {first}", file.display());
            }
            let printed = String::from_utf8_lossy(&out.stdout);
            print!("{printed}");
            // Pinned as k3s pins what it imports: the agent's image
            // garbage collection keeps them, as they may not be pullable.
            for reference in imported(&printed) {
                skiff_kubelet::image_gc::pin(&socket, reference)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
            Ok(())
        }
        Command::Ls { data_dir } => {
            let socket = socket(&data_dir).await?;
            let runtime = skiff_kubelet::cri::Cri::connect(&socket).await?;
            let mut rows = runtime.image_sizes().await?;
            rows.sort();
            println!("{:<60} SIZE", "IMAGE");
            for (name, size) in rows {
                println!("{name:<60} {}", human(size));
            }
            Ok(())
        }
    }
}

/// The references `ctr images import` says it unpacked
/// (`unpacking REF (sha256:…)...done`).
fn imported(printed: &str) -> impl Iterator<Item = &str> {
    printed.lines().filter_map(|line| {
        let reference = line.strip_prefix("unpacking ")?.split_whitespace().next()?;
        (!reference.starts_with('-')).then_some(reference)
    })
}

/// The containerd socket of the agent at `data_dir`, or of the embedded
/// agent when it is a server's data dir; an error when nothing answers
/// there within [`DIAL_TIMEOUT`] (a containerd still starting gets that
/// long to open its socket).
async fn socket(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let server = data_dir.join("agent").is_dir() || data_dir.join("kubeconfig.yaml").exists();
    let socket = if server {
        Layout::new(&data_dir.join("agent")).socket()
    } else {
        Layout::new(data_dir).socket()
    };
    let deadline = tokio::time::Instant::now() + DIAL_TIMEOUT;
    let last = loop {
        let dial =
            tokio::time::timeout_at(deadline, tokio::net::UnixStream::connect(&socket)).await;
        match dial {
            Ok(Ok(_)) => return Ok(socket),
            Ok(Err(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break "no answer".to_owned(),
        }
    };
    bail!(
        "no containerd answers at {} within 2 s ({last}): is `skiff server` or `skiff agent` running with --data-dir {}?",
        socket.display(),
        data_dir.display()
    )
}

/// Bytes as upstream's tools print them (`4.2MB`).
fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_upstream_prints_them() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(1_112), "1.1kB");
        assert_eq!(human(4_200_000), "4.2MB");
    }

    #[test]
    fn the_imported_references_are_read_from_what_ctr_prints() {
        let printed = "unpacking skiff.local/busybox:1 (sha256:70c8)...done\n\
            unpacking docker.io/library/nginx:1.7.9 (sha256:aa)...done\nother line\n";
        assert_eq!(
            imported(printed).collect::<Vec<_>>(),
            ["skiff.local/busybox:1", "docker.io/library/nginx:1.7.9"]
        );
    }

    #[tokio::test]
    async fn a_dir_without_containerd_fails_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = socket(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("no containerd answers at"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
