//! `skiff-bench volumes`: the PersistentVolume controller binding many
//! claims to static volumes (no node needed), then, with `--images`, a
//! StatefulSet whose every pod gets a local-path volume on one real node,
//! timed from its creation to all its pods Running.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{ms, tempdir, RealNode, Server};

#[derive(clap::Args)]
pub struct VolumesArgs {
    /// Claims, and as many static volumes, for the binding phase.
    #[arg(long, default_value_t = 1_000)]
    claims: usize,
    /// The StatefulSet's replicas (the real-node phase).
    #[arg(long, default_value_t = 20)]
    replicas: usize,
    /// Create the StatefulSet's pods all at once (podManagementPolicy
    /// Parallel) rather than one after another.
    #[arg(long)]
    parallel: bool,
    /// A folder with `busybox.tar`, as `scripts/build-test-images.sh DIR`
    /// makes them; without it the real-node phase is skipped.
    #[arg(long)]
    images: Option<std::path::PathBuf>,
}

/// Creates `objects` at `url`, eight at a time.
async fn create_all(server: &Server, url: &str, objects: Vec<Value>) -> Result<()> {
    super::post_all(server, url, 8, objects).await.map(|_| ())
}

/// How many items of the list at `url` are in `phase`.
async fn count_phase(server: &Server, url: &str, phase: &str) -> Result<usize> {
    let list: Value = server
        .client()?
        .get(url)
        .bearer_auth(&server.token)
        .send()
        .await?
        .json()
        .await?;
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    Ok(items
        .iter()
        .filter(|i| i["status"]["phase"] == phase)
        .count())
}

async fn wait_phase(
    server: &Server,
    url: &str,
    phase: &str,
    n: usize,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while count_phase(server, url, phase).await? < n {
        if Instant::now() > deadline {
            bail!("not all {n} {url} reached {phase} in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub async fn run(args: VolumesArgs) -> Result<()> {
    binding(&args).await?;
    match &args.images {
        Some(images) => statefulset(&args, images).await,
        None => {
            println!("statefulset: skipped (no --images)");
            Ok(())
        }
    }
}

async fn binding(args: &VolumesArgs) -> Result<()> {
    let dir = tempdir()?;
    let (server, _) = Server::start(&dir, &[]).await?;
    let n = args.claims;
    let volumes = (0..n)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": format!("pv-{i}")},
                "spec": {"capacity": {"storage": format!("{}Mi", 100 + i % 50)}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "", "hostPath": {"path": format!("/srv/bench/{i}")}}})
        })
        .collect();
    create_all(
        &server,
        &format!("{}/api/v1/persistentvolumes", server.url),
        volumes,
    )
    .await?;
    let claims = (0..n)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": format!("c-{i}")},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                    "resources": {"requests": {"storage": format!("{}Mi", 100 + i % 50)}}}})
        })
        .collect();
    let started = Instant::now();
    let url = format!(
        "{}/api/v1/namespaces/default/persistentvolumeclaims",
        server.url
    );
    create_all(&server, &url, claims).await?;
    let created = started.elapsed();
    wait_phase(&server, &url, "Bound", n, Duration::from_secs(600)).await?;
    let bound = started.elapsed();
    println!(
        "binding: {n} claims to {n} static volumes: created in {}, all Bound after {} ({:.0} claims/s)",
        ms(created),
        ms(bound),
        n as f64 / bound.as_secs_f64()
    );
    Ok(())
}

async fn statefulset(args: &VolumesArgs, images: &std::path::Path) -> Result<()> {
    let dir = tempdir()?;
    let (server, _) = Server::start(&dir, &[]).await?;
    let node = RealNode::start(&server, &dir, images).await?;
    let policy = if args.parallel {
        "Parallel"
    } else {
        "OrderedReady"
    };
    let set = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "bench"},
        "spec": {"replicas": args.replicas, "serviceName": "bench", "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}}, "spec": {"terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "skiff.local/busybox:1", "command": ["sleep", "3600"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}}]}});
    let started = Instant::now();
    create_all(
        &server,
        &format!(
            "{}/apis/apps/v1/namespaces/default/statefulsets",
            server.url
        ),
        vec![set],
    )
    .await?;
    let pods = format!("{}/api/v1/namespaces/default/pods", server.url);
    wait_phase(
        &server,
        &pods,
        "Running",
        args.replicas,
        Duration::from_secs(600),
    )
    .await?;
    let running = started.elapsed();
    let claims = format!(
        "{}/api/v1/namespaces/default/persistentvolumeclaims",
        server.url
    );
    let bound = count_phase(&server, &claims, "Bound").await?;
    println!(
        "statefulset: {} replicas ({policy}) with a local-path volume each: all Running after {} ({bound} claims Bound)",
        args.replicas,
        ms(running)
    );
    // The set and its pods go before the agent, so no container outlives
    // the run.
    let client = server.client()?;
    let sets = format!(
        "{}/apis/apps/v1/namespaces/default/statefulsets/bench",
        server.url
    );
    client
        .delete(&sets)
        .bearer_auth(&server.token)
        .send()
        .await?;
    let gone_by = Instant::now() + Duration::from_secs(60);
    loop {
        client
            .delete(&pods)
            .bearer_auth(&server.token)
            .send()
            .await?;
        let left: Value = client
            .get(&pods)
            .bearer_auth(&server.token)
            .send()
            .await?
            .json()
            .await?;
        if left["items"].as_array().is_some_and(Vec::is_empty) || Instant::now() > gone_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.wait_empty(gone_by).await?;
    drop(node);
    Ok(())
}
