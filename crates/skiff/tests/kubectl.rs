//! End to end: the real kubectl v1.35 against `skiff server`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{assert_success, create, wait_for, Cluster};

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello
"#;

fn apply(c: &Cluster, manifest: &str, extra: &[&str]) -> String {
    let mut args = vec!["apply", "-f", "-"];
    args.extend(extra);
    let out = c.kubectl_stdin(&args, manifest);
    assert_success(&out, "apply");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn apply_client_side_twice_then_server_side() {
    let c = Cluster::start();
    let out = apply(&c, MANIFEST, &[]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let d = c.json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(
        d["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults applied"
    );

    let changed = MANIFEST
        .replace("replicas: 2", "replicas: 3")
        .replace("greeting: hello", "greeting: bye");
    let out = apply(&c, &changed, &[]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    let d = c.json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        c.json(&["get", "cm", "web-config"])["data"]["greeting"],
        "bye"
    );

    let out = apply(
        &c,
        &changed.replace("image: busybox:1.36", "image: busybox:1.37"),
        &["--server-side"],
    );
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let d = c.json(&["get", "deployment", "web", "--show-managed-fields"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    assert_eq!(d["metadata"]["generation"], 3);
    let managers: Vec<&Value> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(
        managers
            .iter()
            .any(|m| m["manager"] == "kubectl" && m["operation"] == "Apply"),
        "{managers:?}"
    );
}

/// Whether `v` holds a `null` anywhere.
fn holds_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(items) => items.iter().any(holds_null),
        Value::Object(m) => m.values().any(holds_null),
        _ => false,
    }
}

#[test]
fn a_created_pod_is_owned_as_sent_and_gains_no_nulls() {
    let c = Cluster::start();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: busybox:1.36}\n";
    let out = c.kubectl_stdin(&["create", "-f", "-"], pod);
    assert_success(&out, "create");
    let p = c.json(&["get", "pod", "p", "--show-managed-fields"]);
    assert!(!holds_null(&p), "{p:#}");
    // Admission still mounted the service account's token...
    let volume = p["spec"]["volumes"][0]["name"].as_str().unwrap_or_default();
    assert!(volume.starts_with("kube-api-access-"), "{p:#}");
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    // ...but, as upstream, the writer owns only what it sent and the
    // defaults: not what admission added.
    let managed = p["metadata"]["managedFields"].as_array().unwrap();
    let (main, status): (Vec<&Value>, Vec<&Value>) =
        managed.iter().partition(|e| e["subresource"].is_null());
    assert_eq!(main.len(), 1, "{managed:#?}");
    assert_eq!(main[0]["manager"], "kubectl-create");
    // The scheduler, finding no node, may have reported so: it owns only
    // the status it wrote, under its own name.
    for e in status {
        assert_eq!(
            (&e["manager"], &e["subresource"]),
            (&"kube-scheduler".into(), &"status".into())
        );
        let fields = e["fieldsV1"].as_object().unwrap();
        assert!(fields.keys().all(|k| k == "f:status"), "{e:#}");
    }
    let spec = &main[0]["fieldsV1"]["f:spec"];
    for owned in ["f:containers", "f:dnsPolicy", "f:restartPolicy"] {
        assert!(spec.get(owned).is_some(), "{owned} in {spec:#}");
    }
    for added in [
        "f:volumes",
        "f:serviceAccountName",
        "f:tolerations",
        "f:priority",
        "f:initContainers",
    ] {
        assert!(spec.get(added).is_none(), "{added} in {spec:#}");
    }
    let container = &spec["f:containers"][r#"k:{"name":"c"}"#];
    assert!(container.get("f:image").is_some(), "{spec:#}");
    assert!(container.get("f:volumeMounts").is_none(), "{spec:#}");
}

/// kubectl's generators send protobuf, with every plain Go field at its
/// zero value: stored, those read as upstream keeps them in JSON.
#[test]
fn generated_objects_keep_no_zeros_go_leaves_out() {
    let c = Cluster::start();
    let out = c.kubectl(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    assert_success(&out, "create service clusterip");
    let svc = c.json(&["get", "service", "web"]);
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        (port["port"].clone(), port["targetPort"].clone()),
        (80.into(), 8080.into())
    );
    assert!(port.get("nodePort").is_none(), "{svc:#}");
    assert!(svc["spec"].get("healthCheckNodePort").is_none(), "{svc:#}");
    let out = c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=0",
    ]);
    assert_success(&out, "create deployment");
    let d = c.json(&["get", "deployment", "web"]);
    // A pointer's zero is what was asked for, and stays.
    assert_eq!(d["spec"]["replicas"], 0, "{d:#}");
    let template = &d["spec"]["template"];
    assert!(template["metadata"].get("generation").is_none(), "{d:#}");
    for plain in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(template["spec"].get(plain).is_none(), "{plain} in {d:#}");
    }
    for plain in ["stdin", "stdinOnce", "tty"] {
        assert!(
            template["spec"]["containers"][0].get(plain).is_none(),
            "{plain} in {d:#}"
        );
    }
}

