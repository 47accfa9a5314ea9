//! Crash safety: SIGKILL the server during a stream of concurrent creates;
//! after a restart every acknowledged object is there, and nothing
//! half-written is.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{wait_for, Cluster};

#[test]
fn sigkill_during_creates_loses_no_acknowledged_write() {
    let mut c = Cluster::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&c.ca_pem()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
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
    for item in list["items"].as_array().unwrap() {
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
