//! Roles and bindings, checked as upstream's RBAC validation checks them:
//! names are path segments, a rule names what it grants, a binding's
//! `roleRef` names a role of this group and its subjects a kind the
//! authorizer knows. A subject it does not know would bind no one,
//! silently.

use serde_json::Value;

use super::{is_dns_subdomain, path_segment_problems, SUBDOMAIN_MSG};
use crate::selector::LabelSelector;
use crate::status::Cause;

/// The API group of roles, and of the User and Group subjects.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// A Role (`namespaced`) or ClusterRole.
pub(super) fn role(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    for (i, rule) in list(&obj["rules"]).iter().enumerate() {
        policy_rule(rule, namespaced, &format!("rules[{i}]"), causes);
    }
    let aggregation = &obj["aggregationRule"];
    if namespaced || aggregation.is_null() {
        return;
    }
    let at = "aggregationRule.clusterRoleSelectors";
    let selectors = list(&aggregation["clusterRoleSelectors"]);
    if selectors.is_empty() {
        causes.push(Cause::required_because(
            at,
            "at least one clusterRoleSelector required if aggregationRule is non-nil",
        ));
    }
    for (i, selector) in selectors.iter().enumerate() {
        if let Err(e) = LabelSelector::from_object(selector) {
            causes.push(Cause::invalid_value(
                format!("{at}[{i}]"),
                selector,
                e.message,
            ));
        }
    }
}

