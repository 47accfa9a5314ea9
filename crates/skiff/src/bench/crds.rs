//! `skiff bench crds`: creates/s of a custom resource whose schema has 20
//! fields and two CEL rules, against ConfigMaps in the same run (rounds
//! alternate, so both see the same machine).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use super::{ms, percentile, tempdir, Server};

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

/// Creates `count` objects from `clients` clients; the rate and latencies.
async fn creates(
    server: &Server,
    url: &str,
    clients: usize,
    count: usize,
    make: impl Fn(usize) -> Value,
) -> Result<(f64, Vec<Duration>)> {
    let client = server.client()?;
    let started = Instant::now();
    let results: Vec<Result<Duration>> = futures::stream::iter((0..count).map(make))
        .map(|o| {
            let client = client.clone();
            async move {
                let t = Instant::now();
                let r = client
                    .post(url)
                    .bearer_auth(&server.token)
                    .json(&o)
                    .send()
                    .await?;
                if r.status() != 201 {
                    bail!("create: {} {}", r.status(), r.text().await?);
                }
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let mut latencies = results.into_iter().collect::<Result<Vec<_>>>()?;
    latencies.sort();
    Ok((rate, latencies))
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
    let (mut cm_rates, mut cr_rates) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let (rate, lat) = creates(&server, &cm_url, args.clients, args.objects, |i| {
            config_map(&format!("cm-{round}-{i}"))
        })
        .await?;
        println!(
            "round {round} ConfigMaps        {rate:.0}/s  (p50 {}, p99 {})",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        );
        cm_rates.push(rate);
        let (rate, lat) = creates(&server, &cr_url, args.clients, args.objects, |i| {
            custom(&format!("cr-{round}-{i}"))
        })
        .await?;
        println!(
            "round {round} custom resources  {rate:.0}/s  (p50 {}, p99 {})",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        );
        cr_rates.push(rate);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (cm, cr) = (mean(&cm_rates), mean(&cr_rates));
    println!(
        "creates/s ({} clients, 20 fields, 2 CEL rules): ConfigMap {cm:.0}, custom resource {cr:.0}: {:.0} %",
        args.clients,
        100.0 * cr / cm
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
