//! Label selectors (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) and field
//! selectors (`metadata.name=x,spec.nodeName!=`).

use serde_json::Value;

use crate::{meta, ApiError};

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty one matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn values(list: &str) -> Result<Vec<String>, ApiError> {
    let inner = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: expected (values), found {list:?}"
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

fn check_key(key: &str) -> Result<String, ApiError> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key {key:?}"
        )))
    }
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let req = if let Some(key) = term.strip_prefix('!') {
                Requirement::NotExists(check_key(key.trim())?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(check_key(k.trim())?, v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==") {
                Requirement::Equals(check_key(k.trim())?, v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once('=') {
                Requirement::Equals(check_key(k.trim())?, v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once(" notin ") {
                Requirement::NotIn(check_key(k.trim())?, values(v)?)
            } else if let Some((k, v)) = term.split_once(" in ") {
                Requirement::In(check_key(k.trim())?, values(v)?)
            } else {
                Requirement::Exists(check_key(term)?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Builds one from a `metav1.LabelSelector` object
    /// (`matchLabels`, `matchExpressions`).
    pub fn from_object(sel: &Value) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Requirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or("").to_owned(),
                ));
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e["key"].as_str().unwrap_or("").to_owned();
            let vals: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            reqs.push(match e["operator"].as_str() {
                Some("In") => Requirement::In(key, vals),
                Some("NotIn") => Requirement::NotIn(key, vals),
                Some("Exists") => Requirement::Exists(key),
                Some("DoesNotExist") => Requirement::NotExists(key),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "{other:?} is not a valid label selector operator"
                    )))
                }
            });
        }
        Ok(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches<'a>(&self, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => labels(k) != Some(v.as_str()),
            Requirement::In(k, vs) => labels(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !labels(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => labels(k).is_some(),
            Requirement::NotExists(k) => labels(k).is_none(),
        })
    }

    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels = meta::get(obj, "labels");
        self.matches(|k| labels?.get(k)?.as_str())
    }
}

/// The string form of a `metav1.LabelSelector` object, as `kubectl` and
/// the scale subresource show it (`app=web,tier in (a,b)`).
pub fn format_object(sel: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = text(&e["key"]);
        let values: Vec<String> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        parts.push(match e["operator"].as_str() {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key,
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

/// A parsed field selector: `path=value` and `path!=value` terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in split_terms(s) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: {term:?}; can't understand {term:?}"
                )));
            };
            terms.push((path.trim().to_owned(), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses fields a kind cannot be selected by, as upstream does
    /// ("field label not supported"), and maps the labels that name
    /// another path (an Event's `source`) to that path.
    pub fn supported_by(self, group: &str, kind: &str) -> Result<Self, ApiError> {
        self.supported_with(|label| field_label(group, kind, label).map(str::to_owned))
    }

    /// As [`Self::supported_by`], for any served type: a custom
    /// resource is selected by its version's `selectableFields`.
    pub fn supported_by_type(self, r: &crate::registry::ResourceType) -> Result<Self, ApiError> {
        if !r.custom {
            return self.supported_by(r.group, r.kind);
        }
        let served = crate::crd::served(r);
        let selectable = served.as_ref().map(|s| &s.version.selectable);
        self.supported_with(|label| selectable?.iter().find(|s| *s == label).cloned())
    }

    /// Refuses the fields `label` knows no path for; besides
    /// `metadata.name` and `metadata.namespace`, which every kind has.
    fn supported_with(mut self, label: impl Fn(&str) -> Option<String>) -> Result<Self, ApiError> {
        for (path, _, _) in &mut self.0 {
            if matches!(path.as_str(), "metadata.name" | "metadata.namespace") {
                continue;
            }
            match label(path) {
                Some(real) => *path = real,
                None => {
                    return Err(ApiError::bad_request(format!(
                        "field label not supported: {path}"
                    )))
                }
            }
        }
        Ok(self)
    }

    /// The object paths the terms read.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(path, _, _)| path.as_str())
    }

    /// The value a term requires for `path`, if one term pins it.
    pub fn exact(&self, path: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, eq, _)| p == path && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, equal, want)| {
            let have = match meta::path(obj, path) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                // An absent field reads as its Go zero value.
                _ => match path.as_str() {
                    "spec.unschedulable" => "false".into(),
                    "status.replicas" | "status.successful" => "0".into(),
                    _ => String::new(),
                },
            };
            (have == *want) == *equal
        })
    }
}

