//! A pod's isolation settings as CRI asks for them: host namespaces
//! (`hostNetwork`, `hostPID`, `hostIPC`, `shareProcessNamespace`) and each
//! container's `securityContext` merged over the pod's (user and group,
//! `runAsNonRoot`, capabilities, `privileged`, `readOnlyRootFilesystem`,
//! `allowPrivilegeEscalation`, seccomp, AppArmor). What a node cannot apply is
//! refused with a reason, never dropped: the pod's author asked for it.

use k8s_cri::v1 as cri;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, PodSpec, SeccompProfile};

/// Who an image runs as when nothing overrides it: a numeric uid, or a
/// user name the runtime resolves in the image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageUser {
    pub uid: Option<i64>,
    pub name: String,
}

impl ImageUser {
    /// Who the runtime says `image` runs as.
    pub fn of(image: &cri::Image) -> Self {
        Self {
            uid: image.uid.as_ref().map(|u| u.value),
            name: image.username.clone(),
        }
    }
}

/// The namespaces a pod shares with the node, or among its containers.
pub fn namespaces(spec: &PodSpec) -> cri::NamespaceOption {
    let mode = |host: Option<bool>, otherwise: cri::NamespaceMode| {
        if host == Some(true) {
            cri::NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    let shared_pids = if spec.share_process_namespace == Some(true) {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    cri::NamespaceOption {
        network: mode(spec.host_network, cri::NamespaceMode::Pod),
        pid: mode(spec.host_pid, shared_pids),
        ipc: mode(spec.host_ipc, cri::NamespaceMode::Pod),
        ..Default::default()
    }
}

/// The pod's sysctls (only upstream's safe, per-pod ones get this far).
pub fn sysctls(spec: &PodSpec) -> std::collections::HashMap<String, String> {
    let pod = spec.security_context.clone().unwrap_or_default();
    pod.sysctls
        .into_iter()
        .flatten()
        .map(|s| (s.name, s.value))
        .collect()
}

/// The sandbox's security settings. `seccomp_root` holds the node's own
/// seccomp profiles (none: `Localhost` profiles cannot be used here).
pub fn sandbox(
    spec: &PodSpec,
    seccomp_root: Option<&Path>,
) -> Result<cri::LinuxSandboxSecurityContext, String> {
    let pod = spec.security_context.clone().unwrap_or_default();
    refuse_unsupported_pod_fields(spec)?;
    Ok(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespaces(spec)),
        run_as_user: pod.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: pod.run_as_group.map(|value| cri::Int64Value { value }),
        supplemental_groups: groups(spec),
        seccomp: Some(seccomp(
            pod.seccomp_profile.as_ref(),
            "spec.securityContext",
            seccomp_root,
        )?),
        ..Default::default()
    })
}

/// The pod's extra groups: `supplementalGroups` and `fsGroup`.
fn groups(spec: &PodSpec) -> Vec<i64> {
    let pod = spec.security_context.clone().unwrap_or_default();
    let mut groups = pod.supplemental_groups.unwrap_or_default();
    groups.extend(pod.fs_group);
    groups
}

fn refuse_unsupported_pod_fields(spec: &PodSpec) -> Result<(), String> {
    let Some(pod) = &spec.security_context else {
        return Ok(());
    };
    let unsupported = [
        ("seLinuxOptions", pod.se_linux_options.is_some()),
        (
            "sysctls",
            pod.sysctls
                .iter()
                .flatten()
                .any(|s| !skiff_core::validate::SAFE_SYSCTLS.contains(&s.name.as_str())),
        ),
        ("windowsOptions", pod.windows_options.is_some()),
        ("seLinuxChangePolicy", pod.se_linux_change_policy.is_some()),
    ];
    for (field, set) in unsupported {
        if set {
            return Err(format!(
                "spec.securityContext.{field} is not supported on this node"
            ));
        }
    }
    Ok(())
}

/// The container's security settings, its own over the pod's. `image`
/// says who the image runs as, for `runAsNonRoot`. (The pod's own
/// unsupported fields are refused by [`sandbox`], which runs first.)
pub fn container(
    spec: &PodSpec,
    c: &Container,
    image: &ImageUser,
    seccomp_root: Option<&Path>,
) -> Result<cri::LinuxContainerSecurityContext, String> {
    let pod = spec.security_context.clone().unwrap_or_default();
    let own = c.security_context.clone().unwrap_or_default();
    let at = format!("container {:?}", c.name);
    let unsupported = [
        ("seLinuxOptions", own.se_linux_options.is_some()),
        ("windowsOptions", own.windows_options.is_some()),
        (
            "procMount",
            own.proc_mount.as_deref().is_some_and(|p| p != "Default"),
        ),
    ];
    for (field, set) in unsupported {
        if set {
            return Err(format!(
                "{at}: securityContext.{field} is not supported on this node"
            ));
        }
    }
    let run_as_user = own.run_as_user.or(pod.run_as_user);
    let run_as_group = own.run_as_group.or(pod.run_as_group);
    if own.run_as_non_root.or(pod.run_as_non_root) == Some(true) {
        match (run_as_user, image.uid) {
            (Some(0), _) => {
                return Err(format!(
                    "{at}: container's runAsUser breaks non-root policy"
                ))
            }
            (Some(_), _) => {}
            (None, Some(0)) => {
                return Err(format!(
                    "{at}: container has runAsNonRoot and image will run as root"
                ))
            }
            (None, Some(_)) => {}
            (None, None) if image.name.is_empty() || image.name == "root" => {
                return Err(format!(
                    "{at}: container has runAsNonRoot and image will run as root"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "{at}: container has runAsNonRoot and image has non-numeric user ({}), cannot verify user is non-root",
                    image.name
                ))
            }
        }
    }
    let privileged = own.privileged == Some(true);
    if privileged && own.allow_privilege_escalation == Some(false) {
        return Err(format!(
            "{at}: cannot set allowPrivilegeEscalation to false and privileged to true"
        ));
    }
    let capabilities = own.capabilities.clone().unwrap_or_default();
    let names = |list: Option<Vec<String>>| -> Vec<String> {
        list.unwrap_or_default()
            .into_iter()
            .map(|c| c.trim_start_matches("CAP_").to_owned())
            .collect()
    };
    let (apparmor, apparmor_profile) = crate::app_armor::for_runtime(spec, c);
    let seccomp_at = format!("{at}: securityContext");
    let profile = own
        .seccomp_profile
        .as_ref()
        .or(pod.seccomp_profile.as_ref());
    let seccomp = Some(seccomp(profile, &seccomp_at, seccomp_root)?);
    // As upstream's kubelet: the AppArmor profile also in its older
    // string form, for runtimes that predate the field.
    #[allow(deprecated)]
    let context = cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: names(capabilities.add),
            drop_capabilities: names(capabilities.drop),
            ..Default::default()
        }),
        privileged,
        namespace_options: Some(namespaces(spec)),
        run_as_user: run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: run_as_group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: own.read_only_root_filesystem == Some(true),
        supplemental_groups: groups(spec),
        no_new_privs: own.allow_privilege_escalation == Some(false),
        seccomp,
        apparmor,
        apparmor_profile,
        ..Default::default()
    };
    Ok(context)
}

