//! Service addresses with the real kubectl: ClusterIPs from the service
//! range (the first for `kubernetes`), NodePorts from 30000–32767,
//! collisions refused, headless Services, allocations freed on delete and
//! kept across a restart.

mod support;

use std::time::Duration;

use support::{create, wait_for, Cluster};

fn service(name: &str, kind: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: {kind}\n  selector: {{app: web}}\n{extra}  ports:\n  - {{name: http, port: 80, targetPort: http}}\n  - {{name: tls, port: 443, targetPort: 8443}}\n")
}

#[test]
fn services_get_addresses_that_never_collide() {
    let mut c = Cluster::start();
    let kubernetes = c.json(&["get", "service", "kubernetes"]);
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.43.0.1");
    let endpoints = c.json(&["get", "endpoints", "kubernetes"]);
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    assert_eq!(
        endpoints["subsets"][0]["ports"][0]["port"].as_u64(),
        Some(u64::from(c.port))
    );

    create(&c, &service("web", "NodePort", ""));
    let web = c.json(&["get", "service", "web"]);
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.43.") && ip != "10.43.0.1", "{ip}");
    assert_eq!(web["spec"]["clusterIPs"][0], ip.as_str());
    let ports: Vec<u64> = web["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["nodePort"].as_u64().unwrap())
        .collect();
    assert!(
        ports.iter().all(|p| (30000..=32767).contains(p)),
        "{ports:?}"
    );
    assert_ne!(ports[0], ports[1]);

    // The same ClusterIP or NodePort again is refused.
    let taken_ip = c.fails_stdin(&service(
        "copy-ip",
        "ClusterIP",
        &format!("  clusterIP: {ip}\n"),
    ));
    assert!(
        taken_ip.contains("provided IP is already allocated"),
        "{taken_ip}"
    );
    let taken_port = c.fails_stdin(&format!("apiVersion: v1\nkind: Service\nmetadata: {{name: copy-port}}\nspec:\n  type: NodePort\n  ports:\n  - {{port: 80, nodePort: {}}}\n", ports[0]));
    assert!(
        taken_port.contains("provided port is already allocated"),
        "{taken_port}"
    );
    let outside = c.fails_stdin(&service("outside", "ClusterIP", "  clusterIP: 10.99.0.5\n"));
    assert!(outside.contains("not in the valid range"), "{outside}");
    assert!(c.kubectl(&["get", "service", "copy-ip"]).status.code() != Some(0));

    // Headless Services get no address; a chosen free one is honoured.
    create(&c, &service("headless", "ClusterIP", "  clusterIP: None\n"));
    assert_eq!(
        c.json(&["get", "service", "headless"])["spec"]["clusterIP"],
        "None"
    );
    create(
        &c,
        &service("chosen", "ClusterIP", "  clusterIP: 10.43.0.11\n"),
    );
    assert_eq!(
        c.json(&["get", "service", "chosen"])["spec"]["clusterIP"],
        "10.43.0.11"
    );
    // 10.43.0.10 is kube-dns's, once the server has published it.
    wait_for("the kube-dns Service", Duration::from_secs(30), || {
        c.kubectl(&["get", "service", "-n", "kube-system", "kube-dns"])
            .status
            .success()
            .then_some(())
    });
    let dns = c.fails_stdin(&service("dns", "ClusterIP", "  clusterIP: 10.43.0.10\n"));
    assert!(dns.contains("already allocated"), "{dns}");

    // Switching to ClusterIP gives the NodePorts back.
    c.ok(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    let patched = c.json(&["get", "service", "web"]);
    assert!(
        patched["spec"]["ports"][0].get("nodePort").is_none(),
        "{patched}"
    );
    create(&c, &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: reuse}}\nspec:\n  type: NodePort\n  ports:\n  - {{name: a, port: 80, nodePort: {}}}\n", ports[0]));
    // Adding a port to a NodePort Service allocates only for the new one.
    c.ok(&[
        "patch",
        "service",
        "reuse",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/spec/ports/-","value":{"name":"b","port":81}}]"#,
    ]);
    let reuse = c.json(&["get", "service", "reuse"]);
    assert_eq!(
        reuse["spec"]["ports"][0]["nodePort"].as_u64(),
        Some(ports[0])
    );
    assert!(reuse["spec"]["ports"][1]["nodePort"].as_u64().is_some());

    // A LoadBalancer gets NodePorts unless allocateLoadBalancerNodePorts
    // is false, when only a port that names one keeps it; its class stays
    // as it was, and its own fields go with its type.
    create(&c, &service("lb", "LoadBalancer", ""));
    let lb = c.json(&["get", "service", "lb"]);
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true, "{lb}");
    assert!(
        lb["spec"]["ports"][1]["nodePort"].as_u64().is_some(),
        "{lb}"
    );
    create(&c, &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: bare-lb}}\nspec:\n  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  loadBalancerClass: example.com/lb\n  ports:\n  - {{name: a, port: 80}}\n  - {{name: b, port: 81, nodePort: {}}}\n", ports[1]));
    let bare = c.json(&["get", "service", "bare-lb"]);
    assert!(bare["spec"]["ports"][0].get("nodePort").is_none(), "{bare}");
    assert_eq!(
        bare["spec"]["ports"][1]["nodePort"].as_u64(),
        Some(ports[1])
    );
    let moved = c.kubectl(&[
        "patch",
        "service",
        "bare-lb",
        "-p",
        r#"{"spec":{"loadBalancerClass":"example.com/other"}}"#,
    ]);
    let why = String::from_utf8_lossy(&moved.stderr);
    assert!(why.contains("may not change once set"), "{why}");
    c.ok(&[
        "patch",
        "service",
        "bare-lb",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let plain = c.json(&["get", "service", "bare-lb"]);
    assert!(plain["spec"].get("loadBalancerClass").is_none(), "{plain}");
    assert!(
        plain["spec"].get("allocateLoadBalancerNodePorts").is_none(),
        "{plain}"
    );
    assert!(
        plain["spec"]["ports"][0]["nodePort"].as_u64().is_some(),
        "{plain}"
    );
    let forbidden = c.fails_stdin(&service(
        "ranged",
        "NodePort",
        "  loadBalancerSourceRanges: [10.0.0.0/8]\n",
    ));
    assert!(
        forbidden.contains("may only be used when `type` is 'LoadBalancer'"),
        "{forbidden}"
    );

    // Allocations outlive a restart; deleting a Service frees its address.
    c.kill();
    c.spawn(&[]);
    let again = c.fails_stdin(&service(
        "copy-ip",
        "ClusterIP",
        &format!("  clusterIP: {ip}\n"),
    ));
    assert!(
        again.contains("provided IP is already allocated"),
        "{again}"
    );
    c.ok(&["delete", "service", "web"]);
    create(
        &c,
        &service("copy-ip", "ClusterIP", &format!("  clusterIP: {ip}\n")),
    );
    assert_eq!(
        c.json(&["get", "service", "copy-ip"])["spec"]["clusterIP"],
        ip.as_str()
    );
}
