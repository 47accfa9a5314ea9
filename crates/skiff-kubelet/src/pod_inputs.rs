//! What a container is given besides its image: environment variables
//! (values, ConfigMap and Secret keys, pod fields, `envFrom`) and volumes
//! (emptyDir on disk or in memory, hostPath, ConfigMap, Secret, downwardAPI,
//! projected), materialized under the pod's directory and kept current on
//! every sync.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret, Service, ServiceAccountTokenProjection, VolumeMount,
};
use kube::api::Api;
use kube::Client;

use crate::expansion;
use crate::local_path::LocalPath;

/// The data of a ConfigMap or Secret, as bytes by key; `None` when it does
/// not exist.
async fn data(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    skiff_runtime::api::path_segment(name).map_err(|e| format!("{kind} {e}"))?;
    let fail = |e: kube::Error| format!("{kind} {name:?}: {e}");
    if kind == "secret" {
        let s = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(fail)?;
        Ok(s.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }))
    } else {
        let c = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(fail)?;
        Ok(c.map(|c| {
            let mut out: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            out.extend(
                c.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            out
        }))
    }
}

/// A pod field for `fieldRef`.
fn field(pod: &Pod, path: &str, pod_ip: &str) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => m.name.clone()?,
        "metadata.namespace" => m.namespace.clone()?,
        "metadata.uid" => m.uid.clone()?,
        "spec.nodeName" => spec?.node_name.clone()?,
        "spec.serviceAccountName" => spec?.service_account_name.clone()?,
        "status.podIP" => pod_ip.to_owned(),
        "status.hostIP" => pod.status.as_ref()?.host_ip.clone().unwrap_or_default(),
        other => {
            let key = other
                .strip_prefix("metadata.labels['")?
                .strip_suffix("']")?;
            m.labels.as_ref()?.get(key)?.clone()
        }
    })
}

/// The Services' variables: the API server's always, the namespace's
/// when the pod's `enableServiceLinks` is on (the default).
async fn service_vars(
    client: &Client,
    pod: &Pod,
    ns: &str,
) -> Result<BTreeMap<String, String>, String> {
    let fail = |e: kube::Error| format!("listing services: {e}");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
    let mut services = match links {
        true => {
            Api::<Service>::namespaced(client.clone(), ns)
                .list(&Default::default())
                .await
                .map_err(fail)?
                .items
        }
        false => Vec::new(),
    };
    let api_server = Api::<Service>::namespaced(client.clone(), "default")
        .get_opt("kubernetes")
        .await
        .map_err(fail)?;
    services.extend(api_server);
    Ok(crate::service_env::vars(&services))
}

/// The data of the pod's `imagePullSecrets`, and the names of those that
/// could not be read (a pull goes on without them, as upstream's).
pub async fn pull_secrets(
    client: &Client,
    pod: &Pod,
) -> (Vec<BTreeMap<String, Vec<u8>>>, Vec<String>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    let names = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten());
    for name in names.map(|r| r.name.clone()) {
        match data(client, &ns, "secret", &name).await {
            Ok(Some(d)) => found.push(d),
            _ => missing.push(name),
        }
    }
    (found, missing)
}