/// Upstream decodes every write into its Go types, which leave out an
/// empty optional list or map: a manifest's `env: []` or `labels: {}` is
/// not stored, while a required list, a struct and a list whose Go field
/// is no `omitempty` one stay as sent.
#[test]
fn empty_lists_and_maps_go_leaves_out_are_not_stored() {
    let c = Cluster::start();
    apply(
        &c,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: e, labels: {}, finalizers: []}\ndata: {}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: nothing}\nrules: []\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 0\n  \
         selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}, annotations: {}}\n    \
         spec:\n      nodeSelector: {}\n      tolerations: []\n      securityContext: {}\n      \
         containers: [{name: c, image: busybox, args: [], env: [], ports: [], resources: {}}]\n",
        &[],
    );
    let cm = c.json(&["get", "configmap", "e"]);
    for absent in ["labels", "finalizers"] {
        assert!(cm["metadata"].get(absent).is_none(), "{absent} in {cm:#}");
    }
    assert!(cm.get("data").is_none(), "{cm:#}");
    let role = c.json(&["get", "role", "nothing"]);
    assert_eq!(role["rules"], serde_json::json!([]), "{role:#}");
    let d = c.json(&["get", "deployment", "web"]);
    let template = &d["spec"]["template"];
    assert!(template["metadata"].get("annotations").is_none(), "{d:#}");
    let spec = &template["spec"];
    for absent in ["nodeSelector", "tolerations"] {
        assert!(spec.get(absent).is_none(), "{absent} in {d:#}");
    }
    assert_eq!(spec["securityContext"], serde_json::json!({}), "{d:#}");
    let container = &spec["containers"][0];
    for absent in ["args", "env", "ports"] {
        assert!(container.get(absent).is_none(), "{absent} in {d:#}");
    }
    assert_eq!(container["resources"], serde_json::json!({}), "{d:#}");
}

/// A Service's `clusterIPs` (a Go name whose acronym protobuf's field
/// names split otherwise) has its place in the protobuf form: kubectl's
/// create, sent as protobuf, is answered in protobuf, with the field.
#[test]
fn a_created_service_is_answered_in_protobuf_whole() {
    let c = Cluster::start();
    let out = c.kubectl(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
        "-o",
        "json",
        "-v=8",
    ]);
    assert_success(&out, "create service clusterip");
    let log = String::from_utf8_lossy(&out.stderr);
    let reply_type = log
        .lines()
        .skip_while(|l| !l.contains("POST"))
        .skip_while(|l| !l.contains("Response"))
        .find(|l| l.contains("Content-Type:"))
        .unwrap_or_default();
    assert!(
        reply_type.contains("application/vnd.kubernetes.protobuf"),
        "{log}"
    );
    let svc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert_eq!(
        svc["spec"]["clusterIPs"],
        serde_json::json!([ip]),
        "{svc:#}"
    );
}

