//! `skiff`: the one binary. It parses the command line and wires the
//! components together; the logic lives in the component crates.

mod bench;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc keeps the server's heap compact under churn of JSON values.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A small Kubernetes-compatible orchestrator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane: the API server and its store.
    Server(ServerArgs),
    /// Measures the control plane.
    Bench {
        #[command(subcommand)]
        what: bench::What,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the store, credentials and kubeconfig live.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// The address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The API server's HTTPS port.
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// etcd endpoints (comma-separated, e.g. http://127.0.0.1:2379) instead
    /// of the embedded store.
    #[arg(long)]
    datastore_endpoint: Option<String>,
}

impl ServerArgs {
    fn config(&self) -> skiff_apiserver::Config {
        let mut config = skiff_apiserver::Config::new(&self.data_dir);
        config.bind_address = self.bind_address;
        config.https_port = self.https_port;
        config.datastore_endpoint = self.datastore_endpoint.clone();
        config
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Server(args) => {
                let server = skiff_apiserver::start(args.config()).await?;
                tokio::select! {
                    _ = server.wait() => {}
                    _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
                }
                Ok(())
            }
            Command::Bench { what } => bench::run(what).await,
        }
    })
}
