//! Image volumes (`volumes[].image`): an image pulled as the containers'
//! images are, whose files the pod's containers see read-only. containerd
//! 1.6's CRI cannot mount an image, so the volume is a read-only view of
//! the image's snapshot made through containerd itself (`ctr images
//! mount`), keyed by the volume's directory, and removed with the pod.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;

use crate::pod_inputs::is_mounted;

/// The directory under a pod's own that holds its image volumes.
const DIR: &str = "image-volumes";
/// The directory under a pod's own that names, by volume, the image each
/// shows: the images in use, also across the agent's restarts.
const IMAGES: &str = "image-volume-images";

/// The node's image volumes.
pub struct ImageVolumes {
    /// containerd's socket (none: this node's runtime cannot mount images).
    containerd: Option<PathBuf>,
    /// The pods' directories.
    pods: PathBuf,
}

impl ImageVolumes {
    /// The image volumes of the pods under `pods`.
    pub fn new(containerd: Option<PathBuf>, pods: &Path) -> Self {
        Self {
            containerd,
            pods: pods.to_path_buf(),
        }
    }

    /// Shows `image` read-only as the volume `name` of the pod whose
    /// directory is `pod_dir`, once; where it is.
    pub async fn mount(
        &self,
        image: &cri::Image,
        pod_dir: &Path,
        name: &str,
    ) -> Result<PathBuf, String> {
        let Some(socket) = &self.containerd else {
            return Err("image volumes need containerd as this node's runtime".into());
        };
        let target = pod_dir.join(DIR).join(name);
        let images = pod_dir.join(IMAGES);
        std::fs::create_dir_all(&images).map_err(|e| problem(&images, e))?;
        std::fs::write(images.join(name), &image.id).map_err(|e| problem(&images, e))?;
        if !is_mounted(&target) {
            let name = containerd_name(image)?;
            std::fs::create_dir_all(&target).map_err(|e| problem(&target, e))?;
            let args = [
                "images".as_ref(),
                "mount".as_ref(),
                name.as_ref(),
                target.as_os_str(),
            ];
            let doing = format!("mounting image {name}");
            crate::image_gc::ctr(socket, args, &doing).await?;
        }
        Ok(target)
    }

    /// The ids of the images that volumes show.
    pub fn in_use(&self) -> HashSet<String> {
        let pods = std::fs::read_dir(&self.pods)
            .into_iter()
            .flatten()
            .flatten();
        let named = pods.flat_map(|pod| std::fs::read_dir(pod.path().join(IMAGES)).into_iter());
        named
            .flatten()
            .flatten()
            .filter_map(|volume| std::fs::read_to_string(volume.path()).ok())
            .collect()
    }

    /// Unmounts the image volumes of the pod whose directory is `pod_dir`
    /// and lets their snapshots go (also those mounted before the agent
    /// restarted).
    pub fn release(&self, pod_dir: &Path) {
        let _ = std::fs::remove_dir_all(pod_dir.join(IMAGES));
        let Ok(entries) = std::fs::read_dir(pod_dir.join(DIR)) else {
            return;
        };
        for target in entries.flatten().map(|e| e.path()) {
            let Some(socket) = &self.containerd else {
                continue;
            };
            let unmounted = crate::image_gc::ctr_command(socket)
                .args(["images", "unmount", "--rm"])
                .arg(&target)
                .output();
            match unmounted {
                Ok(out) if out.status.success() => {}
                Ok(out) => tracing::warn!(
                    volume = %target.display(),
                    error = %String::from_utf8_lossy(&out.stderr).trim(),
                    "unmounting an image volume"
                ),
                Err(e) => tracing::warn!(error = %e, "running ctr"),
            }
        }
    }
}

/// What containerd names the image: a tag, else a digest, as CRI
/// recorded it when it pulled (or found) the image.
fn containerd_name(image: &cri::Image) -> Result<&str, String> {
    let name = image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .next()
        .map(String::as_str)
        .unwrap_or(&image.id);
    // Never an option to ctr: no image reference starts so.
    match name.is_empty() || name.starts_with('-') {
        true => Err(format!("image {:?} has no name to mount it by", image.id)),
        false => Ok(name),
    }
}

fn problem(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_mounted_by_its_tag_else_its_digest() {
        let image = |tags: &[&str], digests: &[&str]| cri::Image {
            id: "sha256:abc".into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let tagged = image(
            &["docker.io/library/busybox:1.36"],
            &["docker.io/library/busybox@sha256:d"],
        );
        assert_eq!(
            containerd_name(&tagged),
            Ok("docker.io/library/busybox:1.36")
        );
        let digested = image(&[], &["docker.io/library/busybox@sha256:d"]);
        assert_eq!(
            containerd_name(&digested),
            Ok("docker.io/library/busybox@sha256:d")
        );
        assert_eq!(containerd_name(&image(&[], &[])), Ok("sha256:abc"));
        assert!(containerd_name(&image(&["--rw"], &[])).is_err());
    }

    #[test]
    fn images_stay_in_use_across_restarts_until_their_pod_is_released() {
        let pods = std::env::temp_dir().join(format!("skiff-image-volumes-{}", std::process::id()));
        let pod = pods.join("uid-1");
        std::fs::create_dir_all(pod.join(DIR).join("data")).unwrap();
        std::fs::create_dir_all(pod.join(IMAGES)).unwrap();
        std::fs::write(pod.join(IMAGES).join("data"), "sha256:abc").unwrap();
        // As the agent finds them when it starts again.
        let volumes = ImageVolumes::new(None, &pods);
        assert_eq!(volumes.in_use(), HashSet::from(["sha256:abc".to_owned()]));
        volumes.release(&pod);
        assert!(volumes.in_use().is_empty());
        assert!(!pod.join(IMAGES).exists());
        assert!(ImageVolumes::new(None, &pods).in_use().is_empty());
        std::fs::remove_dir_all(&pods).unwrap();
    }
}