/// The container's environment; an error is a `CreateContainerConfigError`.
/// `volumes` are the pod's, for variables read from an env file in one.
pub async fn env(
    client: &Client,
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    volumes: &BTreeMap<String, Volume>,
) -> Result<Vec<cri::KeyValue>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = service_vars(client, pod, &ns).await?;
    for from in c.env_from.iter().flatten() {
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => ("configmap", r.name.clone(), r.optional == Some(true)),
            (_, Some(r)) => ("secret", r.name.clone(), r.optional == Some(true)),
            _ => continue,
        };
        match data(client, &ns, kind, &name).await? {
            Some(d) => {
                let prefix = from.prefix.clone().unwrap_or_default();
                out.extend(d.into_iter().map(|(k, v)| {
                    (
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                }));
            }
            None if optional => {}
            None => return Err(format!("{kind} {name:?} not found")),
        }
    }
    for e in c.env.iter().flatten() {
        let literal = e
            .value
            .as_ref()
            .filter(|v| !v.is_empty() || e.value_from.is_none());
        let value = if let Some(v) = literal {
            // A value names the variables before it, and the services'.
            Some(expansion::expand(v, |name| {
                out.get(name).map(String::as_str)
            }))
        } else if let Some(src) = &e.value_from {
            let ns = ns.as_str();
            let from_key = |kind: &'static str, name: String, key: String, optional: bool| async move {
                match data(client, ns, kind, &name).await? {
                    Some(d) => match d.get(&key) {
                        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
                        None if optional => Ok(None),
                        None => Err(format!("couldn't find key {key} in {kind} {ns}/{name}")),
                    },
                    None if optional => Ok(None),
                    None => Err(format!("{kind} {name:?} not found")),
                }
            };
            if let Some(r) = &src.config_map_key_ref {
                from_key(
                    "configmap",
                    r.name.clone(),
                    r.key.clone(),
                    r.optional == Some(true),
                )
                .await?
            } else if let Some(r) = &src.secret_key_ref {
                from_key(
                    "secret",
                    r.name.clone(),
                    r.key.clone(),
                    r.optional == Some(true),
                )
                .await?
            } else if let Some(r) = &src.file_key_ref {
                let volume = volumes
                    .get(&r.volume_name)
                    .ok_or_else(|| format!("volume {:?} not found", r.volume_name))?;
                let value = crate::env_file::lookup(&volume.path, &r.path, &r.key)?;
                if value.is_none() && r.optional != Some(true) {
                    return Err(format!(
                        "couldn't find key {} in env file {:?} of volume {:?}",
                        r.key, r.path, r.volume_name
                    ));
                }
                value
            } else if let Some(r) = &src.field_ref {
                field(pod, &r.field_path, pod_ip)
            } else if let Some(r) = &src.resource_field_ref {
                // The container named, or this one.
                let target = match &r.container_name {
                    Some(name) if !name.is_empty() => pod
                        .spec
                        .iter()
                        .flat_map(|s| s.containers.iter())
                        .find(|x| &x.name == name)
                        .ok_or_else(|| format!("resourceFieldRef names no container: {name:?}"))?,
                    _ => c,
                };
                Some(resource_field(
                    target,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                )?)
            } else {
                None
            }
        } else {
            None
        };
        if let Some(v) = value {
            out.insert(e.name.clone(), v);
        }
    }
    Ok(out
        .into_iter()
        .map(|(key, value)| cri::KeyValue { key, value })
        .collect())
}

/// Writes `files` into `dir` where they differ, with `mode`; says whether
/// it wrote any.
fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>, mode: u32) -> Result<bool, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut wrote = false;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, bytes) in files {
        if let Some(why) = skiff_core::validate::local_path_problem(name) {
            return Err(format!("file {name:?} {why}"));
        }
        let path = dir.join(name);
        if let Some(parent) = Path::new(name).parent().and_then(Path::to_str) {
            if !parent.is_empty() {
                inside(dir, parent)?;
            }
        }
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!("file {name:?} is a symbolic link"));
        }
        if std::fs::read(&path).ok().as_ref() == Some(bytes) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let tmp = path.with_extension("skiff-tmp");
        std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        wrote = true;
    }
    Ok(wrote)
}

/// The files of a ConfigMap or Secret volume (or projection): every key,
/// or the chosen `items`.
async fn object_files(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    match data(client, ns, kind, name).await? {
        Some(d) => Ok(match items {
            Some(items) => items
                .iter()
                .filter_map(|i| Some((i.path.clone(), d.get(&i.key)?.clone())))
                .collect(),
            None => d,
        }),
        None if optional => Ok(BTreeMap::new()),
        None => Err(format!("{kind} {name:?} not found")),
    }
}

/// `key="value"` lines, as downward API files list labels and annotations.
fn pairs(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

/// The files of a downwardAPI volume (or projection).
fn downward_files(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            match f.field_path.as_str() {
                "metadata.labels" => pairs(pod.metadata.labels.as_ref()),
                "metadata.annotations" => pairs(pod.metadata.annotations.as_ref()),
                path => {
                    field(pod, path, "").ok_or_else(|| format!("unsupported fieldPath {path:?}"))?
                }
            }
        } else if let Some(r) = &item.resource_field_ref {
            let c = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .find(|c| Some(&c.name) == r.container_name.as_ref())
                .ok_or_else(|| {
                    format!(
                        "resourceFieldRef names no container: {:?}",
                        r.container_name
                    )
                })?;
            resource_field(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))?
        } else {
            continue;
        };
        files.insert(item.path.clone(), value.into_bytes());
    }
    Ok(files)
}

