//! Image garbage collection, as upstream's kubelet collects: every five
//! minutes, when the image filesystem is fuller than the high threshold,
//! images no container uses go, least recently used first, until it is
//! down to the low threshold; with a maximum age, images unused that long
//! go whatever the usage. An image first seen less than the minimum age
//! ago stays, and so do pinned images (pinned by the runtime, or labelled
//! so in containerd, as `skiff image import` labels what it imports) and
//! the node's sandbox image.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;

use crate::events::{Recorder, Type};
use crate::runtime::ContainerRuntime;

/// How often images are collected.
pub const PERIOD: Duration = Duration::from_secs(5 * 60);

/// The containerd label that pins an image: containerd's CRI keeps such
/// images from garbage collection, and k3s puts it on those it imports.
pub const PINNED_LABEL: (&str, &str) = ("io.cri-containerd.pinned", "pinned");

/// Pins `reference` in the containerd at `socket` (k8s.io namespace).
pub async fn pin(socket: &Path, reference: &str) -> Result<(), String> {
    let (key, value) = PINNED_LABEL;
    let label = format!("{key}={value}");
    let doing = format!("could not pin {reference}");
    ctr(socket, ["images", "label", reference, &label], &doing).await?;
    Ok(())
}

/// Runs `ctr` with `args` on the containerd at `socket`, in CRI's
/// namespace: what it printed, or what it said went wrong `doing` it.
pub(crate) async fn ctr(
    socket: &Path,
    args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>,
    doing: &str,
) -> Result<String, String> {
    let out = tokio::process::Command::from(ctr_command(socket))
        .args(args)
        .output()
        .await
        .map_err(|e| format!("running ctr: {e}"))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{doing}: {}", why.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ctr` on the containerd at `socket`, in CRI's namespace.
pub(crate) fn ctr_command(socket: &Path) -> std::process::Command {
    let mut ctr = std::process::Command::new("ctr");
    ctr.arg("--address").arg(socket).args(["-n", "k8s.io"]);
    ctr
}

/// The references a `ctr images ls` listing shows pinned.
pub fn pinned_references(listing: &str) -> HashSet<String> {
    let (key, value) = PINNED_LABEL;
    let label = format!("{key}={value}");
    listing
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let reference = fields.next()?;
            let labels = fields.last()?;
            labels
                .split(',')
                .any(|l| l == label)
                .then(|| reference.to_owned())
        })
        .collect()
}

/// The references pinned in the containerd at `socket`.
async fn labelled_pinned(socket: &Path) -> Result<HashSet<String>, String> {
    let listing = ctr(socket, ["images", "ls"], "listing images").await?;
    Ok(pinned_references(&listing))
}

/// When images are collected (upstream's `ImageGCPolicy`).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The image filesystem's usage, in percent, from which images go …
    pub high: u8,
    /// … and the usage they go down to.
    pub low: u8,
    /// How long an image stays at least once it was first seen.
    pub min_age: Duration,
    /// How long an unused image may stay whatever the usage (none: no
    /// limit).
    pub max_age: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            high: 85,
            low: 80,
            min_age: Duration::from_secs(2 * 60),
            max_age: None,
        }
    }
}

impl Policy {
    /// Refuses what upstream's kubelet refuses.
    pub fn check(&self) -> Result<(), String> {
        for (flag, value) in [("high", self.high), ("low", self.low)] {
            if value > 100 {
                return Err(format!(
                    "--image-gc-{flag}-threshold {value} must be between 0 and 100, inclusive"
                ));
            }
        }
        if self.low >= self.high {
            return Err(format!(
                "--image-gc-low-threshold {} must be less than --image-gc-high-threshold {}",
                self.low, self.high
            ));
        }
        if let Some(max) = self.max_age.filter(|max| *max <= self.min_age) {
            return Err(format!(
                "--image-maximum-gc-age {max:?} must be greater than --image-minimum-gc-age {:?}",
                self.min_age
            ));
        }
        Ok(())
    }
}

/// What the collector knows of one image.
struct Record {
    first_seen: Instant,
    /// When a container (or the sandbox image's use) was last seen using it.
    last_used: Option<Instant>,
    size: u64,
    pinned: bool,
}