fn policy_rule(rule: &Value, namespaced: bool, at: &str, causes: &mut Vec<Cause>) {
    let has = |field: &str| !list(&rule[field]).is_empty();
    if !has("verbs") {
        causes.push(Cause::required_because(
            format!("{at}.verbs"),
            "verbs must contain at least one value",
        ));
    }
    if has("nonResourceURLs") {
        let urls = &rule["nonResourceURLs"];
        let field = format!("{at}.nonResourceURLs");
        if namespaced {
            let why = "namespaced rules cannot apply to non-resource URLs";
            causes.push(Cause::invalid_value(&field, urls, why));
        }
        if has("apiGroups") || has("resources") || has("resourceNames") {
            let why = "rules cannot apply to both regular resources and non-resource URLs";
            causes.push(Cause::invalid_value(field, urls, why));
        }
        return;
    }
    if !has("apiGroups") {
        causes.push(Cause::required_because(
            format!("{at}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if !has("resources") {
        causes.push(Cause::required_because(
            format!("{at}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

/// A RoleBinding (`namespaced`) or ClusterRoleBinding; `old` is the
/// stored one on update.
pub(super) fn binding(obj: &Value, old: Option<&Value>, namespaced: bool, causes: &mut Vec<Cause>) {
    let role_ref = &obj["roleRef"];
    let group = role_ref["apiGroup"].as_str().unwrap_or_default();
    if group != GROUP {
        causes.push(Cause::unsupported("roleRef.apiGroup", group, &[GROUP]));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let kind = role_ref["kind"].as_str().unwrap_or_default();
    if !kinds.contains(&kind) {
        causes.push(Cause::unsupported("roleRef.kind", kind, kinds));
    }
    match role_ref["name"].as_str().unwrap_or_default() {
        "" => causes.push(Cause::required("roleRef.name")),
        name => {
            for why in path_segment_problems(name) {
                causes.push(Cause::invalid("roleRef.name", name, why));
            }
        }
    }
    for (i, subject) in list(&obj["subjects"]).iter().enumerate() {
        self::subject(subject, namespaced, &format!("subjects[{i}]"), causes);
    }
    if let Some(old) = old {
        if old["roleRef"] != *role_ref {
            causes.push(Cause::invalid_value(
                "roleRef",
                role_ref,
                "cannot change roleRef",
            ));
        }
    }
}

fn subject(s: &Value, namespaced: bool, at: &str, causes: &mut Vec<Cause>) {
    let name = s["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        causes.push(Cause::required(format!("{at}.name")));
    }
    let group = s["apiGroup"].as_str().unwrap_or_default();
    match s["kind"].as_str().unwrap_or_default() {
        "ServiceAccount" => {
            if !name.is_empty() && !is_dns_subdomain(name) {
                causes.push(Cause::invalid(format!("{at}.name"), name, SUBDOMAIN_MSG));
            }
            if !group.is_empty() {
                causes.push(Cause::unsupported(format!("{at}.apiGroup"), group, &[""]));
            }
            if !namespaced && s["namespace"].as_str().unwrap_or_default().is_empty() {
                causes.push(Cause::required(format!("{at}.namespace")));
            }
        }
        "User" | "Group" => {
            if group != GROUP {
                causes.push(Cause::unsupported(
                    format!("{at}.apiGroup"),
                    group,
                    &[GROUP],
                ));
            }
        }
        kind => causes.push(Cause::unsupported(
            format!("{at}.kind"),
            kind,
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::{causes_of, fields_of};

    fn fields(plural: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
        fields_of(super::GROUP, plural, obj, old)
    }

    #[test]
    fn names_are_path_segments() {
        let role = |name: &str| json!({"metadata": {"name": name, "namespace": "a"}});
        // Colons and capitals are fine: system:node, Admin.
        assert!(fields("roles", &role("system:Node"), None).is_empty());
        for bad in [".", "..", "a/b", "50%"] {
            assert_eq!(
                fields("roles", &role(bad), None),
                ["metadata.name"],
                "{bad}"
            );
        }
        let (_, why) = causes_of(super::GROUP, "clusterroles", &role("a/b%"), None)
            .pop()
            .unwrap();
        assert!(why.ends_with("may not contain '%'"), "{why}");
    }

    #[test]
    fn rules_name_what_they_grant() {
        let role =
            |rules: Value| json!({"metadata": {"name": "r", "namespace": "a"}, "rules": rules});
        let good = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]);
        assert!(fields("roles", &role(good), None).is_empty());
        let empty = json!([{"apiGroups": [], "resources": ["pods"]}]);
        assert_eq!(
            fields("roles", &role(empty), None),
            ["rules[0].verbs", "rules[0].apiGroups"]
        );
        let urls = json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]);
        // Only a ClusterRole may grant non-resource URLs.
        assert!(fields("clusterroles", &role(urls.clone()), None).is_empty());
        let causes = causes_of(super::GROUP, "roles", &role(urls), None);
        assert_eq!(
            causes,
            [(
                "rules[0].nonResourceURLs".to_owned(),
                "Invalid value: [\"/healthz\"]: namespaced rules cannot apply to non-resource URLs"
                    .to_owned()
            )]
        );
        let both = json!([{"verbs": ["get"], "nonResourceURLs": ["/x"], "resources": ["pods"]}]);
        assert_eq!(
            fields("clusterroles", &role(both), None),
            ["rules[0].nonResourceURLs"]
        );
    }

    #[test]
    fn aggregation_needs_valid_selectors() {
        let role = |rule: Value| json!({"metadata": {"name": "r"}, "aggregationRule": rule});
        let good = json!({"clusterRoleSelectors": [{"matchLabels": {"agg": "true"}}]});
        assert!(fields("clusterroles", &role(good), None).is_empty());
        assert_eq!(
            fields("clusterroles", &role(json!({})), None),
            ["aggregationRule.clusterRoleSelectors"]
        );
        let bad = json!({"clusterRoleSelectors": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]});
        assert_eq!(
            fields("clusterroles", &role(bad), None),
            ["aggregationRule.clusterRoleSelectors[0]"]
        );
    }

    fn binding(role_ref: Value, subjects: Value) -> Value {
        json!({"metadata": {"name": "b", "namespace": "a"}, "roleRef": role_ref, "subjects": subjects})
    }

    #[test]
    fn bindings_name_a_role_of_this_group() {
        let to =
            |kind: &str, name: &str| json!({"apiGroup": super::GROUP, "kind": kind, "name": name});
        let nobody = json!([]);
        assert!(fields(
            "rolebindings",
            &binding(to("Role", "r"), nobody.clone()),
            None
        )
        .is_empty());
        // A ClusterRoleBinding binds ClusterRoles only.
        assert_eq!(
            fields(
                "clusterrolebindings",
                &binding(to("Role", "r"), nobody.clone()),
                None
            ),
            ["roleRef.kind"]
        );
        let elsewhere = json!({"apiGroup": "example.com", "kind": "Role", "name": "a/b"});
        assert_eq!(
            fields("rolebindings", &binding(elsewhere, nobody.clone()), None),
            ["roleRef.apiGroup", "roleRef.name"]
        );
        // The role a binding grants is fixed at creation.
        let before = binding(to("Role", "r"), nobody.clone());
        let after = binding(to("Role", "s"), nobody);
        let causes = causes_of(super::GROUP, "rolebindings", &after, Some(&before));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].0, "roleRef");
        assert!(
            causes[0].1.ends_with("cannot change roleRef"),
            "{:?}",
            causes[0]
        );
    }

    #[test]
    fn subjects_are_of_known_kinds() {
        let role_ref = json!({"apiGroup": super::GROUP, "kind": "ClusterRole", "name": "view"});
        let subjects = json!([
            {"kind": "User", "apiGroup": super::GROUP, "name": "alice"},
            {"kind": "ServiceAccount", "name": "app", "namespace": "a"},
            {"kind": "Robot", "name": "r2"},
            {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "apiGroup": super::GROUP, "name": "Not_A_Name"},
            {"kind": "User"},
        ]);
        assert_eq!(
            fields("rolebindings", &binding(role_ref.clone(), subjects), None),
            [
                "subjects[2].kind",
                "subjects[3].apiGroup",
                "subjects[4].name",
                "subjects[4].apiGroup",
                "subjects[5].name",
                "subjects[5].apiGroup",
            ]
        );
        // A cluster-wide binding names its service accounts' namespace.
        let account = json!([{"kind": "ServiceAccount", "name": "app"}]);
        assert!(fields(
            "rolebindings",
            &binding(role_ref.clone(), account.clone()),
            None
        )
        .is_empty());
        assert_eq!(
            fields("clusterrolebindings", &binding(role_ref, account), None),
            ["subjects[0].namespace"]
        );
    }
}
