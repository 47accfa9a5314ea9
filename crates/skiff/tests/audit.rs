//! The audit log: one audit.k8s.io/v1 Event per request, at the level the
//! policy gives it, with the request's user, target and outcome.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{wait_for, Cluster};

const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: Metadata
  resources: [{group: '', resources: [secrets]}]
- level: RequestResponse
  resources: [{group: '', resources: [configmaps]}]
- level: None
  nonResourceURLs: ['/readyz', '/healthz']
- level: Metadata
";

fn events(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON event"))
        .collect()
}

#[test]
fn one_event_per_request_at_the_policy_level() {
    let files = tempfile::tempdir().unwrap();
    let (log, policy) = (
        files.path().join("audit.log"),
        files.path().join("policy.yaml"),
    );
    std::fs::write(&policy, POLICY).unwrap();
    let c = Cluster::start_with_flags(&[
        "--audit-log-path",
        log.to_str().unwrap(),
        "--audit-policy-file",
        policy.to_str().unwrap(),
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=password=hunter2",
    ]);
    c.ok(&["create", "configmap", "m", "--from-literal=k=v"]);
    let refused = c.kubectl(&["get", "configmap", "m", "--as", "jane"]);
    assert!(!refused.status.success());
    let uri = "/api/v1/namespaces/default/configmaps/m";
    let find = |verb: &str, path: &str| -> Vec<Value> {
        events(&log)
            .into_iter()
            .filter(|e| {
                e["verb"] == verb
                    && e["requestURI"]
                        .as_str()
                        .is_some_and(|u| u.starts_with(path))
            })
            .collect()
    };
    let gets = wait_for("the get's event", Duration::from_secs(10), || {
        let found = find("get", uri);
        (!found.is_empty()).then_some(found)
    });
    assert_eq!(gets.len(), 1, "one event per request: {gets:?}");
    let get = &gets[0];
    assert_eq!(get["level"], "RequestResponse");
    assert_eq!(get["user"]["username"], "system:admin");
    assert_eq!(get["impersonatedUser"]["username"], "jane");
    assert_eq!(
        get["responseStatus"]["code"], 403,
        "jane may not read it: {get}"
    );
    assert_eq!(get["objectRef"]["name"], "m");
    assert_eq!(get["stage"], "ResponseComplete");

    let by_kubectl = |e: &Value| {
        e["userAgent"]
            .as_str()
            .is_some_and(|a| a.starts_with("kubectl"))
    };
    let made: Vec<Value> = find("create", "/api/v1/namespaces/default/configmaps")
        .into_iter()
        .filter(by_kubectl)
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0]["requestObject"]["data"]["k"], "v");
    assert_eq!(made[0]["responseObject"]["metadata"]["name"], "m");
    assert_eq!(made[0]["responseStatus"]["code"], 201);

    let secret: Vec<Value> = find("create", "/api/v1/namespaces/default/secrets")
        .into_iter()
        .filter(by_kubectl)
        .collect();
    assert_eq!(secret.len(), 1, "{secret:?}");
    assert_eq!(secret[0]["level"], "Metadata");
    // A creation's object is named from its body, at any level.
    assert_eq!(secret[0]["objectRef"]["name"], "s", "{secret:?}");
    assert_eq!(made[0]["objectRef"]["name"], "m", "{made:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("aHVudGVyMg") && !text.contains("hunter2"),
        "no Secret content in the log"
    );
    assert!(
        find("get", "/readyz").is_empty(),
        "level None is not logged"
    );

    // PodSecurity `audit`: the pod is admitted, its violations noted.
    c.ok(&["create", "namespace", "audited"]);
    c.ok(&[
        "label",
        "namespace",
        "audited",
        "pod-security.kubernetes.io/audit=restricted",
    ]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: loose, namespace: audited}\nspec:\n  containers: [{name: c, image: busybox, securityContext: {privileged: true}}]\n";
    let out = c.kubectl_stdin(&["create", "-f", "-"], pod);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let noted = wait_for("the pod's create event", Duration::from_secs(10), || {
        find("create", "/api/v1/namespaces/audited/pods")
            .into_iter()
            .find(by_kubectl)
    });
    let violations = noted["annotations"]["pod-security.kubernetes.io/audit-violations"]
        .as_str()
        .unwrap_or_default();
    assert!(
        violations.starts_with("would violate PodSecurity \"restricted:latest\": privileged"),
        "{noted}"
    );
}

/// Each controller loop writes as its own service account with its own
/// role (upstream's `--use-service-account-credentials`); the controller
/// manager itself only reads, and makes those accounts' tokens.
#[test]
fn controllers_write_as_their_own_service_accounts() {
    let files = tempfile::tempdir().unwrap();
    let log = files.path().join("audit.log");
    let c = Cluster::start_with_flags(&["--audit-log-path", log.to_str().unwrap()]);
    c.ok(&["create", "deployment", "web", "--image=x", "--replicas=2"]);
    let by_user = |verb: &str, resource: &str| -> Vec<String> {
        events(&log)
            .into_iter()
            .filter(|e| {
                e["verb"] == verb
                    && e["objectRef"]["resource"] == resource
                    && e["responseStatus"]["code"]
                        .as_u64()
                        .is_some_and(|c| c < 300)
            })
            .filter_map(|e| e["user"]["username"].as_str().map(str::to_owned))
            .collect()
    };
    let sa = |name: &str| format!("system:serviceaccount:kube-system:{name}");
    let creators = wait_for("two pods created", Duration::from_secs(20), || {
        let found = by_user("create", "pods");
        (found.len() >= 2).then_some(found)
    });
    assert!(
        creators.iter().all(|u| *u == sa("replicaset-controller")),
        "{creators:?}"
    );
    let replica_sets = by_user("create", "replicasets");
    assert_eq!(replica_sets, vec![sa("deployment-controller")]);
    let manager = "system:kube-controller-manager";
    let writes: Vec<Value> = events(&log)
        .into_iter()
        .filter(|e| e["user"]["username"] == manager)
        .filter(|e| !matches!(e["verb"].as_str(), Some("get" | "list" | "watch")))
        .filter(|e| {
            !matches!(
                e["objectRef"]["resource"].as_str(),
                Some("leases" | "serviceaccounts" | "events")
            )
        })
        .collect();
    assert!(writes.is_empty(), "the manager wrote {writes:?}");

    // Each account holds its own role's rights and no more.
    let can = |user: &str, args: &[&str]| {
        let mut all = vec!["auth", "can-i", "--as", user];
        all.extend_from_slice(args);
        c.kubectl(&all).status.success()
    };
    assert!(can(&sa("replicaset-controller"), &["create", "pods"]));
    assert!(!can(&sa("replicaset-controller"), &["get", "secrets"]));
    assert!(!can(
        &sa("replicaset-controller"),
        &["create", "deployments"]
    ));
    assert!(can(
        &sa("deployment-controller"),
        &["create", "replicasets"]
    ));
    assert!(!can(&sa("deployment-controller"), &["create", "pods"]));
    assert!(!can(manager, &["get", "secrets"]));
    assert!(!can(manager, &["delete", "pods"]));
    assert!(can(manager, &["list", "secrets"]));
}