/// A container's request or limit (`limits.cpu`, `requests.memory`, …) in
/// units of `divisor`, rounded up as upstream does.
fn resource_field(c: &Container, resource: &str, divisor: Option<&str>) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resource {resource:?}"))?;
    let r = c.resources.as_ref();
    let set = match kind {
        "limits" => r.and_then(|r| r.limits.as_ref()),
        "requests" => r.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported resource {resource:?}")),
    };
    let milli = |q: &str| skiff_core::quantity::parse_milli(q);
    let value = set
        .and_then(|s| s.get(name))
        .and_then(|q| milli(&q.0))
        .unwrap_or(0);
    let divisor = divisor.and_then(milli).filter(|d| *d > 0).unwrap_or(1000);
    Ok(((value.max(0) + divisor - 1) / divisor).to_string())
}

/// Mounts a tmpfs at `path` (a `medium: Memory` emptyDir, or a volume of
/// secrets), once; `mode` is its root directory's.
fn mount_tmpfs(path: &Path, mode: u32, size: Option<&str>) -> Result<(), String> {
    if is_mounted(path) {
        return Ok(());
    }
    let target = path.display().to_string();
    let mut options = format!("mode={mode:o}");
    if let Some(bytes) = size.and_then(skiff_core::quantity::parse_milli) {
        options.push_str(&format!(",size={}", bytes / 1000));
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
        .arg(path)
        .status()
        .map_err(|e| format!("mount tmpfs on {target}: {e}"))?;
    if !status.success() {
        return Err(format!("mount tmpfs on {target} failed"));
    }
    Ok(())
}

/// Whether something is mounted at `target`.
pub fn is_mounted(target: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == target)
}

/// Unmounts whatever is mounted under `dir` (memory-backed emptyDirs), so
/// the directory can go.
pub fn release(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    for m in mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
    {
        let _ = std::process::Command::new("umount").arg(m).status();
    }
}

/// Service account tokens projected into pods, by pod uid and path, with
/// when to renew them (at 80% of their life, as upstream).
#[derive(Default)]
pub struct Tokens(Mutex<HashMap<TokenKey, (Vec<u8>, Instant)>>);

/// A projected token: pod uid and path.
type TokenKey = (String, String);

impl Tokens {
    /// Forgets the tokens of pods not in `known`.
    pub fn retain(&self, known: &[String]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(uid, _), _| known.contains(uid));
    }
}

/// A token for the pod's service account, bound to the pod, from the API
/// server's TokenRequest; reused until it is due for renewal.
async fn token(
    client: &Client,
    pod: &Pod,
    source: &ServiceAccountTokenProjection,
    tokens: &Tokens,
) -> Result<Vec<u8>, String> {
    let m = &pod.metadata;
    let key = (m.uid.clone().unwrap_or_default(), source.path.clone());
    if let Some((token, renew)) = tokens.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        if Instant::now() < *renew {
            return Ok(token.clone());
        }
    }
    let ns = m.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let seconds = source.expiration_seconds.unwrap_or(3600).max(600);
    let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": source.audience.iter().collect::<Vec<_>>(), "expirationSeconds": seconds,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": m.name, "uid": m.uid}}});
    let request = hyper::Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{account}/token"
    ))
    .header("content-type", "application/json")
    .body(body.to_string().into_bytes())
    .map_err(|e| e.to_string())?;
    let reply: serde_json::Value = client
        .request(request)
        .await
        .map_err(|e| format!("token for service account {account:?}: {e}"))?;
    let token = reply["status"]["token"]
        .as_str()
        .ok_or("the TokenRequest reply has no token")?
        .as_bytes()
        .to_vec();
    let renew = Instant::now() + Duration::from_secs((seconds as u64) * 4 / 5);
    tokens
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, (token.clone(), renew));
    Ok(token)
}

/// The directories of a pod's claims, by volume name.
pub type Claimed = HashMap<String, ClaimedVolume>;

/// Where a claim's volume is on this node, and whether it is a raw block
/// device (`volumeMode: Block`) rather than a directory.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedVolume {
    pub path: PathBuf,
    pub block: bool,
}

/// What mounting a pod's volumes reads and remembers besides the pod.
pub struct Mounts<'a> {
    pub tokens: &'a Tokens,
    /// Where local-path volumes live (none on a simulated node).
    pub local_path: Option<&'a LocalPath>,
    pub claimed: &'a mut Claimed,
}

/// One volume of a pod on this node.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub path: PathBuf,
    /// Files the agent writes (ConfigMaps, Secrets, the downward API,
    /// projections) are mounted read-only, as upstream does, so that no
    /// container can plant what the agent would write through.
    pub read_only: bool,
    /// A raw block device, which containers get through `volumeDevices`
    /// only.
    pub block: bool,
}