/// The images the runtime holds, by id, as the collector saw them.
#[derive(Default)]
pub struct Images(HashMap<String, Record>);

impl Images {
    /// Takes in what the runtime holds at `now`; the images `in_use` were
    /// last used now. Images gone from the runtime are forgotten.
    pub fn detect(&mut self, images: &[cri::Image], in_use: &HashSet<String>, now: Instant) {
        let held: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.0.retain(|id, _| held.contains(id.as_str()));
        for image in images {
            let record = self.0.entry(image.id.clone()).or_insert(Record {
                first_seen: now,
                last_used: None,
                size: 0,
                pinned: false,
            });
            if in_use.contains(&image.id) {
                record.last_used = Some(now);
            }
            record.size = image.size;
            record.pinned = image.pinned;
        }
    }

    /// Forgets an image removed.
    pub fn forget(&mut self, id: &str) {
        self.0.remove(id);
    }

    /// The images that may go at `now` (neither pinned nor in use at the
    /// last detection), least recently used first, never-used ones and
    /// then the first seen first.
    fn unused(&self, now: Instant) -> Vec<(&str, &Record)> {
        let mut unused: Vec<(&str, &Record)> = self
            .0
            .iter()
            .filter(|(_, r)| !r.pinned && r.last_used != Some(now))
            .map(|(id, r)| (id.as_str(), r))
            .collect();
        unused.sort_by_key(|(id, r)| (r.last_used, r.first_seen, *id));
        unused
    }

    /// Images unused for longer than the maximum age (counted from when
    /// first seen for one never used), once the collector has run that
    /// long since `began`.
    pub fn expired(&self, now: Instant, began: Instant, policy: &Policy) -> Vec<(String, u64)> {
        let Some(max) = policy.max_age else {
            return Vec::new();
        };
        if now.duration_since(began) <= max {
            return Vec::new();
        }
        self.unused(now)
            .into_iter()
            .filter(|(_, r)| now.duration_since(r.last_used.unwrap_or(r.first_seen)) > max)
            .map(|(id, r)| (id.to_owned(), r.size))
            .collect()
    }

    /// The images to remove at `now` to free `bytes`: unused ones older
    /// than the minimum age, least recently used first, until they add up
    /// (all of them if they never do).
    pub fn to_free(&self, bytes: u64, now: Instant, policy: &Policy) -> Vec<(String, u64)> {
        let mut chosen = Vec::new();
        let mut freed = 0;
        for (id, r) in self.unused(now) {
            if freed >= bytes {
                break;
            }
            if now.duration_since(r.first_seen) < policy.min_age {
                continue;
            }
            freed += r.size;
            chosen.push((id.to_owned(), r.size));
        }
        chosen
    }
}

/// The bytes to free so that a filesystem of `capacity` bytes with
/// `available` left is back at the low threshold, if it is at or over the
/// high one.
pub fn to_free(capacity: u64, available: u64, policy: &Policy) -> Option<u64> {
    let available = available.min(capacity);
    let used = 100 - available * 100 / capacity.max(1);
    (used >= u64::from(policy.high))
        .then(|| (capacity * u64::from(100 - policy.low) / 100).saturating_sub(available))
}

/// Collects a node's images.
pub struct Collector {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub policy: Policy,
    /// The node's sandbox image, kept whether or not the runtime pins it.
    pub sandbox_image: String,
    /// The containerd socket, whose labels pin images (none: only what
    /// the runtime says is pinned).
    pub containerd: Option<std::path::PathBuf>,
    pub events: Recorder,
    pub metrics: crate::metrics::AgentMetrics,
    /// The images that pods' image volumes show are in use.
    pub image_volumes: Arc<crate::image_volumes::ImageVolumes>,
}

/// Asks the collector to remove every image it may, whatever the
/// thresholds (the eviction manager's reclaim under disk pressure);
/// answered once done.
pub type Reclaim = tokio::sync::oneshot::Sender<()>;

