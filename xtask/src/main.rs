//! `cargo xtask`: chores that are not part of the shipped binary.
//!
//! - `cargo xtask test`: installs the upstream kubectl if missing, checks
//!   the tools the tests need, then runs `cargo fmt --check`,
//!   `cargo clippy -D warnings`, every test in the workspace, and the
//!   client libraries' own suites against a real single-node cluster.
//! - `cargo xtask tidy`: only the format and lint checks.
//! - `cargo xtask bench WHAT [ARGS]`: builds `skiff` and `skiff-bench`
//!   with the `dist` profile (the binary to ship) and runs
//!   `skiff-bench WHAT [ARGS]`.
//! - `cargo xtask compare A B PAIRS WHAT [ARGS]`: builds the same way and
//!   runs `skiff-bench WHAT [ARGS]` against the `skiff`
//!   binaries A and B in PAIRS alternating pairs; prints each pair's server
//!   CPU and the median change (see `compare.rs`).
//! - `cargo xtask fuzz [N]`: the fuzz targets (bodies, patches, selectors,
//!   SPDY frames) with N inputs each (1,000,000 by default), `--release`.
//! - `cargo xtask gen-protobuf`: regenerates the protobuf field table.

mod compare;
mod peers;
mod protobuf;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("test") => test(),
        Some("tidy") => tidy(),
        Some("gen-protobuf") => protobuf::generate(&root()),
        Some("bench") => bench(std::env::args().skip(2)),
        Some("compare") => compare::run(std::env::args().skip(2), build_bench),
        Some("fuzz") => fuzz(std::env::args().nth(2)),
        _ => bail!("usage: cargo xtask <test|tidy|bench|compare|fuzz|gen-protobuf>"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The long run of the fuzz targets the unit tests run briefly.
fn fuzz(inputs: Option<String>) -> Result<()> {
    let inputs = inputs.unwrap_or_else(|| "1000000".into());
    for (package, filter) in [("skiff-apiserver", "fuzz::"), ("skiff-kubelet", "spdy::")] {
        run(cargo()
            .args(["test", "--release", "-p", package, "--lib", filter])
            .env("SKIFF_FUZZ_ITERATIONS", &inputs))?;
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The upstream kubectl v1.35 the end-to-end tests drive.
fn kubectl() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return Ok(p.into());
    }
    let dest = PathBuf::from(std::env::var("HOME").context("HOME")?).join(".local/bin");
    let kubectl = dest.join("kubectl");
    let installer = root().join("../shared/tools/install-kube-clients.sh");
    let works = Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        run(Command::new("bash").arg(&installer).arg(&dest))?;
    }
    Ok(kubectl)
}

fn bench(args: impl Iterator<Item = String>) -> Result<()> {
    run(Command::new(build_bench()?).args(args))
}

/// Builds `skiff` and `skiff-bench` with the `dist` profile (together, so
/// that their shared crates are built once, with the same features);
/// returns the bench's path.
fn build_bench() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--profile",
        "dist",
        "-p",
        "skiff",
        "-p",
        "skiff-bench",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    Ok(target.join("dist/skiff-bench"))
}

fn tidy() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test() -> Result<()> {
    let kubectl = kubectl()?;
    if Command::new("etcd").arg("--version").output().is_err() {
        bail!(
            "etcd is not installed: apt-get install etcd-server (the store suite runs a real etcd)"
        );
    }
    tidy()?;
    let tests = run(cargo()
        .args(["test", "--workspace"])
        .env("KUBECTL", &kubectl));
    // The client suites run even when a test failed: their figures are
    // worth having either way.
    let suites = peers::run(&root(), &kubectl);
    tests.and(suites)
}
