//! A pod's quality-of-service class, from its containers' requests and
//! limits: the API server writes it in the pod's status, quotas scope by
//! it.

use serde_json::Value;

/// `Guaranteed` when every container's requests equal its limits for cpu
/// and memory, `BestEffort` when none sets any, else `Burstable`.
pub fn class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .collect();
    let any = containers.iter().any(|c| {
        let res = &c["resources"];
        ["requests", "limits"].iter().any(|k| {
            res[*k]
                .as_object()
                .is_some_and(|m| m.contains_key("cpu") || m.contains_key("memory"))
        })
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let res = &c["resources"];
        ["cpu", "memory"].iter().all(|k| {
            let limit = &res["limits"][*k];
            !limit.is_null() && (res["requests"][*k].is_null() || res["requests"][*k] == *limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classes() {
        let c = |res: Value| json!({"containers": [{"name": "c", "resources": res}]});
        assert_eq!(class(&c(json!({}))), "BestEffort");
        assert_eq!(class(&c(json!({"requests": {"cpu": "1"}}))), "Burstable");
        assert_eq!(
            class(&c(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            class(&c(
                json!({"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Burstable"
        );
    }
}
