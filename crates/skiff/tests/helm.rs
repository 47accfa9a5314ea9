//! helm 4 with real charts on one real node: `helm create`'s default
//! chart installed (its Ingress on, served by the built-in ingress
//! controller), tested, upgraded, rolled back, autoscaled (its
//! HorizontalPodAutoscaler reading its pods' CPU) and uninstalled, and a
//! chart that ships a CustomResourceDefinition in `crds/` with a custom
//! resource in its templates. The public images the charts name are
//! stood in by local builds (`scripts/build-test-images.sh`: a busybox
//! httpd serving on port 80 for nginx; the test hook's busybox is set to
//! the local one), as the network is closed.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::{real_cluster, wait_for, Cluster};

fn helm(c: &Cluster, dir: &Path, args: &[&str]) -> Output {
    Command::new(support::helm_path())
        .env("KUBECONFIG", c.kubeconfig())
        .env("HELM_CACHE_HOME", dir.join("cache"))
        .env("HELM_CONFIG_HOME", dir.join("config"))
        .env("HELM_DATA_HOME", dir.join("data"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run helm")
}

fn helm_ok(c: &Cluster, dir: &Path, args: &[&str]) -> String {
    let out = helm(c, dir, args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the ingress controller at `port` answers for `host`'s `/`.
fn through_ingress(port: u16, host: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

fn replicas(c: &Cluster) -> (i64, i64) {
    let d = c.json(&["get", "deployment", "web"]);
    (
        d["spec"]["replicas"].as_i64().unwrap_or(-1),
        d["status"]["readyReplicas"].as_i64().unwrap_or(0),
    )
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"#;

const GADGET: &str = r#"apiVersion: example.com/v1
kind: Gadget
metadata:
  name: {{ .Release.Name }}-gadget
spec:
  size: {{ .Values.size }}
"#;

#[test]
fn helm_installs_tests_upgrades_rolls_back_and_uninstalls_real_charts() {
    let ingress = support::free_port().to_string();
    let rc = real_cluster(&[
        "--ingress-port",
        &ingress,
        "--ingress-https-port",
        "0",
        "--metrics-resolution",
        "3s",
        "--horizontal-pod-autoscaler-sync-period",
        "3s",
    ]);
    let c = &rc.c;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    // The default chart: ServiceAccount, Service, Deployment, test hook.
    helm_ok(c, dir, &["create", "web"]);
    let hook = dir.join("web/templates/tests/test-connection.yaml");
    let text = std::fs::read_to_string(&hook).unwrap();
    std::fs::write(
        &hook,
        text.replace("image: busybox", "image: skiff.local/busybox:1"),
    )
    .unwrap();
    let local = [
        "--set",
        "image.repository=skiff.local/nginx",
        "--set",
        "image.tag=1",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "ingress.enabled=true",
        "--wait",
        "--timeout",
        "120s",
    ];
    let mut install = vec!["install", "web", "./web"];
    install.extend(local);
    let out = helm_ok(c, dir, &install);
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert_eq!(replicas(c), (1, 1));
    for kind in ["serviceaccount", "service", "ingress"] {
        c.ok(&["get", kind, "web"]);
    }
    // The chart's Ingress routes its host to the pods.
    let port: u16 = ingress.parse().unwrap();
    let reply = wait_for("the Ingress to route", Duration::from_secs(30), || {
        let reply = through_ingress(port, "chart-example.local");
        reply.contains("Welcome to nginx!").then_some(reply)
    });
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // `helm test` runs the hook pod to success against the Service.
    let out = helm_ok(c, dir, &["test", "web", "--timeout", "120s"]);
    assert!(out.contains("Phase:          Succeeded"), "{out}");

    // Upgrade, then roll back to the first revision.
    let mut upgrade = vec!["upgrade", "web", "./web", "--set", "replicaCount=2"];
    upgrade.extend(local);
    helm_ok(c, dir, &upgrade);
    assert_eq!(replicas(c), (2, 2));
    helm_ok(
        c,
        dir,
        &["rollback", "web", "1", "--wait", "--timeout", "120s"],
    );
    wait_for(
        "the rollback to one replica",
        Duration::from_secs(60),
        || (replicas(c) == (1, 1)).then_some(()),
    );
    let history = helm_ok(c, dir, &["history", "web"]);
    assert_eq!(
        history.lines().count(),
        4,
        "a header and three revisions: {history}"
    );
    assert!(history.contains("Rollback to 1"), "{history}");

    // The chart's HorizontalPodAutoscaler, once its pods request CPU. The
    // test hook's pod carries the chart's selector labels and requests
    // nothing: while it stays, the autoscaler (as upstream's) cannot
    // compute a utilization.
    c.ok(&["delete", "pod", "web-test-connection"]);
    let mut autoscaled = vec![
        "upgrade",
        "web",
        "./web",
        "--set",
        "autoscaling.enabled=true",
        "--set",
        "resources.requests.cpu=50m",
    ];
    autoscaled.extend(local);
    helm_ok(c, dir, &autoscaled);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let hpa = loop {
        let hpa = c.ok(&["get", "hpa", "web", "--no-headers"]);
        if hpa.contains("%/80%") && !hpa.contains("<unknown>") {
            break hpa;
        }
        if std::time::Instant::now() > deadline {
            let status = c.ok(&["get", "hpa", "web", "-o", "jsonpath={.status}"]);
            panic!("the chart's autoscaler did not read its pods' CPU: {hpa}\n{status}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(hpa.contains("Deployment/web"), "{hpa}");

    // Uninstall removes what the release made.
    helm_ok(c, dir, &["uninstall", "web", "--wait", "--timeout", "120s"]);
    for kind in ["deployment", "service", "serviceaccount", "ingress", "hpa"] {
        let err = c.fails(&["get", kind, "web"]);
        assert!(err.contains("NotFound"), "{kind}: {err}");
    }

    // A chart with a CRD in crds/ and a custom resource in its templates.
    helm_ok(c, dir, &["create", "gadgets"]);
    let chart = dir.join("gadgets");
    std::fs::remove_dir_all(chart.join("templates")).unwrap();
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::create_dir_all(chart.join("crds")).unwrap();
    std::fs::write(chart.join("crds/gadgets.yaml"), CRD).unwrap();
    std::fs::write(chart.join("templates/gadget.yaml"), GADGET).unwrap();
    std::fs::write(chart.join("values.yaml"), "size: 3\n").unwrap();
    helm_ok(c, dir, &["install", "kit", "./gadgets", "--wait"]);
    let g = c.json(&["get", "gadget", "kit-gadget"]);
    assert_eq!(g["spec"]["size"], 3);
    // The schema holds for what a chart renders too.
    let out = helm(c, dir, &["upgrade", "kit", "./gadgets", "--set", "size=0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("should be greater than or equal to 1"),
        "{err}"
    );
    helm_ok(c, dir, &["uninstall", "kit", "--wait"]);
    let err = c.fails(&["get", "gadget", "kit-gadget"]);
    assert!(err.contains("NotFound"), "{err}");
    // helm keeps CRDs it installed from crds/, as upstream.
    c.ok(&["get", "crd", "gadgets.example.com"]);
}
