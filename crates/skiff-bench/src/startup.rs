//! `skiff-bench startup`: a newcomer's first minute, timed. `skiff server`
//! (with its node agent and a containerd of its own) starts on an empty
//! data dir; a pod is created as soon as `/readyz` answers. Each run
//! times, from the server's start: `/readyz`, the node Ready, and the pod
//! Running. The pod runs the pause image the agent makes itself, so the
//! image is present without any import. Root and containerd needed.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use skiff_testkit::process;

use super::{ms, tempdir, Server};

#[derive(clap::Args)]
pub struct StartupArgs {
    /// How many cold starts to time.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// What one cold start took.
struct Timings {
    ready: Duration,
    node: Duration,
    pod: Duration,
}

pub async fn run(args: StartupArgs) -> Result<()> {
    println!("cold start on an empty data dir: /readyz, node Ready, first pod Running");
    let mut all = Vec::new();
    for i in 0..args.runs {
        let t = once().await?;
        println!(
            "run {}: ready {}  node Ready {}  pod Running {}",
            i + 1,
            ms(t.ready),
            ms(t.node),
            ms(t.pod)
        );
        all.push(t);
    }
    let median = |f: fn(&Timings) -> Duration| {
        let mut v: Vec<Duration> = all.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "median: ready {}  node Ready {}  pod Running {}",
        ms(median(|t| t.ready)),
        ms(median(|t| t.node)),
        ms(median(|t| t.pod))
    );
    Ok(())
}

async fn once() -> Result<Timings> {
    let dir = tempdir()?;
    let cleanup = Cleanup(dir.clone());
    let started = Instant::now();
    let flags = [
        "--kubelet-port",
        "0",
        "--dns-port",
        "0",
        "--ingress-port",
        "0",
        "--ingress-https-port",
        "0",
    ];
    let (server, ready) = Server::start_at(&dir, &flags, started).await?;
    let client = server.client()?;
    let pods = format!("{}/api/v1/namespaces/default/pods", server.url);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "first"},
        "spec": {"terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": skiff_kubelet::pause_image::DEFAULT}]}});
    // Before the server has made the default ServiceAccount, a pod may
    // be refused for a moment: try again.
    loop {
        let r = client
            .post(&pods)
            .bearer_auth(&server.token)
            .json(&pod)
            .send()
            .await?;
        if r.status() == 201 {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the pod was not created: {}", r.status());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let get = |url: String| {
        let (client, token) = (&client, &server.token);
        async move {
            let v: Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, anyhow::Error>(v)
        }
    };
    let (mut node, mut running) = (None, None);
    while node.is_none() || running.is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("no Ready node and Running pod within 60 s");
        }
        if node.is_none() {
            let nodes = get(format!("{}/api/v1/nodes", server.url)).await?;
            let ready = nodes["items"].as_array().into_iter().flatten().any(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready {
                node = Some(started.elapsed());
            }
        }
        if running.is_none() {
            let pod = get(format!("{pods}/first")).await?;
            if pod["status"]["phase"] == "Running" {
                running = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The pod goes before the server, so no container outlives the run.
    let _ = client
        .delete(format!("{pods}/first"))
        .bearer_auth(&server.token)
        .send()
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let r = client
            .get(format!("{pods}/first"))
            .bearer_auth(&server.token)
            .send()
            .await?;
        if r.status() == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGTERM lets the server stop its agent, proxy and containerd.
    let pid = server.child.id();
    tokio::task::spawn_blocking(move || process::stop(pid, Duration::from_secs(10))).await?;
    drop(server);
    drop(cleanup);
    Ok(Timings {
        ready,
        node: node.unwrap_or_default(),
        pod: running.unwrap_or_default(),
    })
}

/// Stops what a run left: its containerd and shims (by their pids), the
/// pod bridge, the mounts and the data dir.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        skiff_testkit::containerd::stop(&self.0.join("agent"));
        let _ = Command::new("ip")
            .args(["link", "delete", "skiff0"])
            .status();
        skiff_testkit::unmount_under(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
