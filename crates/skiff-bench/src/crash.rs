//! `skiff-bench crash`: the crash and disk-full campaign. The server is
//! SIGKILLed again and again while 8 writers create ConfigMaps; after each
//! restart every acknowledged create is there and whole, and at most one
//! unacknowledged create per writer landed. Then (root) its data dir on a
//! small tmpfs fills up: writes are refused with a 500 Status naming the
//! cause while reads go on, and once the tmpfs grows writes succeed again
//! and, after one more restart, nothing acknowledged is missing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use super::{ms, percentile, tempdir, Server};

#[derive(clap::Args)]
pub struct CrashArgs {
    /// SIGKILLs of the server.
    #[arg(long, default_value_t = 100)]
    kills: usize,
    /// Skip the disk-full part (which needs root, to mount a tmpfs).
    #[arg(long)]
    no_disk_full: bool,
}

const WRITERS: usize = 8;

pub async fn run(args: CrashArgs) -> Result<()> {
    let dir = tempdir()?;
    let mut acked = BTreeSet::new();
    let mut restarts = Vec::new();
    for round in 0..args.kills {
        let (server, ready) = Server::start(&dir, &[]).await?;
        restarts.push(ready);
        check(&server, &acked, round).await?;
        // The kill lands 50–500 ms into the writes, a different moment
        // each round.
        let after = Duration::from_millis(50 + (round as u64 * 37) % 450);
        acked.extend(write_then_kill(server, round, after).await?);
    }
    let (server, ready) = Server::start(&dir, &[]).await?;
    restarts.push(ready);
    let stored = check(&server, &acked, args.kills).await?;
    drop(server);
    restarts.sort();
    println!("{} SIGKILLs under {WRITERS} concurrent writers", args.kills);
    println!(
        "acknowledged creates             {} (all found after every restart, all whole)",
        acked.len()
    );
    println!(
        "unacknowledged creates landed    {} (at most {WRITERS} a kill)",
        stored - acked.len()
    );
    println!(
        "restart → /readyz p50 / max      {} / {}",
        ms(percentile(&restarts, 0.5)),
        ms(*restarts.last().unwrap_or(&Duration::ZERO))
    );
    let _ = std::fs::remove_dir_all(&dir);
    if !args.no_disk_full {
        disk_full().await?;
    }
    Ok(())
}

/// Creates ConfigMaps from 8 writers and SIGKILLs the server `after` the
/// first write; returns the names whose create was acknowledged.
async fn write_then_kill(mut server: Server, round: usize, after: Duration) -> Result<Vec<String>> {
    let client = server.client()?;
    let url = format!("{}/api/v1/namespaces/default/configmaps", server.url);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, url, token, acked) = (
                client.clone(),
                url.clone(),
                server.token.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                for i in 0.. {
                    let name = format!("crash-{round}-{w}-{i}");
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name}, "data": {"seq": i.to_string()}});
                    match client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 201 => {
                            acked.lock().unwrap().push(name);
                            // Read to its end, so the stream closes rather
                            // than being reset (HTTP/2 peers count resets).
                            let _ = r.bytes().await;
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(after).await;
    server.child.kill()?;
    let _ = server.child.wait();
    for w in writers {
        w.await?;
    }
    let acked = acked.lock().unwrap().clone();
    Ok(acked)
}

/// Every acknowledged create is stored, each stored one is whole, and at
/// most one unacknowledged create per writer and kill landed; returns how
/// many are stored.
async fn check(server: &Server, acked: &BTreeSet<String>, round: usize) -> Result<usize> {
    let mut stored = BTreeSet::new();
    for item in &configmaps(server).await? {
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        let Some(seq) = name
            .strip_prefix("crash-")
            .and_then(|n| n.rsplit('-').next())
        else {
            continue;
        };
        ensure!(item["data"]["seq"] == seq, "{name} is not whole: {item}");
        stored.insert(name.to_owned());
    }
    if let Some(lost) = acked.difference(&stored).next() {
        bail!("round {round}: {lost} was acknowledged and is lost");
    }
    ensure!(
        stored.len() <= acked.len() + WRITERS * round,
        "round {round}: {} stored, {} acknowledged",
        stored.len(),
        acked.len()
    );
    Ok(stored.len())
}

/// The ConfigMaps of the default namespace.
async fn configmaps(server: &Server) -> Result<Vec<Value>> {
    let list = server
        .get_json("/api/v1/namespaces/default/configmaps")
        .await?;
    let items = list["items"].as_array().context("a list")?;
    Ok(items.clone())
}

/// Fills a data dir on a 16 MiB tmpfs, checks what the server answers,
/// grows the tmpfs and checks that everything is back.
async fn disk_full() -> Result<()> {
    let dir = tempdir()?.join("tmpfs");
    std::fs::create_dir_all(&dir)?;
    mount(&["-t", "tmpfs", "-o", "size=16m", "tmpfs"], &dir)?;
    let result = fill(&dir).await;
    let _ = Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir_all(dir.parent().unwrap_or(&dir));
    result
}

fn mount(args: &[&str], dir: &Path) -> Result<()> {
    let status = Command::new("mount").args(args).arg(dir).status()?;
    ensure!(
        status.success(),
        "mount {args:?} {} failed (root needed)",
        dir.display()
    );
    Ok(())
}

async fn fill(dir: &Path) -> Result<()> {
    let data = dir.join("data");
    let (server, _) = Server::start(&data, &[]).await?;
    let client = server.client()?;
    let url = format!("{}/api/v1/namespaces/default/configmaps", server.url);
    let value = "x".repeat(256 << 10);
    let create = |name: String| {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"v": value}});
        client
            .post(&url)
            .bearer_auth(&server.token)
            .json(&body)
            .send()
    };
    let mut acked = Vec::new();
    let started = Instant::now();
    let refusal: Value = loop {
        ensure!(acked.len() < 200, "16 MiB held 200 objects of 256 KiB");
        let name = format!("fill-{}", acked.len());
        let r = create(name.clone()).await?;
        match r.status().as_u16() {
            201 => acked.push(name),
            500 => break r.json().await?,
            other => bail!("a create answered {other}: {}", r.text().await?),
        }
    };
    let message = refusal["message"].as_str().unwrap_or_default().to_owned();
    ensure!(
        message.contains("full"),
        "the refusal names the cause: {refusal}"
    );
    let read = client
        .get(format!("{url}/{}", acked[0]))
        .bearer_auth(&server.token)
        .send()
        .await?;
    ensure!(
        read.status() == 200,
        "a read while full answered {}",
        read.status()
    );
    mount(&["-o", "remount,size=64m"], dir)?;
    let r = create("after-space".into()).await?;
    ensure!(
        r.status() == 201,
        "a create after space returned answered {}",
        r.status()
    );
    acked.push("after-space".into());
    drop(server);
    let (server, _) = Server::start(&data, &[]).await?;
    let acked_set: BTreeSet<String> = acked.iter().cloned().collect();
    let stored: BTreeSet<String> = configmaps(&server)
        .await?
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<_> = acked_set.difference(&stored).collect();
    ensure!(lost.is_empty(), "lost after the disk filled: {lost:?}");
    println!("disk full (16 MiB tmpfs, 256 KiB ConfigMaps)");
    println!(
        "creates acknowledged until full  {} in {}; then 500: {message:?}",
        acked.len() - 1,
        ms(started.elapsed())
    );
    println!("reads while full                 served (200)");
    println!(
        "after the tmpfs grew to 64 MiB   create 201; after a restart all {} there",
        acked.len()
    );
    Ok(())
}
