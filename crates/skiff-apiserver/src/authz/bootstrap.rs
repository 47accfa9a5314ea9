//! The ClusterRoles and ClusterRoleBindings every cluster starts with, as
//! upstream's bootstrap policy: `cluster-admin` for `system:masters`;
//! `admin`, `edit` and `view`, aggregated from the `system:aggregate-to-*`
//! roles (and any role labelled to join them); discovery, basic-user and
//! public-info for everyone; `system:node` for the nodes' credential.

use serde_json::{json, Value};

pub(super) const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

pub(super) fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(paths: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": paths, "verbs": verbs})
}

pub(super) fn role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
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
        rule(&["metrics.k8s.io"], &["pods", "nodes"], READ),
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
            "system:monitoring",
            defaults.clone(),
            vec![urls(
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
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
        role("system:node", defaults.clone(), node_rules()),
        role(
            "system:node-bootstrapper",
            defaults.clone(),
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
                &["create", "get", "list", "watch"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            defaults.clone(),
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
                &["create"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            defaults.clone(),
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
                &["create"],
            )],
        ),
        role("system:kube-scheduler", defaults.clone(), scheduler_rules()),
        role(
            "system:kube-controller-manager",
            defaults.clone(),
            controller_manager_rules(),
        ),
        role(
            "system:node-proxier",
            defaults.clone(),
            vec![
                rule(&[""], &["endpoints", "services"], &["list", "watch"]),
                rule(&[""], &["nodes"], READ),
                // Skiff's proxy also enforces NetworkPolicies, which select
                // among pods and namespaces.
                rule(
                    &["networking.k8s.io"],
                    &["networkpolicies"],
                    &["list", "watch"],
                ),
                rule(&[""], &["pods", "namespaces"], &["list", "watch"]),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["list", "watch"],
                ),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
            ],
        ),
        role(
            "system:coredns",
            defaults.clone(),
            vec![
                rule(
                    &[""],
                    &["endpoints", "services", "pods", "namespaces"],
                    &["list", "watch"],
                ),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["list", "watch"],
                ),
            ],
        ),
        role(
            "system:skiff-ingress",
            defaults,
            vec![
                rule(&[""], &["services", "endpoints", "secrets"], READ),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "ingressclasses"],
                    READ,
                ),
                rule(&["networking.k8s.io"], &["ingressclasses"], &["create"]),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses/status"],
                    &["patch", "update"],
                ),
                rule(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
            ],
        ),
    ]
    .into_iter()
    .chain(super::controller_roles::roles())
    .collect()
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

/// A binding of `role` to users.
fn user_binding(name: &str, role: &str, users: &[&str]) -> Value {
    let mut b = binding(role, &[]);
    b["metadata"]["name"] = json!(name);
    b["subjects"] = users
        .iter()
        .map(|u| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u}))
        .collect();
    b
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    let csr_role = "system:certificates.k8s.io:certificatesigningrequests";
    let mut nodeclient = binding(&format!("{csr_role}:nodeclient"), &["system:bootstrappers"]);
    nodeclient["metadata"]["name"] = json!("system:node-autoapprove-bootstrap");
    let mut selfnodeclient = binding(&format!("{csr_role}:selfnodeclient"), &["system:nodes"]);
    selfnodeclient["metadata"]["name"] = json!("system:node-autoapprove-certificate-rotation");
    vec![
        binding("cluster-admin", &["system:masters"]),
        binding("system:discovery", &["system:authenticated"]),
        binding("system:monitoring", &["system:monitoring"]),
        binding("system:basic-user", &["system:authenticated"]),
        binding(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        // As upstream: kept, bound to no one; the Node authorizer grants
        // nodes their rules, narrowed to their own pods' objects.
        binding("system:node", &[]),
        binding("system:node-bootstrapper", &["system:bootstrappers"]),
        nodeclient,
        selfnodeclient,
        user_binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &["system:kube-scheduler"],
        ),
        user_binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &["system:kube-controller-manager"],
        ),
        user_binding(
            "system:node-proxier",
            "system:node-proxier",
            &["system:kube-proxy"],
        ),
        user_binding("system:coredns", "system:coredns", &["system:coredns"]),
        user_binding(
            "system:skiff-ingress",
            "system:skiff-ingress",
            &["system:skiff-ingress"],
        ),
    ]
    .into_iter()
    .chain(super::controller_roles::bindings())
    .collect()
}

