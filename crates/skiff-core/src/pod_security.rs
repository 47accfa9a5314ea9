//! The Pod Security Standards as upstream's PodSecurity admission checks
//! them: the `baseline` and `restricted` levels (`privileged` allows all),
//! each failed check named and explained in upstream's words.

use serde_json::Value;

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }
}

/// Capabilities baseline lets a container add.
const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Volume types restricted allows (image volumes since upstream's 1.33).
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let noun = if names.len() == 1 {
        "container"
    } else {
        "containers"
    };
    format!("{noun} {}", quoted.join(", "))
}

fn verb(names: &[String], one: &str, many: &str) -> String {
    if names.len() == 1 { one } else { many }.to_owned()
}

/// The containers that add a capability `refused` names (as it names it),
/// and those capabilities, each once.
fn adding(
    containers: &[&Value],
    refused: impl Fn(&str) -> Option<String>,
) -> (Vec<String>, Vec<String>) {
    let (mut names, mut caps) = (Vec::new(), Vec::new());
    for c in containers {
        let added = c["securityContext"]["capabilities"]["add"].as_array();
        let bad: Vec<String> = added
            .into_iter()
            .flatten()
            .filter_map(|cap| refused(cap.as_str().unwrap_or_default()))
            .collect();
        if !bad.is_empty() {
            names.push(c["name"].as_str().unwrap_or_default().to_owned());
        }
        for cap in bad {
            if !caps.contains(&cap) {
                caps.push(cap);
            }
        }
    }
    (names, caps)
}

/// Baseline's AppArmor check: no profile but the runtime's default or a
/// node's own, in the fields or the deprecated annotations.
fn app_armor(pod: &Value, containers: &[&Value]) -> Option<String> {
    let bad = |p: &Value| {
        !p.is_null() && !matches!(p["type"].as_str(), Some("RuntimeDefault" | "Localhost"))
    };
    let mut setters = Vec::new();
    let mut values: Vec<String> = Vec::new();
    let mut note = |p: &Value| {
        let value = p["type"].as_str().unwrap_or_default().to_owned();
        if !values.contains(&value) {
            values.push(value);
        }
    };
    let pod_profile = &pod["spec"]["securityContext"]["appArmorProfile"];
    if bad(pod_profile) {
        setters.push("pod".to_owned());
        note(pod_profile);
    }
    let mut named = Vec::new();
    for c in containers {
        let profile = &c["securityContext"]["appArmorProfile"];
        if bad(profile) {
            named.push(c["name"].as_str().unwrap_or_default().to_owned());
            note(profile);
        }
    }
    if !named.is_empty() {
        setters.push(containers_phrase(&named));
    }
    values.sort();
    let annotations = pod["metadata"]["annotations"].as_object();
    let mut forbidden: Vec<String> = annotations
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(crate::app_armor::ANNOTATION_PREFIX))
        .filter_map(|(k, v)| {
            let v = v.as_str().unwrap_or_default();
            let allowed = v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
            (!allowed).then(|| format!("{k}={v:?}"))
        })
        .collect();
    if !forbidden.is_empty() {
        forbidden.sort();
        setters.push(
            if forbidden.len() == 1 {
                "annotation"
            } else {
                "annotations"
            }
            .to_owned(),
        );
        values.extend(forbidden);
    }
    if setters.is_empty() {
        return None;
    }
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    let reason = if values.len() == 1 {
        "forbidden AppArmor profile"
    } else {
        "forbidden AppArmor profiles"
    };
    Some(format!(
        "{reason} ({} must not set AppArmor profile type to {})",
        setters.join(" and "),
        quoted.join(", ")
    ))
}

/// The baseline checks restricted replaces with its stricter own.
const OVERRIDDEN: &[&str] = &[
    "capabilities_baseline",
    "hostPathVolumes",
    "seccompProfile_baseline",
];

