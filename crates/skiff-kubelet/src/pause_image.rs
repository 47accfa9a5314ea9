//! The agent's own sandbox image: the pause program (`pause/pause.rs`,
//! compiled by `build.rs`) as the one file of a one-layer OCI image, made
//! in memory and imported into containerd when missing, so that no pod
//! waits on a registry or on image tools.

use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cri::Cri;

/// The image every pod sandbox runs unless `--pause-image` names another.
pub const DEFAULT: &str = "skiff.local/pause:1";

/// The static pause executable.
const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// Why the pause image could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("asking the runtime for {image}: {source}")]
    Status {
        image: String,
        source: tonic::Status,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("running ctr (Debian's containerd package): {0}")]
    Ctr(std::io::Error),
    #[error("ctr could not import the pause image: {0}")]
    Import(String),
}

/// Imports the built-in pause image as `reference` into the containerd at
/// `socket` unless the runtime already has it; `scratch` holds the archive
/// meanwhile.
pub async fn ensure(
    cri: &Cri,
    socket: &Path,
    reference: &str,
    scratch: &Path,
) -> Result<(), Error> {
    let status = cri
        .images
        .clone()
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: reference.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(|source| Error::Status {
            image: reference.to_owned(),
            source,
        })?;
    if status.into_inner().image.is_some() {
        return Ok(());
    }
    let path = scratch.join("pause-image.tar");
    let write = |e| Error::Write {
        path: path.clone(),
        source: e,
    };
    std::fs::create_dir_all(scratch).map_err(write)?;
    std::fs::write(&path, archive(reference)).map_err(write)?;
    let out = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&path)
        .output()
        .await
        .map_err(Error::Ctr)?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        return Err(Error::Import(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    tracing::info!(image = reference, "imported the built-in pause image");
    Ok(())
}

/// The image as an OCI image-layout archive named `reference`.
pub fn archive(reference: &str) -> Vec<u8> {
    let layer = tar_of(&[("pause", 0o755, PROGRAM)]);
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": goarch(),
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .expect("JSON");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))
    .expect("JSON");
    let mut in_index = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    in_index["platform"] = json!({"architecture": goarch(), "os": "linux"});
    in_index["annotations"] = json!({
        "io.containerd.image.name": reference,
        "org.opencontainers.image.ref.name": reference,
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [in_index],
    }))
    .expect("JSON");
    let blob = |data: &[u8]| format!("blobs/sha256/{}", &digest(data)["sha256:".len()..]);
    let files: Vec<(String, u32, &[u8])> = vec![
        (
            "oci-layout".into(),
            0o644,
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        ),
        ("index.json".into(), 0o644, &index),
        (blob(&manifest), 0o644, &manifest),
        (blob(&config), 0o644, &config),
        (blob(&layer), 0o644, &layer),
    ];
    let files: Vec<(&str, u32, &[u8])> =
        files.iter().map(|(p, m, d)| (p.as_str(), *m, *d)).collect();
    tar_of(&files)
}

fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest(data), "size": data.len()})
}

/// A tar of regular files owned by root with time 0, so the same program
/// always gives the same digests.
fn tar_of(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, *data)
            .expect("writing a tar to memory");
    }
    builder.into_inner().expect("writing a tar to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
        use std::io::Read;
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, data)
            })
            .collect()
    }

    #[test]
    fn archive_is_a_valid_oci_layout_naming_the_image() {
        let tar = archive("example.local/pause:9");
        assert_eq!(tar, archive("example.local/pause:9"), "reproducible");
        let files = entries(&tar);
        let file = |name: &str| {
            files
                .iter()
                .find(|(p, _)| p == name)
                .map(|(_, d)| d.clone())
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let index: Value = serde_json::from_slice(&file("index.json")).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "example.local/pause:9"
        );
        let blob = |d: &Value| {
            let data = file(&format!(
                "blobs/sha256/{}",
                &d["digest"].as_str().unwrap()[7..]
            ));
            assert_eq!(
                digest(&data),
                d["digest"],
                "blob content matches its digest"
            );
            assert_eq!(data.len() as u64, d["size"].as_u64().unwrap());
            data
        };
        let manifest: Value = serde_json::from_slice(&blob(m)).unwrap();
        let config: Value = serde_json::from_slice(&blob(&manifest["config"])).unwrap();
        assert_eq!(config["config"]["Entrypoint"][0], "/pause");
        let layer = blob(&manifest["layers"][0]);
        assert_eq!(config["rootfs"]["diff_ids"][0], digest(&layer));
        let program = &entries(&layer)[0];
        assert_eq!(program.0, "pause");
        assert_eq!(&program.1[..4], b"\x7fELF", "a static executable");
    }
}