/// The object path behind a field label a kind may be selected by,
/// besides `metadata.name` and `metadata.namespace` (upstream's field
/// label conversions per kind).
fn field_label(group: &str, kind: &str, label: &str) -> Option<&'static str> {
    const POD: &[&str] = &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ];
    const EVENT: &[&str] = &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "type",
    ];
    const NEW_EVENT: &[&str] = &[
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "regarding.resourceVersion",
        "regarding.fieldPath",
        "reason",
        "reportingController",
        "type",
    ];
    let labels: &[&'static str] = match (group, kind) {
        ("", "Pod") => POD,
        ("", "Node") => &["spec.unschedulable"],
        ("", "Event") if label == "source" => return Some("source.component"),
        ("", "Event") => EVENT,
        ("events.k8s.io", "Event") if label == "source" => {
            return Some("deprecatedSource.component")
        }
        ("events.k8s.io", "Event") => NEW_EVENT,
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        ("", "Service") => &["spec.clusterIP", "spec.type"],
        ("", "ReplicationController") | ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        ("certificates.k8s.io", "CertificateSigningRequest") => &["spec.signerName"],
        _ => &[],
    };
    labels.iter().copied().find(|l| *l == label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_fields_match_their_zero_values() {
        let f = FieldSelector::parse("spec.unschedulable==false").unwrap();
        assert!(f.matches(&json!({"spec": {}})));
        assert!(!f.matches(&json!({"spec": {"unschedulable": true}})));
        let r = FieldSelector::parse("status.replicas=0").unwrap();
        assert!(r.matches(&json!({"metadata": {"name": "rs"}})));
    }

    #[test]
    fn field_labels_per_kind() {
        let check = |group, kind, s: &str| {
            FieldSelector::parse(s)
                .unwrap()
                .supported_by(group, kind)
                .map(|f| f.0.into_iter().map(|t| t.0).collect::<Vec<_>>())
                .map_err(|e| e.message)
        };
        assert_eq!(
            check("", "ConfigMap", "data.a=1"),
            Err("field label not supported: data.a".to_owned())
        );
        assert!(check("", "ConfigMap", "metadata.name=x,metadata.namespace!=y").is_ok());
        assert!(check("", "Pod", "spec.nodeName=n,status.phase!=Failed").is_ok());
        assert!(check("apps", "Deployment", "status.replicas=1").is_err());
        assert!(check("apps", "ReplicaSet", "status.replicas=1").is_ok());
        assert_eq!(
            check("", "Event", "source=kubelet,reason=Pulled"),
            Ok(vec!["source.component".to_owned(), "reason".to_owned()])
        );
        assert!(check("", "Secret", "type=Opaque").is_ok());
        assert!(check("", "Node", "spec.nodeName=x").is_err());
    }

    #[test]
    fn label_selector_table() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("app notin (web, db)", false),
            ("tier", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier=front", true),
            ("app=web,tier in (back)", false),
            ("missing!=x", true),
            ("missing notin (x)", true),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches_object(&obj), want, "{sel}");
        }
    }

    #[test]
    fn bad_label_selectors_are_refused() {
        for bad in ["app in web", "a b=c", "=x"] {
            assert_eq!(LabelSelector::parse(bad).unwrap_err().code, 400, "{bad}");
        }
    }

    #[test]
    fn selector_from_object() {
        let sel = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]
        }))
        .unwrap();
        assert!(
            sel.matches_object(&json!({"metadata": {"labels": {"app": "web", "tier": "front"}}}))
        );
        assert!(!sel.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
    }

    #[test]
    fn field_selector_table() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"},
                         "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let cases = [
            ("metadata.name=p", true),
            ("metadata.name!=p", false),
            ("spec.nodeName=n1,status.phase=Running", true),
            ("spec.nodeName=", false),
            ("status.phase!=Pending", true),
            ("spec.schedulerName=", true),
        ];
        for (sel, want) in cases {
            assert_eq!(
                FieldSelector::parse(sel).unwrap().matches(&pod),
                want,
                "{sel}"
            );
        }
        assert_eq!(
            FieldSelector::parse("metadata.name=p")
                .unwrap()
                .exact("metadata.name"),
            Some("p")
        );
    }
}
