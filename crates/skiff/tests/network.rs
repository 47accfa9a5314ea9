//! The pod network, Services and DNS across two nodes. The test bed: a
//! bridge this test creates with the server on it, and two agents, each in
//! its own network namespace with its own containerd, joined to the bridge
//! by veth pairs. Everything is torn down by its own names afterwards.
//! Needs root and the packages `.ci/run` installs.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{assert_success, create, pod, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(90);
const SUBNET: &str = "10.99.0";

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert_success(&out, &format!("{args:?}"));
}

/// One simulated host: a network namespace running `skiff agent`.
struct Host {
    name: String,
    netns: String,
    ip: String,
    dir: PathBuf,
    agent: Option<Child>,
}

/// The bridge, the namespaces and the agents; dropped, it removes them all.
struct Bed {
    bridge: String,
    hosts: Vec<Host>,
    c: Cluster,
    /// The ingress controller's HTTP port on the server.
    ingress: u16,
    /// Routes from the server's side to the nodes' pods, as `ip route` args.
    routes: Vec<Vec<String>>,
}

impl Bed {
    fn start(images: &Path) -> Self {
        let tag = std::process::id() % 100_000;
        let bridge = format!("skb{tag}");
        run(&["ip", "link", "add", &bridge, "type", "bridge"]);
        let mut bed = Bed {
            bridge: bridge.clone(),
            hosts: Vec::new(),
            c: Cluster::unstarted(false),
            ingress: support::free_port(),
            routes: Vec::new(),
        };
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{SUBNET}.1/24"),
            "dev",
            &bridge,
        ]);
        run(&["ip", "link", "set", &bridge, "up"]);
        for i in 1..=2 {
            let netns = format!("skn{tag}-{i}");
            let (outside, inside) = (format!("skv{tag}h{i}"), format!("skv{tag}n{i}"));
            run(&["ip", "netns", "add", &netns]);
            bed.hosts.push(Host {
                name: format!("node-{i}"),
                netns: netns.clone(),
                ip: format!("{SUBNET}.1{i}"),
                dir: bed.c.dir.path().join(format!("node-{i}")),
                agent: None,
            });
            run(&[
                "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            run(&["ip", "link", "set", &outside, "master", &bridge, "up"]);
            run(&["ip", "link", "set", &inside, "netns", &netns]);
            let ns = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &netns];
                all.extend_from_slice(args);
                run(&all);
            };
            ns(&[
                "ip",
                "addr",
                "add",
                &format!("{SUBNET}.1{i}/24"),
                "dev",
                &inside,
            ]);
            ns(&["ip", "link", "set", &inside, "up"]);
            ns(&["ip", "link", "set", "lo", "up"]);
        }
        let (http, https) = (bed.ingress.to_string(), support::free_port().to_string());
        bed.c.spawn(&[
            "--bind-address",
            &format!("{SUBNET}.1"),
            "--ingress-port",
            &http,
            "--ingress-https-port",
            &https,
        ]);
        for h in &mut bed.hosts {
            std::fs::create_dir_all(&h.dir).unwrap();
            let log = std::fs::File::create(h.dir.join("agent.log")).unwrap();
            // nsenter changes only the network namespace: `ip netns exec`
            // would also remount /sys and hide the cgroup mounts runc needs.
            let agent = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", h.netns))
                .args([env!("CARGO_BIN_EXE_skiff"), "agent"])
                .args(["--server", &format!("https://{SUBNET}.1:{}", bed.c.port)])
                .arg("--token-file")
                .arg(bed.c.dir.path().join("node-token"))
                .arg("--data-dir")
                .arg(&h.dir)
                .args(["--node-name", &h.name, "--node-ip", &h.ip])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            h.agent = Some(agent);
        }
        for h in &bed.hosts {
            let socket = h.dir.join("containerd/containerd.sock");
            wait_for("the agent's containerd", LIMIT, || {
                socket.exists().then_some(())
            });
            support::import_images(&h.dir, images);
        }
        wait_for("both nodes Ready", LIMIT, || {
            let nodes = bed.c.json(&["get", "nodes"]);
            let ready = nodes["items"]
                .as_array()?
                .iter()
                .filter(|n| {
                    n["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .count();
            (ready == 2).then_some(())
        });
        // The server's host is on the nodes' network, as a node would be:
        // the ingress controller reaches pods through their node.
        for node in bed.c.json(&["get", "nodes"])["items"].as_array().unwrap() {
            let cidr = node["spec"]["podCIDR"].as_str().unwrap().to_owned();
            let ip = node["status"]["addresses"][0]["address"]
                .as_str()
                .unwrap()
                .to_owned();
            let spec = vec![cidr, "via".to_owned(), ip];
            let mut args = vec!["ip", "route", "add"];
            args.extend(spec.iter().map(String::as_str));
            run(&args);
            bed.routes.push(spec);
        }
        bed
    }

    /// `ip netns exec <host> …`, its output.
    fn exec(&self, host: usize, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts[host].netns])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for spec in &self.routes {
            let _ = Command::new("ip")
                .args(["route", "delete"])
                .args(spec)
                .status();
        }
        for h in &mut self.hosts {
            if let Some(mut agent) = h.agent.take() {
                // SIGTERM: the agent stops its containerd and removes its
                // rules and routes.
                let _ = Command::new("kill")
                    .args(["-TERM", &agent.id().to_string()])
                    .status();
                let _ = agent.wait();
            }
            support::stop_containerd(&h.dir);
        }
        support::unmount_under(self.c.dir.path());
        for h in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "delete", &h.netns])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .status();
    }
}

