//! `skiff-bench autoscale` (root, containerd, one real node): what the
//! resource metrics cost an agent running `--pods` pods (each scrape of
//! its `/metrics/resource`: latency, size, the agent's and containerd's
//! CPU; the agent's idle CPU and RSS with them), then an autoscaler's
//! reaction: a Deployment (one pod, 100m requested) under an HPA at 50 %
//! CPU, from the moment its pod starts a busy loop to the first scale-up,
//! and from the loop's end back to one replica.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{cpu_time, ms, percentile, rss_kib, tempdir, RealNode, Server};

#[derive(clap::Args)]
pub struct AutoscaleArgs {
    /// Pods on the node while the scrapes are measured.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Scrapes of the agent's `/metrics/resource` measured.
    #[arg(long, default_value_t = 20)]
    scrapes: usize,
    /// The server's `--metrics-resolution`.
    #[arg(long, default_value = "15s")]
    resolution: String,
    /// The server's `--horizontal-pod-autoscaler-sync-period`.
    #[arg(long, default_value = "15s")]
    sync_period: String,
    /// The autoscaler's scale-down stabilization window, in seconds.
    #[arg(long, default_value_t = 15)]
    downscale_window: u32,
    /// A folder with `busybox.tar`, as `scripts/build-test-images.sh DIR`
    /// makes them.
    #[arg(long)]
    images: std::path::PathBuf,
}

/// A request with the server's token; the reply's JSON.
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut request = server
        .client()?
        .request(method, format!("{}{path}", server.url))
        .bearer_auth(&server.token);
    if let Some(b) = body {
        request = request
            .header("content-type", "application/merge-patch+json")
            .body(b.to_string());
    }
    let reply = request.send().await?;
    let status = reply.status();
    let text = reply.text().await?;
    if !status.is_success() {
        bail!("{path}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(server: &Server, path: &str, body: Value) -> Result<()> {
    let reply = server
        .client()?
        .post(format!("{}{path}", server.url))
        .bearer_auth(&server.token)
        .json(&body)
        .send()
        .await?;
    if !reply.status().is_success() {
        bail!("{path}: {}", reply.text().await?);
    }
    Ok(())
}

/// Polls `check` every 100 ms until it holds, for `limit` at most.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn running(server: &Server, selector: &str) -> Result<usize> {
    let pods = call(
        server,
        reqwest::Method::GET,
        &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"),
        None,
    )
    .await?;
    let items = pods["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    Ok(items
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .count())
}