impl Collector {
    /// Collects at once and then every [`PERIOD`], and reclaims what it
    /// is asked to, until dropped.
    pub async fn run(self, mut asks: tokio::sync::mpsc::Receiver<Reclaim>) {
        let began = Instant::now();
        let mut images = Images::default();
        let mut every = tokio::time::interval(PERIOD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let done = tokio::select! {
                _ = every.tick() => None,
                Some(done) = asks.recv() => Some(done),
            };
            let all = done.is_some();
            if let Err(e) = self.collect(&mut images, began, all).await {
                tracing::warn!(error = %e, "image garbage collection failed");
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
    }

    /// Removes images too old, then as many as the thresholds ask (`all`:
    /// every unused image past its minimum age).
    async fn collect(&self, images: &mut Images, began: Instant, all: bool) -> Result<(), String> {
        let rt = &self.runtime;
        let failed = |e: tonic::Status| e.message().to_owned();
        let now = Instant::now();
        let mut held = rt.images().await.map_err(failed)?;
        // Another runtime than containerd has no such labels: what CRI
        // says is pinned is then all there is.
        let labelled = match &self.containerd {
            Some(socket) => labelled_pinned(socket).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "no containerd labels pin images");
                HashSet::new()
            }),
            None => HashSet::new(),
        };
        for image in &mut held {
            image.pinned |= image.repo_tags.iter().any(|t| labelled.contains(t));
        }
        let containers = rt.containers(None).await.map_err(failed)?;
        let mut in_use: HashSet<String> = containers.into_iter().map(|c| c.image_ref).collect();
        in_use.extend(self.image_volumes.in_use());
        if let Some(sandbox) = rt.image_status(&self.sandbox_image).await.map_err(failed)? {
            in_use.insert(sandbox.id);
        }
        images.detect(&held, &in_use, now);
        for (id, _) in images.expired(now, began, &self.policy) {
            if self.remove(&id, "age").await {
                images.forget(&id);
            }
        }
        let filesystems = rt.image_filesystems().await.map_err(failed)?;
        let Some(mountpoint) = filesystems
            .iter()
            .find_map(|f| f.fs_id.as_ref().map(|id| id.mountpoint.clone()))
        else {
            return Err("the runtime names no image filesystem".into());
        };
        // `df` is a process to wait for: off the async workers.
        let space =
            tokio::task::spawn_blocking(move || crate::node::disk_space(Path::new(&mountpoint)));
        let (capacity, available) = space
            .await
            .ok()
            .flatten()
            .map(|s| (s.size, s.available))
            .filter(|(capacity, _)| *capacity > 0)
            .ok_or_else(|| {
                let message = "invalid capacity 0 on image filesystem";
                self.events
                    .record_node(Type::Warning, "InvalidDiskCapacity", message);
                message.to_owned()
            })?;
        let goal = match to_free(capacity, available, &self.policy) {
            _ if all => u64::MAX,
            Some(goal) => goal,
            None => return Ok(()),
        };
        if all {
            tracing::info!("disk pressure: removing every unused image");
        } else {
            tracing::info!(
                goal,
                "disk usage on the image filesystem is over the high threshold, freeing images down to the low threshold"
            );
        }
        let mut freed = 0;
        for (id, size) in images.to_free(goal, now, &self.policy) {
            if self.remove(&id, "space").await {
                freed += size;
            }
        }
        if freed < goal && !all {
            let message = format!(
                "Failed to garbage collect required amount of images. Attempted to free {goal} bytes, but only found {freed} bytes eligible to free."
            );
            self.events
                .record_node(Type::Warning, "FreeDiskSpaceFailed", &message);
            return Err(message);
        }
        Ok(())
    }

    /// Removes an image, for `reason` (age or space); whether it went.
    async fn remove(&self, id: &str, reason: &'static str) -> bool {
        match self.runtime.remove_image(id).await {
            Ok(()) => {
                tracing::info!(image = %id, reason, "image garbage collected");
                self.metrics.image_collected(reason);
                true
            }
            Err(e) => {
                tracing::warn!(image = %id, error = %e.message(), "could not remove an image");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, size: u64, pinned: bool) -> cri::Image {
        cri::Image {
            id: id.into(),
            size,
            pinned,
            ..Default::default()
        }
    }

    fn ids(chosen: &[(String, u64)]) -> Vec<&str> {
        chosen.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn unused_images_go_least_recently_used_first_and_only_as_many_as_needed() {
        let policy = Policy::default();
        let t0 = Instant::now();
        let mut images = Images::default();
        let all = [
            image("old", 100, false),
            image("newer", 200, false),
            image("never", 50, false),
            image("running", 400, false),
            image("pause", 10, true),
        ];
        let used = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        images.detect(&all, &used(&["old", "newer", "running"]), t0);
        let t1 = t0 + Duration::from_secs(60);
        images.detect(&all, &used(&["newer", "running"]), t1);
        // Within the minimum age of being first seen, nothing goes.
        assert!(images.to_free(1, t1, &policy).is_empty());
        let t2 = t0 + Duration::from_secs(600);
        images.detect(&all, &used(&["running"]), t2);
        // Never used first, then the least recently used; never the one in
        // use or the pinned one; and no more than needed.
        assert_eq!(ids(&images.to_free(120, t2, &policy)), ["never", "old"]);
        assert_eq!(
            ids(&images.to_free(10_000, t2, &policy)),
            ["never", "old", "newer"]
        );
        // An image the runtime no longer holds is forgotten.
        images.detect(&all[1..], &used(&["running"]), t2);
        assert_eq!(
            ids(&images.to_free(10_000, t2, &policy)),
            ["never", "newer"]
        );
    }

    #[test]
    fn the_maximum_age_removes_what_stayed_unused_that_long() {
        let policy = Policy {
            max_age: Some(Duration::from_secs(3600)),
            ..Policy::default()
        };
        let began = Instant::now();
        let mut images = Images::default();
        let all = [image("a", 1, false), image("b", 1, false)];
        let a: HashSet<String> = ["a".to_string()].into();
        images.detect(&all, &a, began);
        let later = began + Duration::from_secs(3000);
        images.detect(&all, &a, later);
        // Not before the collector has run for the maximum age.
        assert!(images
            .expired(began + Duration::from_secs(3500), began, &policy)
            .is_empty());
        // "b" was never used: its age counts from when it was first seen.
        let now = began + Duration::from_secs(3700);
        assert_eq!(ids(&images.expired(now, began, &policy)), ["b"]);
        // Removed, it is not counted again for space.
        images.forget("b");
        assert!(images.expired(now, began, &policy).is_empty());
        assert_eq!(ids(&images.to_free(10, now, &policy)), ["a"]);
        assert!(Policy::default().max_age.is_none());
        assert!(Images::default()
            .expired(now, began, &Policy::default())
            .is_empty());
    }

    #[test]
    fn pins_are_read_from_the_labels_ctr_lists() {
        let listing = "\
REF                    TYPE                                       DIGEST  SIZE    PLATFORMS   LABELS
skiff.local/busybox:1  application/vnd.docker.distribution.manifest.v2+json sha256:aa 1.2 MiB linux/amd64 io.cri-containerd.image=managed,io.cri-containerd.pinned=pinned
skiff.local/nginx:1    application/vnd.docker.distribution.manifest.v2+json sha256:bb 1.3 MiB linux/amd64 io.cri-containerd.image=managed
sha256:aa              application/vnd.docker.distribution.manifest.v2+json sha256:aa 1.2 MiB linux/amd64 io.cri-containerd.pinned=pinned-not
";
        let pinned = pinned_references(listing);
        assert_eq!(pinned, HashSet::from(["skiff.local/busybox:1".to_owned()]));
    }

    #[test]
    fn usage_over_the_high_threshold_frees_down_to_the_low_one() {
        let policy = Policy::default();
        assert_eq!(to_free(1000, 200, &policy), None, "80 % used");
        assert_eq!(to_free(1000, 150, &policy), Some(50), "85 % used");
        assert_eq!(to_free(1000, 0, &policy), Some(200));
        assert_eq!(to_free(1000, 5000, &policy), None);
    }

    #[test]
    fn settings_upstream_refuses_are_refused() {
        assert_eq!(Policy::default().check(), Ok(()));
        let bad = |p: Policy| p.check().unwrap_err();
        assert!(bad(Policy {
            high: 101,
            ..Policy::default()
        })
        .contains("between 0 and 100"));
        assert!(bad(Policy {
            low: 85,
            ..Policy::default()
        })
        .contains("must be less than --image-gc-high-threshold 85"));
        assert!(bad(Policy {
            max_age: Some(Duration::from_secs(60)),
            ..Policy::default()
        })
        .contains("must be greater than --image-minimum-gc-age"));
    }
}
