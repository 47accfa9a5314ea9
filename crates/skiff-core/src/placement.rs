//! Whether a pod may run on a node, as far as labels and taints go. The
//! scheduler filters with these; the DaemonSet and node lifecycle
//! controllers decide with them too.

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn requirement(node: &Node, r: &NodeSelectorRequirement, field: bool) -> bool {
    let value = if field {
        (r.key == "metadata.name")
            .then_some(node.metadata.name.as_deref())
            .flatten()
    } else {
        label(node, &r.key)
    };
    let values = r.values.as_deref().unwrap_or(&[]);
    let number = |s: &str| s.parse::<i64>().ok();
    let compare = || {
        (
            value.and_then(number),
            values.first().and_then(|x| number(x)),
        )
    };
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!(compare(), (Some(a), Some(b)) if a > b),
        "Lt" => matches!(compare(), (Some(a), Some(b)) if a < b),
        _ => false,
    }
}

/// A term matches when all its requirements do; an empty term matches
/// nothing.
pub fn term_matches(node: &Node, t: &NodeSelectorTerm) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
    let fields = t.match_fields.as_deref().unwrap_or(&[]);
    (!exprs.is_empty() || !fields.is_empty())
        && exprs.iter().all(|r| requirement(node, r, false))
        && fields.iter().all(|r| requirement(node, r, true))
}

/// `nodeSelector` and required node affinity both match the node.
pub fn node_selected(spec: &PodSpec, node: &Node) -> bool {
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| label(node, k) == Some(v.as_str()));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok
        && required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(node, t)))
}

/// Whether one toleration matches one taint (upstream's
/// `ToleratesTaint`): an empty key with `Exists` matches every taint; an
/// empty effect matches every effect.
pub fn toleration_matches(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t.effect.as_deref().is_none_or(str::is_empty)
        || t.effect.as_deref() == Some(taint.effect.as_str());
    let key = t.key.as_deref().unwrap_or("");
    if !effect_ok || (!key.is_empty() && key != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Whether any of the tolerations matches the taint.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| toleration_matches(t, taint))
}
