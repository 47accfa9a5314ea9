//! `dryRun=All` on every write: the request runs (defaults, validation,
//! conflicts) and nothing is stored, no revision consumed, no watch event
//! sent. The server runs without scheduler and controllers, so no one
//! else writes while the revision is compared.

mod support;

use serde_json::Value;
use support::{assert_success, Cluster};

const OBJECTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, labels: {app: demo}}
data: {a: "1"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  nodeName: nowhere
  containers: [{name: c, image: busybox}]
"#;

fn start() -> Cluster {
    Cluster::start_with_flags(&["--disable-scheduler", "--disable-controller-manager"])
}

/// The store's current revision, as a list reports it.
fn revision(c: &Cluster) -> String {
    let list: Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/api/v1/configmaps?limit=1"])).unwrap();
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
    assert!(rv.parse::<u64>().is_ok(), "a revision: {rv:?}");
    rv.to_owned()
}

/// Asserts no write happened after revision `rv`: the list revision is
/// the same and a watch from it delivers nothing.
fn assert_untouched(c: &Cluster, rv: &str, what: &str) {
    assert_eq!(revision(c), rv, "{what} consumed a revision");
    for path in [
        "/api/v1/configmaps",
        "/apis/apps/v1/deployments",
        "/api/v1/pods",
    ] {
        let events = c.ok(&[
            "get",
            "--raw",
            &format!("{path}?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
        ]);
        assert!(events.trim().is_empty(), "{what} sent events: {events}");
    }
}

fn cm_value(c: &Cluster) -> Value {
    c.json(&["get", "cm", "cfg"])["data"]["a"].clone()
}

#[test]
fn every_write_verb_honours_dry_run() {
    let c = start();
    let out = c.kubectl_stdin(&["apply", "-f", "-"], OBJECTS);
    assert_success(&out, "apply");
    let rv = revision(&c);

    // create: the reply carries defaults, the object is not stored.
    let out = c.kubectl_stdin(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new}\ndata: {x: z}\n",
    );
    assert_success(&out, "create");
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(made["metadata"]["uid"].is_string(), "{made}");
    c.fails(&["get", "cm", "new"]);
    assert_untouched(&c, &rv, "create");

    // update (replace)
    let mut cm = c.json(&["get", "cm", "cfg"]);
    cm["data"]["a"] = "2".into();
    let out = c.kubectl_stdin(
        &["replace", "--dry-run=server", "-o", "json", "-f", "-"],
        &cm.to_string(),
    );
    assert_success(&out, "replace");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["data"]["a"], "2", "the reply shows the change");
    assert_eq!(cm_value(&c), "1");
    assert_untouched(&c, &rv, "replace");

    // patch: JSON, merge and strategic merge
    for (kind, patch) in [
        ("json", r#"[{"op":"replace","path":"/data/a","value":"3"}]"#),
        ("merge", r#"{"data":{"a":"4"}}"#),
        ("strategic", r#"{"data":{"a":"5"}}"#),
    ] {
        c.ok(&[
            "patch",
            "cm",
            "cfg",
            "--type",
            kind,
            "-p",
            patch,
            "--dry-run=server",
        ]);
        assert_eq!(cm_value(&c), "1", "{kind} patch changed the object");
        assert_untouched(&c, &rv, kind);
    }

    // server-side apply, and kubectl diff (a dry-run apply)
    let changed = OBJECTS.replace(r#"{a: "1"}"#, r#"{a: "6"}"#);
    let out = c.kubectl_stdin(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        &changed,
    );
    assert_success(&out, "server-side apply");
    let out = c.kubectl_stdin(&["diff", "-f", "-"], &changed);
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("+  a: \"6\""),
        "diff shows the change: {diff}"
    );
    assert_eq!(cm_value(&c), "1");
    assert_untouched(&c, &rv, "apply and diff");

    // subresources: status, scale, eviction
    c.ok(&[
        "patch",
        "pod",
        "solo",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
        "--dry-run=server",
    ]);
    assert!(c.json(&["get", "pod", "solo"])["status"]["phase"] != "Failed");
    c.ok(&[
        "scale",
        "deployment",
        "web",
        "--replicas=7",
        "--dry-run=server",
    ]);
    assert_eq!(c.json(&["get", "deploy", "web"])["spec"]["replicas"], 2);
    let eviction = r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"solo","namespace":"default"}}"#;
    let file = c.dir.path().join("eviction.json");
    std::fs::write(&file, eviction).unwrap();
    c.ok(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/pods/solo/eviction?dryRun=All",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert_untouched(&c, &rv, "status, scale and eviction");

    // delete (graceful pod and plain object) and deletecollection
    c.ok(&["delete", "pod", "solo", "--dry-run=server"]);
    c.ok(&["delete", "cm", "cfg", "--dry-run=server"]);
    c.ok(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps?dryRun=All",
    ]);
    assert!(c.json(&["get", "pod", "solo"])["metadata"]["deletionTimestamp"].is_null());
    assert_eq!(cm_value(&c), "1");
    assert_untouched(&c, &rv, "delete");

    // an invalid change is still refused in a dry run
    let err = c.fails(&[
        "scale",
        "deployment",
        "web",
        "--replicas=-1",
        "--dry-run=server",
    ]);
    assert!(!err.is_empty());
    let err = c.fails(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps/cfg?dryRun=Some",
    ]);
    assert!(err.contains("Invalid dryRun"), "{err}");
    assert_eq!(cm_value(&c), "1");
}

#[test]
fn dry_run_services_keep_no_address() {
    let c = start();
    let svc = |name: &str, ip: &str, port: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: NodePort\n  clusterIP: {ip}\n  selector: {{app: x}}\n  ports: [{{port: 80, nodePort: {port}}}]\n"
        )
    };
    let rv = revision(&c);
    let out = c.kubectl_stdin(
        &["create", "--dry-run=server", "-f", "-"],
        &svc("a", "10.43.9.9", 30999),
    );
    assert_success(&out, "dry-run Service");
    assert_untouched(&c, &rv, "dry-run Service");
    // The same address and port are still free for a real Service.
    let out = c.kubectl_stdin(&["create", "-f", "-"], &svc("b", "10.43.9.9", 30999));
    assert_success(&out, "real Service with the same address");
}