#[test]
fn get_in_every_output_format() {
    let c = Cluster::start();
    apply(&c, MANIFEST, &[]);
    let wide = c.ok(&["get", "deployments", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        wide.lines().nth(1).unwrap().contains("busybox:1.36"),
        "{wide}"
    );
    let narrow = c.ok(&["get", "deployments"]);
    assert!(
        !narrow.contains("IMAGES"),
        "wide columns only with -o wide: {narrow}"
    );
    // A status is printed as its object is.
    let status = c.ok(&["get", "deployment", "web", "--subresource=status"]);
    let header: Vec<&str> = status.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    // A scale is printed as upstream prints a Scale.
    let scale = c.ok(&["get", "deployment", "web", "--subresource=scale"]);
    let rows: Vec<Vec<&str>> = scale
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "DESIRED", "AVAILABLE", "AGE"], "{scale}");
    assert_eq!(rows[1][..2], ["web", "2"], "{scale}");
    let yaml = c.ok(&["get", "service", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Service") && yaml.contains("targetPort: 80"),
        "{yaml}"
    );
    let list = c.json(&["get", "deploy,svc,cm"]);
    // The deployment, the `kubernetes` and `web` Services, the ConfigMap
    // and the cluster CA's (`kube-root-ca.crt`, in every namespace).
    assert_eq!(list["items"].as_array().unwrap().len(), 5, "{list}");
    let by_label = c.ok(&["get", "deploy", "-l", "tier=front", "-o", "name"]);
    assert_eq!(by_label.trim(), "deployment.apps/web");
    assert_eq!(
        c.ok(&["get", "deploy", "-l", "tier=back", "-o", "name"])
            .trim(),
        ""
    );
    let by_field = c.ok(&[
        "get",
        "cm",
        "--field-selector",
        "metadata.name=web-config",
        "-o",
        "name",
    ]);
    assert_eq!(by_field.trim(), "configmap/web-config");
    let ns = c.ok(&["get", "namespaces", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
}

/// The header and first row kubectl prints for `args`, split on spaces.
fn table(c: &Cluster, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let out = c.ok(args);
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect();
    let mut lines = out.lines();
    (
        lines.next().map(words).unwrap_or_default(),
        lines.next().map(words).unwrap_or_default(),
    )
}

/// Kinds print upstream's columns: access, quotas, policies, ingresses,
/// classes, revisions; kinds without a printer of their own, the
/// creation time.
#[test]
fn each_kind_prints_upstreams_columns() {
    let c = Cluster::start();
    create(&c, "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: q}\nspec:\n  hard: {pods: \"10\", limits.cpu: \"2\"}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {matchLabels: {app: web}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: ing}\nspec:\n  ingressClassName: other\n  tls: [{hosts: [a.example]}]\n  rules:\n  - {host: a.example}\n  - {host: b.example}\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects:\n- {kind: User, name: alice}\n- {kind: ServiceAccount, name: robot, namespace: default}\n");
    let cases: [(&[&str], &[&str], &[&str]); 6] = [
        (
            &["get", "clusterrolebinding", "cluster-admin"],
            &["NAME", "ROLE", "AGE"],
            &["cluster-admin", "ClusterRole/cluster-admin"],
        ),
        (
            &["get", "rolebinding", "rb", "-o", "wide"],
            &["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
            &["rb", "ClusterRole/view"],
        ),
        (
            &["get", "clusterrole", "view"],
            &["NAME", "CREATED", "AT"],
            &["view"],
        ),
        (
            &["get", "networkpolicy", "np"],
            &["NAME", "POD-SELECTOR", "AGE"],
            &["np", "app=web"],
        ),
        (
            &["get", "ingress", "ing"],
            &["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
            &["ing", "other", "a.example,b.example", "80,", "443"],
        ),
        (
            &["get", "priorityclass", "high"],
            &["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
            &["high", "1000", "false"],
        ),
    ];
    for (args, header, row) in cases {
        let (got_header, got_row) = table(&c, args);
        assert_eq!(got_header, header, "{args:?}");
        assert_eq!(&got_row[..row.len()], row, "{args:?}: {got_row:?}");
    }
    let (_, rb) = table(&c, &["get", "rolebinding", "rb", "-o", "wide"]);
    // Users and service accounts; no groups (an empty cell).
    assert_eq!(rb[3..], ["alice", "default/robot"], "{rb:?}");
    let quota = wait_for("the quota's status", Duration::from_secs(30), || {
        let (header, row) = table(&c, &["get", "quota", "q"]);
        (row.len() > 2).then_some((header, row))
    });
    assert_eq!(quota.0, ["NAME", "REQUEST", "LIMIT", "AGE"]);
    assert_eq!(
        quota.1[..4],
        ["q", "pods:", "0/10", "limits.cpu:"],
        "{:?}",
        quota.1
    );
}

#[test]
fn watch_sees_added_modified_deleted() {
    let c = Cluster::start();
    let out_path = c.dir.path().join("watch.out");
    let mut watcher = c
        .kubectl_cmd(&[
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .spawn()
        .unwrap();
    let seen = |kind: &str| {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        text.lines().any(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|e| e["type"] == kind && e["object"]["metadata"]["name"] == "probe")
        })
    };
    // The watch starts after the initial list; create only once it runs.
    wait_for("the watch to start", Duration::from_secs(20), || {
        apply(
            &c,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n",
            &[],
        );
        c.ok(&[
            "label",
            "cm",
            "probe",
            "--overwrite",
            &format!("n={}", rand_suffix()),
        ]);
        seen("MODIFIED").then_some(())
    });
    c.ok(&["delete", "cm", "probe"]);
    wait_for("DELETED", Duration::from_secs(20), || {
        seen("DELETED").then_some(())
    });
    assert!(seen("ADDED"));
    let _ = watcher.kill();
    let _ = watcher.wait();
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000
}

#[test]
fn describe_edit_patch_label_annotate_scale() {
    let c = Cluster::start();
    apply(&c, MANIFEST, &[]);
    let described = c.ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains("Replicas:") && described.contains("2 desired"),
        "{described}"
    );
    assert!(
        described.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"),
        "{described}"
    );

    let editor = c.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/greeting: hello/greeting: edited/' \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = c
        .kubectl_cmd(&["edit", "configmap", "web-config"])
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert_success(&out, "edit");
    assert_eq!(
        c.json(&["get", "cm", "web-config"])["data"]["greeting"],
        "edited"
    );

    c.ok(&[
        "patch",
        "cm",
        "web-config",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"merged":"yes"}}"#,
    ]);
    c.ok(&[
        "patch",
        "cm",
        "web-config",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/data/greeting","value":"json"}]"#,
    ]);
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1"}]}}}}"#,
    ]);
    let cm = c.json(&["get", "cm", "web-config"]);
    assert_eq!(
        (
            cm["data"]["merged"].as_str(),
            cm["data"]["greeting"].as_str()
        ),
        (Some("yes"), Some("json"))
    );
    let containers =
        c.json(&["get", "deploy", "web"])["spec"]["template"]["spec"]["containers"].clone();
    let names: Vec<&str> = containers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["web", "sidecar"],
        "strategic merge keeps the existing container"
    );

    c.ok(&["label", "deploy", "web", "env=prod"]);
    c.ok(&["annotate", "deploy", "web", "owner=team-a"]);
    c.ok(&["scale", "deploy", "web", "--replicas=5"]);
    let d = c.json(&["get", "deploy", "web"]);
    assert_eq!(d["metadata"]["labels"]["env"], "prod");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(d["spec"]["replicas"], 5);
    let out = c.kubectl(&["label", "deploy", "web", "env=dev"]);
    assert!(
        !out.status.success(),
        "relabel without --overwrite is refused"
    );
}