/// Makes the pod's volumes exist under `dir`; an error is a
/// `CreateContainerConfigError`. Names and paths from the spec are
/// checked again here (the API server validates them): none may lead out
/// of `dir`.
pub async fn volumes(
    client: &Client,
    pod: &Pod,
    dir: &Path,
    mounts: Mounts<'_>,
) -> Result<BTreeMap<String, Volume>, String> {
    let Mounts {
        tokens,
        local_path,
        claimed,
    } = mounts;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let security = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let fs_group = security.and_then(|s| s.fs_group).map(|g| g as u32);
    let mut out = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if !skiff_core::validate::is_dns_label(&v.name) {
            return Err(format!("volume name {:?} is not a DNS label", v.name));
        }
        let path = dir.join(&v.name);
        let mut files = BTreeMap::new();
        let mode;
        if let Some(e) = &v.empty_dir {
            let new = !path.exists();
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if e.medium.as_deref() == Some("Memory") {
                mount_tmpfs(&path, 0o777, e.size_limit.as_ref().map(|q| q.0.as_str()))?;
            } else if new {
                // As upstream: anyone in the pod may write an emptyDir.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            // The group is set when the volume is set up (once in the
            // pod's life, so `fsGroupChangePolicy` Always and
            // OnRootMismatch agree), and again if its root lost it.
            if let Some(gid) = fs_group {
                if new || !crate::ownership::root_matches(&path, gid, false) {
                    crate::ownership::apply(&path, gid, false)?;
                }
            }
            out.insert(
                v.name.clone(),
                Volume {
                    path,
                    read_only: false,
                    block: false,
                },
            );
            continue;
        } else if let Some(claim) = skiff_core::volumes::pod_claim(pod, v) {
            let ClaimedVolume { path, block } = match claimed.get(&v.name) {
                Some(p) => p.clone(),
                None => {
                    // A generic ephemeral volume's claim must be the pod's own.
                    let owner = claim.ephemeral.then_some(pod);
                    let p = claim_path(client, &ns, &claim.name, owner, local_path).await?;
                    claimed.insert(v.name.clone(), p.clone());
                    p
                }
            };
            if let Some(gid) = fs_group.filter(|_| !block) {
                if !crate::ownership::root_matches(&path, gid, false) {
                    crate::ownership::apply(&path, gid, false)?;
                }
            }
            let named = v.persistent_volume_claim.as_ref();
            let read_only = named.is_some_and(|c| c.read_only == Some(true));
            let volume = Volume {
                path,
                read_only,
                block,
            };
            out.insert(v.name.clone(), volume);
            continue;
        } else if let Some(h) = &v.host_path {
            if h.type_.as_deref() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(&h.path).map_err(|e| format!("{}: {e}", h.path))?;
            }
            let path = PathBuf::from(&h.path);
            out.insert(
                v.name.clone(),
                Volume {
                    path,
                    read_only: false,
                    block: false,
                },
            );
            continue;
        } else if v.image.is_some() {
            // Pulled and mounted by the pod's worker, with its images.
            continue;
        } else if let Some(c) = &v.config_map {
            mode = c.default_mode.unwrap_or(0o644);
            files = object_files(
                client,
                &ns,
                "configmap",
                &c.name,
                c.items.as_deref(),
                c.optional == Some(true),
            )
            .await?;
        } else if let Some(s) = &v.secret {
            mode = s.default_mode.unwrap_or(0o644);
            let name = s.secret_name.clone().unwrap_or_default();
            files = object_files(
                client,
                &ns,
                "secret",
                &name,
                s.items.as_deref(),
                s.optional == Some(true),
            )
            .await?;
        } else if let Some(d) = &v.downward_api {
            mode = d.default_mode.unwrap_or(0o644);
            files = downward_files(pod, d.items.as_deref().unwrap_or_default())?;
        } else if let Some(p) = &v.projected {
            mode = p.default_mode.unwrap_or(0o644);
            for source in p.sources.iter().flatten() {
                if let Some(c) = &source.config_map {
                    files.extend(
                        object_files(
                            client,
                            &ns,
                            "configmap",
                            &c.name,
                            c.items.as_deref(),
                            c.optional == Some(true),
                        )
                        .await?,
                    );
                } else if let Some(s) = &source.secret {
                    files.extend(
                        object_files(
                            client,
                            &ns,
                            "secret",
                            &s.name,
                            s.items.as_deref(),
                            s.optional == Some(true),
                        )
                        .await?,
                    );
                } else if let Some(d) = &source.downward_api {
                    files.extend(downward_files(pod, d.items.as_deref().unwrap_or_default())?);
                } else if let Some(t) = &source.service_account_token {
                    let bytes = token(client, pod, t, tokens).await?;
                    files.insert(t.path.clone(), bytes);
                } else {
                    let kind = source_kind(&serde_json::to_value(source).unwrap_or_default());
                    return Err(format!(
                        "volume {:?}: projected {kind} sources are not supported on this node",
                        v.name
                    ));
                }
            }
        } else {
            let kind = source_kind(&serde_json::to_value(v).unwrap_or_default());
            return Err(format!(
                "volume {:?}: {kind} volumes are not supported on this node",
                v.name
            ));
        }
        // Secrets and tokens never touch the node's disk.
        if v.secret.is_some() || v.projected.is_some() {
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            mount_tmpfs(&path, 0o755, None)?;
        }
        let wrote = write_files(&path, &files, mode as u32)?;
        // New files take the group once; an unchanged volume is left be.
        if let Some(gid) = fs_group {
            if wrote || !crate::ownership::root_matches(&path, gid, true) {
                crate::ownership::apply(&path, gid, true)?;
            }
        }
        out.insert(
            v.name.clone(),
            Volume {
                path,
                read_only: true,
                block: false,
            },
        );
    }
    Ok(out)
}