/// What a node agent (and the proxy beside it) may do, as upstream's
/// `system:node` rules: the Node authorizer narrows reads of Secrets,
/// ConfigMaps, claims, volumes and ServiceAccounts to its own pods'
/// (those rules are not here), and NodeRestriction its writes to its own
/// Node and its own pods.
pub fn node_rules() -> Vec<Value> {
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
        // The handler a pod's RuntimeClass runs it with.
        rule(&["node.k8s.io"], &["runtimeclasses"], READ),
        rule(
            &["", "events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ),
        rule(
            &[""],
            &["persistentvolumeclaims/status"],
            &["patch", "update"],
        ),
        // The agent's endpoint asks who a caller is and whether it may
        // use the node.
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
            &["create"],
        ),
        // Renewing its own certificate.
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &["create", "get", "list", "watch"],
        ),
        rule(
            &["", "discovery.k8s.io"],
            &["services", "endpoints", "endpointslices"],
            READ,
        ),
        // The proxy beside the agent enforces NetworkPolicies, whose
        // namespace selectors read namespaces' labels.
        rule(&["networking.k8s.io"], &["networkpolicies"], READ),
        rule(&[""], &["namespaces"], READ),
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
    ]
}

/// Upstream's `system:kube-scheduler` and `system:volume-scheduler`.
fn scheduler_rules() -> Vec<Value> {
    vec![
        rule(
            &["", "events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["create", "get", "update"],
        ),
        rule(&[""], &["nodes"], READ),
        rule(&[""], &["namespaces"], READ),
        rule(&[""], &["pods"], &["delete", "get", "list", "watch"]),
        rule(&[""], &["bindings", "pods/binding"], &["create"]),
        rule(&[""], &["pods/status"], &["patch", "update"]),
        rule(
            &[""],
            &[
                "replicationcontrollers",
                "services",
                "persistentvolumeclaims",
                "persistentvolumes",
            ],
            READ,
        ),
        rule(
            &["apps", "extensions"],
            &["replicasets", "statefulsets"],
            READ,
        ),
        rule(&["policy"], &["poddisruptionbudgets"], READ),
        rule(
            &["storage.k8s.io"],
            &[
                "storageclasses",
                "csinodes",
                "csidrivers",
                "csistoragecapacities",
            ],
            READ,
        ),
        rule(
            &[""],
            &["persistentvolumes", "persistentvolumeclaims"],
            &["patch", "update"],
        ),
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
    ]
}

/// What the controller manager's loops do, run under one user: upstream
/// gives each loop its own account with its own role; the garbage
/// collector's and the namespace controller's (read, change and delete
/// anything) already cover most of the others'.
/// What the controller manager itself does, as upstream's role: its
/// informers list and watch everything; it holds its leader Lease, and
/// makes its loops' service accounts and their tokens (each loop then
/// writes as its own account, with its own role).
fn controller_manager_rules() -> Vec<Value> {
    vec![
        rule(&["*"], &["*"], &["list", "watch"]),
        rule(
            &["", "events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["create", "get", "update", "patch"],
        ),
        rule(&[""], &["serviceaccounts"], &["create", "get"]),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(&[""], &["namespaces"], &["get"]),
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::rbac::Index;
    use super::super::{Attributes, Target};
    use super::*;
    use crate::auth::User;

    #[test]
    fn the_default_roles_and_bindings_are_valid() {
        let of = |plural| skiff_core::registry::preferred("rbac.authorization.k8s.io", plural);
        let (roles, bindings) = (
            of("clusterroles").unwrap(),
            of("clusterrolebindings").unwrap(),
        );
        for role in cluster_roles() {
            skiff_core::validate::object(roles, &role, None).unwrap();
        }
        for binding in cluster_role_bindings() {
            skiff_core::validate::object(bindings, &binding, None).unwrap();
        }
    }

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
        // Nodes get their rules from the Node authorizer, not RBAC.
        assert!(!ask(&["system:nodes"], "patch", "", "nodes", None));
        assert!(ask(
            &["system:bootstrappers"],
            "create",
            "certificates.k8s.io",
            "certificatesigningrequests",
            None
        ));
        assert!(!ask(&["system:bootstrappers"], "list", "", "pods", None));
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
