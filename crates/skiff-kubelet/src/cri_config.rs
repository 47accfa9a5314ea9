//! The CRI configuration of a pod's sandbox and containers, built from
//! typed values of the pod spec.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, PodDNSConfig, PodSpec, ResourceRequirements};

use crate::agent::Dns;
use crate::{expansion, security};

pub const UID_LABEL: &str = "io.kubernetes.pod.uid";
pub const NAME_LABEL: &str = "io.kubernetes.container.name";
pub const POD_LABEL: &str = "io.kubernetes.pod.name";
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// Where the runtime writes the pod's container logs, under `log_dir`.
pub fn sandbox_log_dir(log_dir: &Path, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    let part = |v: &Option<String>| v.clone().unwrap_or_default();
    log_dir.join(format!(
        "{}_{}_{}",
        part(&m.namespace),
        part(&m.name),
        part(&m.uid)
    ))
}

pub fn sandbox(
    pod: &Pod,
    attempt: u32,
    security: cri::LinuxSandboxSecurityContext,
    log_directory: &Path,
    dns: Option<&Dns>,
) -> cri::PodSandboxConfig {
    let m = &pod.metadata;
    let (name, ns, uid) = (
        m.name.clone().unwrap_or_default(),
        m.namespace.clone().unwrap_or_default(),
        m.uid.clone().unwrap_or_default(),
    );
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: ns.clone(),
            attempt,
        }),
        // A pod on the node's network has the node's name, as upstream.
        hostname: match pod.spec.as_ref() {
            Some(s) if s.host_network == Some(true) => String::new(),
            // `hostnameOverride` is taken as it is, alone.
            Some(s) if s.hostname_override.as_ref().is_some_and(|h| !h.is_empty()) => {
                s.hostname_override.clone().unwrap_or_default()
            }
            Some(s) => {
                let host = hostname(s.hostname.as_deref().unwrap_or(&name));
                let sub = s.subdomain.as_deref().filter(|d| !d.is_empty());
                // `setHostnameAsFQDN`: the kernel's hostname is the full name.
                match (s.set_hostname_as_fqdn, sub, dns) {
                    (Some(true), Some(sub), Some(dns)) => {
                        format!("{host}.{sub}.{ns}.svc.{}", dns.domain)
                    }
                    _ => host,
                }
            }
            None => hostname(&name),
        },
        log_directory: log_directory.display().to_string(),
        port_mappings: pod.spec.as_ref().map(host_ports).unwrap_or_default(),
        labels: [
            (UID_LABEL.to_owned(), uid),
            (POD_LABEL.to_owned(), name),
            (NAMESPACE_LABEL.to_owned(), ns.clone()),
        ]
        .into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(security),
            sysctls: pod.spec.as_ref().map(security::sysctls).unwrap_or_default(),
            ..Default::default()
        }),
        dns_config: dns_config(pod, &ns, dns),
        ..Default::default()
    }
}

/// `resolv.conf` for the pod: the cluster DNS with the namespace's search
/// path for `ClusterFirst` (the default), the node's own for `Default`,
/// nothing for `None`; then the pod's `dnsConfig` added, as upstream's
/// kubelet merges it. `None` leaves the node's file to the runtime.
fn dns_config(pod: &Pod, ns: &str, dns: Option<&Dns>) -> Option<cri::DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network == Some(true);
    let cluster = match policy {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    let mut config = match (dns.filter(|_| cluster), &spec.dns_config) {
        (Some(dns), _) => {
            let d = &dns.domain;
            cri::DnsConfig {
                servers: vec![dns.server.clone()],
                searches: vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()],
                options: vec!["ndots:5".into()],
            }
        }
        _ if policy == "None" => cri::DnsConfig::default(),
        (None, None) => return None,
        (None, Some(_)) => {
            node_dns(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
        }
    };
    if let Some(extra) = &spec.dns_config {
        add_dns_config(&mut config, extra);
    }
    Some(config)
}

/// The servers, search path and options of a `resolv.conf`.
fn node_dns(resolv_conf: &str) -> cri::DnsConfig {
    let mut config = cri::DnsConfig::default();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        let into = match words.next() {
            Some("nameserver") => &mut config.servers,
            Some("search") => &mut config.searches,
            Some("options") => &mut config.options,
            _ => continue,
        };
        into.extend(words.map(str::to_owned));
    }
    config
}

/// A pod's `dnsConfig` added to `config`: servers and search domains
/// appended once each, options set by name (the pod's win).
fn add_dns_config(config: &mut cri::DnsConfig, extra: &PodDNSConfig) {
    let add = |into: &mut Vec<String>, more: &Option<Vec<String>>| {
        for item in more.iter().flatten() {
            if !into.contains(item) {
                into.push(item.clone());
            }
        }
    };
    add(&mut config.servers, &extra.nameservers);
    add(&mut config.searches, &extra.searches);
    for option in extra.options.iter().flatten() {
        let name = option.name.clone().unwrap_or_default();
        let written = match option.value.as_deref() {
            Some(value) if !value.is_empty() => format!("{name}:{value}"),
            _ => name.clone(),
        };
        let same = |o: &String| o.split(':').next() == Some(name.as_str());
        match config.options.iter_mut().find(|o| same(o)) {
            Some(existing) => *existing = written,
            None => config.options.push(written),
        }
    }
}

