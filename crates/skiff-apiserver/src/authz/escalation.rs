//! Escalation prevention, as upstream's RBAC: a user may write a Role or
//! ClusterRole only with rules it already holds (or with `escalate` on
//! it), may set an `aggregationRule` only with `escalate`, and may bind a
//! role only if it holds the role's rules where the binding applies (or
//! with `bind` on it).

use serde_json::Value;
use skiff_core::registry::ResourceType;
use skiff_core::ApiError;

use super::rbac::Rule;
use super::{Attributes, Authorizer, Decision, Target};
use crate::auth::User;

const GROUP: &str = "rbac.authorization.k8s.io";

/// The first rule of `rules` that `user` does not hold in `namespace`.
fn first_not_held<'a>(
    authorizer: &dyn Authorizer,
    user: &User,
    namespace: Option<&str>,
    rules: &'a [Rule],
) -> Option<&'a Rule> {
    let may = |verb: &str, target: Target| {
        let a = Attributes {
            user: user.clone(),
            verb: verb.to_owned(),
            target,
        };
        authorizer.authorize(&a) == Decision::Allow
    };
    rules.iter().find(|rule| {
        let names: Vec<Option<&String>> = if rule.resource_names.is_empty() {
            vec![None]
        } else {
            rule.resource_names.iter().map(Some).collect()
        };
        let resources = rule.verbs.iter().all(|verb| {
            rule.api_groups.iter().all(|group| {
                rule.resources.iter().all(|resource| {
                    let (resource, sub) = match resource.split_once('/') {
                        Some((r, s)) => (r, Some(s.to_owned())),
                        None => (resource.as_str(), None),
                    };
                    names.iter().all(|name| {
                        may(
                            verb,
                            Target::Resource {
                                group: group.clone(),
                                resource: resource.to_owned(),
                                subresource: sub.clone(),
                                namespace: namespace.map(str::to_owned),
                                name: name.cloned(),
                            },
                        )
                    })
                })
            })
        });
        let paths = rule.non_resource_urls.iter().all(|path| {
            rule.verbs
                .iter()
                .all(|verb| may(verb, Target::Path(path.clone())))
        });
        !(resources && paths)
    })
}

fn forbidden(r: &ResourceType, obj: &Value, user: &User, why: String) -> ApiError {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    ApiError::forbidden(format!(
        "{}.{GROUP} {name:?} is forbidden: user {:?} (groups={:?}) {why}",
        r.plural, user.name, user.groups
    ))
}

fn not_held(r: &ResourceType, obj: &Value, user: &User, rule: &Rule) -> ApiError {
    let why = format!("is attempting to grant RBAC permissions not currently held: {rule:?}");
    forbidden(r, obj, user, why)
}

