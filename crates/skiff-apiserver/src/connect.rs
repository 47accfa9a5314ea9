//! The options of a pod's exec, attach or port forwarding, read from the
//! request's query as upstream's `PodExecOptions`, `PodAttachOptions` and
//! `PodPortForwardOptions`: the object admission sees for a `CONNECT`.

use serde_json::{json, Map, Value};

use crate::request::Target;

/// The connect options of a request to `target`; none for other
/// requests (a pod's log is read, not connected to).
pub fn options(target: &Target, query: Option<&str>) -> Option<Value> {
    let kind = match target.subresource.as_deref()? {
        "exec" => "PodExecOptions",
        "attach" => "PodAttachOptions",
        "portforward" => "PodPortForwardOptions",
        _ => return None,
    };
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let mut out = Map::new();
    out.insert("kind".into(), json!(kind));
    out.insert("apiVersion".into(), json!("v1"));
    let flag = |key: &str| {
        pairs
            .iter()
            .any(|(k, v)| k == key && matches!(v.as_str(), "true" | "1"))
    };
    let all = |key: &'static str| {
        let values = pairs.iter().filter(move |(k, _)| k == key);
        values.map(|(_, v)| v.clone())
    };
    if kind == "PodPortForwardOptions" {
        let ports: Vec<i64> = all("ports").filter_map(|p| p.parse().ok()).collect();
        if !ports.is_empty() {
            out.insert("ports".into(), json!(ports));
        }
        return Some(Value::Object(out));
    }
    for key in ["stdin", "stdout", "stderr", "tty"] {
        if flag(key) {
            out.insert(key.into(), json!(true));
        }
    }
    if let Some(c) = all("container").next().filter(|c| !c.is_empty()) {
        out.insert("container".into(), json!(c));
    }
    if kind == "PodExecOptions" {
        out.insert("command".into(), json!(all("command").collect::<Vec<_>>()));
    }
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(sub: &str) -> Target {
        let pods = skiff_core::registry::preferred("", "pods").unwrap();
        Target {
            resource: pods,
            namespace: Some("d".into()),
            name: Some("p".into()),
            subresource: Some(sub.into()),
            watch_path: false,
        }
    }

    #[test]
    fn exec_options_come_from_the_query() {
        let q =
            "command=sh&command=-c&command=echo+hi&container=main&stdin=true&stdout=true&tty=false";
        assert_eq!(
            options(&target("exec"), Some(q)),
            Some(
                json!({"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true, "stdout": true,
                "container": "main", "command": ["sh", "-c", "echo hi"]})
            )
        );
        assert_eq!(
            options(&target("portforward"), Some("ports=8080&ports=9090")),
            Some(
                json!({"kind": "PodPortForwardOptions", "apiVersion": "v1", "ports": [8080, 9090]})
            )
        );
        assert_eq!(options(&target("log"), Some("follow=true")), None);
    }
}
