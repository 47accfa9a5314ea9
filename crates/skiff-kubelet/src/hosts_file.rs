//! A pod's `/etc/hosts`, as upstream's kubelet writes it: localhost, the
//! pod's own names at its address and its `hostAliases`; a pod on the
//! node's network gets the node's file with its aliases.

use k8s_openapi::api::core::v1::Pod;

/// Where the file is mounted.
pub const PATH: &str = "/etc/hosts";

/// The file for `pod` at `pod_ip`, or `None` when none is mounted (no
/// address yet, off the node's network). `node_hosts` reads the node's
/// own file, for a pod on the node's network.
pub fn content(
    pod: &Pod,
    pod_ip: &str,
    cluster_domain: &str,
    node_hosts: impl FnOnce() -> String,
) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let mut out = if spec.host_network == Some(true) {
        format!(
            "# Kubernetes-managed hosts file (host network).\n{}",
            node_hosts()
        )
    } else if pod_ip.is_empty() {
        return None;
    } else {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let host = crate::cri_config::hostname(spec.hostname.as_deref().unwrap_or(name));
        let host_override = spec.hostname_override.clone().filter(|h| !h.is_empty());
        let names = match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
            _ if host_override.is_some() => host_override.unwrap_or_default(),
            Some(sub) => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
                format!("{host}.{sub}.{ns}.svc.{cluster_domain}\t{host}")
            }
            None => host,
        };
        format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
             {pod_ip}\t{names}\n"
        )
    };
    let aliases = spec.host_aliases.as_deref().unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn the_pods_names_and_aliases_as_upstream_writes_them() {
        let spec = json!({"containers": [], "subdomain": "web",
            "hostAliases": [{"ip": "192.0.2.7", "hostnames": ["db.local", "cache.local"]}]});
        let file = content(&pod(spec), "10.42.0.5", "cluster.local", String::new).unwrap();
        assert_eq!(
            file,
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
             10.42.0.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n\
             \n# Entries added by HostAliases.\n192.0.2.7\tdb.local\tcache.local\n"
        );
        let named = content(
            &pod(json!({"containers": [], "hostname": "box"})),
            "10.42.0.5",
            "cluster.local",
            String::new,
        );
        assert!(named.unwrap().ends_with("\n10.42.0.5\tbox\n"));
        let overridden = content(
            &pod(
                json!({"containers": [], "hostname": "box", "subdomain": "web",
                "hostnameOverride": "db.example"}),
            ),
            "10.42.0.5",
            "cluster.local",
            String::new,
        );
        assert!(overridden.unwrap().ends_with("\n10.42.0.5\tdb.example\n"));
        assert_eq!(
            content(
                &pod(json!({"containers": []})),
                "",
                "cluster.local",
                String::new
            ),
            None
        );
        let host = content(
            &pod(json!({"containers": [], "hostNetwork": true})),
            "",
            "cluster.local",
            || "127.0.0.1 localhost\n".to_owned(),
        );
        assert_eq!(
            host.unwrap(),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
    }
}
