//! The ClusterRoles and ClusterRoleBindings every cluster starts with, as
//! upstream's bootstrap policy: `cluster-admin` for `system:masters`;
//! `admin`, `edit` and `view`, aggregated from the `system:aggregate-to-*`
//! roles (and any role labelled to join them); discovery, basic-user and
//! public-info for everyone; `system:node` for the nodes' credential.

use serde_json::{json, Value};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(paths: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": paths, "verbs": verbs})
}

fn role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": rules})
}

/// A ClusterRole made of the rules of every ClusterRole labelled
/// `rbac.authorization.k8s.io/aggregate-to-<name>: "true"`.
fn aggregated(name: &str) -> Value {
    let selectors = [
        json!({"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{name}"): "true"}}),
    ];
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "aggregationRule": {"clusterRoleSelectors": selectors}, "rules": []})
}

/// Labels that aggregate a role into each of `targets`.
fn joins(targets: &[&str]) -> Value {
    let mut labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    for t in targets {
        labels[format!("rbac.authorization.k8s.io/aggregate-to-{t}")] = json!("true");
    }
    labels
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let defaults = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let workloads_read = vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/log",
                "pods/status",
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "replicationcontrollers/status",
                "serviceaccounts",
                "services",
                "services/status",
                "bindings",
                "events",
                "limitranges",
                "resourcequotas",
                "resourcequotas/status",
                "namespaces",
                "namespaces/status",
            ],
            READ,
        ),
        rule(
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            READ,
        ),
        rule(
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            READ,
        ),
        rule(
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            READ,
        ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
            READ,
        ),
        rule(&["events.k8s.io"], &["events"], READ),
    ];
    let workloads_write = vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "pods/eviction",
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            WRITE,
        ),
        rule(
            &[""],
            &[
                "secrets",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "services/proxy",
            ],
            READ,
        ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            WRITE,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["batch"], &["cronjobs", "jobs"], WRITE),
        rule(&["discovery.k8s.io"], &["endpointslices"], WRITE),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            WRITE,
        ),
    ];
    let all = &["*"];
    vec![
        role(
            "cluster-admin",
            defaults.clone(),
            vec![rule(all, all, all), urls(all, all)],
        ),
        aggregated("admin"),
        aggregated("edit"),
        aggregated("view"),
        // What view may do, edit and admin may too; what edit may, admin.
        role(
            "system:aggregate-to-view",
            joins(&["view", "edit", "admin"]),
            workloads_read,
        ),
        role(
            "system:aggregate-to-edit",
            joins(&["edit", "admin"]),
            workloads_write,
        ),
        role(
            "system:aggregate-to-admin",
            joins(&["admin"]),
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                    &["create"],
                ),
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                    &[READ, WRITE].concat(),
                ),
            ],
        ),
        role(
            "system:discovery",
            defaults.clone(),
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        role(
            "system:public-info-viewer",
            defaults.clone(),
            vec![urls(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
        role(
            "system:basic-user",
            defaults.clone(),
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        // What a node agent (and its proxy) does. Upstream narrows reads of
        // Secrets and ConfigMaps to a node's own pods with the Node
        // authorizer, which Skiff does not have yet.
        role(
            "system:node",
            defaults,
            vec![
                rule(
                    &[""],
                    &["nodes"],
                    &["create", "get", "list", "watch", "patch", "update"],
                ),
                rule(&[""], &["nodes/status"], &["patch", "update"]),
                rule(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "delete", "get", "patch", "update"],
                ),
                rule(
                    &[""],
                    &["pods"],
                    &["get", "list", "watch", "create", "delete"],
                ),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&[""], &["pods/eviction"], &["create"]),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "secrets",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                    ],
                    &["get", "list", "watch"],
                ),
                rule(&[""], &["serviceaccounts"], &["get"]),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
                // The agent's endpoint asks who a caller is and whether
                // it may use the node.
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews", "localsubjectaccessreviews"],
                    &["create"],
                ),
                rule(
                    &["", "discovery.k8s.io"],
                    &["services", "endpoints", "endpointslices"],
                    READ,
                ),
                rule(
                    &["storage.k8s.io"],
                    &[
                        "csidrivers",
                        "csinodes",
                        "storageclasses",
                        "volumeattachments",
                    ],
                    READ,
                ),
            ],
        ),
    ]
}

fn binding(role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", &["system:masters"]),
        binding("system:discovery", &["system:authenticated"]),
        binding("system:basic-user", &["system:authenticated"]),
        binding(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        binding("system:node", &["system:nodes"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::rbac::Index;
    use super::super::{Attributes, Target};
    use super::*;
    use crate::auth::User;

    #[test]
    fn the_default_policy_grants_what_upstreams_does() {
        let index = Index::build(&cluster_roles(), &[], &cluster_role_bindings(), &[]);
        let ask = |groups: &[&str], verb: &str, group: &str, resource: &str, ns: Option<&str>| {
            let a = Attributes {
                user: User {
                    name: "someone".into(),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                },
                verb: verb.into(),
                target: Target::Resource {
                    group: group.into(),
                    resource: resource.into(),
                    subresource: None,
                    namespace: ns.map(Into::into),
                    name: None,
                },
            };
            index.allows(&a)
        };
        let authenticated = &["system:authenticated"];
        assert!(ask(&["system:masters"], "delete", "", "nodes", None));
        assert!(!ask(authenticated, "list", "", "secrets", Some("default")));
        assert!(!ask(authenticated, "list", "", "pods", Some("default")));
        let bindings = [
            json!({"metadata": {"name": "v", "namespace": "a"}, "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "viewer"}]}),
            json!({"metadata": {"name": "e", "namespace": "a"}, "roleRef": {"kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "User", "name": "editor"}]}),
            json!({"metadata": {"name": "ad", "namespace": "a"}, "roleRef": {"kind": "ClusterRole", "name": "admin"}, "subjects": [{"kind": "User", "name": "admin"}]}),
        ];
        let local = Index::build(&cluster_roles(), &[], &[], &bindings);
        let may = |user: &str, verb: &str, group: &str, resource: &str| {
            local.allows(&Attributes {
                user: User {
                    name: user.into(),
                    groups: vec![],
                },
                verb: verb.into(),
                target: Target::Resource {
                    group: group.into(),
                    resource: resource.into(),
                    subresource: None,
                    namespace: Some("a".into()),
                    name: None,
                },
            })
        };
        let rbac = "rbac.authorization.k8s.io";
        for (user, reads_pods, reads_secrets, writes_pods, binds) in [
            ("viewer", true, false, false, false),
            ("editor", true, true, true, false),
            ("admin", true, true, true, true),
        ] {
            assert_eq!(may(user, "list", "", "pods"), reads_pods, "{user}");
            assert_eq!(may(user, "list", "", "secrets"), reads_secrets, "{user}");
            assert_eq!(may(user, "create", "", "pods"), writes_pods, "{user}");
            assert_eq!(may(user, "create", rbac, "rolebindings"), binds, "{user}");
        }
        assert!(ask(
            authenticated,
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            None
        ));
        assert!(ask(&["system:nodes"], "patch", "", "nodes", None));
        assert!(!ask(
            &["system:nodes"],
            "create",
            "apps",
            "deployments",
            Some("default")
        ));
        let version = Attributes {
            user: User {
                name: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
            },
            verb: "get".into(),
            target: Target::Path("/version".into()),
        };
        assert!(index.allows(&version));
    }
}
