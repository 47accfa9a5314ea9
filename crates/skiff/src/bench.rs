//! `skiff bench`: measurements of a running control plane.

#[derive(clap::Subcommand)]
pub enum What {}

pub async fn run(what: What) -> anyhow::Result<()> {
    match what {}
}
