//! AppArmor on the node, as upstream's kubelet: a pod that asks for a
//! profile other than `Unconfined` runs only where the kernel enforces
//! AppArmor, else the node refuses it at admission in upstream's words;
//! each container's profile (its own, else its pod's) reaches the
//! runtime, which loads or refuses it.

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{AppArmorProfile, Container, Pod, PodSpec};
use skiff_core::app_armor::ANNOTATION_PREFIX;

use crate::admission::Rejection;

/// Why this host cannot enforce AppArmor, if it cannot: the kernel's
/// module is not there or not enabled (runc's test).
pub fn host_problem() -> Option<String> {
    let fs = std::path::Path::new("/sys/kernel/security/apparmor").exists();
    let enabled = std::fs::read("/sys/module/apparmor/parameters/enabled");
    let on = fs && enabled.is_ok_and(|e| e.starts_with(b"Y"));
    (!on).then(|| "AppArmor is not enabled on the host".to_owned())
}

/// The profile `c` runs with: its own, else its pod's.
fn profile<'a>(spec: &'a PodSpec, c: &'a Container) -> Option<&'a AppArmorProfile> {
    let own = c.security_context.as_ref();
    let pod = spec.security_context.as_ref();
    own.and_then(|s| s.app_armor_profile.as_ref())
        .or_else(|| pod.and_then(|s| s.app_armor_profile.as_ref()))
}

/// Whether `pod` asks for AppArmor: a profile other than `Unconfined`, in
/// its fields or the deprecated annotations (upstream's `isRequired`).
fn required(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let confined = |p: Option<&AppArmorProfile>| p.is_some_and(|p| p.type_ != "Unconfined");
    let pod_profile = spec.security_context.as_ref();
    let regular = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    let contexts = regular
        .map(|c| c.security_context.as_ref())
        .chain(ephemeral.map(|c| c.security_context.as_ref()));
    let mut own = contexts.map(|sc| sc.and_then(|s| s.app_armor_profile.as_ref()));
    let mut annotations = pod.metadata.annotations.iter().flatten();
    confined(pod_profile.and_then(|s| s.app_armor_profile.as_ref()))
        || own.any(confined)
        || annotations.any(|(k, v)| k.starts_with(ANNOTATION_PREFIX) && v != "unconfined")
}

/// The node's admission of `pod` where `host` says why AppArmor cannot be
/// enforced here (none where it can).
pub fn admit(pod: &Pod, host: Option<&str>) -> Result<(), Rejection> {
    match host {
        Some(problem) if required(pod) => Err(Rejection {
            reason: "AppArmor".into(),
            message: format!("Cannot enforce AppArmor: {problem}"),
        }),
        _ => Ok(()),
    }
}

/// `c`'s profile for the runtime, in the field and in the older string
/// form runtimes read before it (upstream sends both); none when unset.
pub fn for_runtime(spec: &PodSpec, c: &Container) -> (Option<cri::SecurityProfile>, String) {
    use cri::security_profile::ProfileType;
    let Some(p) = profile(spec, c) else {
        return (None, String::new());
    };
    let name = p.localhost_profile.clone().unwrap_or_default();
    let (kind, older) = match p.type_.as_str() {
        "RuntimeDefault" => (ProfileType::RuntimeDefault, "runtime/default".to_owned()),
        "Localhost" => (ProfileType::Localhost, format!("localhost/{name}")),
        // Validation lets nothing else through.
        _ => (ProfileType::Unconfined, "unconfined".to_owned()),
    };
    let localhost_ref = if kind == ProfileType::Localhost {
        name
    } else {
        String::new()
    };
    let profile = cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref,
    };
    (Some(profile), older)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_confined_pod_is_refused_where_the_host_has_no_app_armor() {
        let host = Some("AppArmor is not enabled on the host");
        let confined = pod(json!({"spec": {"containers": [{"name": "c",
            "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}]}}));
        let refused = admit(&confined, host).unwrap_err();
        assert_eq!(refused.reason, "AppArmor");
        assert_eq!(
            refused.message,
            "Cannot enforce AppArmor: AppArmor is not enabled on the host"
        );
        assert!(admit(&confined, None).is_ok());
        let unconfined = pod(json!({"spec": {
            "securityContext": {"appArmorProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c"}]}}));
        assert!(admit(&unconfined, host).is_ok());
        let annotated = pod(json!({"metadata": {"annotations": {
            "container.apparmor.security.beta.kubernetes.io/c": "localhost/web"}},
            "spec": {"containers": [{"name": "c"}]}}));
        assert!(admit(&annotated, host).is_err());
    }

    #[test]
    fn a_container_runs_with_its_own_profile_else_its_pods() {
        use cri::security_profile::ProfileType;
        let p = pod(json!({"spec": {
            "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "a"}, {"name": "b", "securityContext": {
                "appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-web"}}}]}}));
        let spec = p.spec.as_ref().unwrap();
        let (a, older) = for_runtime(spec, &spec.containers[0]);
        assert_eq!(a.unwrap().profile_type, ProfileType::RuntimeDefault as i32);
        assert_eq!(older, "runtime/default");
        let (b, older) = for_runtime(spec, &spec.containers[1]);
        let b = b.unwrap();
        assert_eq!(
            (b.profile_type, b.localhost_ref.as_str()),
            (ProfileType::Localhost as i32, "k8s-web")
        );
        assert_eq!(older, "localhost/k8s-web");
        let bare = pod(json!({"spec": {"containers": [{"name": "c"}]}}));
        let spec = bare.spec.as_ref().unwrap();
        assert_eq!(
            for_runtime(spec, &spec.containers[0]),
            (None, String::new())
        );
    }
}