/// Where the volume bound to a claim is on this node (a directory, or a
/// block device for `volumeMode: Block`); an error while the claim is
/// unbound (the pod waits).
async fn claim_path(
    client: &Client,
    ns: &str,
    name: &str,
    owner: Option<&Pod>,
    local_path: Option<&LocalPath>,
) -> Result<ClaimedVolume, String> {
    skiff_runtime::api::path_segment(name).map_err(|e| format!("persistentvolumeclaim {e}"))?;
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("persistentvolumeclaim {name:?}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim {name:?} not found"))?;
    if let Some(pod) = owner.filter(|pod| !skiff_core::volumes::owned_by(&claim, pod)) {
        return Err(skiff_core::volumes::not_the_pods(&claim, pod));
    }
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
    let Some(volume) = volume.filter(|v| bound && !v.is_empty()) else {
        return Err(format!("persistentvolumeclaim {name:?} is not bound yet"));
    };
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .map_err(|e| format!("persistentvolume {volume:?}: {e}"))?;
    let spec = pv.spec.clone().unwrap_or_default();
    let block = spec.volume_mode.as_deref() == Some("Block");
    if skiff_core::volumes::is_local_path(&pv) {
        let Some(local_path) = local_path else {
            return Err(format!(
                "persistentvolume {volume:?}: this node keeps no local-path volumes"
            ));
        };
        let path = local_path.ensure(client, &pv).await?;
        return Ok(ClaimedVolume { path, block: false });
    }
    let path = match (&spec.local, &spec.host_path) {
        (Some(l), _) => PathBuf::from(&l.path),
        (None, Some(h)) => {
            if h.type_.as_deref() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(&h.path).map_err(|e| format!("{}: {e}", h.path))?;
            }
            PathBuf::from(&h.path)
        }
        (None, None) => {
            let kind = source_kind(&serde_json::to_value(&spec).unwrap_or_default());
            return Err(format!(
                "persistentvolume {volume:?}: its volume source is not supported on this node (hostPath and local are): {kind}"
            ));
        }
    };
    if block {
        use std::os::unix::fs::FileTypeExt;
        let device = std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_block_device());
        if !device {
            return Err(format!(
                "persistentvolume {volume:?}: path {} is not a block device on this node",
                path.display()
            ));
        }
    } else if !path.is_dir() {
        return Err(format!(
            "persistentvolume {volume:?}: path {} does not exist on this node",
            path.display()
        ));
    }
    Ok(ClaimedVolume { path, block })
}

/// The kind of a volume or projection source: its one field besides the
/// name.
fn source_kind(source: &serde_json::Value) -> String {
    let mut fields = source.as_object().into_iter().flat_map(|o| o.keys());
    let kind = fields.find(|k| *k != "name");
    kind.cloned().unwrap_or_else(|| "empty".into())
}

