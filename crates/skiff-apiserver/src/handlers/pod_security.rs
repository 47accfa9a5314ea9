//! Upstream's PodSecurity admission: a namespace's
//! `pod-security.kubernetes.io/enforce` label refuses pods that break its
//! level, `warn` answers with a warning kubectl prints, `audit` notes the
//! violations on the request's audit event; workloads' pod templates get
//! warnings for enforce and warn, as upstream gives them.

use serde_json::Value;
use skiff_core::pod_security::{violations, Level};
use skiff_core::registry::{self, ResourceType};
use skiff_core::{meta, ApiError};

use super::Api;

const PREFIX: &str = "pod-security.kubernetes.io";

/// Where a workload keeps its pod template's spec.
fn template_spec<'a>(r: &ResourceType, obj: &'a Value) -> Option<&'a Value> {
    match (r.group, r.kind) {
        ("", "Pod") => Some(&obj["spec"]),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job")
        | ("", "ReplicationController" | "PodTemplate") => {
            let t = if r.kind == "PodTemplate" {
                &obj["template"]
            } else {
                &obj["spec"]["template"]
            };
            Some(&t["spec"])
        }
        ("batch", "CronJob") => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

impl Api {
    /// Checks a new pod or pod template against its namespace's levels;
    /// returns the warnings to answer with and the audit annotations.
    pub(super) async fn pod_security(
        &self,
        r: &ResourceType,
        obj: &Value,
    ) -> Result<Admitted, ApiError> {
        let (Some(spec), Some(ns)) = (template_spec(r, obj), meta::namespace(obj)) else {
            return Ok(Admitted::default());
        };
        let namespaces = registry::lookup("", "v1", "namespaces").expect("served");
        let Some(namespace) = self.objects.recent(namespaces, None, ns).await? else {
            return Ok(Admitted::default());
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
        let mut warnings = Vec::new();
        if let Some((level, shown)) = level_of("enforce") {
            let broken = violations(level, spec);
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
            let broken = violations(level, spec);
            let warning = format!(
                "would violate PodSecurity \"{shown}\": {}",
                broken.join(", ")
            );
            if !broken.is_empty() && !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
        let mut audit = Vec::new();
        if let Some((level, shown)) = level_of("audit") {
            let broken = violations(level, spec);
            if !broken.is_empty() {
                audit.push((
                    format!("{PREFIX}/audit-violations"),
                    format!(
                        "would violate PodSecurity \"{shown}\": {}",
                        broken.join(", ")
                    ),
                ));
            }
        }
        Ok(Admitted { warnings, audit })
    }
}

/// What admission has for the reply: warnings for the client, annotations
/// for the request's audit event.
#[derive(Default)]
pub struct Admitted {
    pub warnings: Vec<String>,
    pub audit: Vec<(String, String)>,
}