#[test]
fn services_dns_and_pod_network_across_two_nodes() {
    let images = support::build_images();
    let bed = Bed::start(images.path());
    let c = &bed.c;
    create(c, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}\n      containers:\n      - name: httpd\n        image: skiff.local/busybox:1\n        imagePullPolicy: Never\n        command: [sh, -c, 'mkdir -p /www && hostname > /www/index.html && httpd -f -p 8080 -h /www']\n        ports: [{name: http, containerPort: 8080}]\n        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web-pods}\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports: [{name: http, port: 8080}]\n");
    for h in &bed.hosts {
        create(c, &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: client-{0}}}\nspec:\n  nodeName: {0}\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: skiff.local/busybox:1, imagePullPolicy: Never, command: [sleep, '3600']}}]\n", h.name));
    }
    c.ok(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    let backends: Vec<Value> = c.json(&["get", "pods", "-l", "app=web"])["items"]
        .as_array()
        .unwrap()
        .clone();
    let nodes: BTreeSet<&str> = backends
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(nodes.len(), 2, "one backend per node");
    let names: BTreeSet<String> = backends
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let ips: BTreeSet<String> = backends
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_owned())
        .collect();
    for h in &bed.hosts {
        wait_for("the client pods to run", LIMIT, || {
            (pod(c, &format!("client-{}", h.name))["status"]["phase"] == "Running").then_some(())
        });
    }
    let fetch = |client: &str, target: &str| {
        c.kubectl(&[
            "exec",
            client,
            "--",
            "timeout",
            "3",
            "wget",
            "-qO-",
            &format!("http://{target}/"),
        ])
    };
    let svc = c.json(&["get", "service", "web"]);
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();

    // From either node, through the ClusterIP and the DNS name, both
    // backends answer.
    for h in &bed.hosts {
        let client = format!("client-{}", h.name);
        for target in [cluster_ip.as_str(), "web", "web.default.svc.cluster.local"] {
            let mut seen = BTreeSet::new();
            wait_for(
                &format!("both backends at {target} from {client}"),
                LIMIT,
                || {
                    let out = fetch(&client, target);
                    if out.status.success() {
                        seen.insert(String::from_utf8_lossy(&out.stdout).trim().to_owned());
                    }
                    (seen == names).then_some(())
                },
            );
        }
    }
    // Pod to pod by IP, across nodes.
    let far = backends
        .iter()
        .find(|p| p["spec"]["nodeName"] == "node-2")
        .unwrap();
    let far_ip = far["status"]["podIP"].as_str().unwrap();
    let out = fetch("client-node-1", &format!("{far_ip}:8080"));
    assert_success(&out, "fetch across nodes");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        far["metadata"]["name"].as_str().unwrap()
    );
    // A Service without a selector reaches what its Endpoints list, through
    // the slice mirrored from them.
    create(c, &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: manual}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: manual}}\nsubsets:\n- addresses: [{{ip: {far_ip}}}]\n  ports: [{{name: http, port: 8080}}]\n"));
    let slices = wait_for("the mirrored slice", LIMIT, || {
        let list = c.json(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=manual",
        ]);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty()).then_some(items)
    });
    let labels = &slices[0]["metadata"]["labels"];
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslicemirroring-controller.k8s.io"
    );
    assert_eq!(slices[0]["endpoints"][0]["addresses"][0], far_ip);
    let manual = c.json(&["get", "service", "manual"]);
    let manual_ip = manual["spec"]["clusterIP"].as_str().unwrap();
    let body = wait_for("the selectorless Service to answer", LIMIT, || {
        let out = fetch("client-node-1", manual_ip);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    assert_eq!(body, far["metadata"]["name"].as_str().unwrap());
    c.ok(&["delete", "service", "manual"]);
    wait_for("the mirrored slice to go with its Service", LIMIT, || {
        let list = c.json(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=manual",
        ]);
        list["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
    // The headless Service resolves to both pods.
    let looked_up = c.ok(&[
        "exec",
        "client-node-1",
        "--",
        "nslookup",
        "web-pods.default.svc.cluster.local",
    ]);
    assert!(
        ips.iter().all(|ip| looked_up.contains(ip.as_str())),
        "{looked_up}"
    );
    // The NodePort answers on each node's IP, from outside the nodes.
    for h in &bed.hosts {
        let body = wait_for(&format!("the NodePort on {}", h.ip), LIMIT, || {
            http_get(&format!("{}:{node_port}", h.ip))
        });
        assert!(names.contains(body.trim()), "{body}");
    }
    // `Local` traffic policies: each node's clients and NodePort reach
    // that node's backend only.
    let backend_on = |node: &str| -> String {
        let p = backends
            .iter()
            .find(|p| p["spec"]["nodeName"] == node)
            .unwrap();
        p["metadata"]["name"].as_str().unwrap().to_owned()
    };
    let local = r#"{"spec": {"internalTrafficPolicy": "Local", "externalTrafficPolicy": "Local"}}"#;
    c.ok(&["patch", "service", "web", "-p", local]);
    for (i, h) in bed.hosts.iter().enumerate() {
        // Each node's proxy has moved both kinds of traffic to chains of
        // its own endpoints...
        wait_for(&format!("the Local chains on {}", h.name), LIMIT, || {
            let list = |map: &str| {
                let out = bed.exec(i, &["nft", "list", "map", "ip", "skiff", map]);
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let internal =
                list("services").contains(&format!("{cluster_ip} . tcp . 80 : jump svl-"));
            let external = list("nodeports").contains(&format!("tcp . {node_port} : jump svx-"));
            (internal && external).then_some(())
        });
        // ...so every request lands there.
        let client = format!("client-{}", h.name);
        let mine = backend_on(&h.name);
        for _ in 0..8 {
            let out = fetch(&client, &cluster_ip);
            assert_success(&out, "fetch through a Local ClusterIP");
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), mine);
            let body = http_get(&format!("{}:{node_port}", h.ip));
            assert_eq!(body.as_deref().map(str::trim), Some(mine.as_str()));
        }
    }
    let cluster =
        r#"{"spec": {"internalTrafficPolicy": "Cluster", "externalTrafficPolicy": "Cluster"}}"#;
    c.ok(&["patch", "service", "web", "-p", cluster]);
    let mine: Vec<String> = bed.hosts.iter().map(|h| backend_on(&h.name)).collect();
    traffic_distribution(c, &bed, &fetch, &cluster_ip, &mine);
    // A load balancer's address (here the first node's own, as a balancer
    // that hands out node addresses writes it) takes the Service's port,
    // from the Service's source ranges only.
    let lb = format!("{}:80", bed.hosts[0].ip);
    c.ok(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec": {"type": "LoadBalancer"}}"#,
    ]);
    let status = format!(
        r#"{{"status": {{"loadBalancer": {{"ingress": [{{"ip": "{}"}}]}}}}}}"#,
        bed.hosts[0].ip
    );
    c.ok(&[
        "patch",
        "service",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    let body = wait_for("the balancer's address to answer", LIMIT, || http_get(&lb));
    assert!(names.contains(body.trim()), "{body}");
    let outside = r#"{"spec": {"loadBalancerSourceRanges": ["192.0.2.0/24"]}}"#;
    c.ok(&["patch", "service", "web", "-p", outside]);
    wait_for(
        "a firewall in front of the balancer's address",
        LIMIT,
        || {
            let out = bed.exec(0, &["nft", "list", "map", "ip", "skiff", "services"]);
            let map = String::from_utf8_lossy(&out.stdout).into_owned();
            let wall = format!("{} . tcp . 80 : jump fw-", bed.hosts[0].ip);
            map.contains(&wall).then_some(())
        },
    );
    assert_eq!(http_get(&lb), None, "this client is outside the ranges");
    let node_port_there = format!("{}:{node_port}", bed.hosts[0].ip);
    assert!(
        http_get(&node_port_there).is_some(),
        "NodePorts are not filtered"
    );
    let inside = format!(r#"{{"spec": {{"loadBalancerSourceRanges": ["{SUBNET}.0/24"]}}}}"#);
    c.ok(&["patch", "service", "web", "-p", &inside]);
    wait_for("the balancer to answer its ranges", LIMIT, || http_get(&lb));
    health_checks(c, &bed, &backend_on("node-2"));
    let back = r#"[{"op": "remove", "path": "/spec/loadBalancerSourceRanges"}, {"op": "replace", "path": "/spec/type", "value": "NodePort"}]"#;
    c.ok(&["patch", "service", "web", "--type=json", "-p", back]);
    network_policies(c, &backends, &fetch, &cluster_ip);
    // An Ingress on the server routes by host and path to the backends.
    create(c, "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: app}\nspec:\n  rules:\n  - host: app.test\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::builder()
        .resolve(
            "app.test",
            (std::net::Ipv4Addr::new(10, 99, 0, 1), bed.ingress).into(),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!("http://app.test:{}/", bed.ingress);
    let mut seen = BTreeSet::new();
    wait_for("both backends through the Ingress", LIMIT, || {
        let body = runtime.block_on(async {
            let r = client.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())?;
            r.text().await.ok()
        });
        if let Some(b) = body {
            seen.insert(b.trim().to_owned());
        }
        (seen == names).then_some(())
    });
    // No endpoints: connections fail at once; scaling back restores.
    c.ok(&["scale", "deploy/web", "--replicas=0"]);
    wait_for("the Service to refuse connections", LIMIT, || {
        let out = fetch("client-node-1", &cluster_ip);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let refused = text.contains("No route to host") || text.contains("refused");
        (!out.status.success() && refused).then_some(())
    });
    c.ok(&["scale", "deploy/web", "--replicas=2"]);
    wait_for("the Service to answer again", LIMIT, || {
        fetch("client-node-2", &cluster_ip)
            .status
            .success()
            .then_some(())
    });
    // Deleting the Service removes its rules on every node.
    c.ok(&["delete", "service", "web"]);
    for i in 0..bed.hosts.len() {
        wait_for("the Service's rules to go", LIMIT, || {
            let out = bed.exec(i, &["nft", "list", "map", "ip", "skiff", "services"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success() && !text.contains(&cluster_ip)).then_some(())
        });
    }

    // A local-path claim is made on its first pod's node; the next pod,
    // free to go to either node, goes there too and finds the file.
    create(c, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 16Mi}}\n");
    let user = |name: &str, node: Option<&str>| {
        let selector = node.map_or(String::new(), |n| {
            format!("  nodeSelector: {{kubernetes.io/hostname: {n}}}\n")
        });
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{selector}  terminationGracePeriodSeconds: 1\n  volumes: [{{name: data, persistentVolumeClaim: {{claimName: data}}}}]\n  containers: [{{name: c, image: skiff.local/busybox:1, imagePullPolicy: Never, command: [sh, -c, 'echo {name} >> /data/log; sleep 3600'], volumeMounts: [{{name: data, mountPath: /data}}]}}]\n")
    };
    create(c, &user("first", Some("node-2")));
    wait_for("the first user to run", LIMIT, || {
        (pod(c, "first")["status"]["phase"] == "Running").then_some(())
    });
    c.ok(&["delete", "pod", "first", "--wait=true", "--timeout=60s"]);
    create(c, &user("second", None));
    let second = wait_for("the second user to run", LIMIT, || {
        let p = pod(c, "second");
        (p["status"]["phase"] == "Running").then_some(p)
    });
    assert_eq!(
        second["spec"]["nodeName"], "node-2",
        "the pod follows its volume"
    );
    let log = c.ok(&["exec", "second", "--", "cat", "/data/log"]);
    assert_eq!(log, "first\nsecond\n");
}

/// With `trafficDistribution: PreferClose`, then with the annotation
/// `service.kubernetes.io/topology-mode: Auto`, and each node in a zone of
/// its own, the slices carry zone hints and each node's clients reach the
/// backend in their zone only (`mine[i]`, on host `i`); without either,
/// both again.
fn traffic_distribution(
    c: &Cluster,
    bed: &Bed,
    fetch: &dyn Fn(&str, &str) -> std::process::Output,
    cluster_ip: &str,
    mine: &[String],
) {
    for h in &bed.hosts {
        let zone = format!("topology.kubernetes.io/zone=zone-{}", h.name);
        c.ok(&["label", "node", &h.name, &zone]);
    }
    let close = r#"{"spec": {"trafficDistribution": "PreferClose"}}"#;
    let anywhere = r#"{"spec": {"trafficDistribution": null}}"#;
    let auto = r#"{"metadata": {"annotations": {"service.kubernetes.io/topology-mode": "Auto"}}}"#;
    let manual = r#"{"metadata": {"annotations": {"service.kubernetes.io/topology-mode": null}}}"#;
    for (on, off) in [(close, anywhere), (auto, manual)] {
        c.ok(&["patch", "service", "web", "-p", on]);
        keeps_to_zones(c, bed, fetch, cluster_ip, mine);
        c.ok(&["patch", "service", "web", "-p", off]);
        let client = format!("client-{}", bed.hosts[0].name);
        let mut seen = BTreeSet::new();
        wait_for("both zones again", LIMIT, || {
            let out = fetch(&client, cluster_ip);
            if out.status.success() {
                seen.insert(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            (seen.len() == 2).then_some(())
        });
    }
}

/// Waits for the slice's zone hints, then for each node's client to reach
/// only the backend in its zone.
fn keeps_to_zones(
    c: &Cluster,
    bed: &Bed,
    fetch: &dyn Fn(&str, &str) -> std::process::Output,
    cluster_ip: &str,
    mine: &[String],
) {
    wait_for("zone hints in the slice", LIMIT, || {
        let slices = c.json(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ]);
        let endpoints = slices["items"][0]["endpoints"].as_array()?.clone();
        let hinted = endpoints.iter().all(|e| {
            let zone = e["zone"].as_str().unwrap_or("none");
            e["hints"]["forZones"][0]["name"] == zone
        });
        (endpoints.len() == 2 && hinted).then_some(())
    });
    for (h, mine) in bed.hosts.iter().zip(mine) {
        let client = format!("client-{}", h.name);
        wait_for(&format!("{client} to keep to its zone"), LIMIT, || {
            let answers: BTreeSet<String> = (0..8)
                .filter_map(|_| {
                    let out = fetch(&client, cluster_ip);
                    out.status
                        .success()
                        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
                })
                .collect();
            (answers.len() == 1 && answers.contains(mine)).then_some(())
        });
    }
}

/// With `externalTrafficPolicy: Local`, a LoadBalancer gets a
/// health-check NodePort that each node answers as kube-proxy does: 200
/// where the Service has a ready endpoint, 503 where it has none. Here
/// only `backend` (on node-2) stays selected.
fn health_checks(c: &Cluster, bed: &Bed, backend: &str) {
    let local = r#"{"spec": {"externalTrafficPolicy": "Local"}}"#;
    c.ok(&["patch", "service", "web", "-p", local]);
    let svc = c.json(&["get", "service", "web"]);
    let port = svc["spec"]["healthCheckNodePort"]
        .as_u64()
        .unwrap_or_else(|| panic!("no health-check port: {svc}"));
    c.ok(&["label", "pod", backend, "health=only"]);
    let only = r#"{"spec": {"selector": {"health": "only"}}}"#;
    c.ok(&["patch", "service", "web", "-p", only]);
    let reply = |i: usize| http_reply(&format!("{}:{port}", bed.hosts[i].ip));
    wait_for("node-1 to have no endpoint", LIMIT, || {
        let (head, body) = reply(0)?;
        (head.contains(" 503 ") && body.contains("\"localEndpoints\": 0")).then_some(())
    });
    let (head, body) = wait_for("node-2 to have its endpoint", LIMIT, || {
        reply(1).filter(|(head, _)| head.contains(" 200 "))
    });
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        head.contains("x-load-balancing-endpoint-weight: 1"),
        "{head}"
    );
    assert_eq!(
        body,
        "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
    );
    let back = r#"{"spec": {"externalTrafficPolicy": "Cluster", "selector": {"health": null}}}"#;
    c.ok(&["patch", "service", "web", "-p", back]);
    let svc = c.json(&["get", "service", "web"]);
    assert!(svc["spec"].get("healthCheckNodePort").is_none(), "{svc}");
    wait_for("the health-check port to close", LIMIT, || {
        reply(1).is_none().then_some(())
    });
}

/// NetworkPolicies, on both nodes: the web pods admit only the client
/// labelled `role: allowed`, on their named port, whether it is on their
/// node (bridged traffic) or not, and through the Service too; an egress
/// policy lets that client reach one address only.
fn network_policies(
    c: &Cluster,
    backends: &[Value],
    fetch: &dyn Fn(&str, &str) -> std::process::Output,
    cluster_ip: &str,
) {
    let ip = |p: &Value| p["status"]["podIP"].as_str().unwrap().to_owned();
    let targets: Vec<String> = backends.iter().map(|p| format!("{}:8080", ip(p))).collect();
    let answered = |client: &str, t: &str| fetch(client, t).status.success();
    c.ok(&["label", "pod", "client-node-1", "role=allowed"]);
    create(c, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: allowed}}}]\n    ports: [{port: http}]\n");
    wait_for("both backends to refuse client-node-2", LIMIT, || {
        targets
            .iter()
            .all(|t| !answered("client-node-2", t))
            .then_some(())
    });
    for t in &targets {
        assert!(answered("client-node-1", t), "the allowed client, to {t}");
    }
    assert!(
        !answered("client-node-2", cluster_ip),
        "nor through the Service"
    );
    c.ok(&["delete", "networkpolicy", "web"]);
    wait_for("both backends to answer client-node-2 again", LIMIT, || {
        targets
            .iter()
            .all(|t| answered("client-node-2", t))
            .then_some(())
    });
    // Egress: the allowed client may reach the node-2 backend only.
    let far_pod = backends
        .iter()
        .find(|p| p["spec"]["nodeName"] == "node-2")
        .unwrap();
    let far_ip = ip(far_pod);
    let far = format!("{far_ip}:8080");
    let near = targets.iter().find(|t| **t != far).unwrap().clone();
    create(c, &format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: out}}\nspec:\n  podSelector: {{matchLabels: {{role: allowed}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {far_ip}/32}}}}]\n"));
    wait_for("client-node-1 to reach only the far backend", LIMIT, || {
        (!answered("client-node-1", &near)).then_some(())
    });
    assert!(answered("client-node-1", &far), "the allowed address");
    assert!(
        answered("client-node-2", &near),
        "other pods are not isolated"
    );
    c.ok(&["delete", "networkpolicy", "out"]);
}

/// A plain HTTP GET from the test process; the body on a 200.
fn http_get(addr: &str) -> Option<String> {
    let (head, body) = http_reply(addr)?;
    head.contains(" 200 ").then_some(body)
}

/// A plain HTTP GET from the test process: the reply's head and body.
fn http_reply(addr: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut conn =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(3)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}
