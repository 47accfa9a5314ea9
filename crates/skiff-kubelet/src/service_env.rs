//! The environment variables by which a container finds Services, as
//! upstream's kubelet sets them (`KUBERNETES_SERVICE_HOST`,
//! `{NAME}_PORT_{port}_{PROTO}_ADDR`, …): those of the pod's namespace
//! when `enableServiceLinks` is on, and always the API server's own.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

/// The variables for `services`, later ones winning on a clash.
pub fn vars(services: &[Service]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in services {
        let Some(spec) = &s.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let prefix = name.to_uppercase().replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or_default();
        out.insert(format!("{prefix}_SERVICE_HOST"), ip.to_owned());
        let url = |port: i32, proto: &str| format!("{}://{ip}:{port}", proto.to_lowercase());
        if let Some(first) = ports.first() {
            let proto = first.protocol.as_deref().unwrap_or("TCP");
            out.insert(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
            out.insert(format!("{prefix}_PORT"), url(first.port, proto));
        }
        for p in ports {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let key = port_name.to_uppercase().replace('-', "_");
                out.insert(format!("{prefix}_SERVICE_PORT_{key}"), p.port.to_string());
            }
            let base = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.insert(format!("{base}_PROTO"), proto.to_lowercase());
            out.insert(format!("{base}_PORT"), p.port.to_string());
            out.insert(format!("{base}_ADDR"), ip.to_owned());
            out.insert(base, url(p.port, proto));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upstream_names_for_the_api_server_and_a_headless_service_skipped() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "kubernetes"}, "spec": {"clusterIP": "10.43.0.1",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
            {"metadata": {"name": "my-db"}, "spec": {"clusterIP": "10.43.0.9",
                "ports": [{"port": 5432}, {"name": "metrics-port", "port": 9187, "protocol": "UDP"}]}},
            {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
        ]))
        .unwrap();
        let vars = vars(&services);
        let get = |k: &str| vars.get(k).map(String::as_str);
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.43.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP"), Some("tcp://10.43.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.43.0.1"));
        assert_eq!(get("MY_DB_SERVICE_PORT"), Some("5432"));
        assert_eq!(get("MY_DB_SERVICE_PORT_METRICS_PORT"), Some("9187"));
        assert_eq!(get("MY_DB_PORT_9187_UDP_PROTO"), Some("udp"));
        assert!(!vars.keys().any(|k| k.starts_with("HEADLESS")));
    }
}
