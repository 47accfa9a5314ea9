//! Which writes a webhook is for: its rules (operations, groups,
//! versions, resources and subresources, scope), then its namespace and
//! object selectors, as upstream's matchers read them.

use serde_json::Value;
use skiff_core::registry::{self, ResourceType};
use skiff_core::selector::LabelSelector;
use skiff_core::{meta, ApiError};

use super::super::{Attributes, Operation};
use crate::storage::Objects;

/// Whether `list` (of a rule) names `want` or everything.
fn listed(list: &Value, want: &str) -> bool {
    let mut items = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    items.any(|i| i == "*" || i == want)
}

/// Whether a rule's `resources` entry (`pods`, `pods/status`, `*/scale`,
/// `*`, `*/*`) covers `plural` and `subresource`.
fn covers(entry: &str, plural: &str, subresource: Option<&str>) -> bool {
    match entry.split_once('/') {
        None => (entry == "*" || entry == plural) && subresource.is_none(),
        Some((res, sub)) => {
            (res == "*" || res == plural) && (sub == "*" || Some(sub) == subresource)
        }
    }
}

/// An operation as rules and reviews name it.
pub fn operation(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Whether `rule` is for the write's operation and for the resource `r`
/// (through the write's subresource), at `r`'s group and version when
/// `versioned`, and for the object `name` if it names objects.
fn rule_matches(
    rule: &Value,
    a: &Attributes<'_>,
    r: &ResourceType,
    versioned: bool,
    name: &str,
) -> bool {
    let operation = operation(a.operation);
    let resources = rule["resources"].as_array().into_iter().flatten();
    let scope = match rule["scope"].as_str().unwrap_or("*") {
        "Cluster" => !r.namespaced,
        "Namespaced" => r.namespaced,
        _ => true,
    };
    listed(&rule["operations"], operation)
        && (!versioned
            || listed(&rule["apiGroups"], r.group) && listed(&rule["apiVersions"], r.version))
        && resources
            .filter_map(Value::as_str)
            .any(|e| covers(e, r.plural, a.subresource))
        && scope
        && rule["resourceNames"]
            .as_array()
            .is_none_or(|names| names.is_empty() || names.iter().any(|n| n == name))
}

/// The resource `hook` sees the write as, if one of its rules matches:
/// the write's own; else, with `matchPolicy: Equivalent` (the default),
/// another version or group of the same stored resource one of its rules
/// names (an `autoscaling/v1` autoscaler as `v2`, an `events.k8s.io`
/// event as `v1`, another version of a custom resource). Only the
/// object itself or its status is sent converted.
pub fn matches(hook: &Value, a: &Attributes<'_>) -> Option<Seen> {
    matches_rules(&hook["rules"], &hook["matchPolicy"], a, "")
}

/// How `rules` (of a webhook or an admission policy, the object `name`
/// written) see the write, as [`matches`] says.
pub fn matches_rules(
    rules: &Value,
    match_policy: &Value,
    a: &Attributes<'_>,
    name: &str,
) -> Option<Seen> {
    let rules: Vec<&Value> = rules.as_array().into_iter().flatten().collect();
    let r = a.resource;
    if rules
        .iter()
        .any(|rule| rule_matches(rule, a, r, true, name))
    {
        return Some(Seen::AsMade);
    }
    let convertible = matches!(a.subresource, None | Some("status"));
    // Equivalents share the plural: only a rule for it may name one.
    let named = rules
        .iter()
        .any(|rule| rule_matches(rule, a, r, false, name));
    if match_policy == "Exact" || !convertible || !named {
        return None;
    }
    let stored = r.key_prefix();
    let equivalent = registry::all().into_iter().find(|other| {
        (other.group, other.version) != (r.group, r.version)
            && other.plural == r.plural
            && other.key_prefix() == stored
            && rules
                .iter()
                .any(|rule| rule_matches(rule, a, other, true, name))
    });
    equivalent.map(Seen::As)
}

/// How a webhook sees a write its rules match.
#[derive(Clone, Copy, Debug)]
pub enum Seen {
    /// As it was made.
    AsMade,
    /// As another version or group of the same stored resource.
    As(&'static ResourceType),
}

/// Whether `hook`'s selectors take the write: the object (or the one it
/// replaces) by its labels; its namespace by that namespace's labels (a
/// Namespace by its own; other cluster-wide objects always).
pub async fn selected(
    objects: &Objects,
    hook: &Value,
    a: &Attributes<'_>,
    obj: &Value,
) -> Result<bool, ApiError> {
    let parse = |key: &str| {
        let sel = &hook[key];
        if sel.is_null() {
            return Ok(LabelSelector::default());
        }
        LabelSelector::from_object(sel)
    };
    let (objects_sel, namespaces_sel) = (parse("objectSelector")?, parse("namespaceSelector")?);
    // A connection's object is its options, which carry no labels; its
    // pod stands for it in the namespace only, as upstream.
    let connect = a.operation == Operation::Connect;
    let old = a.old.filter(|_| !connect);
    let candidates = [Some(obj), old].into_iter().flatten();
    let candidates: Vec<&Value> = candidates.filter(|o| !o.is_null()).collect();
    if !objects_sel.is_empty() && !candidates.iter().any(|o| objects_sel.matches_object(o)) {
        return Ok(false);
    }
    if namespaces_sel.is_empty() {
        return Ok(true);
    }
    let r = a.resource;
    if !r.namespaced {
        if (r.group, r.kind) == ("", "Namespace") && a.subresource.is_none() {
            return Ok(candidates.iter().any(|o| namespaces_sel.matches_object(o)));
        }
        return Ok(true);
    }
    let named = match a.old {
        Some(pod) if connect => pod,
        _ => candidates.first().copied().unwrap_or(obj),
    };
    let ns = a.namespace.or_else(|| meta::get_str(named, "namespace"));
    let Some(ns) = ns.filter(|n| !n.is_empty()) else {
        return Ok(true);
    };
    let namespaces = registry::preferred("", "namespaces").expect("namespaces are served");
    let namespace = objects.recent(namespaces, None, ns).await?;
    Ok(namespace.is_some_and(|n| namespaces_sel.matches_object(&n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_name_their_subresources() {
        assert!(covers("pods", "pods", None));
        assert!(!covers("pods", "pods", Some("status")));
        assert!(covers("pods/status", "pods", Some("status")));
        assert!(covers("*/status", "deployments", Some("status")));
        assert!(!covers("*/status", "deployments", Some("scale")));
        assert!(covers("*", "pods", None));
        assert!(!covers("*", "pods", Some("exec")));
        assert!(covers("*/*", "pods", Some("exec")));
        assert!(covers("pods/*", "pods", Some("ephemeralcontainers")));
        assert!(!covers("configmaps", "pods", None));
    }
}