/// The container's mounts of the pod's volumes: a `subPathExpr` expanded
/// from its environment `env`, the propagation asked for, and read-only
/// mounts made recursively so where asked and the runtime `recursive`ly
/// can.
pub fn mounts(
    c: &Container,
    volumes: &BTreeMap<String, Volume>,
    env: &[cri::KeyValue],
    recursive: bool,
) -> Result<Vec<cri::Mount>, String> {
    let lookup = |name: &str| {
        env.iter()
            .find(|kv| kv.key == name)
            .map(|kv| kv.value.as_str())
    };
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.get(&m.name) else {
            continue;
        };
        if volume.block {
            return Err(format!(
                "volume {:?} is a block device: a container gets it through volumeDevices",
                m.name
            ));
        }
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let sub = match (non_empty(&m.sub_path), non_empty(&m.sub_path_expr)) {
            (Some(sub), _) => Some(sub),
            (None, Some(expr)) => Some(expansion::expand_all(&expr, lookup)?),
            (None, None) => None,
        };
        let host = match sub {
            Some(sub) => inside(&volume.path, &sub)?,
            None => volume.path.clone(),
        };
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("None") => cri::MountPropagation::PropagationPrivate,
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
            Some(other) => return Err(format!("invalid MountPropagation mode: {other:?}")),
        };
        let recursive_read_only = recursive_read_only(m, recursive)
            .map_err(|why| format!("failed to resolve recursive read-only mode: {why}"))?;
        out.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly: volume.read_only || m.read_only == Some(true),
            recursive_read_only,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

/// The container's raw block devices (`volumeDevices`): each a claim's
/// volume in block mode, at its `devicePath`, writable unless the pod's
/// claim is read-only.
pub fn devices(
    c: &Container,
    volumes: &BTreeMap<String, Volume>,
) -> Result<Vec<cri::Device>, String> {
    let mut out = Vec::new();
    for d in c.volume_devices.iter().flatten() {
        let Some(volume) = volumes.get(&d.name) else {
            continue;
        };
        if !volume.block {
            return Err(format!(
                "volume {:?} is not a block device: a container mounts it through volumeMounts",
                d.name
            ));
        }
        out.push(cri::Device {
            container_path: d.device_path.clone(),
            host_path: volume.path.display().to_string(),
            permissions: if volume.read_only { "mr" } else { "mrw" }.into(),
        });
    }
    Ok(out)
}

/// Whether a mount's `recursiveReadOnly` asks for it to be made so, which
/// a runtime that cannot (`recursive` false) refuses for `Enabled`.
pub fn recursive_read_only(m: &VolumeMount, recursive: bool) -> Result<bool, String> {
    let name = &m.name;
    match m.recursive_read_only.as_deref() {
        None | Some("Disabled") => Ok(false),
        Some(_) if m.read_only != Some(true) => Err(format!(
            "volume {name:?} requested recursive read-only mode, but it is not read-only"
        )),
        Some(_) if m.mount_propagation.as_deref().is_some_and(|p| p != "None") => Err(format!(
            "volume {name:?} requested recursive read-only mode, but it is not compatible with propagation {:?}",
            m.mount_propagation.as_deref().unwrap_or_default()
        )),
        Some("IfPossible") => Ok(recursive),
        Some("Enabled") if recursive => Ok(true),
        Some("Enabled") => Err(format!(
            "volume {name:?} requested recursive read-only mode, but it is not supported by the runtime"
        )),
        Some(other) => Err(format!("unknown recursive read-only mode {other:?}")),
    }
}

/// Whether a container asks for any recursively read-only mount (only
/// then is the runtime asked whether it can make one).
pub fn wants_recursive_read_only(c: &Container) -> bool {
    let asks =
        |m: &VolumeMount| !matches!(m.recursive_read_only.as_deref(), None | Some("Disabled"));
    c.volume_mounts.iter().flatten().any(asks)
}