#[test]
fn delete_wait_and_discovery() {
    let c = Cluster::start();
    apply(&c, MANIFEST, &[]);
    let out = c.ok(&["delete", "deployment", "web", "--wait"]);
    assert!(out.contains("deleted"), "{out}");
    let gone = c.fails(&["get", "deployment", "web"]);
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );

    let resources = c.ok(&["api-resources"]);
    for line in [
        "deployments",
        "statefulsets",
        "horizontalpodautoscalers",
        "leases",
        "poddisruptionbudgets",
        "endpointslices",
    ] {
        assert!(
            resources.contains(line),
            "{line} missing from api-resources"
        );
    }
    // The reviews are listed, create-only, as upstream lists them.
    let reviews = c.ok(&[
        "api-resources",
        "--api-group=authorization.k8s.io",
        "-o",
        "wide",
    ]);
    let sar = reviews
        .lines()
        .find(|l| l.starts_with("subjectaccessreviews "))
        .unwrap_or_else(|| panic!("{reviews}"));
    let columns: Vec<&str> = sar.split_whitespace().collect();
    assert!(
        columns.contains(&"SubjectAccessReview") && columns.last() == Some(&"create"),
        "{sar}"
    );
    let pods = resources.lines().find(|l| l.starts_with("pods ")).unwrap();
    assert!(
        pods.contains(" po ") && pods.contains("true") && pods.contains("Pod"),
        "{pods}"
    );
    let explained = c.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        explained.contains("rollingUpdate") && explained.contains("<RollingUpdateDeployment>"),
        "{explained}"
    );
    // The local APIServices are listed at the stored ones' revision, so
    // that a watch (the garbage collector's) can follow the list.
    let raw = c.ok(&[
        "get",
        "--raw",
        "/apis/apiregistration.k8s.io/v1/apiservices",
    ]);
    let services: Value = serde_json::from_str(&raw).unwrap();
    let rv = services["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("");
    assert!(rv.parse::<u64>().is_ok(), "{}", services["metadata"]);
    assert!(services["items"].as_array().is_some_and(|i| !i.is_empty()));
    // The core group's is `v1.`, made when the server started.
    let (header, core) = table(&c, &["get", "apiservice", "v1."]);
    assert_eq!(header, ["NAME", "SERVICE", "AVAILABLE", "AGE"]);
    assert_eq!(core[..3], ["v1.", "Local", "True"], "{core:?}");
    assert_ne!(core[3], "<unknown>");
}

