//! The controllers' roles, `system:controller:<name>`, each bound to the
//! service account `kube-system/<name>` its loop writes as: upstream's
//! rules, with `patch` wherever upstream's controllers `update` (Skiff's
//! write with patches), and for loops Skiff joins (volume binding and
//! protection; Endpoints and EndpointSlices; node lifecycle and address
//! allocation) the rules of the upstream loops they stand for together.

use serde_json::{json, Value};

use super::bootstrap::{role, rule, READ};

const PREFIX: &str = "system:controller:";
const WRITE: &[&str] = &["update", "patch"];

fn events() -> Value {
    rule(
        &["", "events.k8s.io"],
        &["events"],
        &["create", "update", "patch"],
    )
}

/// Each controller's name and rules.
fn rules() -> Vec<(&'static str, Vec<Value>)> {
    let read_write = |verbs: &[&'static str]| [READ, verbs].concat();
    let owner = |group: &'static str, plural: &'static str, singular_pods: &[&'static str]| {
        vec![
            rule(&[group], &[plural], &read_write(WRITE)),
            json!({"apiGroups": [group], "verbs": WRITE,
                "resources": [format!("{plural}/status"), format!("{plural}/finalizers")]}),
            rule(&[""], &["pods"], singular_pods),
            events(),
        ]
    };
    let pod_owner = &["list", "watch", "create", "delete", "patch"];
    vec![
        (
            "replicaset-controller",
            owner("apps", "replicasets", pod_owner),
        ),
        (
            "replication-controller",
            owner("", "replicationcontrollers", pod_owner),
        ),
        ("deployment-controller", {
            let mut r = owner(
                "apps",
                "deployments",
                &["get", "list", "watch", "update", "patch"],
            );
            r.push(rule(
                &["apps"],
                &["replicasets"],
                &read_write(&["create", "update", "patch", "delete"]),
            ));
            r
        }),
        ("statefulset-controller", {
            let mut r = owner(
                "apps",
                "statefulsets",
                &[
                    "get", "list", "watch", "create", "delete", "update", "patch",
                ],
            );
            r.push(rule(
                &["apps"],
                &["controllerrevisions"],
                &read_write(&["create", "update", "patch", "delete"]),
            ));
            r.push(rule(
                &[""],
                &["persistentvolumeclaims"],
                &read_write(&["create", "update", "patch", "delete"]),
            ));
            r.push(rule(&[""], &["pods/finalizers"], WRITE));
            r
        }),
        ("daemon-set-controller", {
            let mut r = owner("apps", "daemonsets", pod_owner);
            r.push(rule(&[""], &["nodes"], &["list", "watch"]));
            r.push(rule(&[""], &["pods/binding"], &["create"]));
            r.push(rule(
                &["apps"],
                &["controllerrevisions"],
                &read_write(&["create", "update", "patch", "delete"]),
            ));
            r
        }),
        ("job-controller", owner("batch", "jobs", pod_owner)),
        ("cronjob-controller", {
            let mut r = owner("batch", "cronjobs", &["list", "watch", "delete"]);
            r.push(rule(
                &["batch"],
                &["jobs"],
                &read_write(&["create", "update", "patch", "delete"]),
            ));
            r
        }),
        (
            "namespace-controller",
            vec![
                rule(&[""], &["namespaces"], &read_write(&["delete"])),
                rule(&[""], &["namespaces/finalize", "namespaces/status"], WRITE),
                rule(&["*"], &["*"], &read_write(&["delete", "deletecollection"])),
            ],
        ),
        (
            "service-account-controller",
            vec![rule(&[""], &["serviceaccounts"], &["create"]), events()],
        ),
        (
            "disruption-controller",
            vec![
                rule(
                    &["apps"],
                    &["deployments", "replicasets", "statefulsets"],
                    READ,
                ),
                rule(&[""], &["replicationcontrollers", "pods"], READ),
                rule(&["policy"], &["poddisruptionbudgets"], READ),
                rule(&["policy"], &["poddisruptionbudgets/status"], WRITE),
                // The scale of custom resources that control pods.
                rule(
                    &["apiextensions.k8s.io"],
                    &["customresourcedefinitions"],
                    &["list"],
                ),
                rule(&["*"], &["*/scale"], &["get"]),
                events(),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                rule(&["*"], &["*"], &["list", "watch"]),
                rule(&[""], &["resourcequotas/status"], WRITE),
                events(),
            ],
        ),
        (
            "root-ca-cert-publisher",
            vec![
                rule(&[""], &["configmaps"], &["create", "update", "patch"]),
                events(),
            ],
        ),
        (
            "certificate-controller",
            vec![
                rule(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                    &read_write(&["delete"]),
                ),
                rule(
                    &["certificates.k8s.io"],
                    &[
                        "certificatesigningrequests/status",
                        "certificatesigningrequests/approval",
                    ],
                    WRITE,
                ),
                named(
                    rule(&["certificates.k8s.io"], &["signers"], &["approve"]),
                    &["kubernetes.io/kube-apiserver-client-kubelet"],
                ),
                named(
                    rule(&["certificates.k8s.io"], &["signers"], &["sign"]),
                    &[
                        "kubernetes.io/legacy-unknown",
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                    ],
                ),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                events(),
            ],
        ),
        (
            "node-controller",
            vec![
                rule(
                    &[""],
                    &["nodes"],
                    &read_write(&["update", "patch", "delete"]),
                ),
                rule(&[""], &["nodes/status", "pods/status"], WRITE),
                rule(&[""], &["pods"], &read_write(&["delete"])),
                events(),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                rule(&[""], &["services", "pods", "nodes"], READ),
                rule(&[""], &["services/finalizers"], &["update"]),
                rule(
                    &[""],
                    &["endpoints"],
                    &read_write(&["create", "update", "patch", "delete"]),
                ),
                rule(&[""], &["endpoints/restricted"], &["create"]),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &read_write(&["create", "update", "patch", "delete"]),
                ),
                events(),
            ],
        ),
        (
            "endpointslicemirroring-controller",
            vec![
                rule(&[""], &["services", "endpoints"], READ),
                rule(
                    &[""],
                    &["services/finalizers", "endpoints/finalizers"],
                    &["update"],
                ),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &read_write(&["create", "update", "patch", "delete"]),
                ),
                events(),
            ],
        ),
        (
            "persistent-volume-binder",
            vec![
                rule(
                    &[""],
                    &["persistentvolumes"],
                    &read_write(&["create", "update", "patch", "delete"]),
                ),
                rule(&[""], &["persistentvolumeclaims"], &read_write(WRITE)),
                rule(
                    &[""],
                    &["persistentvolumes/status", "persistentvolumeclaims/status"],
                    WRITE,
                ),
                rule(&[""], &["pods"], &read_write(&["create", "delete"])),
                rule(&["storage.k8s.io"], &["storageclasses"], READ),
                rule(&[""], &["nodes"], READ),
                events(),
            ],
        ),
        (
            "ephemeral-volume-controller",
            vec![
                rule(&[""], &["pods"], READ),
                rule(&[""], &["pods/finalizers"], WRITE),
                rule(&[""], &["persistentvolumeclaims"], &read_write(&["create"])),
                events(),
            ],
        ),
        (
            "horizontal-pod-autoscaler",
            vec![
                rule(&["autoscaling"], &["horizontalpodautoscalers"], READ),
                rule(
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                    WRITE,
                ),
                rule(&["*"], &["*/scale"], &["get", "update", "patch"]),
                rule(&[""], &["pods"], &["list", "watch"]),
                rule(&["metrics.k8s.io"], &["pods"], &["list", "watch"]),
                rule(
                    &["custom.metrics.k8s.io", "external.metrics.k8s.io"],
                    &["*"],
                    READ,
                ),
                events(),
            ],
        ),
        (
            "pod-garbage-collector",
            vec![
                rule(&[""], &["pods"], &["list", "watch", "delete"]),
                rule(&[""], &["nodes"], READ),
                rule(&[""], &["pods/status"], &["patch"]),
            ],
        ),
        (
            "generic-garbage-collector",
            vec![
                rule(&["*"], &["*"], &read_write(&["update", "patch", "delete"])),
                events(),
            ],
        ),
    ]
}

fn named(mut rule: Value, names: &[&str]) -> Value {
    rule["resourceNames"] = json!(names);
    rule
}

/// The controllers' ClusterRoles.
pub fn roles() -> Vec<Value> {
    let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    rules()
        .into_iter()
        .map(|(name, rules)| role(&format!("{PREFIX}{name}"), labels.clone(), rules))
        .collect()
}

/// Each role bound to its controller's service account.
pub fn bindings() -> Vec<Value> {
    rules()
        .into_iter()
        .map(|(name, _)| {
            let role = format!("{PREFIX}{name}");
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": role, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "kube-system"}]})
        })
        .collect()
}