/// `base/relative`, made if missing, refused if it would lead out of
/// `base`: an absolute path, a `..`, or a symbolic link on the way (which a
/// container can plant in a writable volume).
pub fn inside(base: &Path, relative: &str) -> Result<PathBuf, String> {
    if let Some(why) = skiff_core::validate::local_path_problem(relative) {
        return Err(format!("path {relative:?} {why}"));
    }
    let mut at = base.to_path_buf();
    for part in Path::new(relative).components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!("path {relative:?} leads through a symbolic link"))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn names_from_the_pod_spec_never_leave_their_url_segment() {
        // Nothing listens here: a refused name must fail before a request.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let e = data(&client, "d", "secret", "../../kube-system/secrets/x")
            .await
            .unwrap_err();
        assert!(e.contains("may not contain '/'"), "{e}");
        let e = claim_path(&client, "d", "..", None, None)
            .await
            .unwrap_err();
        assert!(e.contains("may not be '..'"), "{e}");
        let e = data(&client, "d", "configmap", "app").await.unwrap_err();
        assert!(!e.contains("invalid resource name"), "{e}");
    }

    #[test]
    fn pod_fields_and_mounts() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": []},
        }))
        .unwrap();
        for (path, want) in [
            ("metadata.name", Some("p")),
            ("metadata.namespace", Some("ns")),
            ("spec.nodeName", Some("n1")),
            ("status.podIP", Some("10.42.0.7")),
            ("metadata.labels['app']", Some("web")),
            ("metadata.labels['nope']", None),
        ] {
            assert_eq!(field(&pod, path, "10.42.0.7").as_deref(), want, "{path}");
        }
        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true},
            {"name": "data", "mountPath": "/data", "subPath": "x"},
            {"name": "unknown", "mountPath": "/nope"}]}))
        .unwrap();
        let volume = |path: &str, read_only| Volume {
            path: PathBuf::from(path),
            read_only,
            block: false,
        };
        let data = tempfile_dir("mounts");
        std::fs::create_dir_all(&data).unwrap();
        let volumes: BTreeMap<String, Volume> = [
            ("cfg".to_owned(), volume("/v/cfg", false)),
            ("data".to_owned(), volume(data.to_str().unwrap(), true)),
        ]
        .into();
        let m = mounts(&c, &volumes, &[], false).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].host_path.as_str(), m[0].readonly), ("/v/cfg", true));
        assert_eq!(m[1].host_path, data.join("x").display().to_string());
        assert!(m[1].readonly, "files the agent writes are read-only");
        std::fs::remove_dir_all(&data).unwrap();
    }

    /// A claim in block mode reaches the container as a device, never as a
    /// mount, and a directory never as a device.
    #[test]
    fn block_volumes_are_devices_and_only_devices() {
        let c: Container = serde_json::from_value(json!({"name": "c",
            "volumeDevices": [{"name": "disk", "devicePath": "/dev/xvda"},
                {"name": "ro", "devicePath": "/dev/xvdb"}, {"name": "gone", "devicePath": "/dev/x"}]}))
        .unwrap();
        let volume = |path: &str, read_only, block| Volume {
            path: PathBuf::from(path),
            read_only,
            block,
        };
        let mut volumes: BTreeMap<String, Volume> = [
            ("disk".to_owned(), volume("/dev/loop7", false, true)),
            ("ro".to_owned(), volume("/dev/loop8", true, true)),
        ]
        .into();
        let found = devices(&c, &volumes).unwrap();
        let seen: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|d| {
                (
                    d.container_path.as_str(),
                    d.host_path.as_str(),
                    d.permissions.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("/dev/xvda", "/dev/loop7", "mrw"),
                ("/dev/xvdb", "/dev/loop8", "mr")
            ]
        );
        let mounting: Container = serde_json::from_value(
            json!({"name": "c", "volumeMounts": [{"name": "disk", "mountPath": "/d"}]}),
        )
        .unwrap();
        let err = mounts(&mounting, &volumes, &[], false).unwrap_err();
        assert!(err.contains("through volumeDevices"), "{err}");
        volumes.insert("disk".into(), volume("/srv/disk", false, false));
        let err = devices(&c, &volumes).unwrap_err();
        assert!(err.contains("through volumeMounts"), "{err}");
    }

    /// A `subPathExpr` names the container's variables; propagation and
    /// recursive read-only mounts reach the runtime as asked, or the
    /// container does not start, with upstream's reasons.
    #[test]
    fn mount_settings_reach_the_runtime_or_refuse_the_container() {
        let data = tempfile_dir("mount-settings");
        std::fs::create_dir_all(&data).unwrap();
        let volumes: BTreeMap<String, Volume> = [(
            "data".to_owned(),
            Volume {
                path: data.clone(),
                read_only: false,
                block: false,
            },
        )]
        .into();
        let env = [cri::KeyValue {
            key: "POD_NAME".into(),
            value: "web-0".into(),
        }];
        let container = |mount: serde_json::Value| -> Container {
            let mut m = json!({"name": "data", "mountPath": "/data"});
            m.as_object_mut()
                .unwrap()
                .extend(mount.as_object().unwrap().clone());
            serde_json::from_value(json!({"name": "c", "volumeMounts": [m]})).unwrap()
        };
        let mount = |settings, recursive| mounts(&container(settings), &volumes, &env, recursive);
        let expr = mount(json!({"subPathExpr": "pods/$(POD_NAME)"}), false).unwrap();
        assert_eq!(
            expr[0].host_path,
            data.join("pods/web-0").display().to_string()
        );
        assert_eq!(
            mount(json!({"subPathExpr": "$(NODE)"}), false).unwrap_err(),
            "missing value for NODE"
        );
        let shared = mount(json!({"mountPropagation": "HostToContainer"}), false).unwrap();
        let to_container = cri::MountPropagation::PropagationHostToContainer as i32;
        assert_eq!(shared[0].propagation, to_container);
        let rro = |mode: &str, recursive| {
            let settings = json!({"readOnly": true, "recursiveReadOnly": mode});
            mount(settings, recursive).map(|m| (m[0].readonly, m[0].recursive_read_only))
        };
        assert_eq!(rro("IfPossible", false), Ok((true, false)));
        assert_eq!(rro("IfPossible", true), Ok((true, true)));
        assert_eq!(rro("Enabled", true), Ok((true, true)));
        assert_eq!(
            rro("Enabled", false).unwrap_err(),
            "failed to resolve recursive read-only mode: volume \"data\" requested recursive read-only mode, but it is not supported by the runtime"
        );
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn paths_from_the_spec_stay_inside_their_volume() {
        let dir = tempfile_dir("inside");
        std::fs::create_dir_all(dir.join("vol")).unwrap();
        let base = dir.join("vol");
        assert_eq!(inside(&base, "a/b").unwrap(), base.join("a/b"));
        assert!(base.join("a/b").is_dir(), "made when missing");
        for bad in ["/", "/etc", "../x", "a/../../x"] {
            assert!(inside(&base, bad).is_err(), "{bad}");
        }
        // A link a container planted in its volume is not followed.
        std::os::unix::fs::symlink("/", base.join("root")).unwrap();
        assert!(inside(&base, "root/etc").is_err());
        let files: BTreeMap<String, Vec<u8>> = [("root".to_owned(), b"x".to_vec())].into();
        assert!(
            write_files(&base, &files, 0o644).is_err(),
            "no write through a link"
        );
        let files: BTreeMap<String, Vec<u8>> = [("../out".to_owned(), b"x".to_vec())].into();
        assert!(write_files(&base, &files, 0o644).is_err());
        assert!(!dir.join("out").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("skiff-{name}-{}", std::process::id()))
    }

    #[tokio::test]
    async fn env_from_resource_fields() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "500m"}},
                "env": [
                    {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"containerName": "c", "resource": "requests.cpu", "divisor": "1m"}}},
                ]}]},
        }))
        .unwrap();
        // No ConfigMap or Secret is named; no Service exists.
        let (client, _) = crate::fake_api::fake_api();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env = env(&client, &pod, c, "", &BTreeMap::new()).await.unwrap();
        let get = |k: &str| env.iter().find(|e| e.key == k).map(|e| e.value.clone());
        assert_eq!(get("MEM_MI").as_deref(), Some("128"));
        assert_eq!(get("CPU_M").as_deref(), Some("500"));
    }

    #[test]
    fn downward_api_files() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "tier": "1"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}}}]},
        }))
        .unwrap();
        let items: Vec<DownwardAPIVolumeFile> = serde_json::from_value(json!([
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu"}},
        ]))
        .unwrap();
        let files = downward_files(&pod, &items).unwrap();
        let text = |k: &str| String::from_utf8(files[k].clone()).unwrap();
        assert_eq!(text("name"), "p");
        assert_eq!(text("labels"), "app=\"web\"\ntier=\"1\"\n");
        assert_eq!(text("mem"), "64");
        assert_eq!(text("cpu"), "1", "cpu rounds up to whole cores");
        let bad: Vec<DownwardAPIVolumeFile> = serde_json::from_value(
            json!([{"path": "x", "fieldRef": {"fieldPath": "spec.nothing"}}]),
        )
        .unwrap();
        assert!(downward_files(&pod, &bad).is_err());
    }

    #[test]
    fn files_are_written_with_their_mode_and_only_when_changed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("skiff-files-{}", std::process::id()));
        let files: BTreeMap<String, Vec<u8>> = [("a".to_owned(), b"1".to_vec())].into();
        write_files(&dir, &files, 0o600).unwrap();
        let meta = std::fs::metadata(dir.join("a")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let before = meta.modified().unwrap();
        write_files(&dir, &files, 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join("a"))
                .unwrap()
                .modified()
                .unwrap(),
            before
        );
        let changed: BTreeMap<String, Vec<u8>> = [("a".to_owned(), b"2".to_vec())].into();
        write_files(&dir, &changed, 0o600).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"2");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
