//! The client libraries' own suites (`../shared/peers`): the Python
//! client's e2e tests and kube-rs's cluster tests, run against a real
//! single-node Skiff (the debug `skiff` that `cargo test` built, with its
//! own containerd), the public images they run stood in by busybox
//! builds. Each suite prints its closing `N passed, M failed` line; a
//! failure not listed in README.md's table of unserved features fails
//! the run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// kube-rs tests Skiff cannot serve yet (README.md says why): none.
const KUBE_RS_UNSERVED: &[&str] = &[];
/// Python tests Skiff cannot serve yet (pytest node ids): none; the one
/// that needs the metrics API skips itself (README.md).
const PYTHON_UNSERVED: &[&str] = &[];

/// A server started for the suites, stopped and cleaned up on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    root: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("bash")
            .arg(self.root.join("scripts/clean-up.sh"))
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

/// The `skiff` that `cargo test` built.
fn skiff(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("debug/skiff")
}

fn start(root: &Path, kubectl: &Path) -> Result<Server> {
    let skiff = skiff(root);
    let dir = std::env::temp_dir().join(format!("skiff-peers-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.with_extension("log"))?;
    let child = Command::new(&skiff)
        .args(["server", "--data-dir"])
        .arg(&dir)
        // The agent on upstream's port: kube-rs's node-proxy test dials
        // https://localhost:10250.
        .args(["--https-port", &skiff_testkit::free_port().to_string()])
        // The Python client's metrics test reads a new pod's usage 10 s
        // after it runs: scrape more often than the default 15 s.
        .args(["--metrics-resolution", "5s"])
        // Names outside the cluster are refused, not asked off the machine.
        .args(["--upstream-resolv-conf", ""])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", skiff.display()))?;
    let server = Server {
        child,
        dir: dir.clone(),
        root: root.to_path_buf(),
    };
    let kubeconfig = dir.join("kubeconfig.yaml");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = kubeconfig.exists()
            && Command::new(kubectl)
                .env("KUBECONFIG", &kubeconfig)
                .args([
                    "wait",
                    "--for=condition=Ready",
                    "node",
                    "--all",
                    "--timeout=5s",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
        if ready {
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!(
                "the suites' server did not get a Ready node (log: {})",
                dir.with_extension("log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How many times Python tests that failed run again (see [`run`]).
const PYTHON_RERUNS: usize = 2;

/// Runs both suites; fails if either has a failure.
pub fn run(root: &Path, kubectl: &Path) -> Result<()> {
    let peers = root.join("../shared/peers");
    if !peers.join("python-client-e2e.sh").exists() {
        bail!(
            "{} is missing: the client suites live beside the project",
            peers.display()
        );
    }
    let server = start(root, kubectl)?;
    let import = format!(
        "{} image import --data-dir {}",
        skiff(root).display(),
        server.dir.join("agent").display()
    );
    let path = format!(
        "{}:{}",
        kubectl.parent().unwrap_or(Path::new(".")).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let suite = |script: &str, args: &[String], env: &[(&str, String)]| -> Result<bool> {
        eprintln!("$ {script} {}", args.join(" "));
        let status = Command::new("bash")
            .arg(peers.join(script))
            .args(args)
            .current_dir(root)
            .env("KUBECONFIG", server.dir.join("kubeconfig.yaml"))
            .env("PEER_IMAGE_HOOK", peers.join("images-busybox.sh"))
            .env("PEER_IMAGE_IMPORT", &import)
            .env("PATH", &path)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .status()
            .with_context(|| format!("run {script}"))?;
        Ok(status.success())
    };
    let deselect: Vec<String> = PYTHON_UNSERVED
        .iter()
        .flat_map(|t| ["--deselect".to_owned(), t.to_string()])
        .collect();
    let mut python = suite(
        "python-client-e2e.sh",
        &deselect,
        &[("PY_TEST_TIMEOUT", "120".into())],
    )?;
    // The Python informer's stop() races its own watch: stopped before
    // the watch's response exists, it waits on a stream that never speaks
    // (test_cache_populated_after_start, against any server; on a loaded
    // machine twice in a row). What failed runs again, at most twice, and
    // must pass then.
    for _ in 0..PYTHON_RERUNS {
        if python {
            break;
        }
        let failed = python_failures();
        if failed.is_empty() || failed.len() > 3 {
            break;
        }
        eprintln!("re-running {} failed Python test(s)", failed.len());
        python = suite(
            "python-client-e2e.sh",
            &failed,
            &[("PY_TEST_TIMEOUT", "120".into())],
        )?;
    }
    let kube_rs = suite(
        "kube-rs-cluster-tests.sh",
        &[],
        &[
            ("KUBE_RS_SKIP", KUBE_RS_UNSERVED.join(" ")),
            ("KUBE_RS_TEST_TIMEOUT", "120".into()),
            // Without debug info its build takes a third of the disk.
            ("CARGO_PROFILE_DEV_DEBUG", "0".into()),
        ],
    )?;
    drop(server);
    match (python, kube_rs) {
        (true, true) => Ok(()),
        _ => bail!(
            "client suites: python {}, kube-rs {}",
            ok(python),
            ok(kube_rs)
        ),
    }
}

/// The ids of the tests the last Python run failed, from its log.
fn python_failures() -> Vec<String> {
    let scratch = std::env::var_os("PEERS_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join("skiff-peers")
        });
    let log =
        std::fs::read_to_string(scratch.join("logs/python-client-e2e.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| l.strip_prefix("FAILED "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn ok(passed: bool) -> &'static str {
    if passed {
        "passed"
    } else {
        "failed"
    }
}
