//! A namespace's policy objects with the real kubectl: LimitRange defaults
//! and bounds, ResourceQuota counted at admission (upstream's refusal) and
//! kept in the quota's status (`kubectl describe quota`).

mod support;

use std::time::Duration;

use support::{create, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(30);

fn pod(name: &str, resources: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: q}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n{resources}")
}

#[test]
fn limit_ranges_fill_and_bound_and_quotas_refuse_the_fourth_pod() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "q"]);
    create(
        &c,
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: limits, namespace: q}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 200m}\n    defaultRequest: {cpu: 100m}\n    max: {memory: 1Gi}\n",
    );
    create(
        &c,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: q, namespace: q}\nspec:\n  hard: {pods: '3', requests.cpu: '1'}\n",
    );
    wait_for("the quota's status", LIMIT, || {
        let q = c.json(&["get", "quota", "q", "-n", "q"]);
        (q["status"]["used"]["pods"] == "0").then_some(())
    });
    for name in ["p1", "p2", "p3"] {
        create(&c, &pod(name, ""));
    }
    let p1 = c.json(&["get", "pod", "p1", "-n", "q"]);
    let resources = &p1["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["cpu"], "100m", "{resources}");
    assert_eq!(resources["limits"]["cpu"], "200m", "{resources}");

    let refused = c.fails_stdin(&pod("p4", ""));
    assert!(
        refused.contains(r#"pods "p4" is forbidden: exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3"#),
        "{refused}"
    );
    let described = c.ok(&["describe", "quota", "q", "-n", "q"]);
    let row = |name: &str| {
        described
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(row("pods"), ["pods", "3", "3"], "{described}");
    assert_eq!(
        row("requests.cpu"),
        ["requests.cpu", "300m", "1"],
        "{described}"
    );

    // A deleted pod gives its share back.
    c.ok(&["delete", "pod", "p1", "-n", "q", "--wait=false"]);
    wait_for("the quota to count two pods", LIMIT, || {
        let q = c.json(&["get", "quota", "q", "-n", "q"]);
        (q["status"]["used"]["pods"] == "2").then_some(())
    });
    create(&c, &pod("p4", ""));

    let big = c.fails_stdin(&pod("big", "    resources: {limits: {memory: 2Gi}}\n"));
    assert!(
        big.contains("maximum memory usage per Container is 1Gi, but limit is 2Gi"),
        "{big}"
    );

    // A resize is charged what it adds, and bounded alike.
    let resize = |name: &str, resources: &str| {
        let patch =
            format!(r#"{{"spec":{{"containers":[{{"name":"c","resources":{resources}}}]}}}}"#);
        c.kubectl(&[
            "patch",
            "pod",
            name,
            "-n",
            "q",
            "--subresource",
            "resize",
            "-p",
            &patch,
        ])
    };
    let grown = resize("p2", r#"{"requests":{"cpu":"150m"}}"#);
    assert!(grown.status.success(), "{grown:?}");
    wait_for("the quota to count the resize", LIMIT, || {
        let q = c.json(&["get", "quota", "q", "-n", "q"]);
        (q["status"]["used"]["requests.cpu"] == "350m").then_some(())
    });
    let over = resize("p3", r#"{"requests":{"cpu":"900m"},"limits":{"cpu":"1"}}"#);
    let said = String::from_utf8_lossy(&over.stderr);
    assert!(
        said.contains(r#"pods "p3" is forbidden: exceeded quota: q, requested: requests.cpu=800m, used: requests.cpu=350m, limited: requests.cpu=1"#),
        "{said}"
    );
    let bounded = resize("p3", r#"{"limits":{"memory":"2Gi"}}"#);
    let said = String::from_utf8_lossy(&bounded.stderr);
    assert!(
        said.contains("maximum memory usage per Container is 1Gi, but limit is 2Gi"),
        "{said}"
    );
    let p3 = c.json(&["get", "pod", "p3", "-n", "q"]);
    assert_eq!(
        p3["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "100m"
    );
}

#[test]
fn pod_security_levels_refuse_and_warn_as_upstream() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "locked"]);
    c.ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    c.ok(&["create", "namespace", "watched"]);
    c.ok(&[
        "label",
        "namespace",
        "watched",
        "pod-security.kubernetes.io/warn=baseline",
    ]);
    let privileged = |ns: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: root, namespace: {ns}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    securityContext: {{privileged: true}}\n")
    };
    let refused = c.fails_stdin(&privileged("locked"));
    assert!(
        refused.contains(r#"pods "root" is forbidden: violates PodSecurity "restricted:latest": privileged (container "c" must not set securityContext.privileged=true), allowPrivilegeEscalation != false"#),
        "{refused}"
    );
    create(
        &c,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: fine, namespace: locked}\nspec:\n  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}\n  containers:\n  - name: c\n    image: busybox\n    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n",
    );
    let warned = c.kubectl_stdin(&["apply", "-f", "-"], &privileged("watched"));
    support::assert_success(&warned, "a pod in a namespace that only warns");
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(
        stderr.contains(r#"Warning: would violate PodSecurity "baseline:latest": privileged (container "c" must not set securityContext.privileged=true)"#),
        "{stderr}"
    );

    // AppArmor: baseline forbids running unconfined, in the field or in
    // the deprecated annotation, which becomes the field with upstream's
    // warning.
    let unconfined = |name: &str, ns: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{container.apparmor.security.beta.kubernetes.io/c: unconfined}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n")
    };
    c.ok(&["create", "namespace", "base"]);
    c.ok(&[
        "label",
        "namespace",
        "base",
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    let refused = c.fails_stdin(&unconfined("loose", "base"));
    assert!(
        refused.contains(r#"violates PodSecurity "baseline:latest": forbidden AppArmor profiles (container "c" and annotation must not set AppArmor profile type to "Unconfined", "container.apparmor.security.beta.kubernetes.io/c=\"unconfined\"")"#),
        "{refused}"
    );
    let created = c.kubectl_stdin(&["apply", "-f", "-"], &unconfined("loose", "default"));
    support::assert_success(&created, "an unconfined pod where nothing forbids it");
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(
        stderr.contains(r#"Warning: metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]: deprecated since v1.30; use the "appArmorProfile" field instead"#),
        "{stderr}"
    );
    let pod = support::pod(&c, "loose");
    assert_eq!(
        pod["spec"]["containers"][0]["securityContext"]["appArmorProfile"],
        serde_json::json!({"type": "Unconfined"})
    );
    // The annotation stays as it was made.
    let out = c.kubectl(&[
        "annotate",
        "pod",
        "loose",
        "--overwrite",
        "container.apparmor.security.beta.kubernetes.io/c=runtime/default",
    ]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("may not remove or update AppArmor annotations"),
        "{said}"
    );
}

/// A quota's scopes narrow the pods it counts: a `BestEffort` quota holds
/// pods that ask for nothing, and lets the others in.
#[test]
fn a_scoped_quota_counts_only_the_pods_in_its_scope() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "q"]);
    create(
        &c,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: free, namespace: q}\nspec:\n  hard: {pods: '1'}\n  scopes: [BestEffort]\n",
    );
    wait_for("the quota's status", LIMIT, || {
        let q = c.json(&["get", "quota", "free", "-n", "q"]);
        (q["status"]["used"]["pods"] == "0").then_some(())
    });
    let sized = "    resources: {requests: {cpu: 100m}}\n";
    create(&c, &pod("free-1", ""));
    create(&c, &pod("sized-1", sized));
    create(&c, &pod("sized-2", sized));
    let refused = c.fails_stdin(&pod("free-2", ""));
    assert!(
        refused.contains(r#"pods "free-2" is forbidden: exceeded quota: free, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{refused}"
    );
    // Without the one best-effort pod, the controller's recount is 0:
    // the sized pods are not the quota's.
    c.ok(&[
        "delete",
        "pod",
        "free-1",
        "-n",
        "q",
        "--wait=false",
        "--grace-period=0",
        "--force",
    ]);
    wait_for("the quota's recount", LIMIT, || {
        let q = c.json(&["get", "quota", "free", "-n", "q"]);
        (q["status"]["used"]["pods"] == "0").then_some(())
    });
    create(&c, &pod("free-3", ""));
    // A pod that only limits requests its limits, as upstream defaults it:
    // Guaranteed, and outside the best-effort quota.
    let limited = "    resources: {limits: {cpu: 200m, memory: 64Mi}}\n";
    create(&c, &pod("limited", limited));
    let got = c.json(&["get", "pod", "limited", "-n", "q"]);
    assert_eq!(
        got["spec"]["containers"][0]["resources"]["requests"],
        serde_json::json!({"cpu": "200m", "memory": "64Mi"}),
        "{got}"
    );
    assert_eq!(got["status"]["qosClass"], "Guaranteed", "{got}");
    // A device is counted whole and requested as limited.
    let err = c.fails_stdin(&pod(
        "device",
        "    resources: {requests: {example.com/gpu: '1'}}\n",
    ));
    assert!(
        err.contains("spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources"),
        "{err}"
    );
    // An amount that bounds nothing, a resource no quota knows, or scopes
    // that contradict, are refused.
    let err = c.fails_stdin("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: odd, namespace: q}\nspec:\n  hard: {gpus: '1'}\n");
    assert!(
        err.contains(
            "spec.hard[gpus]: Invalid value: \"gpus\": must be a standard resource for quota"
        ),
        "{err}"
    );
    let err = c.fails_stdin("apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: odd, namespace: q}\nspec:\n  hard: {pods: lots}\n  scopes: [BestEffort, NotBestEffort]\n");
    assert!(
        err.contains("spec.hard[pods]: Invalid value: \"lots\"")
            && err.contains("spec.scopes: Invalid value: ")
            && err.contains(": conflicting scopes"),
        "{err}"
    );
    let err = c.fails_stdin("apiVersion: v1\nkind: LimitRange\nmetadata: {name: odd, namespace: q}\nspec:\n  limits:\n  - {type: Container, min: {cpu: '2'}, max: {cpu: '1'}}\n");
    assert!(
        err.contains("spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"),
        "{err}"
    );
}
