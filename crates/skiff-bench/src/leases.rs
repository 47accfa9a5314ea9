//! `skiff-bench leases`: the store under node heartbeats. One Lease per
//! node, renewed round robin by concurrent clients as agents renew theirs,
//! until the renewals are done; the database's size on disk and the
//! server's RSS every tenth of the way, once with compaction (every
//! `--compaction-interval`) and once without. With compaction both
//! plateau; without, the file grows with every renewal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::json;

use super::{tempdir, Server};

#[derive(clap::Args)]
pub struct LeasesArgs {
    /// Leases, one per (simulated) node.
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    /// Renewals in all.
    #[arg(long, default_value_t = 1_000_000)]
    renewals: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// The server's compaction interval in the run with compaction.
    #[arg(long, default_value = "30s")]
    compaction_interval: String,
}

pub async fn run(args: LeasesArgs) -> Result<()> {
    println!(
        "{} renewals of {} Leases by {} clients",
        args.renewals, args.nodes, args.clients
    );
    for interval in [args.compaction_interval.as_str(), "0"] {
        let label = match interval {
            "0" => "no compaction".to_owned(),
            every => format!("compaction every {every}"),
        };
        println!("{label}");
        one_run(&args, interval).await?;
    }
    Ok(())
}

/// The renewal time of renewal `n`: a millisecond after the one before,
/// so that every renewal changes the Lease.
fn renew_time(n: usize) -> String {
    let (ms, s, m, h) = (n % 1000, n / 1000 % 60, n / 60_000 % 60, n / 3_600_000 % 24);
    format!("2026-01-01T{h:02}:{m:02}:{s:02}.{ms:03}000Z")
}

async fn one_run(args: &LeasesArgs, interval: &str) -> Result<()> {
    let dir = tempdir()?;
    let (server, _) = Server::start(&dir, &["--compaction-interval", interval]).await?;
    let client = server.client()?;
    let url = format!(
        "{}/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        server.url
    );
    for i in 0..args.nodes {
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": format!("node-{i}")},
            "spec": {"holderIdentity": format!("node-{i}"), "leaseDurationSeconds": 40}});
        let r = client
            .post(&url)
            .bearer_auth(&server.token)
            .json(&lease)
            .send()
            .await?;
        ensure!(
            r.status() == 201,
            "creating a Lease answered {}",
            r.status()
        );
    }
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let step = (args.renewals / 10).max(1);
    let workers: Vec<_> = (0..args.clients)
        .map(|_| {
            let (client, url, token, done) = (
                client.clone(),
                url.clone(),
                server.token.clone(),
                done.clone(),
            );
            let (nodes, renewals) = (args.nodes, args.renewals);
            tokio::spawn(async move {
                loop {
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    if n >= renewals {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let patch = json!({"spec": {"renewTime": renew_time(n)}});
                    let r = client
                        .patch(format!("{url}/node-{}", n % nodes))
                        .bearer_auth(&token)
                        .header("content-type", "application/merge-patch+json")
                        .body(patch.to_string())
                        .send()
                        .await?;
                    ensure!(r.status() == 200, "a renewal answered {}", r.status());
                    // Read to its end, so the stream closes rather than
                    // being reset (HTTP/2 peers count resets).
                    r.bytes().await?;
                }
            })
        })
        .collect();
    let mut reported = 0;
    while reported < args.renewals {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = done.load(Ordering::Relaxed).min(args.renewals);
        if now >= reported + step || now == args.renewals {
            reported = now - now % step;
            println!(
                "  {:>9} renewals  {:>7.1} s  database {:>7.1} MiB  server RSS {:>5} MiB",
                reported,
                started.elapsed().as_secs_f64(),
                skiff_testkit::database_bytes(&dir) as f64 / (1 << 20) as f64,
                server.rss_kib() / 1024
            );
        }
        if workers.iter().all(|w| w.is_finished()) {
            break;
        }
    }
    for w in workers {
        w.await??;
    }
    let rate = args.renewals as f64 / started.elapsed().as_secs_f64();
    println!("  {rate:.0} renewals/s");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
