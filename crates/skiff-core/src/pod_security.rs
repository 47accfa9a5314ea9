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

/// Volume types restricted allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
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

/// What in `spec` breaks `level`, as upstream words each failed check.
pub fn violations(level: Level, spec: &Value) -> Vec<String> {
    if level == Level::Privileged {
        return Vec::new();
    }
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
    let mut out = Vec::new();

    // Baseline.
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec[**k] == true)
        .map(|k| format!("{k}=true"))
        .collect();
    if !host.is_empty() {
        out.push(format!("host namespaces ({})", host.join(", ")));
    }
    let privileged = those(&|c| c["securityContext"]["privileged"] == true);
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            containers_phrase(&privileged)
        ));
    }
    let (with, added) = adding(&containers, |cap| {
        let cap = cap.trim_start_matches("CAP_");
        (!BASELINE_CAPS.contains(&cap)).then(|| cap.to_owned())
    });
    if !added.is_empty() {
        let caps: Vec<String> = added.iter().map(|c| format!("{c:?}")).collect();
        out.push(format!(
            "non-default capabilities ({} must not include {} in securityContext.capabilities.add)",
            containers_phrase(&with),
            caps.join(", ")
        ));
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
        out.push(format!(
            "hostPath volumes ({noun} {})",
            host_paths.join(", ")
        ));
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
        out.push(format!(
            "hostPort ({} {} {} {})",
            containers_phrase(&names),
            verb(&names, "uses", "use"),
            if ports.len() == 1 {
                "hostPort"
            } else {
                "hostPorts"
            },
            ports.join(", ")
        ));
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
        out.push(format!(
            "seccompProfile ({} must not set securityContext.seccompProfile.type to \"Unconfined\")",
            seccomp.join(" and ")
        ));
    }
    if level == Level::Baseline {
        return out;
    }

    // Restricted.
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
    let pod_seccomp = allowed(pod_sc);
    let missing_seccomp = those(&|c| {
        let own = &c["securityContext"]["seccompProfile"]["type"];
        if own.is_null() {
            !pod_seccomp
        } else {
            !allowed(&c["securityContext"]) && !unconfined(&c["securityContext"])
        }
    });
    if !missing_seccomp.is_empty() && !unconfined(pod_sc) {
        let who = if pod_seccomp {
            containers_phrase(&missing_seccomp)
        } else {
            format!("pod or {}", containers_phrase(&missing_seccomp))
        };
        out.push(format!(
            "seccompProfile ({who} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
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
        let good = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "v", "emptyDir": {}}],
        });
        assert!(
            violations(Level::Restricted, &good).is_empty(),
            "{:?}",
            violations(Level::Restricted, &good)
        );
        let host = json!({"hostNetwork": true, "hostPID": true,
            "containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}],
                            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]});
        assert_eq!(
            violations(Level::Baseline, &host),
            [
                "host namespaces (hostNetwork=true, hostPID=true)",
                r#"non-default capabilities (container "a" must not include "NET_ADMIN" in securityContext.capabilities.add)"#,
                r#"hostPath volumes (volume "root")"#,
                r#"hostPort (container "a" uses hostPort 8080)"#,
            ]
        );
    }
}
