//! `skiff-bench network` (root, nftables): the cluster DNS answering
//! queries for 100 Services, and the proxy keeping 100 Services of 10
//! endpoints each in nftables: the first full sync, then the time from an
//! EndpointSlice change to its rule being in place. The proxy runs in this
//! process and owns the `ip skiff` table while it runs. All traffic stays
//! on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::json;

use super::{ms, percentile, tempdir, Server};

#[derive(clap::Args)]
pub struct NetworkArgs {
    /// Services, each with one EndpointSlice.
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// EndpointSlice changes timed one after another.
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// With `busybox.tar` here (`scripts/build-test-images.sh
    /// DIR`), also run a real node and compare HTTP through a ClusterIP
    /// with HTTP straight to the pod.
    #[arg(long)]
    images: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
pub struct HttpLoadArgs {
    /// `ip:port` to GET `/` from, a new connection per request.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    #[arg(long, default_value_t = 8)]
    connections: usize,
}

/// Closed-loop HTTP/1.0 GETs from `connections` tasks; prints requests/s
/// and latency percentiles.
pub async fn http_load(args: HttpLoadArgs) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let target = args.target;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0u64;
            while Instant::now() < deadline {
                let at = Instant::now();
                let once = async {
                    let mut conn = tokio::net::TcpStream::connect(target).await?;
                    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
                    let mut reply = Vec::new();
                    conn.read_to_end(&mut reply).await?;
                    anyhow::ensure!(
                        reply.starts_with(b"HTTP/1.") && reply.windows(5).any(|w| w == b" 200 "),
                        "not a 200"
                    );
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(2), once).await {
                    Ok(Ok(())) => latencies.push(at.elapsed()),
                    _ => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await?;
        all.extend(l);
        failed += f;
    }
    all.sort();
    println!(
        "{:.0} requests/s, p50 {} p99 {}, {failed} failed",
        all.len() as f64 / args.seconds as f64,
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99))
    );
    Ok(())
}

