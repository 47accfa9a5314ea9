//! Isolation as asked for, with real containers: each securityContext
//! field observed from inside the container, host namespaces, runAsNonRoot
//! refusing a root image, settings the agent cannot apply refused at
//! admission, and every path escape from a pod spec refused with the host
//! untouched. Needs root and `scripts/setup.sh --test`.

mod support;

use std::time::Duration;

use support::{assert_success, create, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(90);
const BUSYBOX: &str = "skiff.local/busybox:1";

fn pod(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{spec}"
    )
}

fn container(security: &str) -> String {
    format!("  containers:\n  - name: main\n    image: {BUSYBOX}\n    command: [sleep, '3600']\n{security}")
}

fn running(c: &Cluster, name: &str) {
    wait_for(&format!("pod {name} Running"), LIMIT, || {
        (support::pod(c, name)["status"]["phase"] == "Running").then_some(())
    });
}

fn exec(c: &Cluster, name: &str, command: &str) -> String {
    let out = c.kubectl(&["exec", name, "--", "sh", "-c", command]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `kubectl apply` of `manifest` fails; returns what it said.
fn refused(c: &Cluster, manifest: &str) -> String {
    c.fails_stdin(manifest)
}

#[test]
fn isolation_is_applied_or_refused() {
    let real = support::real_cluster(&[]);
    let c = &real.c;

    // Users, groups, capabilities, no_new_privs, read-only root.
    create(
        c,
        &pod(
            "locked",
            &format!(
                "  securityContext: {{runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, seccompProfile: {{type: RuntimeDefault}}}}\n{}",
                container("    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}\n")
            ),
        ),
    );
    // The same image with no settings, to compare.
    create(c, &pod("open", &container("")));
    running(c, "locked");
    running(c, "open");
    let id = exec(c, "locked", "id");
    assert!(
        id.contains("uid=1000") && id.contains("gid=3000") && id.contains("2000"),
        "{id}"
    );
    let status = exec(
        c,
        "locked",
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "a seccomp filter: {status}");
    let open = exec(
        c,
        "open",
        "id; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status",
    );
    assert!(
        open.contains("uid=0") && open.contains("NoNewPrivs:\t0"),
        "{open}"
    );
    assert!(!open.contains("CapEff:\t0000000000000000"), "{open}");
    let write = exec(c, "locked", "touch /x && echo wrote");
    assert!(
        write.contains("Read-only file system") && !write.contains("wrote"),
        "{write}"
    );

    // Secrets live on tmpfs, never on the node's disk.
    c.ok(&["create", "secret", "generic", "sec", "--from-literal=k=v"]);
    create(
        c,
        &pod(
            "secretive",
            &format!(
                "  volumes:\n  - name: sec\n    secret: {{secretName: sec}}\n{}    volumeMounts: [{{name: sec, mountPath: /s}}]\n",
                container("")
            ),
        ),
    );
    running(c, "secretive");
    assert_eq!(exec(c, "secretive", "cat /s/k"), "v");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let dir = c.dir.path().display().to_string();
    let on_tmpfs = mounts.lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields[0] == "tmpfs" && fields[1].starts_with(&dir) && fields[1].ends_with("/volumes/sec")
    });
    assert!(on_tmpfs, "the secret volume is a tmpfs");

    // fsGroup owns the volumes: an emptyDir a non-root user may write, a
    // secret its group may read.
    create(
        c,
        &pod(
            "grouped",
            &format!(
                "  securityContext: {{runAsUser: 1000, fsGroup: 2000}}
  volumes:
  - name: data
    emptyDir: {{}}
  - name: sec
    secret: {{secretName: sec, defaultMode: 0400}}
{}    volumeMounts: [{{name: data, mountPath: /data}}, {{name: sec, mountPath: /s}}]
",
                container("")
            ),
        ),
    );
    running(c, "grouped");
    let owned = exec(
        c,
        "grouped",
        "stat -c '%g %a' /data /s/k; touch /data/f && stat -c '%g' /data/f; cat /s/k",
    );
    assert_eq!(owned, "2000 2777\n2000 440\n2000\nv", "{owned}");
    // A volume the node cannot mount is refused, not left out.
    create(
        c,
        &pod(
            "claims",
            &format!(
                "  volumes:
  - name: data
    nfs: {{server: 127.0.0.1, path: /exports}}
{}    volumeMounts: [{{name: data, mountPath: /data}}]
",
                container("")
            ),
        ),
    );
    wait_for("claims to be refused", LIMIT, || {
        let p = support::pod(c, "claims");
        let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        let message = waiting["message"].as_str().unwrap_or_default();
        (waiting["reason"] == "CreateContainerConfigError"
            && message.contains("nfs volumes are not supported"))
        .then_some(())
    });

    // Host namespaces.
    create(
        c,
        &pod(
            "host",
            &format!("  hostNetwork: true\n  hostPID: true\n{}", container("")),
        ),
    );
    running(c, "host");
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(exec(c, "host", "hostname").trim(), host_name.trim());
    let links = exec(c, "host", "cat /proc/net/dev");
    assert!(
        links.contains("skiff0"),
        "the node's own bridge is visible: {links}"
    );
    let processes = exec(c, "host", "ps");
    assert!(
        processes.contains("containerd"),
        "host processes visible: {processes}"
    );
    let own = exec(c, "open", "ps");
    assert!(!own.contains("containerd"), "{own}");
    assert_eq!(support::pod(c, "host")["status"]["podIP"], "127.0.0.1");

    // runAsNonRoot with an image that runs as root.
    create(
        c,
        &pod(
            "rooted",
            &container("    securityContext: {runAsNonRoot: true}\n"),
        ),
    );
    wait_for("runAsNonRoot refused", LIMIT, || {
        let p = support::pod(c, "rooted");
        let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
        (waiting["reason"] == "CreateContainerConfigError"
            && waiting["message"]
                .as_str()?
                .contains("container has runAsNonRoot and image will run as root"))
        .then_some(())
    });

    // AppArmor: where the kernel enforces it, a confined container runs
    // under the runtime's profile; where it does not, the node refuses
    // the pod in upstream's words. Unconfined runs anywhere.
    create(
        c,
        &pod(
            "confined",
            &container("    securityContext: {appArmorProfile: {type: RuntimeDefault}}\n"),
        ),
    );
    create(
        c,
        &pod(
            "unconfined",
            &container("    securityContext: {appArmorProfile: {type: Unconfined}}\n"),
        ),
    );
    running(c, "unconfined");
    match skiff_kubelet::app_armor::host_problem() {
        Some(problem) => {
            let p = wait_for("the confined pod refused", LIMIT, || {
                let p = support::pod(c, "confined");
                (p["status"]["phase"] == "Failed").then_some(p)
            });
            assert_eq!(p["status"]["reason"], "AppArmor");
            let message = format!("Pod was rejected: Cannot enforce AppArmor: {problem}");
            assert_eq!(p["status"]["message"], message.as_str());
        }
        None => {
            running(c, "confined");
            let label = exec(c, "confined", "cat /proc/self/attr/current");
            assert!(label.contains("(enforce)"), "{label}");
        }
    }

    // A node's own seccomp profile, from its profile directory: this one
    // refuses to make directories. One the node lacks stops the container
    // at the runtime; one outside the directory is refused by the API.
    let profiles = c.dir.path().join("agent/seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let localhost = |name: &str| {
        format!("    securityContext: {{seccompProfile: {{type: Localhost, localhostProfile: {name}}}}}\n")
    };
    create(
        c,
        &pod("filtered", &container(&localhost("profiles/no-mkdir.json"))),
    );
    running(c, "filtered");
    let made = exec(c, "filtered", "mkdir /tmp/made && echo made");
    assert!(
        made.contains("Operation not permitted") && !made.contains("\nmade"),
        "{made}"
    );
    assert!(exec(c, "open", "mkdir /tmp/made && echo made").contains("made"));
    create(
        c,
        &pod(
            "unfiltered",
            &container(&localhost("profiles/missing.json")),
        ),
    );
    wait_for(
        "a missing seccomp profile stops the container",
        LIMIT,
        || {
            let p = support::pod(c, "unfiltered");
            let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            let message = waiting["message"].as_str()?;
            (waiting["reason"] == "CreateContainerError" && message.contains("missing.json"))
                .then_some(())
        },
    );
    let said = refused(c, &pod("never", &container(&localhost("../no-mkdir.json"))));
    assert!(said.contains("must not contain '..'"), "{said}");

    // Settings the agent cannot apply are refused at admission.
    for security in [
        "    securityContext: {procMount: Unmasked}\n",
        "    securityContext: {seLinuxOptions: {level: s0}}\n",
    ] {
        let said = refused(c, &pod("never", &container(security)));
        assert!(said.contains("Forbidden"), "{security}: {said}");
    }
    let said = refused(
        c,
        &pod(
            "never",
            &format!(
                "  securityContext: {{sysctls: [{{name: kernel.msgmax, value: '1'}}]}}\n{}",
                container("")
            ),
        ),
    );
    assert!(said.contains("not a safe sysctl"), "{said}");

    // Path escapes: refused, the host untouched.
    let before = std::fs::read_dir("/etc").unwrap().count();
    for (volume, mount) in [
        ("  - name: /etc/cron.d\n    configMap: {name: cfg}\n", "/etc/cron.d"),
        ("  - name: v\n    configMap: {name: cfg, items: [{key: a, path: ../../../../etc/escaped}]}\n", "v"),
        ("  - name: v\n    emptyDir: {medium: Memory}\n", "v"),
    ] {
        let sub = if volume.contains("emptyDir") { ", subPath: /" } else { "" };
        let manifest = pod(
            "escape",
            &format!(
                "  volumes:\n{volume}  containers:\n  - name: main\n    image: {BUSYBOX}\n    volumeMounts: [{{name: {mount:?}, mountPath: /m{sub}}}]\n"
            ),
        );
        let said = refused(c, &manifest);
        assert!(said.contains("Invalid value"), "{volume}: {said}");
    }
    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {'../escaped': x}\n",
    );
    assert!(!out.status.success(), "a key that climbs is refused");
    assert_eq!(std::fs::read_dir("/etc").unwrap().count(), before);
    assert!(!std::path::Path::new("/etc/escaped").exists());
    // A link a container plants in its volume is not followed by a subPath
    // (the init container plants it before the other starts).
    create(
        c,
        &pod(
            "planter",
            &format!(
                "  volumes:\n  - name: v\n    emptyDir: {{}}\n  initContainers:\n  - name: main\n    image: {BUSYBOX}\n    command: [busybox, ln, -s, /, /m/root]\n    volumeMounts: [{{name: v, mountPath: /m}}]\n  containers:\n  - name: follower\n    image: {BUSYBOX}\n    command: [sh, -c, 'until ls /host/etc/hostname; do sleep 1; done; sleep 3600']\n    volumeMounts: [{{name: v, mountPath: /host, subPath: root}}]\n"
            ),
        ),
    );
    wait_for("the subPath through a link refused", LIMIT, || {
        let p = support::pod(c, "planter");
        let statuses = p["status"]["containerStatuses"].as_array()?.clone();
        let follower = statuses.iter().find(|s| s["name"] == "follower")?;
        let message = follower["state"]["waiting"]["message"].as_str()?;
        message.contains("symbolic link").then_some(())
    });

    let out = c.kubectl(&["delete", "pods", "--all", "--timeout=60s"]);
    assert_success(&out, "delete pods");
}