/// CPU shares, quota and the memory limit from requests and limits.
pub fn resources(r: Option<&ResourceRequirements>) -> cri::LinuxContainerResources {
    let r = r.cloned().unwrap_or_default();
    let (limits, requests) = (r.limits.unwrap_or_default(), r.requests.unwrap_or_default());
    let milli = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.and_then(|q| skiff_core::quantity::parse_milli(&q.0))
    };
    let cpu_request = milli(requests.get("cpu")).or(milli(limits.get("cpu")));
    cri::LinuxContainerResources {
        cpu_shares: cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2) as i64),
        cpu_period: if limits.contains_key("cpu") {
            100_000
        } else {
            0
        },
        cpu_quota: milli(limits.get("cpu")).map_or(0, |m| (m * 100) as i64),
        memory_limit_in_bytes: milli(limits.get("memory")).map_or(0, |m| (m / 1000) as i64),
        ..Default::default()
    }
}

/// What one container of a pod runs with.
pub struct ContainerInputs {
    pub env: Vec<cri::KeyValue>,
    pub mounts: Vec<cri::Mount>,
    /// Raw block devices, from the pod's claims in block mode.
    pub devices: Vec<cri::Device>,
    pub security: cri::LinuxContainerSecurityContext,
}

pub fn container(
    c: &Container,
    pod: &Pod,
    attempt: u32,
    inputs: ContainerInputs,
) -> cri::ContainerConfig {
    let name = c.name.clone();
    let part = |v: &Option<String>| v.clone().unwrap_or_default();
    let m = &pod.metadata;
    // `$(VAR)` in the command and arguments names the container's own
    // environment.
    let env: HashMap<&str, &str> = inputs
        .env
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    let expanded = |words: &Option<Vec<String>>| -> Vec<String> {
        let expand = |w: &String| expansion::expand(w, |name| env.get(name).copied());
        words.iter().flatten().map(expand).collect()
    };
    let (command, args) = (expanded(&c.command), expanded(&c.args));
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: inputs.env,
        mounts: inputs.mounts,
        devices: inputs.devices,
        labels: [
            (NAME_LABEL.to_owned(), name.clone()),
            (UID_LABEL.to_owned(), part(&m.uid)),
            (POD_LABEL.to_owned(), part(&m.name)),
            (NAMESPACE_LABEL.to_owned(), part(&m.namespace)),
        ]
        .into(),
        log_path: format!("{name}/{attempt}.log"),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(c.resources.as_ref())),
            security_context: Some(inputs.security),
        }),
        ..Default::default()
    }
}
/// The node's ports the pod's containers (and sidecars) ask for
/// (`hostPort`), which the CNI portmap plugin forwards to the pod.
fn host_ports(spec: &PodSpec) -> Vec<cri::PortMapping> {
    skiff_core::pod_containers::host_ports(spec)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp,
                Some("SCTP") => cri::Protocol::Sctp,
                _ => cri::Protocol::Tcp,
            } as i32,
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or_default(),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect()
}

/// A pod's hostname: at most 63 characters, without a trailing `-` or
/// `.` where cut (the kernel refuses longer names; upstream's kubelet cuts
/// them so).
pub(crate) fn hostname(name: &str) -> String {
    match name.char_indices().nth(63) {
        Some((cut, _)) => name[..cut].trim_end_matches(['-', '.']).to_owned(),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_and_arguments_name_the_environment() {
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c",
            "command": ["sh", "-c", "echo $(GREETING) $$(GREETING)"],
            "args": ["--node=$(NODE_NAME)", "$(UNSET)"]}))
        .unwrap();
        let pod: Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).unwrap();
        let var = |key: &str, value: &str| cri::KeyValue {
            key: key.into(),
            value: value.into(),
        };
        let inputs = ContainerInputs {
            env: vec![var("GREETING", "hi"), var("NODE_NAME", "n1")],
            mounts: Vec::new(),
            devices: Vec::new(),
            security: Default::default(),
        };
        let config = container(&c, &pod, 0, inputs);
        assert_eq!(config.command, ["sh", "-c", "echo hi $(GREETING)"]);
        assert_eq!(config.args, ["--node=n1", "$(UNSET)"]);
    }

    #[test]
    fn a_pods_dns_config_is_added_to_its_policys() {
        let dns = Dns {
            server: "10.43.0.10".into(),
            domain: "cluster.local".into(),
        };
        let pod = |spec: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
                .unwrap()
        };
        let extra = serde_json::json!({"nameservers": ["10.43.0.10", "192.0.2.53"], "searches": ["corp.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]});
        let first = dns_config(
            &pod(serde_json::json!({"containers": [], "dnsConfig": extra})),
            "ns",
            Some(&dns),
        )
        .unwrap();
        assert_eq!(first.servers, ["10.43.0.10", "192.0.2.53"]);
        assert_eq!(
            first.searches,
            [
                "ns.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(first.options, ["ndots:2", "edns0"]);
        let none = serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.53"]}});
        let only = dns_config(&pod(none), "ns", Some(&dns)).unwrap();
        assert_eq!(
            (only.servers, only.searches),
            (vec!["192.0.2.53".to_owned()], Vec::new())
        );
        let default = serde_json::json!({"containers": [], "dnsPolicy": "Default"});
        assert_eq!(dns_config(&pod(default), "ns", Some(&dns)), None);
        let node = node_dns(
            "# a comment\nnameserver 192.0.2.1\nsearch example.org\noptions rotate timeout:1\n",
        );
        assert_eq!(
            (node.servers, node.searches, node.options.len()),
            (
                vec!["192.0.2.1".to_owned()],
                vec!["example.org".to_owned()],
                2
            )
        );
    }

    #[test]
    fn long_names_are_cut_to_a_valid_hostname() {
        assert_eq!(super::hostname("web-0"), "web-0");
        let long = format!("{}-{}", "a".repeat(62), "tail");
        assert_eq!(super::hostname(&long), "a".repeat(62));
        assert_eq!(super::hostname(&"b".repeat(80)).len(), 63);
    }
}
