//! Loopback endpoints, refused as upstream's validation refuses them: a
//! Service whose endpoint is 127.0.0.1 would reach whatever listens on
//! each node's loopback (the API server, the agent's endpoint). Skiff's
//! own writers are allowed them, as a single-node cluster serves its API
//! and DNS there: the API server (the `kubernetes` Service) and the
//! cluster DNS.

use std::net::IpAddr;

use async_trait::async_trait;
use serde_json::Value;
use skiff_core::status::Cause;
use skiff_core::{meta, ApiError};

use super::{Attributes, Operation, Validating, Verdict};
use crate::bootstrap::SERVER_USER;
use crate::Component;

const LOOPBACK: &str = "may not be in the loopback range (127.0.0.0/8, ::1/128)";

pub struct LoopbackEndpoints;

#[async_trait]
impl Validating for LoopbackEndpoints {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        a.operation != Operation::Delete
            && (a.is("", "Endpoints") || a.is("discovery.k8s.io", "EndpointSlice"))
            && ![SERVER_USER, Component::Dns.user()].contains(&a.user.name.as_str())
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
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
    async fn only_the_clusters_dns_may_point_a_service_at_loopback() {
        let slice = json!({"metadata": {"name": "s", "namespace": "n"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.0.5"]}, {"addresses": ["127.0.0.1"]}]});
        let endpoints = json!({"metadata": {"name": "e", "namespace": "n"},
            "subsets": [{"notReadyAddresses": [{"ip": "::1"}]}]});
        let admin = user("admin", &["system:masters"]);
        let dns = user(Component::Dns.user(), &[]);
        let server = user(SERVER_USER, &["system:masters"]);
        let mut verdict = Verdict::default();
        for (plural, group, obj, field) in [
            (
                "endpointslices",
                "discovery.k8s.io",
                &slice,
                "endpoints[1].addresses[0]",
            ),
            (
                "endpoints",
                "",
                &endpoints,
                "subsets[0].notReadyAddresses[0].ip",
            ),
        ] {
            let by_admin = creating(group, plural, &admin);
            assert!(LoopbackEndpoints.handles(&by_admin));
            let err = LoopbackEndpoints
                .validate(&by_admin, obj, &mut verdict)
                .await
                .unwrap_err();
            assert_eq!(err.code, 422);
            let cause = &err.details.unwrap()["causes"][0];
            assert_eq!(cause["field"], field);
            assert!(cause["message"].as_str().unwrap().ends_with(LOOPBACK));
            assert!(!LoopbackEndpoints.handles(&creating(group, plural, &dns)));
            assert!(!LoopbackEndpoints.handles(&creating(group, plural, &server)));
        }
    }
}
