//! The pods of an Indexed Job, as upstream's job controller makes them:
//! each carries its completion index (annotation, label, the
//! `JOB_COMPLETION_INDEX` variable, hostname `<job>-<index>`) and, under
//! a per-index backoff limit, how often its index failed before.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";
const FAILURES: &str = "batch.kubernetes.io/job-index-failure-count";
const IGNORED: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
const INDEX_VARIABLE: &str = "JOB_COMPLETION_INDEX";
/// The longest name prefix the API server still adds its suffix to.
const MAX_GENERATED_NAME: usize = 58;

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The pod's completion index, read from its annotation as upstream
/// reads it; none when absent or not a number from 0.
pub fn of(pod: &Pod) -> Option<i32> {
    annotation(pod, INDEX)?.parse().ok().filter(|&i| i >= 0)
}

/// The failures of the pod's index before it, counted and ignored (by
/// the pod failure policy); a missing or malformed count is 0.
pub fn failures_before(pod: &Pod) -> (i32, i32) {
    let count = |key| {
        annotation(pod, key)
            .and_then(|v| v.parse().ok())
            .filter(|&n: &i32| n >= 0)
            .unwrap_or(0)
    };
    (count(FAILURES), count(IGNORED))
}

/// Each container of a new pod's spec that does not set
/// `JOB_COMPLETION_INDEX` reads it from the pod's index label.
pub fn add_index_variable(pod: &mut Value) {
    let source = format!("metadata.labels['{INDEX}']");
    for list in ["initContainers", "containers"] {
        let containers = pod["spec"].get_mut(list).and_then(Value::as_array_mut);
        for container in containers.into_iter().flatten() {
            let env = container
                .as_object_mut()
                .map(|c| c.entry("env").or_insert_with(|| json!([])));
            let Some(env) = env.and_then(Value::as_array_mut) else {
                continue;
            };
            if !env.iter().any(|v| v["name"] == INDEX_VARIABLE) {
                env.push(json!({"name": INDEX_VARIABLE, "valueFrom": {"fieldRef": {"fieldPath": source}}}));
            }
        }
    }
}

/// Makes `pod`, a new pod of Job `job`, the pod of `index`; `failures`
/// (counted, ignored) are its index's failures before it, written when
/// the Job has a per-index backoff limit.
pub fn stamp(pod: &mut Value, job: &str, index: i32, failures: Option<(i32, i32)>) {
    let meta = &mut pod["metadata"];
    meta["annotations"][INDEX] = json!(index.to_string());
    meta["labels"][INDEX] = json!(index.to_string());
    if let Some((counted, ignored)) = failures {
        meta["annotations"][FAILURES] = json!(counted.to_string());
        if ignored > 0 {
            meta["annotations"][IGNORED] = json!(ignored.to_string());
        }
    }
    let suffix = format!("-{index}-");
    let room = MAX_GENERATED_NAME.saturating_sub(suffix.len());
    let prefix = if job.len() + suffix.len() > MAX_GENERATED_NAME {
        job.get(..room).unwrap_or(job)
    } else {
        job
    };
    meta["generateName"] = json!(format!("{prefix}{suffix}"));
    pod["spec"]["hostname"] = json!(format!("{job}-{index}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_pod_carries_its_index_everywhere_upstream_puts_it() {
        let mut pod = json!({"metadata": {"labels": {"job-name": "pi"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b", "env": [{"name": INDEX_VARIABLE, "value": "mine"}]}]}});
        add_index_variable(&mut pod);
        stamp(&mut pod, "pi", 3, Some((1, 0)));
        let env = &pod["spec"]["containers"][0]["env"][0];
        assert_eq!(
            env["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.labels['batch.kubernetes.io/job-completion-index']"
        );
        assert_eq!(
            pod["spec"]["containers"][1]["env"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(pod["metadata"]["labels"][INDEX], "3");
        assert_eq!(pod["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(pod["metadata"]["annotations"][FAILURES], "1");
        assert!(pod["metadata"]["annotations"][IGNORED].is_null());
        assert_eq!(pod["metadata"]["generateName"], "pi-3-");
        assert_eq!(pod["spec"]["hostname"], "pi-3");
        let typed: Pod = serde_json::from_value(pod).unwrap();
        assert_eq!((of(&typed), failures_before(&typed)), (Some(3), (1, 0)));
        let mut long = json!({"metadata": {}, "spec": {}});
        stamp(&mut long, &"j".repeat(60), 12, None);
        let name = long["metadata"]["generateName"].as_str().unwrap();
        assert_eq!((name.len(), name.ends_with("j-12-")), (58, true));
    }
}
