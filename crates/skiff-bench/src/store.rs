//! `skiff-bench store`: the embedded store alone, in this process. Every
//! key is created and then updated once by concurrent writers, each write
//! acknowledged only when durable; for each phase, writes/s, latency and
//! this process's CPU per write (the store's writer thread, its callers
//! and the runtime), so that the store's share of a create's cost shows
//! without HTTP, TLS or the API server's work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use bytes::Bytes;
use skiff_store::{Embedded, Revision, Store};
use skiff_testkit::process::cpu_time;

use super::{fine_ms, ms, percentile, tempdir};

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Keys created, then each updated once.
    #[arg(long, default_value_t = 20_000)]
    keys: usize,
    /// Bytes per value (a pod as the API server stores it is about 3 KB).
    #[arg(long, default_value_t = 3_000)]
    size: usize,
}

pub async fn run(args: StoreArgs) -> Result<()> {
    ensure!(
        args.writers > 0 && args.keys > 0,
        "--writers and --keys must be at least 1"
    );
    let dir = tempdir()?;
    let result = phases(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn phases(args: &StoreArgs, dir: &std::path::Path) -> Result<()> {
    let store = Arc::new(Embedded::open(dir.join("state.db"))?);
    let value = Bytes::from(vec![b'x'; args.size]);
    println!(
        "{} keys of {} bytes, {} writers",
        args.keys, args.size, args.writers
    );
    // Each writer's keys and their revisions, carried from the creates
    // to the updates.
    let mut held: Vec<Vec<(String, Revision)>> = (0..args.writers)
        .map(|w| {
            (w..args.keys)
                .step_by(args.writers)
                .map(|i| (format!("/registry/pods/default/pod-{i}"), 0))
                .collect()
        })
        .collect();
    for phase in ["creates", "updates"] {
        let cpu = cpu_time(std::process::id());
        let first = store.current_revision().await?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for mut keys in held.drain(..) {
            let (store, value) = (store.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(keys.len());
                for (key, rev) in &mut keys {
                    let t = Instant::now();
                    *rev = match *rev {
                        0 => store.create(key, value.clone()).await?,
                        at => store.update(key, value.clone(), at).await?,
                    };
                    latencies.push(t.elapsed());
                }
                Ok::<_, anyhow::Error>((keys, latencies))
            }));
        }
        let mut all: Vec<Duration> = Vec::with_capacity(args.keys);
        for t in tasks {
            let (keys, latencies) = t.await??;
            held.push(keys);
            all.extend(latencies);
        }
        let elapsed = started.elapsed();
        let per_write = (cpu_time(std::process::id()) - cpu) / args.keys as u32;
        let written = store.current_revision().await? - first;
        all.sort();
        println!(
            "{phase:<8} {:>7.0}/s  p50 {}  p99 {}  CPU per write {}  ({written} revisions)",
            args.keys as f64 / elapsed.as_secs_f64(),
            ms(percentile(&all, 0.5)),
            ms(percentile(&all, 0.99)),
            fine_ms(per_write),
        );
    }
    Ok(())
}
