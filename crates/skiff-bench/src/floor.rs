//! `skiff-bench floor`: what `bench api`'s creates cost with no API server
//! in between. The same pods go from the same clients over the same
//! HTTPS (rustls on ring, HTTP/2 through hyper) to a server in a child
//! process that stores each body durably in the embedded store and sends
//! it back. A second round also decodes each body into a JSON tree and
//! encodes it again, the least a server that reads an object does. What
//! the API server itself spends on a create is its CPU per create less
//! this floor's.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use skiff_store::{Embedded, Store};
use skiff_testkit::free_port;
use skiff_testkit::process::cpu_time;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{create_pods, fine_ms, ms, percentile, tempdir, Server};

/// The serving certificate the child writes once it listens.
const CERT: &str = "floor.crt";

#[derive(clap::Args)]
pub struct FloorArgs {
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Pods created in each round.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
}

/// The child's side: where to keep its store and certificate, and where
/// to listen.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    port: u16,
    /// Decode each body into a JSON tree and encode it again.
    #[arg(long)]
    decode: bool,
}

pub async fn run(args: FloorArgs) -> Result<()> {
    for decode in [false, true] {
        let dir = tempdir()?;
        let result = round(&args, &dir, decode).await;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    Ok(())
}

async fn round(args: &FloorArgs, dir: &Path, decode: bool) -> Result<()> {
    let floor = start(dir, decode).await?;
    let cpu = floor.cpu_time();
    let own_cpu = cpu_time(std::process::id());
    let (rate, lat) = create_pods(&floor, args.clients, args.pods, "pod").await?;
    let server = (floor.cpu_time() - cpu) / args.pods as u32;
    let client = (cpu_time(std::process::id()) - own_cpu) / args.pods as u32;
    let what = match decode {
        false => "bytes stored as sent",
        true => "bodies decoded and encoded",
    };
    println!("floor, {what}, {} clients:", args.clients);
    println!(
        "  creates/s {rate:.0}  (p50 {}, p99 {})",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );
    println!(
        "  server CPU per create {}, client {}, both {}",
        fine_ms(server),
        fine_ms(client),
        fine_ms(server + client)
    );
    Ok(())
}

/// Starts the floor server, a child process of this binary, which takes
/// no token.
async fn start(dir: &Path, decode: bool) -> Result<Server> {
    let port = free_port();
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["floor-serve", "--dir"])
        .arg(dir)
        .args(["--port", &port.to_string()]);
    if decode {
        command.arg("--decode");
    }
    let mut child = command.stdout(Stdio::null()).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let pem = loop {
        if let Ok(pem) = std::fs::read(dir.join(CERT)) {
            break pem;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the floor server exited: {status}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the floor server did not start in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    Ok(Server {
        child,
        url: format!("https://127.0.0.1:{port}"),
        token: String::new(),
        ca: reqwest::Certificate::from_pem(&pem)?,
    })
}

/// The child: serves creates until it is killed.
pub async fn serve(args: ServeArgs) -> Result<()> {
    let store = Arc::new(Embedded::open(args.dir.join("state.db"))?);
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("the serving key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    // Written whole under another name first: the parent reads it as soon
    // as it exists.
    let partial = args.dir.join(format!("{CERT}.partial"));
    std::fs::write(&partial, certified.cert.pem())?;
    std::fs::rename(&partial, args.dir.join(CERT))?;
    let creates = Arc::new(Creates {
        store,
        decode: args.decode,
        next: AtomicU64::new(0),
    });
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (acceptor, creates) = (acceptor.clone(), creates.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let creates = creates.clone();
                async move { Ok::<_, Infallible>(creates.create(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What the floor server does with a create.
struct Creates {
    store: Arc<Embedded>,
    decode: bool,
    next: AtomicU64,
}

impl Creates {
    async fn create(&self, req: Request<Incoming>) -> Response<Body> {
        match self.store_body(req).await {
            Ok(stored) => reply(StatusCode::CREATED, stored),
            Err(e) => reply(StatusCode::BAD_REQUEST, Bytes::from(e.to_string())),
        }
    }

    /// Stores the body (under its pod's name when decoded, else under a
    /// counter) and returns what was stored.
    async fn store_body(&self, req: Request<Incoming>) -> Result<Bytes> {
        let body = axum::body::to_bytes(Body::new(req.into_body()), 3 << 20).await?;
        let (key, value) = if self.decode {
            let obj: serde_json::Value = serde_json::from_slice(&body)?;
            let name = obj["metadata"]["name"].as_str().context("no name")?;
            let key = format!("/registry/pods/default/{name}");
            (key, Bytes::from(serde_json::to_vec(&obj)?))
        } else {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            (format!("/floor/{n}"), body)
        };
        self.store.create(&key, value.clone()).await?;
        Ok(value)
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut reply = Response::new(Body::from(body));
    *reply.status_mut() = status;
    reply
}