/// What in `pod` (a pod or pod template: its annotations and spec)
/// breaks `level`, as upstream words each failed check, in upstream's
/// order: baseline's checks by id, then restricted's.
pub fn violations(level: Level, pod: &Value) -> Vec<String> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let spec = &pod["spec"];
    let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .collect();
    let name = |c: &Value| c["name"].as_str().unwrap_or_default().to_owned();
    let those = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        containers
            .iter()
            .filter(|c| f(c))
            .map(|c| name(c))
            .collect()
    };
    let pod_sc = &spec["securityContext"];
    // Each failed check by its id.
    let mut out: Vec<(&str, String)> = Vec::new();

    // Baseline.
    if let Some(why) = app_armor(pod, &containers) {
        out.push(("appArmorProfile", why));
    }
    let (with, added) = adding(&containers, |cap| {
        let cap = cap.trim_start_matches("CAP_");
        (!BASELINE_CAPS.contains(&cap)).then(|| cap.to_owned())
    });
    if !added.is_empty() {
        let caps: Vec<String> = added.iter().map(|c| format!("{c:?}")).collect();
        out.push((
            "capabilities_baseline",
            format!(
                "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
                containers_phrase(&with),
                caps.join(", ")
            ),
        ));
    }
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec[**k] == true)
        .map(|k| format!("{k}=true"))
        .collect();
    if !host.is_empty() {
        let why = format!("host namespaces ({})", host.join(", "));
        out.push(("hostNamespaces", why));
    }
    let host_paths: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["hostPath"].is_object())
        .map(|v| format!("{:?}", v["name"].as_str().unwrap_or_default()))
        .collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        let why = format!("hostPath volumes ({noun} {})", host_paths.join(", "));
        out.push(("hostPathVolumes", why));
    }
    let mut host_ports = Vec::new();
    for c in &containers {
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(port) = p["hostPort"].as_i64().filter(|p| *p != 0) {
                host_ports.push((name(c), port));
            }
        }
    }
    if !host_ports.is_empty() {
        let names: Vec<String> = host_ports.iter().map(|(n, _)| n.clone()).collect();
        let ports: Vec<String> = host_ports.iter().map(|(_, p)| p.to_string()).collect();
        let why = format!(
            "hostPort ({} {} {} {})",
            containers_phrase(&names),
            verb(&names, "uses", "use"),
            if ports.len() == 1 {
                "hostPort"
            } else {
                "hostPorts"
            },
            ports.join(", ")
        );
        out.push(("hostPorts", why));
    }
    let privileged = those(&|c| c["securityContext"]["privileged"] == true);
    if !privileged.is_empty() {
        let why = format!(
            "privileged ({} must not set securityContext.privileged=true)",
            containers_phrase(&privileged)
        );
        out.push(("privileged", why));
    }
    let unconfined = |sc: &Value| sc["seccompProfile"]["type"] == "Unconfined";
    let mut seccomp = Vec::new();
    if unconfined(pod_sc) {
        seccomp.push("pod".to_owned());
    }
    let unconfined_containers = those(&|c| unconfined(&c["securityContext"]));
    if !unconfined_containers.is_empty() {
        seccomp.push(containers_phrase(&unconfined_containers));
    }
    if !seccomp.is_empty() {
        let why = format!(
            "seccompProfile ({} must not set securityContext.seccompProfile.type to \"Unconfined\")",
            seccomp.join(" and ")
        );
        out.push(("seccompProfile_baseline", why));
    }
    if level == Level::Restricted {
        out.retain(|(id, _)| !OVERRIDDEN.contains(id));
    }
    let mut out: Vec<String> = out.into_iter().map(|(_, why)| why).collect();
    if level == Level::Baseline {
        return out;
    }

    // Restricted.
    let escalating = those(&|c| c["securityContext"]["allowPrivilegeEscalation"] != false);
    if !escalating.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            containers_phrase(&escalating)
        ));
    }
    let no_drop = those(&|c| {
        let drops = &c["securityContext"]["capabilities"]["drop"];
        !drops.as_array().into_iter().flatten().any(|d| d == "ALL")
    });
    let (bad_add, bad_caps) = adding(&containers, |cap| {
        (cap.trim_start_matches("CAP_") != "NET_BIND_SERVICE").then(|| cap.to_owned())
    });
    if !no_drop.is_empty() || !bad_add.is_empty() {
        let mut parts = Vec::new();
        if !no_drop.is_empty() {
            parts.push(format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                containers_phrase(&no_drop)
            ));
        }
        if !bad_add.is_empty() {
            let caps: Vec<String> = bad_caps.iter().map(|c| format!("{c:?}")).collect();
            parts.push(format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_phrase(&bad_add),
                caps.join(", ")
            ));
        }
        out.push(format!("unrestricted capabilities ({})", parts.join("; ")));
    }
    let mut restricted_volumes = Vec::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let kind = v
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .find(|k| *k != "name")
            .cloned()
            .unwrap_or_default();
        if !RESTRICTED_VOLUMES.contains(&kind.as_str()) {
            restricted_volumes.push((v["name"].as_str().unwrap_or_default().to_owned(), kind));
        }
    }
    if !restricted_volumes.is_empty() {
        let names: Vec<String> = restricted_volumes
            .iter()
            .map(|(n, _)| format!("{n:?}"))
            .collect();
        let kinds: Vec<String> = restricted_volumes
            .iter()
            .map(|(_, k)| format!("{k:?}"))
            .collect();
        let noun = if names.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        let verb = if names.len() == 1 { "uses" } else { "use" };
        let types = if kinds.len() == 1 { "type" } else { "types" };
        out.push(format!(
            "restricted volume types ({noun} {} {verb} restricted volume {types} {})",
            names.join(", "),
            kinds.join(", ")
        ));
    }
    let pod_non_root = pod_sc["runAsNonRoot"] == true;
    let not_non_root = those(&|c| {
        let own = &c["securityContext"]["runAsNonRoot"];
        own == false || (own.is_null() && !pod_non_root)
    });
    let explicit_false = pod_sc["runAsNonRoot"] == false;
    if explicit_false || !not_non_root.is_empty() {
        let who = if pod_sc["runAsNonRoot"].is_null() || explicit_false {
            format!("pod or {}", containers_phrase(&not_non_root))
        } else {
            containers_phrase(&not_non_root)
        };
        out.push(format!(
            "runAsNonRoot != true ({who} must set securityContext.runAsNonRoot=true)"
        ));
    }
    let mut root = Vec::new();
    if pod_sc["runAsUser"] == 0 {
        root.push("pod".to_owned());
    }
    let root_containers = those(&|c| c["securityContext"]["runAsUser"] == 0);
    if !root_containers.is_empty() {
        root.push(containers_phrase(&root_containers));
    }
    if !root.is_empty() {
        out.push(format!(
            "runAsUser=0 ({} must not set runAsUser=0)",
            root.join(" and ")
        ));
    }
    let allowed = |sc: &Value| {
        matches!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let set = |sc: &Value| !sc["seccompProfile"].is_null();
    let mut bad_setters = Vec::new();
    let mut bad_values: Vec<String> = Vec::new();
    let mut bad_value = |sc: &Value| {
        let value = format!(
            "{:?}",
            sc["seccompProfile"]["type"].as_str().unwrap_or_default()
        );
        if !bad_values.contains(&value) {
            bad_values.push(value);
        }
    };
    if set(pod_sc) && !allowed(pod_sc) {
        bad_setters.push("pod".to_owned());
        bad_value(pod_sc);
    }
    let pod_seccomp = set(pod_sc) && allowed(pod_sc);
    let explicitly_bad = those(&|c| set(&c["securityContext"]) && !allowed(&c["securityContext"]));
    for c in &containers {
        let sc = &c["securityContext"];
        if set(sc) && !allowed(sc) {
            bad_value(sc);
        }
    }
    if !explicitly_bad.is_empty() {
        bad_setters.push(containers_phrase(&explicitly_bad));
    }
    let implicitly_bad = those(&|c| !set(&c["securityContext"]) && !pod_seccomp);
    if !bad_setters.is_empty() {
        bad_values.sort();
        out.push(format!(
            "seccompProfile ({} must not set securityContext.seccompProfile.type to {})",
            bad_setters.join(" and "),
            bad_values.join(", ")
        ));
    } else if !implicitly_bad.is_empty() {
        out.push(format!(
            "seccompProfile (pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            containers_phrase(&implicitly_bad)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_privileged_pod_against_each_level() {
        let spec = json!({"containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]});
        let spec = json!({"spec": spec});
        assert!(violations(Level::Privileged, &spec).is_empty());
        assert_eq!(
            violations(Level::Baseline, &spec),
            [r#"privileged (container "c" must not set securityContext.privileged=true)"#]
        );
        assert_eq!(
            violations(Level::Restricted, &spec),
            [
                r#"privileged (container "c" must not set securityContext.privileged=true)"#,
                r#"allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false)"#,
                r#"unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"])"#,
                r#"runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true)"#,
                r#"seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#,
            ]
        );
    }

    #[test]
    fn a_restricted_pod_passes_and_baseline_catches_the_host() {
        let good = json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "v", "emptyDir": {}}],
        }});
        assert!(
            violations(Level::Restricted, &good).is_empty(),
            "{:?}",
            violations(Level::Restricted, &good)
        );
        let host = json!({"spec": {"hostNetwork": true, "hostPID": true,
            "containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}],
                            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}});
        // Upstream's order: the checks by id.
        assert_eq!(
            violations(Level::Baseline, &host),
            [
                r#"non-default capabilities (container "a" must not include "NET_ADMIN" in securityContext.capabilities.add)"#,
                "host namespaces (hostNetwork=true, hostPID=true)",
                r#"hostPath volumes (volume "root")"#,
                r#"hostPort (container "a" uses hostPort 8080)"#,
            ]
        );
    }

    #[test]
    fn restricted_replaces_the_baseline_checks_it_tightens() {
        let pod = json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "a", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}},
                {"name": "tools", "image": {"reference": "busybox:1.36"}}]}});
        assert_eq!(
            violations(Level::Restricted, &pod),
            [
                r#"unrestricted capabilities (container "a" must not include "NET_ADMIN" in securityContext.capabilities.add)"#,
                r#"restricted volume types (volume "root" uses restricted volume type "hostPath")"#,
                r#"seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")"#,
            ]
        );
    }

    #[test]
    fn baseline_refuses_an_unconfined_app_armor_profile_in_fields_or_annotations() {
        let pod = json!({
            "metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/b": "unconfined",
                "container.apparmor.security.beta.kubernetes.io/a": "localhost/web"}},
            "spec": {"securityContext": {"appArmorProfile": {"type": "Unconfined"}},
                "containers": [
                    {"name": "a", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}},
                    {"name": "b", "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}]}});
        assert_eq!(
            violations(Level::Baseline, &pod),
            [concat!(
                r#"forbidden AppArmor profiles (pod and container "a" and annotation must not set AppArmor profile type to "#,
                r#""Unconfined", "container.apparmor.security.beta.kubernetes.io/b=\"unconfined\"")"#
            )]
        );
        let fine = json!({"spec": {"containers": [{"name": "a",
            "securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "web"}}}]}});
        assert!(violations(Level::Baseline, &fine).is_empty());
    }
}
