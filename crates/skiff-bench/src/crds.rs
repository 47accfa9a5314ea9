//! `skiff-bench crds`: creates/s of a custom resource whose schema has 20
//! fields and two CEL rules, against ConfigMaps in the same run (rounds
//! alternate, so both see the same machine).

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{ms, percentile, post_all, tempdir, Server};

#[derive(clap::Args)]
pub struct CrdsArgs {
    /// Objects of each kind created per round.
    #[arg(long, default_value_t = 2_000)]
    objects: usize,
    /// Rounds, alternating ConfigMaps and custom resources.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
}

/// Makes an object of one kind by its name.
type Make = fn(&str) -> Value;

/// A definition with 20 typed fields and two rules.
fn definition() -> Value {
    let mut props = serde_json::Map::new();
    for i in 0..10 {
        props.insert(
            format!("text{i}"),
            json!({"type": "string", "maxLength": 64}),
        );
        props.insert(
            format!("count{i}"),
            json!({"type": "integer", "minimum": 0}),
        );
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "benches.bench.skiff.io"},
        "spec": {"group": "bench.skiff.io", "scope": "Namespaced",
            "names": {"plural": "benches", "kind": "Bench"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object", "properties": props,
                    "x-kubernetes-validations": [
                        {"rule": "self.count0 <= self.count1", "message": "count0 must not exceed count1"},
                        {"rule": "self.text0.startsWith('b')", "message": "text0 starts with b"},
                    ]}}}}}]}
    })
}

fn custom(name: &str) -> Value {
    let mut spec = serde_json::Map::new();
    for i in 0..10 {
        spec.insert(format!("text{i}"), json!(format!("bench-{name}-{i}")));
        spec.insert(format!("count{i}"), json!(i));
    }
    json!({"apiVersion": "bench.skiff.io/v1", "kind": "Bench", "metadata": {"name": name}, "spec": spec})
}

fn config_map(name: &str) -> Value {
    let mut data = serde_json::Map::new();
    for i in 0..20 {
        data.insert(format!("key{i}"), json!(format!("bench-{name}-{i}")));
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

pub async fn run(args: CrdsArgs) -> Result<()> {
    let dir = tempdir()?;
    let (server, _) = Server::start(
        &dir,
        &["--disable-scheduler", "--disable-controller-manager"],
    )
    .await?;
    let client = server.client()?;
    let r = client
        .post(format!(
            "{}/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            server.url
        ))
        .bearer_auth(&server.token)
        .json(&definition())
        .send()
        .await?;
    if !r.status().is_success() {
        bail!(
            "creating the definition: {} {}",
            r.status(),
            r.text().await?
        );
    }
    let cm_url = format!("{}/api/v1/namespaces/default/configmaps", server.url);
    let cr_url = format!(
        "{}/apis/bench.skiff.io/v1/namespaces/default/benches",
        server.url
    );
    let kinds: [(&str, &str, Make); 2] = [
        ("ConfigMaps       ", &cm_url, config_map),
        ("custom resources ", &cr_url, custom),
    ];
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        for (k, (what, url, make)) in kinds.iter().enumerate() {
            let objects = (0..args.objects).map(|i| make(&format!("{k}-{round}-{i}")));
            let (rate, lat) = post_all(&server, url, args.clients, objects).await?;
            println!(
                "round {round} {what} {rate:.0}/s  (p50 {}, p99 {})",
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99))
            );
            rates[k].push(rate);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (cm, cr) = (mean(&rates[0]), mean(&rates[1]));
    println!(
        "creates/s ({} clients, 20 fields, 2 CEL rules): ConfigMap {cm:.0}, custom resource {cr:.0}: {:.0} %",
        args.clients,
        100.0 * cr / cm
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