#[test]
fn bad_input_gets_a_status() {
    let c = Cluster::start();
    let unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\nbogus: 1\n";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], unknown);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown field \"bogus\""),
        "{err}"
    );

    let bad_name = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], bad_name);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is invalid") && err.contains("metadata.name"),
        "{err}"
    );

    // A limit the node could not apply is refused, not run without.
    let unlimited = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {limits: {memory: -1Gi}, requests: {cpu: \"2\"}}\n";
    let err = c.fails_stdin(unlimited);
    assert!(
        err.contains("spec.containers[0].resources.limits[memory]: Invalid value: \"-1Gi\": must be greater than or equal to 0"),
        "{err}"
    );

    // An Ingress is checked as upstream checks it.
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - host: 10.0.0.1\n    http:\n      paths:\n      - {path: api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n";
    let err = c.fails_stdin(ingress);
    assert!(
        err.contains("spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address")
            && err.contains("spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path"),
        "{err}"
    );

    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{a: \"{}\"}}\n",
        "x".repeat(4 << 20)
    );
    let out = c.kubectl_stdin(&["apply", "-f", "-", "--validate=false"], &big);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too large"), "{err}");
    // An APIService is named for the group and version it serves.
    let misnamed = "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: wardle}\nspec:\n  group: wardle.example.com\n  version: v1alpha1\n  groupPriorityMinimum: 1000\n  versionPriority: 15\n  service: {name: api, namespace: wardle}\n";
    let err = c.fails_stdin(misnamed);
    assert!(
        err.contains(r#"metadata.name: Invalid value: "wardle": must be `spec.version+"."+spec.group`: "v1alpha1.wardle.example.com""#),
        "{err}"
    );
    // A ConfigMap holds 1 MiB, however small its request.
    let file = c.dir.path().join("mebibyte");
    std::fs::write(&file, vec![b'x'; (1 << 20) + 1]).unwrap();
    let from = format!("--from-file={}", file.display());
    let err = c.fails(&["create", "configmap", "over", &from]);
    assert!(
        err.contains(
            r#"ConfigMap "over" is invalid: []: Too long: may not be more than 1048576 bytes"#
        ),
        "{err}"
    );
    // A JSON patch doubling the object with each copy is refused early.
    c.ok(&["create", "configmap", "bomb", "--from-literal=a=xxxxxxxx"]);
    let copies: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"op":"copy","from":"/data","path":"/data/x{i}"}}"#))
        .collect();
    let bomb = format!("[{}]", copies.join(","));
    let err = c.fails(&["patch", "configmap", "bomb", "--type=json", "-p", &bomb]);
    assert!(err.contains("too large"), "{err}");

    assert!(c
        .fails(&["get", "widgets"])
        .contains("doesn't have a resource type"));
    let wrong = c.kubectl_as("wrong", &["get", "pods"]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("Unauthorized"));

    apply(
        &c,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cas}\ndata: {a: b}\n",
        &[],
    );
    let mut cm = c.json(&["get", "cm", "cas"]);
    c.ok(&["label", "cm", "cas", "touched=yes"]);
    cm["data"]["a"] = "stale".into();
    let out = c.kubectl_stdin(&["replace", "-f", "-"], &cm.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the object has been modified"),
        "a stale resourceVersion conflicts: {err}"
    );

    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nowhere}\n",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespaces \"nowhere\" not found"));

    // A Secret's stringData is written into its data, never kept; an
    // immutable one keeps its data; a TLS one needs its key.
    apply(
        &c,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: plain}\nimmutable: true\nstringData: {password: hunter2}\n",
        &[],
    );
    let secret = c.json(&["get", "secret", "plain"]);
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==", "{secret}");
    assert!(secret.get("stringData").is_none(), "{secret}");
    let err = c.fails(&[
        "patch",
        "secret",
        "plain",
        "-p",
        r#"{"stringData":{"password":"swordfish"}}"#,
    ]);
    assert!(
        err.contains("data: Forbidden: field is immutable when `immutable` is set"),
        "{err}"
    );
    let err = c.fails_stdin(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: half}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n",
    );
    assert!(err.contains("data[tls.key]: Required value"), "{err}");

    // A CronJob's schedule parses.
    let err = c.fails_stdin(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: weekly}\nspec:\n  schedule: every monday\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: busybox}]\n",
    );
    assert!(
        err.contains("spec.schedule: Invalid value: \"every monday\""),
        "{err}"
    );

    // A Service's endpoints are never a node's loopback or metadata
    // address, whoever asks.
    let err = c.fails_stdin(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {name: sneaky}\nsubsets:\n- addresses: [{ip: 127.0.0.1}, {ip: 169.254.169.254}]\n  ports: [{port: 10250}]\n",
    );
    assert!(
        err.contains("subsets[0].addresses[1].ip: Invalid value: \"169.254.169.254\": may not be in the link-local range"),
        "{err}"
    );
    let err = c.fails_stdin(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: sneaky}\naddressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\nports: [{port: 10250}]\n",
    );
    assert!(
        err.contains("endpoints[0].addresses[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range"),
        "{err}"
    );

    // An object has one controller at most: the collector follows it.
    let err = c.fails_stdin(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  ownerReferences:\n  - {apiVersion: apps/v1, kind: ReplicaSet, name: a, uid: '1', controller: true}\n  - {apiVersion: apps/v1, kind: ReplicaSet, name: b, uid: '2', controller: true}\n",
    );
    assert!(
        err.contains("Only one reference can have Controller set to true. Found \"true\" in references for ReplicaSet/a and ReplicaSet/b"),
        "{err}"
    );
}

#[test]
fn restart_keeps_state_and_credentials() {
    let mut c = Cluster::start();
    apply(&c, MANIFEST, &[]);
    let uid = c.json(&["get", "deploy", "web"])["metadata"]["uid"].clone();
    let kubeconfig = std::fs::read_to_string(c.kubeconfig()).unwrap();
    c.kill();
    c.spawn(&[]);
    assert_eq!(std::fs::read_to_string(c.kubeconfig()).unwrap(), kubeconfig);
    assert_eq!(c.json(&["get", "deploy", "web"])["metadata"]["uid"], uid);
    apply(
        &c,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: after}\n",
        &[],
    );
}

/// kubectl's imperative commands send protobuf bodies.
#[test]
fn imperative_commands_send_protobuf() {
    let c = Cluster::start();
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=3",
        "--port=80",
    ]);
    c.ok(&["create", "configmap", "cfg", "--from-literal=k=v"]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=password=s3cret",
    ]);
    c.ok(&[
        "run",
        "one",
        "--image=busybox",
        "--labels=app=one",
        "--",
        "sleep",
        "10",
    ]);
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=8080",
        "--target-port=80",
    ]);
    c.ok(&["create", "namespace", "team-a"]);
    c.ok(&[
        "create",
        "deployment",
        "idle",
        "--image=busybox",
        "--replicas=0",
    ]);

    let d = c.json(&["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (
            container["image"].as_str(),
            container["ports"][0]["containerPort"].as_i64()
        ),
        (Some("busybox:1.36"), Some(80))
    );
    assert_eq!(
        c.json(&["get", "deploy", "idle"])["spec"]["replicas"],
        0,
        "an explicit zero survives"
    );
    assert_eq!(c.json(&["get", "cm", "cfg"])["data"]["k"], "v");
    assert_eq!(
        c.json(&["get", "secret", "pw"])["data"]["password"],
        "czNjcmV0"
    );
    let pod = c.json(&["get", "pod", "one"]);
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["sleep", "10"])
    );
    assert_eq!(pod["metadata"]["labels"]["app"], "one");
    assert!(pod["metadata"]
        .get("creationTimestamp")
        .is_some_and(|t| t.as_str().unwrap().starts_with("20")));
    let svc = c.json(&["get", "svc", "web"]);
    assert_eq!(
        (
            svc["spec"]["ports"][0]["port"].as_i64(),
            svc["spec"]["ports"][0]["targetPort"].as_i64()
        ),
        (Some(8080), Some(80))
    );
    assert_eq!(
        c.json(&["get", "ns", "team-a"])["status"]["phase"],
        "Active"
    );
}

