//! A newcomer's first run, with real containers: `skiff server` on an empty
//! data dir with a containerd that holds no image at all makes its own
//! pause image; `skiff image import` takes the server's data dir; a pod
//! runs; `kubectl run -it --rm`, `exec -it` and `attach` work on a
//! terminal; `kubectl describe pod` tells what the node agent did. Needs
//! root and `scripts/setup.sh --test`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{assert_success, create, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(90);
const BUSYBOX: &str = "skiff.local/busybox:1";

fn skiff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .output()
        .unwrap()
}

/// kubectl's switch to SPDY for exec and attach (its fallback protocol).
const SPDY: &str = "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false";

/// Runs a kubectl command line on a pseudo-terminal (util-linux `script`),
/// typing `input`; returns everything the terminal showed. `env` is set
/// for kubectl (`VAR=value`, or empty).
fn on_terminal(c: &Cluster, env: &str, kubectl_args: &str, input: &str) -> String {
    use std::io::Write;
    let command = format!(
        "env {env} {} --kubeconfig {} {kubectl_args}",
        support::kubectl_path().display(),
        c.kubeconfig().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn running(c: &Cluster, name: &str) {
    wait_for(&format!("pod {name} Running"), LIMIT, || {
        (support::pod(c, name)["status"]["phase"] == "Running").then_some(())
    });
}

/// The events `kubectl describe pod` shows, as "Type Reason Message" lines.
fn described_events(c: &Cluster, name: &str) -> String {
    let shown = c.ok(&["describe", "pod", name]);
    shown
        .split_once("Events:")
        .map(|(_, e)| e.to_owned())
        .unwrap_or_default()
}

#[test]
fn fresh_start_to_interactive_pods() {
    support::check_prerequisites();
    let images = support::build_images();
    let c = Cluster::start_with_agent(&[]);
    let _cleanup = support::Cleanup(c.dir.path().to_owned());
    let server_dir = c.dir.path().to_str().unwrap().to_owned();

    // The pause image appears by itself in a containerd that had none.
    wait_for("the built-in pause image", LIMIT, || {
        let out = skiff(&["image", "ls", "--data-dir", &server_dir]);
        String::from_utf8_lossy(&out.stdout)
            .contains("skiff.local/pause:1")
            .then_some(())
    });
    let out = skiff(&[
        "image",
        "import",
        "--data-dir",
        &server_dir,
        images.path().join("busybox.tar").to_str().unwrap(),
    ]);
    assert_success(&out, "skiff image import with the server's data dir");
    let listed = skiff(&["image", "ls", "--data-dir", &server_dir]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(BUSYBOX), "{listed}");
    assert!(listed.lines().next().unwrap().contains("SIZE"), "{listed}");

    c.ok(&[
        "run",
        "web",
        &format!("--image={BUSYBOX}"),
        "--",
        "sleep",
        "3600",
    ]);
    running(&c, "web");
    let events = described_events(&c, "web");
    for wanted in [
        "Scheduled",
        "Container image \"skiff.local/busybox:1\" already present on machine",
        "Created container: web",
        "Started container web",
    ] {
        assert!(events.contains(wanted), "{wanted} missing from {events}");
    }

    // kubectl exec -it runs on a terminal, over WebSocket and over SPDY.
    for env in ["", SPDY] {
        let shown = on_terminal(&c, env, "exec -it web -- tty", "");
        assert!(shown.contains("/dev/pts/"), "exec -it {env}: {shown}");
    }
    // Without a terminal over SPDY: output, stdin and the exit code.
    let out = c
        .kubectl_cmd(&["exec", "-i", "web", "--", "sh", "-c", "cat; exit 3"])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"through spdy\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through spdy\n");
    assert_eq!(out.status.code(), Some(3), "the exit code comes back");

    // kubectl run -it --rm: typed input reaches the shell, the pod goes.
    let shown = on_terminal(
        &c,
        "",
        &format!("run -it --rm talk --image={BUSYBOX} --restart=Never -- sh"),
        "echo hello-$((6*7))\nexit\n",
    );
    assert!(shown.contains("hello-42"), "run -it: {shown}");
    wait_for("the pod of run --rm to go", LIMIT, || {
        (!c.kubectl(&["get", "pod", "talk"]).status.success()).then_some(())
    });

    // kubectl attach sees what is written after it attached: nothing is
    // written before /tmp/go exists.
    create(
        &c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: quiet}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {BUSYBOX}\n    command: [sh, -c, 'while [ ! -f /tmp/go ]; do sleep 0.1; done; while true; do echo tick; sleep 0.2; done']\n"
        ),
    );
    running(&c, "quiet");
    let mut attach = c
        .kubectl_cmd(&["attach", "quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    c.ok(&["exec", "quiet", "--", "touch", "/tmp/go"]);
    let mut first = String::new();
    let mut lines = BufReader::new(attach.stdout.take().unwrap());
    lines.read_line(&mut first).unwrap();
    let _ = attach.kill();
    let _ = attach.wait();
    assert_eq!(
        first.trim(),
        "tick",
        "attach shows output written after it attached"
    );
    let mut attach = c
        .kubectl_cmd(&["attach", "quiet"])
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(attach.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = attach.kill();
    let _ = attach.wait();
    assert_eq!(line.trim(), "tick", "attach over SPDY");

    // What the node agent did, in `kubectl describe pod`.
    let pod = |name: &str, image: &str, command: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    command: [sh, -c, '{command}']\n{extra}"
        )
    };
    create(
        &c,
        &pod(
            "sick",
            BUSYBOX,
            "sleep 3600",
            "    livenessProbe:\n      exec: {command: [sh, -c, 'echo not well; exit 1']}\n      periodSeconds: 1\n      failureThreshold: 1\n",
        ),
    );
    create(&c, &pod("crashing", BUSYBOX, "exit 3", ""));
    create(&c, &pod("missing", "skiff.local/missing:1", "true", ""));
    wait_for("Unhealthy and Killing events", LIMIT, || {
        let e = described_events(&c, "sick");
        (e.contains("Unhealthy")
            && e.contains("Liveness probe failed: not well")
            && e.contains("Killing")
            && e.contains("failed liveness probe, will be restarted"))
        .then_some(())
    });
    wait_for("a BackOff event", LIMIT, || {
        let e = described_events(&c, "crashing");
        (e.contains("BackOff") && e.contains("Back-off restarting failed container main"))
            .then_some(())
    });
    wait_for(
        "Failed and BackOff events of a missing image",
        LIMIT,
        || {
            let e = described_events(&c, "missing");
            (e.contains("Failed to pull image \"skiff.local/missing:1\"")
                && e.contains("Error: ErrImagePull")
                && e.contains("Back-off pulling image"))
            .then_some(())
        },
    );
    // Repeats are counted on one event, not recorded again.
    let events = c.json(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crashing,reason=Pulled",
    ]);
    let items = events["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "one Pulled event for the crashing pod: {events}"
    );

    c.ok(&[
        "delete",
        "pods",
        "--all",
        "--grace-period=1",
        "--timeout=60s",
    ]);
}
