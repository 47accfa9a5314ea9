//! Leader election through a Lease against the real server: one leader at a
//! time, and a new one once the old stops renewing.

mod support;

use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use skiff_runtime::leader::{elect, Timing};
use support::Cluster;

async fn client(c: &Cluster) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_failover() {
    let c = Cluster::start();
    let timing = Timing {
        lease: Duration::from_secs(2),
        retry: Duration::from_millis(100),
    };
    let (a, task_a) = elect(
        client(&c).await,
        "default",
        "election",
        "a".into(),
        timing.clone(),
    );
    let (b, task_b) = elect(client(&c).await, "default", "election", "b".into(), timing);

    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let (la, lb) = (*a.borrow(), *b.borrow());
        assert!(!(la && lb), "two leaders at once");
        if la || lb {
            break if la { "a" } else { "b" };
        }
        assert!(Instant::now() < deadline, "nobody was elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lease = c.json(&["get", "lease", "election"]);
    assert_eq!(lease["spec"]["holderIdentity"], first);

    // The leader stops renewing; the other takes over after the lease runs out.
    let (survivor, gone) = if first == "a" {
        (b, task_a)
    } else {
        (a, task_b)
    };
    gone.abort();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !*survivor.borrow() {
        assert!(Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lease = c.json(&["get", "lease", "election"]);
    assert_ne!(lease["spec"]["holderIdentity"], first);
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // The server's own scheduler holds its lease.
    let scheduler = c.json(&["get", "lease", "-n", "kube-system", "kube-scheduler"]);
    assert!(scheduler["spec"]["holderIdentity"]
        .as_str()
        .is_some_and(|h| h.contains("_scheduler_")));
}
