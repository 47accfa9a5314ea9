//! Crash safety: SIGKILL the server during a stream of concurrent creates;
//! after a restart every acknowledged object is there, and nothing
//! half-written is.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{agent, create, wait_for, Cluster};

#[test]
fn sigkill_during_creates_loses_no_acknowledged_write() {
    let mut c = Cluster::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = c.https().timeout(Duration::from_secs(10)).build().unwrap();
    let url = format!("{}/api/v1/namespaces/default/configmaps", c.url());
    let token = c.admin_token();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, url, token, acked) =
            (client.clone(), url.clone(), token.clone(), acked.clone());
        writers.push(runtime.spawn(async move {
            for i in 0.. {
                let name = format!("crash-{w}-{i}");
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name}, "data": {"writer": w.to_string(), "seq": i.to_string()}});
                match client.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                    _ => return,
                }
            }
        }));
    }
    wait_for("writes to be acknowledged", Duration::from_secs(60), || {
        (acked.lock().unwrap().len() >= 400).then_some(())
    });
    c.kill();
    for w in writers {
        runtime.block_on(w).unwrap();
    }
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();

    c.spawn(&[]);
    let list = c.json(&["get", "configmaps"]);
    let mut stored = BTreeSet::new();
    let written = list["items"].as_array().unwrap().iter().filter(|item| {
        // Not the cluster CA every namespace holds.
        item["metadata"]["name"] != "kube-root-ca.crt"
    });
    for item in written {
        let name = item["metadata"]["name"].as_str().unwrap().to_owned();
        let seq = item["data"]["seq"]
            .as_str()
            .expect("every stored object is whole");
        assert!(
            name.ends_with(&format!("-{seq}")),
            "{name} holds its own data"
        );
        stored.insert(name);
    }
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // At most one in-flight create per writer may have landed unacknowledged.
    assert!(
        stored.len() <= acked.len() + 8,
        "{} stored, {} acknowledged",
        stored.len(),
        acked.len()
    );
}

/// SIGKILL the server 0.7 s into a rollout of 500 replicas over 50
/// simulated nodes, and start it again on the same data dir: the rollout
/// completes and every pod bound to a node runs the new image. The
/// simulated nodes run the real pod worker, which writes again any status
/// the outage refused.
#[test]
fn sigkill_during_a_rollout_leaves_every_bound_pod_running() {
    let mut c = Cluster::start();
    let _nodes = agent(&c, "crash", 50, &[]);
    create(
        &c,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 500\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: 'busybox:1'}]}\n",
    );
    let rolled_out = |c: &Cluster, image: &str| {
        let d = c.json(&["get", "deployment", "web"]);
        let s = &d["status"];
        let done = d["metadata"]["generation"] == s["observedGeneration"]
            && [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            ]
            .iter()
            .all(|k| s[k] == 500);
        let pods = c.json(&["get", "pods", "-l", "app=web"]);
        let pods = pods["items"].as_array().unwrap().clone();
        let running = pods.iter().all(|p| {
            p["spec"]["nodeName"].is_string()
                && p["status"]["phase"] == "Running"
                && p["spec"]["containers"][0]["image"] == image
        });
        (done && running && pods.len() == 500).then_some(())
    };
    wait_for("500 pods running", Duration::from_secs(180), || {
        rolled_out(&c, "busybox:1")
    });
    c.ok(&["set", "image", "deployment/web", "c=busybox:2"]);
    // Not a wait for anything: the crash is meant to land mid-rollout.
    std::thread::sleep(Duration::from_millis(700));
    c.kill();
    c.spawn(&[]);
    wait_for(
        "the rollout to complete after the restart",
        Duration::from_secs(240),
        || rolled_out(&c, "busybox:2"),
    );
    let unbound = c.json(&["get", "pods", "--field-selector", "spec.nodeName="]);
    assert_eq!(unbound["items"].as_array().unwrap().len(), 0);
}