#[test]
fn apply_keys_ports_by_number_and_protocol() {
    // Upstream's apply keys a Service's ports by port and protocol (its
    // patches by port alone): DNS on 53 over UDP and TCP is two ports,
    // and a port with no protocol is keyed as TCP.
    let c = Cluster::start();
    let apply = |ports: &str| {
        let service = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: dns}}\nspec:\n  selector: {{app: dns}}\n  ports: {ports}\n"
        );
        let args = ["apply", "--server-side", "--field-manager=a", "-f", "-"];
        assert_success(&c.kubectl_stdin(&args, &service), "the apply");
        c.json(&["get", "service", "dns", "--show-managed-fields"])
    };
    let both = apply("[{name: udp, port: 53, protocol: UDP}, {name: tcp, port: 53}]");
    let ports = both["spec"]["ports"].as_array().unwrap();
    let protocols: Vec<&str> = ports
        .iter()
        .filter_map(|p| p["protocol"].as_str())
        .collect();
    assert_eq!(protocols, ["UDP", "TCP"], "{both}");
    let entry = &both["metadata"]["managedFields"][0];
    let owned: Vec<&String> = entry["fieldsV1"]["f:spec"]["f:ports"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        owned,
        [
            "k:{\"port\":53,\"protocol\":\"TCP\"}",
            "k:{\"port\":53,\"protocol\":\"UDP\"}"
        ],
        "{entry}"
    );
    // The UDP port left out of the next apply goes; the TCP one stays.
    let tcp = apply("[{name: tcp, port: 53}]");
    let ports = tcp["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{tcp}");
    assert_eq!(ports[0]["protocol"], "TCP");
    // A label selector is one field: `kubectl create` owns it whole.
    c.ok(&["create", "deployment", "web", "--image=busybox"]);
    let deploy = c.json(&["get", "deployment", "web", "--show-managed-fields"]);
    let fields = &deploy["metadata"]["managedFields"][0]["fieldsV1"];
    assert_eq!(
        fields["f:spec"]["f:selector"],
        serde_json::json!({}),
        "{fields}"
    );
}

#[test]
fn apply_refuses_managed_fields_and_another_version() {
    // As upstream's field manager: an applied configuration names the
    // URL's version, and carries no managed fields (the server records
    // them); a client that sends back what it read is told so.
    let c = Cluster::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = c.https().build().unwrap();
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps/cm?fieldManager=a",
        c.url()
    );
    let apply = |body: &str| {
        runtime.block_on(async {
            let reply = client
                .patch(&url)
                .bearer_auth(c.admin_token())
                .header("content-type", "application/apply-patch+yaml")
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            let code = reply.status().as_u16();
            let status: serde_json::Value = reply.json().await.unwrap();
            (
                code,
                status["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
    };
    let managed = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm",
        "managedFields":[{"manager":"a","operation":"Apply","fieldsType":"FieldsV1","fieldsV1":{}}]},
        "data":{"k":"v"}}"#;
    assert_eq!(
        apply(managed),
        (400, "metadata.managedFields must be nil".to_owned())
    );
    let other =
        r#"{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"cm"},"data":{"k":"v"}}"#;
    assert_eq!(
        apply(other),
        (
            400,
            "Incorrect version specified in apply patch. Specified patch version: v2, expected: v1"
                .to_owned()
        )
    );
    // Neither was stored; the same configuration without them is.
    assert!(c.fails(&["get", "configmap", "cm"]).contains("NotFound"));
    let fine =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"},"data":{"k":"v"}}"#;
    assert_eq!(apply(fine).0, 201, "created");
}

#[test]
fn a_service_selector_is_applied_whole() {
    // Upstream marks a Service's selector `x-kubernetes-map-type: atomic`:
    // one owner for the whole map, which an apply replaces, not merges.
    let c = Cluster::start();
    let apply = |manager: &str, selector: &str, force: bool| {
        let service = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {selector}\n  ports: [{{port: 80}}]\n"
        );
        let manager = format!("--field-manager={manager}");
        let mut args = vec!["apply", "--server-side", manager.as_str(), "-f", "-"];
        if force {
            args.push("--force-conflicts");
        }
        c.kubectl_stdin(&args, &service)
    };
    assert_success(&apply("a", "{app: web}", false), "the first apply");
    let clash = apply("b", "{tier: front}", false);
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(
        !clash.status.success() && err.contains(".spec.selector"),
        "{err}"
    );
    assert_success(&apply("b", "{tier: front}", true), "the forced apply");
    let svc = c.json(&["get", "service", "web", "--show-managed-fields"]);
    assert_eq!(
        svc["spec"]["selector"],
        serde_json::json!({"tier": "front"})
    );
    let entries = svc["metadata"]["managedFields"].as_array().unwrap();
    let b = entries.iter().find(|e| e["manager"] == "b").unwrap();
    assert_eq!(b["fieldsV1"]["f:spec"]["f:selector"], serde_json::json!({}));
    assert!(
        entries
            .iter()
            .filter(|e| e["manager"] != "b")
            .all(|e| e["fieldsV1"]["f:spec"].get("f:selector").is_none()),
        "{svc}"
    );
}