/// A seccomp profile for CRI: the runtime's default, none (upstream's
/// default when unset), or a file under the node's profile directory
/// `root`, named by a relative path that stays inside it.
fn seccomp(
    profile: Option<&SeccompProfile>,
    at: &str,
    root: Option<&Path>,
) -> Result<cri::SecurityProfile, String> {
    use cri::security_profile::ProfileType;
    let of = |kind: ProfileType, localhost_ref: String| cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref,
    };
    let Some(profile) = profile else {
        return Ok(of(ProfileType::Unconfined, String::new()));
    };
    match profile.type_.as_str() {
        "RuntimeDefault" => Ok(of(ProfileType::RuntimeDefault, String::new())),
        "Unconfined" => Ok(of(ProfileType::Unconfined, String::new())),
        "Localhost" => {
            let Some(root) = root else {
                return Err(format!(
                    "{at}.seccompProfile: Localhost profiles are not supported on this node"
                ));
            };
            let name = profile.localhost_profile.as_deref().unwrap_or_default();
            let problem = match name {
                "" => Some("must be set when seccomp type is Localhost"),
                name => skiff_core::validate::local_path_problem(name),
            };
            if let Some(why) = problem {
                return Err(format!(
                    "{at}.seccompProfile.localhostProfile {name:?}: {why}"
                ));
            }
            let path = root.join(name);
            Ok(of(
                ProfileType::Localhost,
                path.to_string_lossy().into_owned(),
            ))
        }
        other => Err(format!(
            "{at}.seccompProfile.type: unsupported value {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn first(spec: &PodSpec) -> &Container {
        &spec.containers[0]
    }

    #[test]
    fn host_namespaces() {
        let node = cri::NamespaceMode::Node as i32;
        let s = spec(json!({"hostNetwork": true, "hostPID": true, "containers": []}));
        let n = namespaces(&s);
        assert_eq!(
            (n.network, n.pid, n.ipc),
            (node, node, cri::NamespaceMode::Pod as i32)
        );
        let s = spec(json!({"shareProcessNamespace": true, "containers": []}));
        assert_eq!(namespaces(&s).pid, cri::NamespaceMode::Pod as i32);
        let s = spec(json!({"containers": []}));
        assert_eq!(namespaces(&s).pid, cri::NamespaceMode::Container as i32);
    }

    #[test]
    fn container_settings_over_the_pods() {
        let s = spec(json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "runAsUser": 1001, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["CAP_NET_BIND_SERVICE"]}}}]}));
        let sc = container(&s, first(&s), &ImageUser::default(), None).unwrap();
        assert_eq!(sc.run_as_user.map(|u| u.value), Some(1001));
        assert_eq!(sc.run_as_group.map(|g| g.value), Some(3000));
        assert_eq!(sc.supplemental_groups, vec![2000]);
        assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.drop_capabilities, ["ALL"]);
        assert_eq!(caps.add_capabilities, ["NET_BIND_SERVICE"]);
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            cri::security_profile::ProfileType::RuntimeDefault as i32
        );
    }

    #[test]
    fn run_as_non_root_is_checked_against_the_image() {
        let s =
            spec(json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]}));
        let image = |uid: Option<i64>, name: &str| ImageUser {
            uid,
            name: name.into(),
        };
        for (user, ok) in [
            (image(Some(0), ""), false),
            (image(None, ""), false),
            (image(None, "root"), false),
            (image(None, "app"), false),
            (image(Some(1000), ""), true),
        ] {
            assert_eq!(
                container(&s, first(&s), &user, None).is_ok(),
                ok,
                "{user:?}"
            );
        }
        let s = spec(
            json!({"containers": [{"name": "c", "securityContext": {"runAsNonRoot": true, "runAsUser": 0}}]}),
        );
        let err = container(&s, first(&s), &image(Some(1000), ""), None).unwrap_err();
        assert!(err.contains("breaks non-root policy"), "{err}");
    }

    #[test]
    fn what_a_node_cannot_apply_is_refused() {
        for sc in [
            json!({"seLinuxOptions": {"level": "s0"}}),
            json!({"procMount": "Unmasked"}),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "../../etc/x"}}),
            json!({"privileged": true, "allowPrivilegeEscalation": false}),
        ] {
            let s = spec(json!({"containers": [{"name": "c", "securityContext": sc}]}));
            assert!(
                container(&s, first(&s), &ImageUser::default(), None).is_err(),
                "{sc}"
            );
        }
        let s = spec(
            json!({"securityContext": {"sysctls": [{"name": "net.ipv4.ip_forward", "value": "1"}]}, "containers": [{"name": "c"}]}),
        );
        assert!(sandbox(&s, None).is_err(), "not a safe sysctl");
        let s = spec(
            json!({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}, "containers": [{"name": "c"}]}),
        );
        assert!(sandbox(&s, None).is_ok());
        assert_eq!(sysctls(&s)["net.ipv4.tcp_syncookies"], "1");
    }

    #[test]
    fn a_localhost_seccomp_profile_is_a_file_under_the_nodes_directory() {
        let root = Path::new("/var/lib/skiff/seccomp");
        let with = |name: &str| {
            let s = spec(
                json!({"securityContext": {"seccompProfile": {"type": "Localhost",
                "localhostProfile": name}}, "containers": [{"name": "c"}]}),
            );
            let sandbox = sandbox(&s, Some(root)).map(|s| s.seccomp.unwrap());
            let own = container(&s, first(&s), &ImageUser::default(), Some(root));
            (sandbox, own.map(|c| c.seccomp.unwrap()))
        };
        let (pod, own) = with("profiles/audit.json");
        for profile in [pod.unwrap(), own.unwrap()] {
            assert_eq!(
                profile.profile_type,
                cri::security_profile::ProfileType::Localhost as i32
            );
            assert_eq!(
                profile.localhost_ref,
                "/var/lib/skiff/seccomp/profiles/audit.json"
            );
        }
        for escape in ["../audit.json", "/etc/audit.json", ""] {
            let (pod, own) = with(escape);
            assert!(pod.is_err() && own.is_err(), "{escape}");
        }
    }
}
