//! RBAC as upstream evaluates it: a request is allowed when a rule of a
//! role bound to the user (or one of its groups) covers it: ClusterRoles
//! through ClusterRoleBindings anywhere, Roles and ClusterRoles through
//! RoleBindings in their namespace. ClusterRoles with an
//! `aggregationRule` hold the rules of the ClusterRoles their selectors
//! match. Roles and bindings are indexed by subject in memory, rebuilt
//! from the store whenever one of them changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use skiff_core::registry::{self, ResourceType};
use skiff_core::selector::LabelSelector;
use skiff_store::{ListOptions, Store};

use super::{Attributes, Authorizer, Decision, Target};
use crate::storage::decode;

/// One rule of a role.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl Rule {
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        match &a.target {
            Target::Path(path) => self.non_resource_urls.iter().any(|u| {
                u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            }),
            Target::Resource {
                group,
                resource,
                subresource,
                name,
                ..
            } => {
                let resource_ok = self.resources.iter().any(|r| match subresource {
                    _ if r == "*" => true,
                    None => r == resource,
                    Some(sub) => {
                        r.split_once('/') == Some((resource.as_str(), sub.as_str()))
                            || r.strip_prefix("*/") == Some(sub.as_str())
                    }
                });
                let name_ok = self.resource_names.is_empty()
                    || name
                        .as_ref()
                        .is_some_and(|n| self.resource_names.contains(n));
                has(&self.api_groups, group) && resource_ok && name_ok
            }
        }
    }
}

/// Who a binding names.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
}

#[derive(Clone, Debug, PartialEq)]
enum RoleRef {
    ClusterRole(String),
    Role(String),
}

/// What is bound to each user and group, apart, so that a request's
/// names find their entries without allocating.
struct BySubject<T> {
    users: HashMap<String, Vec<T>>,
    groups: HashMap<String, Vec<T>>,
}

impl<T> Default for BySubject<T> {
    fn default() -> Self {
        Self {
            users: HashMap::new(),
            groups: HashMap::new(),
        }
    }
}

impl<T> BySubject<T> {
    fn add(&mut self, subject: Subject, item: T) {
        let (map, name) = match subject {
            Subject::User(n) => (&mut self.users, n),
            Subject::Group(n) => (&mut self.groups, n),
        };
        map.entry(name).or_default().push(item);
    }

    /// Everything bound to the user or one of its groups.
    fn of<'a>(&'a self, user: &'a crate::auth::User) -> impl Iterator<Item = &'a T> {
        let own = self.users.get(&user.name).into_iter().flatten();
        let groups = user
            .groups
            .iter()
            .flat_map(|g| self.groups.get(g).into_iter().flatten());
        own.chain(groups)
    }
}

/// Roles and bindings, indexed by namespace and subject.
#[derive(Default)]
pub struct Index {
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    /// Roles by namespace, then name.
    roles: HashMap<String, HashMap<String, Arc<Vec<Rule>>>>,
    cluster_bindings: BySubject<String>,
    /// RoleBindings by namespace.
    bindings: HashMap<String, BySubject<RoleRef>>,
}

fn rules_of(role: &Value) -> Vec<Rule> {
    serde_json::from_value(role["rules"].clone()).unwrap_or_default()
}

fn subjects_of(binding: &Value) -> Vec<Subject> {
    let mut out = Vec::new();
    for s in binding["subjects"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or_default().to_owned();
        match s["kind"].as_str() {
            Some("User") => out.push(Subject::User(name)),
            Some("Group") => out.push(Subject::Group(name)),
            Some("ServiceAccount") => {
                let ns = s["namespace"]
                    .as_str()
                    .or(binding["metadata"]["namespace"].as_str())
                    .unwrap_or_default();
                out.push(Subject::User(format!("system:serviceaccount:{ns}:{name}")));
            }
            _ => {}
        }
    }
    out
}