/// Events written through either API are one resource: each API shows
/// the other's in its own words, selects them by its own field names,
/// and prints them alike; each refuses what upstream's refuses.
#[test]
fn events_of_either_api_are_one_resource() {
    let c = Cluster::start();
    create(
        &c,
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: new-api}\neventTime: \"2026-01-01T00:00:00.000000Z\"\nregarding: {kind: ConfigMap, name: cm-new, namespace: default}\nreportingController: example.com/ctl\nreportingInstance: ctl-1\naction: Syncing\nreason: Synced\nnote: synced through events.k8s.io\ntype: Normal\n---\napiVersion: v1\nkind: Event\nmetadata: {name: old-api}\ninvolvedObject: {kind: ConfigMap, name: cm-old, namespace: default}\nreason: Loaded\nmessage: loaded through v1\ntype: Warning\nsource: {component: loader}\ncount: 3\n",
    );
    let core = c.json(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=cm-new",
        "-o",
        "json",
    ]);
    let items = core["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{core}");
    assert_eq!(items[0]["message"], "synced through events.k8s.io");
    assert_eq!(items[0]["reportingComponent"], "example.com/ctl");
    assert_eq!(items[0]["apiVersion"], "v1");

    let new = c.json(&["get", "events.v1.events.k8s.io", "old-api", "-o", "json"]);
    assert_eq!(new["apiVersion"], "events.k8s.io/v1");
    assert_eq!(new["regarding"]["name"], "cm-old");
    assert_eq!(new["note"], "loaded through v1");
    assert_eq!(new["deprecatedCount"], 3);
    assert_eq!(new["deprecatedSource"]["component"], "loader");
    assert!(new.get("message").is_none(), "{new}");
    let selected = c.ok(&[
        "get",
        "events.events.k8s.io",
        "--field-selector",
        "regarding.name=cm-old,source=loader",
        "-o",
        "name",
    ]);
    assert_eq!(selected.trim(), "event.events.k8s.io/old-api");

    // Both print upstream's columns, the object and message included.
    let (header, row) = table(
        &c,
        &[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "reason=Loaded",
        ],
    );
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert_eq!(
        row[1..],
        [
            "Warning",
            "Loaded",
            "configmap/cm-old",
            "loaded",
            "through",
            "v1"
        ],
        "{row:?}"
    );
    let (_, row) = table(
        &c,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=Synced",
            "-o",
            "wide",
        ],
    );
    // No subobject (an empty cell); first seen at its eventTime.
    assert_eq!(
        row[1..8],
        [
            "Normal",
            "Synced",
            "configmap/cm-new",
            "example.com/ctl,",
            "ctl-1",
            "synced",
            "through"
        ],
        "{row:?}"
    );
    assert_eq!(row[9..], [row[0].as_str(), "1", "new-api"], "{row:?}");

    // A watch through the new API sees an event written through v1.
    let out_path = c.dir.path().join("events.watch");
    let mut watcher = c
        .kubectl_cmd(&[
            "get",
            "events.events.k8s.io",
            "-w",
            "--output-watch-events",
            "-o",
            "json",
            "--field-selector",
            "regarding.name=cm-watched",
        ])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .spawn()
        .unwrap();
    let seen = || {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        text.lines().find_map(|l| {
            let e: Value = serde_json::from_str(l).ok()?;
            (e["type"] == "ADDED").then(|| e["object"].clone())
        })
    };
    let mut n = 0;
    let watched = wait_for("the watched event", Duration::from_secs(20), || {
        n += 1;
        create(
            &c,
            &format!("apiVersion: v1\nkind: Event\nmetadata: {{name: watched-{n}}}\ninvolvedObject: {{kind: ConfigMap, name: cm-watched, namespace: default}}\nreason: Seen\nmessage: seen\n"),
        );
        seen()
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(watched["apiVersion"], "events.k8s.io/v1");
    assert_eq!(watched["note"], "seen");

    // Each API refuses what upstream's refuses.
    let err = c.fails_stdin("apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: deprecated}\neventTime: \"2026-01-01T00:00:00.000000Z\"\nregarding: {kind: ConfigMap, name: cm, namespace: default}\nreportingController: example.com/ctl\nreportingInstance: ctl-1\naction: Syncing\nreason: Synced\ntype: Normal\ndeprecatedCount: 2\n");
    assert!(
        err.contains(r#"count: Invalid value: "": needs to be unset"#),
        "{err}"
    );
    let err = c.fails_stdin("apiVersion: v1\nkind: Event\nmetadata: {name: elsewhere}\ninvolvedObject: {kind: ConfigMap, name: cm, namespace: kube-system}\nreason: Moved\n");
    assert!(
        err.contains(r#"involvedObject.namespace: Invalid value: "kube-system": does not match event.namespace"#),
        "{err}"
    );
    let err = c.fails(&[
        "patch",
        "events.events.k8s.io",
        "new-api",
        "--type=merge",
        "-p",
        r#"{"note":"rewritten"}"#,
    ]);
    assert!(
        err.contains("message: Invalid value: \"rewritten\": field is immutable"),
        "{err}"
    );
}

/// Events expire a TTL after their last write (`--event-ttl`).
#[test]
fn events_expire_after_their_ttl() {
    let c = Cluster::start_with_flags(&["--event-ttl", "2s"]);
    create(
        &c,
        "apiVersion: v1\nkind: Event\nmetadata: {name: brief}\ninvolvedObject: {kind: ConfigMap, name: cm, namespace: default}\nreason: Brief\n",
    );
    c.ok(&["get", "event", "brief"]);
    wait_for("the event to expire", Duration::from_secs(30), || {
        let out = c.kubectl(&["get", "event", "brief"]);
        let err = String::from_utf8_lossy(&out.stderr);
        (!out.status.success() && err.contains("NotFound")).then_some(())
    });
}

/// Pod templates are stored with a pod's defaults, checked as a pod's
/// template is, and printed with their containers and labels.
#[test]
fn pod_templates_are_served() {
    let c = Cluster::start();
    create(
        &c,
        "apiVersion: v1
kind: PodTemplate
metadata: {name: web}
template:
  metadata: {labels: {tier: front, app: web}}
  spec:
    containers: [{name: web, image: 'busybox:1.36'}]
",
    );
    let listed = c.ok(&["get", "podtemplates"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "CONTAINERS", "IMAGES", "POD", "LABELS"]);
    assert_eq!(
        rows[1],
        ["web", "web", "busybox:1.36", "app=web,tier=front"]
    );
    let stored = c.json(&["get", "podtemplate", "web"]);
    assert_eq!(stored["template"]["spec"]["restartPolicy"], "Always");
    let refused = c.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1
kind: PodTemplate
metadata: {name: bad}
template:
  spec:
    containers: [{name: web}]
",
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("template.spec.containers[0].image: Required value"),
        "{err}"
    );
}

/// A CSI driver's registration (what its chart installs) is stored with
/// upstream's defaults, checked, and printed as upstream prints it.
#[test]
fn csi_drivers_are_served() {
    let c = Cluster::start();
    create(
        &c,
        "apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: hostpath.csi.k8s.io}
spec:
  podInfoOnMount: true
  tokenRequests: [{audience: vault}]
",
    );
    let driver = c.json(&["get", "csidriver", "hostpath.csi.k8s.io"]);
    let spec = &driver["spec"];
    assert_eq!(spec["attachRequired"], true, "{spec}");
    assert_eq!(spec["fsGroupPolicy"], "ReadWriteOnceWithFSType", "{spec}");
    assert_eq!(
        spec["volumeLifecycleModes"],
        serde_json::json!(["Persistent"])
    );
    let listed = c.ok(&["get", "csidrivers"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "ATTACHREQUIRED",
            "PODINFOONMOUNT",
            "STORAGECAPACITY",
            "TOKENREQUESTS",
            "REQUIRESREPUBLISH",
            "MODES",
            "AGE"
        ]
    );
    assert_eq!(
        rows[1][..7],
        [
            "hostpath.csi.k8s.io",
            "true",
            "true",
            "false",
            "vault",
            "false",
            "Persistent"
        ]
    );
    let changed = c.kubectl(&[
        "patch",
        "csidriver",
        "hostpath.csi.k8s.io",
        "-p",
        r#"{"spec":{"attachRequired":false}}"#,
    ]);
    assert!(!changed.status.success());
    let err = String::from_utf8_lossy(&changed.stderr);
    assert!(
        err.contains("spec.attachedRequired: Invalid value: false: field is immutable"),
        "{err}"
    );
    let bad = c.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: short.csi.k8s.io}
spec:
  tokenRequests: [{audience: a, expirationSeconds: 60}, {audience: a}]
  volumeLifecycleModes: [Forever]
",
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    for want in [
        "spec.tokenRequests[0].expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
        "spec.tokenRequests[1].audience: Duplicate value: \"a\"",
        "spec.volumeLifecycleModes: Unsupported value: \"Forever\"",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
}

/// A VolumeAttributesClass names its driver, and neither it nor its
/// parameters change once made.
#[test]
fn volume_attributes_classes_are_served() {
    let c = Cluster::start();
    create(
        &c,
        "apiVersion: storage.k8s.io/v1
kind: VolumeAttributesClass
metadata: {name: gold}
driverName: pd.csi.storage.gke.io
parameters: {iops: '5000'}
",
    );
    let listed = c.ok(&["get", "vac"]);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "DRIVERNAME", "AGE"]);
    assert_eq!(rows[1][..2], ["gold", "pd.csi.storage.gke.io"]);
    let err = c.fails(&[
        "patch",
        "vac",
        "gold",
        "--type=merge",
        "-p",
        r#"{"parameters":{"iops":"9000"}}"#,
    ]);
    assert!(
        err.contains("parameters: Forbidden: updates to parameters are forbidden."),
        "{err}"
    );
}
