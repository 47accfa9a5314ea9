//! Upstream's PodSecurity admission: a namespace's
//! `pod-security.kubernetes.io/enforce` label refuses pods that break its
//! level, `warn` answers with a warning kubectl prints, `audit` notes the
//! violations on the request's audit event; workloads' pod templates get
//! warnings for enforce and warn, as upstream gives them.

use async_trait::async_trait;
use serde_json::Value;
use skiff_core::pod_security::{violations, Level};
use skiff_core::registry::{self, ResourceType};
use skiff_core::{meta, ApiError};

use super::{Attributes, Operation, Validating, Verdict};
use crate::storage::Objects;

const PREFIX: &str = "pod-security.kubernetes.io";

/// A workload's pod template (its metadata and spec); a pod itself.
fn template<'a>(r: &ResourceType, obj: &'a Value) -> Option<&'a Value> {
    match (r.group, r.kind) {
        ("", "Pod") => Some(obj),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job")
        | ("", "ReplicationController") => Some(&obj["spec"]["template"]),
        ("", "PodTemplate") => Some(&obj["template"]),
        ("batch", "CronJob") => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]),
        _ => None,
    }
}

pub struct PodSecurity(pub Objects);

#[async_trait]
impl Validating for PodSecurity {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        a.operation == Operation::Create && a.subresource.is_none() && !a.resource.custom
    }

    /// Checks a new pod or pod template against its namespace's levels.
    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        let r = a.resource;
        let (Some(pod), Some(ns)) = (template(r, obj), meta::namespace(obj)) else {
            return Ok(());
        };
        let namespaces = registry::lookup("", "v1", "namespaces").expect("served");
        let labels = [PREFIX.as_bytes()];
        let found = self.0.recent_mentioning(namespaces, None, ns, &labels);
        let Some(namespace) = found.await? else {
            return Ok(());
        };
        let labels = &namespace["metadata"]["labels"];
        let level_of = |mode: &str| {
            let level = labels[format!("{PREFIX}/{mode}")]
                .as_str()
                .and_then(Level::parse)?;
            let version = labels[format!("{PREFIX}/{mode}-version")]
                .as_str()
                .unwrap_or("latest")
                .to_owned();
            let name = labels[format!("{PREFIX}/{mode}")]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Some((level, format!("{name}:{version}")))
        };
        let is_pod = r.kind == "Pod" && r.group.is_empty();
        let warnings = &mut verdict.warnings;
        if let Some((level, shown)) = level_of("enforce") {
            let broken = violations(level, pod);
            if !broken.is_empty() {
                let why = broken.join(", ");
                if is_pod {
                    return Err(ApiError::forbidden(format!(
                        "pods \"{}\" is forbidden: violates PodSecurity \"{shown}\": {why}",
                        meta::name(obj)
                    )));
                }
                warnings.push(format!("would violate PodSecurity \"{shown}\": {why}"));
            }
        }
        if let Some((level, shown)) = level_of("warn") {
            let broken = violations(level, pod);
            let warning = format!(
                "would violate PodSecurity \"{shown}\": {}",
                broken.join(", ")
            );
            if !broken.is_empty() && !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
        if let Some((level, shown)) = level_of("audit") {
            let broken = violations(level, pod);
            if !broken.is_empty() {
                verdict.audit.push((
                    format!("{PREFIX}/audit-violations"),
                    format!(
                        "would violate PodSecurity \"{shown}\": {}",
                        broken.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{creating, user, Fixture};
    use serde_json::json;

    #[tokio::test]
    async fn namespace_levels_refuse_warn_and_annotate() {
        let f = Fixture::new();
        f.put(
            "",
            "namespaces",
            json!({"metadata": {"name": "strict", "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}),
        )
        .await;
        f.put(
            "",
            "namespaces",
            json!({"metadata": {"name": "watched", "labels": {
                "pod-security.kubernetes.io/warn": "baseline",
                "pod-security.kubernetes.io/audit": "baseline"}}}),
        )
        .await;
        let plugin = PodSecurity(f.objects.clone());
        let alice = user("alice", &[]);
        let privileged = |ns: &str| {
            json!({"metadata": {"name": "p", "namespace": ns}, "spec": {"containers": [
                {"name": "c", "image": "i", "securityContext": {"privileged": true}}]}})
        };
        let pods = creating("", "pods", &alice);
        let mut verdict = Verdict::default();
        let err = plugin
            .validate(&pods, &privileged("strict"), &mut verdict)
            .await
            .unwrap_err();
        assert_eq!(err.code, 403);
        assert!(
            err.message.starts_with(
                "pods \"p\" is forbidden: violates PodSecurity \"restricted:latest\": privileged"
            ),
            "{}",
            err.message
        );
        plugin
            .validate(&pods, &privileged("watched"), &mut verdict)
            .await
            .unwrap();
        assert_eq!(verdict.warnings.len(), 1);
        assert!(verdict.warnings[0]
            .starts_with("would violate PodSecurity \"baseline:latest\": privileged"));
        assert_eq!(
            verdict.audit[0].0,
            "pod-security.kubernetes.io/audit-violations"
        );
        // A workload's template is only warned about, even where enforced.
        let deployments = creating("apps", "deployments", &alice);
        let mut deployment =
            json!({"metadata": {"name": "d", "namespace": "strict"}, "spec": {"template": {}}});
        deployment["spec"]["template"]["spec"] = privileged("strict")["spec"].clone();
        let mut verdict = Verdict::default();
        plugin
            .validate(&deployments, &deployment, &mut verdict)
            .await
            .unwrap();
        assert_eq!(verdict.warnings.len(), 1);
    }
}
