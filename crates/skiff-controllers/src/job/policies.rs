//! What a Job's policies make of its pods, as upstream's job controller
//! reads them: the pod failure policy's verdict on a failed pod, and
//! whether the success policy is met.

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, SuccessPolicy,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

use skiff_core::completion_indexes::Indexes;

/// What a failed pod does to its Job.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Counted against the backoff limits (no rule matched, or `Count`).
    Count,
    /// Not counted.
    Ignore,
    /// Fails the pod's index at once.
    FailIndex,
    /// Fails the Job, with this message.
    FailJob(String),
}

impl Verdict {
    /// Whether the failure counts against `backoffLimit`.
    pub fn counts(&self) -> bool {
        *self != Verdict::Ignore
    }
}

/// The first rule of `policy` that `pod` matches decides; no rule, no
/// policy: the failure counts.
pub fn judge(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::Count;
    };
    let status = pod.status.as_ref();
    for (i, rule) in policy.rules.iter().enumerate() {
        let matched = if let Some(req) = &rule.on_exit_codes {
            let statuses = status.and_then(|s| s.container_statuses.as_ref());
            let inits = status.and_then(|s| s.init_container_statuses.as_ref());
            let (statuses, inits) = (statuses.into_iter().flatten(), inits.into_iter().flatten());
            statuses.chain(inits).find_map(|c| exit_code(c, req)).map(|(name, code)| {
                format!(
                    "Container {name} for pod {}/{} failed with exit code {code} matching {} rule at index {i}",
                    pod.namespace().unwrap_or_default(),
                    pod.name_any(),
                    rule.action,
                )
            })
        } else {
            let patterns = rule.on_pod_conditions.iter().flatten();
            let conditions = status.and_then(|s| s.conditions.as_ref());
            let conditions = conditions.into_iter().flatten();
            conditions
                .filter(|c| {
                    patterns.clone().any(|p| {
                        p.type_ == c.type_ && p.status.as_deref().unwrap_or("True") == c.status
                    })
                })
                .map(|c| {
                    format!(
                        "Pod {}/{} has condition {} matching {} rule at index {i}",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any(),
                        c.type_,
                        rule.action,
                    )
                })
                .next()
        };
        let Some(message) = matched else { continue };
        match rule.action.as_str() {
            "Ignore" => return Verdict::Ignore,
            "Count" => return Verdict::Count,
            "FailIndex" => return Verdict::FailIndex,
            "FailJob" => return Verdict::FailJob(message),
            _ => {}
        }
    }
    Verdict::Count
}

/// The container's name and exit code, if it ended with a non-zero code
/// that `req` names.
fn exit_code<'a>(
    c: &'a ContainerStatus,
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(&'a str, i32)> {
    let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
    let named = req.container_name.as_ref().is_none_or(|n| *n == c.name);
    let listed = req.values.contains(&code);
    let matches = match req.operator.as_str() {
        "In" => listed,
        "NotIn" => !listed,
        _ => false,
    };
    (named && code != 0 && matches).then_some((c.name.as_str(), code))
}

/// The message of the condition a met success policy writes: the first
/// rule whose indexes or count have succeeded.
pub fn success(policy: Option<&SuccessPolicy>, completions: i32, done: &Indexes) -> Option<String> {
    let policy = policy?;
    if done.is_empty() {
        return None;
    }
    policy.rules.iter().enumerate().find_map(|(i, rule)| {
        let count = rule.succeeded_count.map(i64::from);
        let met = match &rule.succeeded_indexes {
            Some(text) => {
                let wanted = Indexes::read(text, completions);
                let common = wanted.common(done);
                !wanted.is_empty()
                    && (common == wanted.total() || count.is_some_and(|n| common >= n))
            }
            None => count.is_some_and(|n| done.total() >= n),
        };
        met.then(|| format!("Matched rules at index {i}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed_pod(code: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "d"},
            "status": {"phase": "Failed", "conditions": conditions, "containerStatuses": [
                {"name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": code}}}]},
        }))
        .unwrap()
    }

    fn policy(rules: serde_json::Value) -> PodFailurePolicy {
        serde_json::from_value(json!({ "rules": rules })).unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = policy(json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}},
        ]));
        assert_eq!(judge(Some(&p), &failed_pod(42, json!([]))), Verdict::FailJob(
            "Container main for pod d/p failed with exit code 42 matching FailJob rule at index 1".into()));
        let evicted = failed_pod(42, json!([{"type": "DisruptionTarget", "status": "True"}]));
        assert_eq!(judge(Some(&p), &evicted), Verdict::Ignore);
        assert_eq!(judge(Some(&p), &failed_pod(7, json!([]))), Verdict::Count);
        assert_eq!(
            judge(Some(&p), &failed_pod(1, json!([]))),
            Verdict::Count,
            "no rule matched"
        );
        assert_eq!(judge(None, &failed_pod(42, json!([]))), Verdict::Count);
    }

    #[test]
    fn a_success_policy_is_met_by_its_indexes_or_its_count() {
        let p: SuccessPolicy = serde_json::from_value(json!({"rules": [
            {"succeededIndexes": "0-2", "succeededCount": 2},
            {"succeededCount": 4},
        ]}))
        .unwrap();
        let done = |s: &str| Indexes::read(s, 10);
        assert_eq!(success(Some(&p), 10, &done("0")), None);
        assert_eq!(
            success(Some(&p), 10, &done("1,2")).as_deref(),
            Some("Matched rules at index 0")
        );
        assert_eq!(
            success(Some(&p), 10, &done("2,5-7")).as_deref(),
            Some("Matched rules at index 1")
        );
        assert_eq!(success(None, 10, &done("0-9")), None);
    }
}
