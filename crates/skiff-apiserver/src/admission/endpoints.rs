//! Loopback endpoints, refused as upstream's validation refuses them: a
//! Service whose endpoint is 127.0.0.1 would reach whatever listens on
//! each node's loopback (the API server, the agent's endpoint). The one
//! exception is the cluster's own Services, `default/kubernetes` and
//! `kube-system/kube-dns`, which a single-node cluster serves on
//! 127.0.0.1, when a cluster administrator (the API server, Skiff's DNS)
//! writes them.

use std::net::IpAddr;

use async_trait::async_trait;
use serde_json::Value;
use skiff_core::status::Cause;
use skiff_core::{meta, ApiError};

use super::{Attributes, Operation, Validating, Verdict};

const LOOPBACK: &str = "may not be in the loopback range (127.0.0.0/8, ::1/128)";

/// The Services the control plane serves itself: namespace and name.
const OWN: [(&str, &str); 2] = [("default", "kubernetes"), ("kube-system", "kube-dns")];

pub struct LoopbackEndpoints;

#[async_trait]
impl Validating for LoopbackEndpoints {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        a.operation != Operation::Delete
            && (a.is("", "Endpoints") || a.is("discovery.k8s.io", "EndpointSlice"))
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        let namespace = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let own = OWN.contains(&(namespace, meta::name(obj)));
        if own && a.user.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        let causes: Vec<Cause> = addresses(obj)
            .into_iter()
            .filter(|(_, ip)| ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
            .map(|(field, ip)| Cause::invalid(field, ip, LOOPBACK))
            .collect();
        if causes.is_empty() {
            return Ok(());
        }
        let r = a.resource;
        Err(ApiError::invalid(r.group, r.kind, meta::name(obj), causes))
    }
}

/// The addresses of an Endpoints or EndpointSlice, with their fields.
fn addresses(obj: &Value) -> Vec<(String, &str)> {
    fn list(v: &Value) -> &[Value] {
        v.as_array().map_or(&[], Vec::as_slice)
    }
    let mut out = Vec::new();
    for (i, e) in list(&obj["endpoints"]).iter().enumerate() {
        for (j, a) in list(&e["addresses"]).iter().enumerate() {
            let field = format!("endpoints[{i}].addresses[{j}]");
            out.push((field, a.as_str().unwrap_or_default()));
        }
    }
    for (i, subset) in list(&obj["subsets"]).iter().enumerate() {
        for kind in ["addresses", "notReadyAddresses"] {
            for (j, a) in list(&subset[kind]).iter().enumerate() {
                let field = format!("subsets[{i}].{kind}[{j}].ip");
                out.push((field, a["ip"].as_str().unwrap_or_default()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::admission::testing::{creating, user};

    #[tokio::test]
    async fn only_administrators_point_the_clusters_own_services_at_loopback() {
        let slice = |ns: &str, name: &str| {
            json!({"metadata": {"name": name, "namespace": ns}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.42.0.5"]}, {"addresses": ["127.0.0.1"]}]})
        };
        let endpoints = |ns: &str, name: &str| {
            json!({"metadata": {"name": name, "namespace": ns},
                "subsets": [{"notReadyAddresses": [{"ip": "::1"}]}]})
        };
        let admin = user("admin", &["system:masters"]);
        let tenant = user("alice", &["system:authenticated"]);
        let mut verdict = Verdict::default();
        for (plural, group, obj, field) in [
            (
                "endpointslices",
                "discovery.k8s.io",
                slice as fn(&str, &str) -> Value,
                "endpoints[1].addresses[0]",
            ),
            (
                "endpoints",
                "",
                endpoints,
                "subsets[0].notReadyAddresses[0].ip",
            ),
        ] {
            for (who, ns, name) in [(&admin, "n", "s"), (&tenant, "kube-system", "kube-dns")] {
                let a = creating(group, plural, who);
                assert!(LoopbackEndpoints.handles(&a));
                let err = LoopbackEndpoints
                    .validate(&a, &obj(ns, name), &mut verdict)
                    .await
                    .unwrap_err();
                assert_eq!(err.code, 422);
                let cause = &err.details.unwrap()["causes"][0];
                assert_eq!(cause["field"], field);
                assert!(cause["message"].as_str().unwrap().ends_with(LOOPBACK));
            }
            let own = creating(group, plural, &admin);
            let result = LoopbackEndpoints
                .validate(&own, &obj("kube-system", "kube-dns"), &mut verdict)
                .await;
            assert!(result.is_ok());
        }
    }
}