impl Index {
    /// The index of these ClusterRoles, Roles, ClusterRoleBindings and
    /// RoleBindings.
    pub fn build(
        cluster_roles: &[Value],
        roles: &[Value],
        cluster_bindings: &[Value],
        bindings: &[Value],
    ) -> Self {
        let mut index = Self::default();
        for role in cluster_roles {
            let mut rules = rules_of(role);
            let selectors = role["aggregationRule"]["clusterRoleSelectors"].as_array();
            for selector in selectors.into_iter().flatten() {
                let Ok(selector) = LabelSelector::from_object(selector) else {
                    continue;
                };
                for other in cluster_roles {
                    if other["metadata"]["name"] != role["metadata"]["name"]
                        && selector.matches_object(other)
                    {
                        rules.extend(rules_of(other));
                    }
                }
            }
            let name = role["metadata"]["name"].as_str().unwrap_or_default();
            index.cluster_roles.insert(name.to_owned(), Arc::new(rules));
        }
        for role in roles {
            let m = &role["metadata"];
            let ns = m["namespace"].as_str().unwrap_or_default().to_owned();
            let name = m["name"].as_str().unwrap_or_default().to_owned();
            let rules = Arc::new(rules_of(role));
            index.roles.entry(ns).or_default().insert(name, rules);
        }
        for binding in cluster_bindings {
            if binding["roleRef"]["kind"] != "ClusterRole" {
                continue;
            }
            let role = binding["roleRef"]["name"].as_str().unwrap_or_default();
            for s in subjects_of(binding) {
                index.cluster_bindings.add(s, role.to_owned());
            }
        }
        for binding in bindings {
            let ns = binding["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default();
            let name = binding["roleRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let role = match binding["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => RoleRef::ClusterRole(name),
                Some("Role") => RoleRef::Role(name),
                _ => continue,
            };
            let local = index.bindings.entry(ns.to_owned()).or_default();
            for s in subjects_of(binding) {
                local.add(s, role.clone());
            }
        }
        index
    }

    /// Whether a rule bound to the user or its groups covers `a`.
    pub fn allows(&self, a: &Attributes) -> bool {
        let covers = |rules: Option<&Arc<Vec<Rule>>>| {
            rules.is_some_and(|rules| rules.iter().any(|r| r.allows(a)))
        };
        let cluster_wide = self.cluster_bindings.of(&a.user);
        if cluster_wide
            .into_iter()
            .any(|role| covers(self.cluster_roles.get(role)))
        {
            return true;
        }
        let ns = match &a.target {
            Target::Resource {
                namespace: Some(ns),
                ..
            } => ns,
            _ => return false,
        };
        let Some(local) = self.bindings.get(ns) else {
            return false;
        };
        local.of(&a.user).any(|role| {
            covers(match role {
                RoleRef::ClusterRole(name) => self.cluster_roles.get(name),
                RoleRef::Role(name) => self.roles.get(ns).and_then(|r| r.get(name)),
            })
        })
    }
}

impl Index {
    /// Every rule that applies to the user in `namespace`: its
    /// cluster-wide bindings' and the namespace's.
    pub fn rules_for(&self, user: &crate::auth::User, namespace: &str) -> Vec<Rule> {
        let mut out: Vec<Rule> = Vec::new();
        let mut add = |rules: Option<&Arc<Vec<Rule>>>| {
            for r in rules.into_iter().flat_map(|r| r.iter()) {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        };
        for role in self.cluster_bindings.of(user) {
            add(self.cluster_roles.get(role));
        }
        if let Some(local) = self.bindings.get(namespace) {
            for role in local.of(user) {
                add(match role {
                    RoleRef::ClusterRole(name) => self.cluster_roles.get(name),
                    RoleRef::Role(name) => self.roles.get(namespace).and_then(|r| r.get(name)),
                });
            }
        }
        out
    }
}

/// The RBAC authorizer over an index kept in step with the store.
#[derive(Default)]
pub struct Rbac {
    index: RwLock<Arc<Index>>,
}

impl Authorizer for Rbac {
    fn authorize(&self, a: &Attributes) -> Decision {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        if index.allows(a) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }

    fn rules_for(&self, user: &crate::auth::User, namespace: &str) -> Vec<Rule> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        index.rules_for(user, namespace)
    }

    fn rules_of(&self, namespace: Option<&str>, name: &str) -> Option<Vec<Rule>> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        let rules = match namespace {
            None => index.cluster_roles.get(name),
            Some(ns) => index.roles.get(ns).and_then(|r| r.get(name)),
        };
        rules.map(|r| r.as_ref().clone())
    }
}

fn kinds() -> [&'static ResourceType; 4] {
    let r = |plural| {
        registry::lookup("rbac.authorization.k8s.io", "v1", plural).expect("RBAC is served")
    };
    [
        r("clusterroles"),
        r("roles"),
        r("clusterrolebindings"),
        r("rolebindings"),
    ]
}

impl Rbac {
    /// An authorizer over a fixed index.
    #[cfg(test)]
    pub fn from_index(index: Index) -> Self {
        Self {
            index: RwLock::new(Arc::new(index)),
        }
    }

    /// Rebuilds the index from the store; returns the revision it read.
    pub async fn load(&self, store: &dyn Store) -> Result<i64, skiff_store::Error> {
        let mut lists: Vec<Vec<Value>> = Vec::new();
        let mut revision = 0;
        for r in kinds() {
            let page = store
                .list(&r.list_prefix(None), ListOptions::default())
                .await?;
            revision = revision.max(page.revision);
            lists.push(page.items.iter().filter_map(|kv| decode(kv).ok()).collect());
        }
        let index = Index::build(&lists[0], &lists[1], &lists[2], &lists[3]);
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        Ok(revision)
    }

