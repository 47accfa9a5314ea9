//! `cargo xtask compare A B PAIRS WHAT [ARGS]`: two builds of `skiff` told
//! apart by the server CPU that `skiff-bench WHAT` measures. This host's
//! speed drifts by 5–20 % from one minute to the next, so one run of each
//! says little: the builds run in pairs, back to back, the first of each
//! pair alternating, and each pair gives one change.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask compare SKIFF_A SKIFF_B PAIRS WHAT [ARGS]";

/// Reads the arguments, then builds the bench with `build` (a usage
/// error comes before a long build) and runs the pairs.
pub fn run(
    mut args: impl Iterator<Item = String>,
    build: impl FnOnce() -> Result<PathBuf>,
) -> Result<()> {
    let (Some(a), Some(b), Some(pairs)) = (args.next(), args.next(), args.next()) else {
        bail!(USAGE);
    };
    let pairs: usize = pairs.parse().context(USAGE)?;
    let what: Vec<String> = args.collect();
    if what.is_empty() || pairs == 0 {
        bail!(USAGE);
    }
    let skiff = |p: &str| std::fs::canonicalize(p).with_context(|| format!("no skiff at {p}"));
    let (a, b) = (skiff(&a)?, skiff(&b)?);
    let bench = build()?;
    let cpu = |skiff: &Path| server_cpu_of(&bench, skiff, &what);
    let mut changes = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let b_first = pair % 2 == 1;
        let (with_a, with_b) = if b_first {
            let with_b = cpu(&b)?;
            (cpu(&a)?, with_b)
        } else {
            (cpu(&a)?, cpu(&b)?)
        };
        let change = (with_b / with_a - 1.0) * 100.0;
        println!(
            "pair {} ({} first): A {with_a:.3} ms, B {with_b:.3} ms, {change:+.1} %",
            pair + 1,
            if b_first { "B" } else { "A" }
        );
        changes.push(change);
    }
    println!("{}", verdict(&mut changes));
    Ok(())
}

/// One run of the bench against `skiff`: its server CPU per unit, in ms.
fn server_cpu_of(bench: &Path, skiff: &Path, what: &[String]) -> Result<f64> {
    let out = Command::new(bench)
        .args(what)
        .env("SKIFF", skiff)
        .output()
        .with_context(|| format!("run {}", bench.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{} {what:?} with {} failed: {}\n{text}{}",
            bench.display(),
            skiff.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server_cpu(&text).with_context(|| format!("no `server CPU per` line in:\n{text}"))
}

/// The server's CPU per pod or per create that `skiff-bench` prints.
fn server_cpu(out: &str) -> Option<f64> {
    out.lines().find_map(|line| {
        let figure = line.strip_prefix("server CPU per ")?;
        figure.split_whitespace().nth(1)?.parse().ok()
    })
}

/// The median change from A to B, and in how many pairs B was cheaper.
fn verdict(changes: &mut [f64]) -> String {
    changes.sort_by(f64::total_cmp);
    let n = changes.len();
    let median = if n % 2 == 1 {
        changes[n / 2]
    } else {
        (changes[n / 2 - 1] + changes[n / 2]) / 2.0
    };
    let cheaper = changes.iter().filter(|c| **c < 0.0).count();
    format!("B against A: median {median:+.1} %, lower in {cheaper} of {n} pairs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_cpu_line_is_read_for_pods_and_creates() {
        let schedule = "pods bound                     10000/10000 in 7664.62 ms → 1305 pods/s\nserver CPU per pod             1.041 ms\nagent CPU per pod              0.246 ms\n";
        assert_eq!(server_cpu(schedule), Some(1.041));
        let api = "creates/s (embedded, 8 clients) 5524  (p50 1.32 ms, p99 4.40 ms)\nserver CPU per create          0.230 ms\n";
        assert_eq!(server_cpu(api), Some(0.230));
        assert_eq!(server_cpu("agent CPU per pod 0.2 ms\n"), None);
    }

    #[test]
    fn the_verdict_is_the_median_change_and_the_pairs_lower() {
        let mut odd = [4.0, -2.0, -11.0];
        assert_eq!(
            verdict(&mut odd),
            "B against A: median -2.0 %, lower in 2 of 3 pairs"
        );
        let mut even = [1.0, -3.0, 5.0, -1.0];
        assert_eq!(
            verdict(&mut even),
            "B against A: median +0.0 %, lower in 2 of 4 pairs"
        );
    }
}