/// Refuses a write of `obj` (a role or binding of kind `r`) that would
/// give `user` more than it has. Other kinds pass.
pub fn check(
    authorizer: &dyn Authorizer,
    user: &User,
    r: &ResourceType,
    obj: &Value,
) -> Result<(), ApiError> {
    // As upstream: the superuser group may grant anything (the server
    // writes its bootstrap roles as one of them, before any binding).
    if r.group != GROUP || user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let namespace = obj["metadata"]["namespace"].as_str();
    let name = obj["metadata"]["name"].as_str().map(str::to_owned);
    let allowed = |verb: &str, resource: &str, name: Option<String>| {
        let a = Attributes {
            user: user.clone(),
            verb: verb.to_owned(),
            target: Target::Resource {
                group: GROUP.into(),
                resource: resource.into(),
                subresource: None,
                namespace: namespace.map(str::to_owned),
                name,
            },
        };
        authorizer.authorize(&a) == Decision::Allow
    };
    match r.kind {
        "Role" | "ClusterRole" => {
            if allowed("escalate", r.plural, name) {
                return Ok(());
            }
            if !obj["aggregationRule"].is_null() {
                return Err(forbidden(
                    r,
                    obj,
                    user,
                    "must have the escalate permission to use an aggregationRule".into(),
                ));
            }
            let rules: Vec<Rule> = serde_json::from_value(obj["rules"].clone()).unwrap_or_default();
            match first_not_held(authorizer, user, namespace, &rules) {
                None => Ok(()),
                Some(rule) => Err(not_held(r, obj, user, rule)),
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role = &obj["roleRef"];
            let role_name = role["name"].as_str().unwrap_or_default().to_owned();
            let (kind, plural) = match role["kind"].as_str() {
                Some("Role") => ("Role", "roles"),
                _ => ("ClusterRole", "clusterroles"),
            };
            if allowed("bind", plural, Some(role_name.clone())) {
                return Ok(());
            }
            let role_ns = (kind == "Role").then_some(namespace).flatten();
            let Some(rules) = authorizer.rules_of(role_ns, &role_name) else {
                return Err(forbidden(
                    r,
                    obj,
                    user,
                    format!("cannot bind {kind} {role_name:?}, which does not exist"),
                ));
            };
            match first_not_held(authorizer, user, namespace, &rules) {
                None => Ok(()),
                Some(rule) => Err(not_held(r, obj, user, rule)),
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_core::registry::lookup;

    /// A user who may `get` and `list` pods in namespace `a`, and nothing
    /// else; the ClusterRole `reader` grants just that.
    struct PodReader;

    impl Authorizer for PodReader {
        fn authorize(&self, a: &Attributes) -> Decision {
            let ok = matches!(&a.target, Target::Resource { group, resource, subresource: None, namespace: Some(ns), .. }
                if group.is_empty() && resource == "pods" && ns == "a")
                && matches!(a.verb.as_str(), "get" | "list");
            if ok {
                Decision::Allow
            } else {
                Decision::NoOpinion
            }
        }

        fn rules_of(&self, _: Option<&str>, name: &str) -> Option<Vec<Rule>> {
            let reader =
                json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]);
            (name == "reader").then(|| serde_json::from_value(reader).unwrap())
        }

        fn rules_for(&self, _: &crate::auth::User, _: &str) -> Vec<Rule> {
            self.rules_of(None, "reader").unwrap_or_default()
        }
    }

    #[test]
    fn grants_are_limited_to_what_the_writer_holds() {
        let user = User {
            name: "carol".into(),
            groups: vec![],
        };
        let rbac = |plural| lookup(GROUP, "v1", plural).unwrap();
        let role = |ns: &str, rules: Value| json!({"metadata": {"name": "r", "namespace": ns}, "rules": rules});
        let pods = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]);
        let any = json!([{"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}]);
        assert!(check(&PodReader, &user, rbac("roles"), &role("a", pods.clone())).is_ok());
        assert!(
            check(&PodReader, &user, rbac("roles"), &role("b", pods)).is_err(),
            "not in b"
        );
        assert!(
            check(&PodReader, &user, rbac("roles"), &role("a", any)).is_err(),
            "not every verb"
        );
        let aggregating =
            json!({"metadata": {"name": "r"}, "aggregationRule": {"clusterRoleSelectors": []}});
        assert!(check(&PodReader, &user, rbac("clusterroles"), &aggregating).is_err());
        let binding = |ns: &str, role: &str| json!({"metadata": {"name": "b", "namespace": ns}, "roleRef": {"kind": "ClusterRole", "name": role}});
        assert!(check(
            &PodReader,
            &user,
            rbac("rolebindings"),
            &binding("a", "reader")
        )
        .is_ok());
        assert!(check(
            &PodReader,
            &user,
            rbac("rolebindings"),
            &binding("b", "reader")
        )
        .is_err());
        assert!(check(
            &PodReader,
            &user,
            rbac("rolebindings"),
            &binding("a", "missing")
        )
        .is_err());
        let pods = lookup("", "v1", "pods").unwrap();
        assert!(
            check(&PodReader, &user, pods, &json!({})).is_ok(),
            "other kinds pass"
        );
    }
}