pub async fn run(args: AutoscaleArgs) -> Result<()> {
    let dir = tempdir()?;
    let flags = [
        "--metrics-resolution",
        &args.resolution,
        "--horizontal-pod-autoscaler-sync-period",
        &args.sync_period,
    ];
    let (server, _) = Server::start(&dir, &flags).await?;
    let node = RealNode::start(&server, &dir, &args.images).await?;
    let agent = node.agent.id();
    let containerd = super::child_pid(agent, "containerd").unwrap_or(0);
    let result = measure(&args, &server, agent, containerd).await;
    let _ = call(
        &server,
        reqwest::Method::DELETE,
        "/api/v1/namespaces/default/pods",
        None,
    )
    .await;
    let _ = call(
        &server,
        reqwest::Method::DELETE,
        "/apis/apps/v1/namespaces/default/deployments/burn",
        None,
    )
    .await;
    node.wait_empty(Instant::now() + Duration::from_secs(60))
        .await?;
    drop(node);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(args: &AutoscaleArgs, server: &Server, agent: u32, containerd: u32) -> Result<()> {
    let idle_rss = rss_kib(agent);
    for i in 0..args.pods {
        post(server, "/api/v1/namespaces/default/pods", json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("idle-{i}"), "labels": {"app": "idle"}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c",
                "image": "skiff.local/busybox:1", "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}}))
        .await?;
    }
    until("the pods to run", Duration::from_secs(300), || async {
        Ok(running(server, "app=idle").await? == args.pods)
    })
    .await?;
    // Idle, between the server's own scrapes and the agent's housekeeping:
    // the baseline the scrapes' cost is measured above.
    let window = Duration::from_secs(30);
    let (agent_cpu, runtime_cpu, started) = (cpu_time(agent), cpu_time(containerd), Instant::now());
    tokio::time::sleep(window).await;
    let idle = started.elapsed().as_secs_f64();
    let idle_share = (cpu_time(agent) - agent_cpu).as_secs_f64() / idle;
    let runtime_idle_share = (cpu_time(containerd) - runtime_cpu).as_secs_f64() / idle;
    let busy_rss = rss_kib(agent);

    let path = "/api/v1/nodes/bench/proxy/metrics/resource";
    let (agent_cpu, runtime_cpu, started) = (cpu_time(agent), cpu_time(containerd), Instant::now());
    let mut took = Vec::new();
    let mut bytes = 0;
    for _ in 0..args.scrapes {
        let at = Instant::now();
        let text = server
            .client()?
            .get(format!("{}{path}", server.url))
            .bearer_auth(&server.token)
            .send()
            .await?
            .text()
            .await?;
        took.push(at.elapsed());
        bytes = text.len();
        if !text.contains("container_cpu_usage_seconds_total") {
            bail!("the scrape holds no container figures: {text}");
        }
    }
    took.sort();
    let elapsed = started.elapsed().as_secs_f64();
    let n = args.scrapes.max(1) as f64;
    let above = |used: Duration, share: f64| {
        Duration::from_secs_f64(((used.as_secs_f64() - share * elapsed) / n).max(0.0))
    };
    let per_agent = above(cpu_time(agent) - agent_cpu, idle_share);
    let per_runtime = above(cpu_time(containerd) - runtime_cpu, runtime_idle_share);
    println!("resource metrics with {} pods on one node", args.pods);
    println!(
        "scrape p50 / p99               {} / {} ({} KiB)",
        ms(percentile(&took, 0.5)),
        ms(percentile(&took, 0.99)),
        bytes / 1024
    );
    println!(
        "CPU per scrape agent / ctrd    {} / {} (above their idle use; 10 ms ticks)",
        ms(per_agent),
        ms(per_runtime)
    );
    println!(
        "idle CPU agent / containerd    {:.1} % / {:.1} % of a core",
        idle_share * 100.0,
        runtime_idle_share * 100.0
    );
    println!(
        "agent RSS                      {} → {} MiB (no pods → {} pods)",
        idle_rss / 1024,
        busy_rss / 1024,
        args.pods
    );
    let _ = call(
        server,
        reqwest::Method::DELETE,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Didle",
        None,
    )
    .await;
    reaction(args, server).await
}

async fn replicas(server: &Server) -> Result<i64> {
    let d = call(
        server,
        reqwest::Method::GET,
        "/apis/apps/v1/namespaces/default/deployments/burn",
        None,
    )
    .await?;
    Ok(d["spec"]["replicas"].as_i64().unwrap_or(0))
}

async fn reaction(args: &AutoscaleArgs, server: &Server) -> Result<()> {
    // The pod burns a core while its `burn` annotation is "on" (read
    // through a downwardAPI volume, which the agent rewrites at each sync).
    let script = "while :; do case \"$(cat /load/annotations)\" in *'burn=\"on\"'*) i=0; \
                  while [ $i -lt 100000 ]; do i=$((i+1)); done;; *) sleep 0.2;; esac; done";
    post(server, "/apis/apps/v1/namespaces/default/deployments", json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "burn"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "burn"}},
            "template": {"metadata": {"labels": {"app": "burn"}}, "spec": {"terminationGracePeriodSeconds": 0,
                "volumes": [{"name": "load", "downwardAPI": {"items": [{"path": "annotations",
                    "fieldRef": {"fieldPath": "metadata.annotations"}}]}}],
                "containers": [{"name": "c", "image": "skiff.local/busybox:1", "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script], "resources": {"requests": {"cpu": "100m"}},
                    "volumeMounts": [{"name": "load", "mountPath": "/load"}]}]}}}}))
    .await?;
    post(server, "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers", json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "burn"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burn"},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": args.downscale_window}}}}))
    .await?;
    until("the pod to run", Duration::from_secs(120), || async {
        Ok(running(server, "app%3Dburn").await? == 1)
    })
    .await?;
    let pods = call(
        server,
        reqwest::Method::GET,
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dburn",
        None,
    )
    .await?;
    let pod = pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Load starts once the autoscaler has seen the pod's usage at rest.
    until(
        "the autoscaler's first reading",
        Duration::from_secs(180),
        || async {
            let hpa = call(
                server,
                reqwest::Method::GET,
                "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/burn",
                None,
            )
            .await?;
            Ok(
                hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
                    .is_i64(),
            )
        },
    )
    .await?;
    let annotate = |value: &'static str| {
        let pod = pod.clone();
        async move {
            call(
                server,
                reqwest::Method::PATCH,
                &format!("/api/v1/namespaces/default/pods/{pod}"),
                Some(json!({"metadata": {"annotations": {"burn": value}}})),
            )
            .await
        }
    };
    let load = Instant::now();
    annotate("on").await?;
    let up = until("the first scale-up", Duration::from_secs(300), || async {
        Ok(replicas(server).await? > 1)
    })
    .await?;
    let grown = replicas(server).await?;
    until("the new pods to run", Duration::from_secs(120), || async {
        Ok(running(server, "app%3Dburn").await? as i64 >= grown)
    })
    .await?;
    let stop = Instant::now();
    annotate("off").await?;
    let down = until("the scale-down to 1", Duration::from_secs(600), || async {
        Ok(replicas(server).await? == 1)
    })
    .await?;
    println!(
        "autoscaler (resolution {}, sync {}, scale-down window {} s)",
        args.resolution, args.sync_period, args.downscale_window
    );
    println!(
        "load start → first scale-up    {} (1 → {grown} replicas)",
        ms(up - load)
    );
    println!("load end → back to 1 replica   {}", ms(down - stop));
    Ok(())
}