/// HTTP through a ClusterIP against straight to the pod, from one client
/// in a pod's network namespace, on one real node.
async fn through_service(
    server: &Server,
    dir: &std::path::Path,
    images: &std::path::Path,
) -> Result<()> {
    let node = super::RealNode::start(server, dir, images).await?;
    let http = server.client()?;
    let ns = format!("{}/api/v1/namespaces/default", server.url);
    for (path, body) in [
        (
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "httpd", "labels": {"app": "httpd"}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "skiff.local/busybox:1", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && httpd -f -p 8080 -h /www"]}]}}),
        ),
        (
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "c", "image": "skiff.local/busybox:1", "imagePullPolicy": "Never",
                "command": ["sleep", "3600"]}]}}),
        ),
        (
            "services",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpd"},
            "spec": {"selector": {"app": "httpd"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        ),
    ] {
        http.post(format!("{ns}/{path}"))
            .bearer_auth(&server.token)
            .json(&body)
            .send()
            .await?;
    }
    let get = |path: String| {
        let req = http.get(format!("{ns}/{path}")).bearer_auth(&server.token);
        async move { anyhow::Ok(req.send().await?.json::<serde_json::Value>().await?) }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (pod_ip, client_id) = loop {
        let (httpd, client) = (
            get("pods/httpd".into()).await?,
            get("pods/client".into()).await?,
        );
        let slice_ready =
            get("endpoints/httpd".into()).await?["subsets"][0]["addresses"].is_array();
        let running = |p: &serde_json::Value| p["status"]["phase"] == "Running";
        if running(&httpd) && running(&client) && slice_ready {
            let id = client["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .unwrap_or_default();
            break (
                httpd["status"]["podIP"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                id.trim_start_matches("containerd://").to_owned(),
            );
        }
        if Instant::now() > deadline {
            bail!("the pods did not start");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cluster_ip = get("services/httpd".into()).await?["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let tasks = std::process::Command::new("ctr")
        .arg("--address")
        .arg(node.socket())
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()?;
    let pid = String::from_utf8_lossy(&tasks.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(client_id.as_str())).then(|| f.next().unwrap_or_default().to_owned())
        })
        .unwrap_or_default();
    // The agent's proxy must have the Service's rule before it is timed.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let map = tokio::process::Command::new("nft")
            .args(["list", "map", "ip", skiff_proxy::rules::TABLE, "services"])
            .output()
            .await?;
        if String::from_utf8_lossy(&map.stdout).contains(&cluster_ip) {
            break;
        }
        if Instant::now() > until {
            bail!("the proxy did not route {cluster_ip} in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (what, target) in [
        ("ClusterIP", format!("{cluster_ip}:80")),
        ("pod IP", format!("{pod_ip}:8080")),
    ] {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg(std::env::current_exe()?)
            .args(["http-load", "--target", &target])
            .output()?;
        println!(
            "http via {what:<9} ({target}): {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    let _ = http
        .delete(format!("{ns}/pods"))
        .bearer_auth(&server.token)
        .send()
        .await;
    node.wait_empty(Instant::now() + Duration::from_secs(30))
        .await
}

fn slice(i: usize, endpoints: usize) -> serde_json::Value {
    let eps: Vec<_> = (0..endpoints)
        .map(|e| {
            let ip = format!("10.42.{}.{}", i % 250, e + 1);
            json!({"addresses": [ip], "conditions": {"ready": true}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}"), "endpointslice.kubernetes.io/managed-by": "bench"}},
        "addressType": "IPv4", "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

/// The rules of one chain of the proxy's table.
async fn chain(name: &str) -> String {
    let out = tokio::process::Command::new("nft")
        .args(["list", "chain", "ip", skiff_proxy::rules::TABLE, name])
        .output()
        .await;
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

pub async fn run(args: NetworkArgs) -> Result<()> {
    let dir = tempdir()?;
    let dns_port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (server, _) = Server::start(
        &dir,
        &["--dns-port", &dns_port.to_string(), "--disable-ingress"],
    )
    .await?;
    let http = server.client()?;
    let post = |path: &str, body: serde_json::Value| {
        let req = http
            .post(format!("{}{path}", server.url))
            .bearer_auth(&server.token)
            .json(&body);
        async move {
            let r = req.send().await?;
            if !r.status().is_success() {
                bail!("{}: {}", r.status(), r.text().await?);
            }
            Ok(())
        }
    };
    for i in 0..args.services {
        post(
            "/api/v1/namespaces/default/services",
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i}")},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        )
        .await?;
    }

    // DNS: concurrent clients asking for the Services' names for 3 s.
    let answered = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut clients = Vec::new();
    for c in 0..16 {
        let (answered, services) = (answered.clone(), args.services);
        clients.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            sock.connect(SocketAddr::from(([127, 0, 0, 1], dns_port)))
                .await?;
            let mut latencies = Vec::new();
            let mut buf = vec![0u8; 1500];
            let mut n = c;
            while Instant::now() < deadline {
                n += 16;
                let name =
                    Name::from_ascii(format!("svc-{}.default.svc.cluster.local.", n % services))?;
                let mut q = Message::new();
                q.set_id(n as u16)
                    .add_query(Query::query(name, RecordType::A));
                let sent = Instant::now();
                sock.send(&q.to_vec()?).await?;
                if tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf))
                    .await
                    .is_ok()
                {
                    latencies.push(sent.elapsed());
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for c in clients {
        latencies.extend(c.await??);
    }
    latencies.sort();
    println!(
        "dns: {:.0} queries/s from 16 clients, p50 {} p99 {}",
        answered.load(Ordering::Relaxed) as f64 / 3.0,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99))
    );

    // The proxy: first sync of every Service, then single changes.
    let client = super::local_client(&dir.join("kubeconfig.yaml")).await?;
    for i in 0..args.services {
        post(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            slice(i, args.endpoints),
        )
        .await?;
    }
    let started = Instant::now();
    let proxy = tokio::spawn(skiff_proxy::run(
        client,
        skiff_proxy::Config {
            node_name: "bench".into(),
            unreachable: Vec::new(),
        },
    ));
    let chain_of =
        |i: usize| skiff_proxy::rules::service_chain("default", &format!("svc-{i}"), "http", "tcp");
    let full = format!("mod {} ", args.endpoints);
    while !chain(&chain_of(args.services - 1)).await.contains(&full) {
        if started.elapsed() > Duration::from_secs(60) {
            proxy.abort();
            bail!("the proxy did not sync in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "proxy: {} Services x {} endpoints in nftables {} after start",
        args.services,
        args.endpoints,
        ms(started.elapsed())
    );
    // Each change adds an endpoint to a Service (or takes it away again),
    // which rewrites that Service's chain; its chain alone is polled.
    let mut waits = Vec::new();
    for g in 1..=args.changes {
        let i = g % args.services;
        let count = if g % 2 == 1 {
            args.endpoints + 1
        } else {
            args.endpoints
        };
        let body = slice(i, count);
        let wanted = format!("mod {count} ");
        let url = format!(
            "{}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/svc-{i}",
            server.url
        );
        let changed = Instant::now();
        let r = http
            .put(&url)
            .bearer_auth(&server.token)
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("{}: {}", r.status(), r.text().await?);
        }
        while !chain(&chain_of(i)).await.contains(&wanted) {
            if changed.elapsed() > Duration::from_secs(10) {
                proxy.abort();
                bail!("a change did not reach nftables in 10 s");
            }
        }
        waits.push(changed.elapsed());
    }
    proxy.abort();
    let _ = proxy.await;
    waits.sort();
    println!(
        "proxy: EndpointSlice change → rule in place over {} changes: p50 {} p99 {} (polling one chain, ~5 ms)",
        waits.len(),
        ms(percentile(&waits, 0.5)),
        ms(percentile(&waits, 0.99))
    );
    if let Some(images) = &args.images {
        through_service(&server, &dir, images).await?;
    }
    Ok(())
}