    /// Keeps the index in step with the store: any change to a role or a
    /// binding rebuilds it.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>, mut revision: i64) {
        loop {
            let mut streams = Vec::new();
            for r in kinds() {
                match store.watch(&r.list_prefix(None), revision).await {
                    Ok(s) => streams.push(s),
                    Err(e) => tracing::warn!(error = %e, "watching RBAC objects"),
                }
            }
            if streams.is_empty() {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            let mut changes = futures::stream::select_all(streams);
            // One change (or the end of a stream) means: read them all again.
            let _ = changes.next().await;
            revision = super::reload("RBAC objects", || self.load(store.as_ref())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::User;
    use serde_json::json;

    fn ask(user: &str, groups: &[&str], verb: &str, target: Target) -> Attributes {
        Attributes {
            user: User {
                name: user.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
            verb: verb.into(),
            target,
        }
    }

    fn res(
        group: &str,
        resource: &str,
        sub: Option<&str>,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Target {
        Target::Resource {
            group: group.into(),
            resource: resource.into(),
            subresource: sub.map(Into::into),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn rules_match_as_upstream() {
        let rule = |v: Value| -> Rule { serde_json::from_value(v).unwrap() };
        let a = |verb, t| ask("u", &[], verb, t);
        let pods = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
        );
        assert!(pods.allows(&a("get", res("", "pods", None, Some("a"), Some("p")))));
        assert!(pods.allows(&a(
            "get",
            res("", "pods", Some("log"), Some("a"), Some("p"))
        )));
        assert!(!pods.allows(&a(
            "create",
            res("", "pods", Some("exec"), Some("a"), Some("p"))
        )));
        assert!(!pods.allows(&a("delete", res("", "pods", None, Some("a"), Some("p")))));
        assert!(!pods.allows(&a("get", res("apps", "pods", None, Some("a"), None))));
        let any_status =
            rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/status"]}));
        assert!(any_status.allows(&a(
            "patch",
            res("apps", "deployments", Some("status"), None, None)
        )));
        assert!(!any_status.allows(&a("patch", res("apps", "deployments", None, None, None))));
        let named = rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"]}),
        );
        assert!(named.allows(&a(
            "get",
            res("", "configmaps", None, Some("a"), Some("one"))
        )));
        assert!(!named.allows(&a(
            "get",
            res("", "configmaps", None, Some("a"), Some("two"))
        )));
        assert!(!named.allows(&a("get", res("", "configmaps", None, Some("a"), None))));
        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/version", "/apis/*"]}));
        assert!(urls.allows(&a("get", Target::Path("/version".into()))));
        assert!(urls.allows(&a("get", Target::Path("/apis/apps/v1".into()))));
        assert!(!urls.allows(&a("get", Target::Path("/api".into()))));
    }

    #[test]
    fn bindings_grant_their_roles_rules_in_their_scope() {
        let view = json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}});
        let reader = json!({"metadata": {"name": "reader", "labels": {"agg": "view"}},
            "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]});
        let admin = json!({"metadata": {"name": "cluster-admin"},
            "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]}]});
        let secrets = json!({"metadata": {"name": "secrets", "namespace": "a"},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]});
        let masters = json!({"metadata": {"name": "m"}, "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "Group", "name": "system:masters"}]});
        let alice_view = json!({"metadata": {"name": "v", "namespace": "a"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "app"}]});
        let bob_secrets = json!({"metadata": {"name": "s", "namespace": "a"}, "roleRef": {"kind": "Role", "name": "secrets"},
            "subjects": [{"kind": "User", "name": "bob"}]});
        let index = Index::build(
            &[view, reader, admin],
            &[secrets],
            &[masters],
            &[alice_view, bob_secrets],
        );
        let pods_in = |ns| res("", "pods", None, Some(ns), None);
        assert!(index.allows(&ask(
            "root",
            &["system:masters"],
            "delete",
            res("", "nodes", None, None, Some("n"))
        )));
        assert!(index.allows(&ask(
            "root",
            &["system:masters"],
            "get",
            Target::Path("/metrics".into())
        )));
        assert!(
            index.allows(&ask("alice", &[], "list", pods_in("a"))),
            "view aggregates reader's rules"
        );
        assert!(
            !index.allows(&ask("alice", &[], "list", pods_in("b"))),
            "only in its namespace"
        );
        assert!(!index.allows(&ask("alice", &[], "delete", pods_in("a"))));
        assert!(index.allows(&ask(
            "system:serviceaccount:a:app",
            &[],
            "list",
            pods_in("a")
        )));
        assert!(!index.allows(&ask(
            "system:serviceaccount:b:app",
            &[],
            "list",
            pods_in("a")
        )));
        assert!(index.allows(&ask(
            "bob",
            &[],
            "get",
            res("", "secrets", None, Some("a"), Some("x"))
        )));
        assert!(!index.allows(&ask(
            "bob",
            &[],
            "get",
            res("", "secrets", None, Some("b"), Some("x"))
        )));
        assert!(!index.allows(&ask(
            "nobody",
            &["system:authenticated"],
            "get",
            pods_in("a")
        )));
    }
}
