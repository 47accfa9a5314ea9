use super::*;
use crate::usage::ContainerUsage;
use serde_json::json;

const MI: i128 = 1 << 20;

fn pod(spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "i"}]);
    }
    serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec})).unwrap()
}

fn using(memory: u64) -> PodUsage {
    PodUsage {
        containers: vec![ContainerUsage {
            name: "c".into(),
            at: 0,
            cpu_total_ns: 0,
            nano_cores: None,
            memory_working_set: memory,
            writable_layer_bytes: 0,
        }],
        ..Default::default()
    }
}

fn using_disk(bytes: u64) -> PodUsage {
    let mut usage = using(0);
    usage.containers[0].writable_layer_bytes = bytes;
    usage
}

fn seen(pairs: &[(Signal, i128, i128)]) -> Observations {
    pairs
        .iter()
        .map(|(s, available, capacity)| {
            (
                *s,
                Observation {
                    available: *available,
                    capacity: *capacity,
                },
            )
        })
        .collect()
}

#[test]
fn thresholds_are_read_as_upstream_reads_them() {
    let defaults = Config::default();
    assert_eq!(defaults.thresholds.len(), 5);
    assert_eq!(defaults.thresholds[0].amount, Amount::Quantity(100 * MI));
    assert_eq!(defaults.thresholds[1].amount, Amount::Share(0.05));
    assert!(defaults.thresholds.iter().all(|t| t.grace.is_none()));
    let five = Duration::from_secs(300);
    let err = |hard: &str, soft: &str, grace: &str, reclaim: &str| {
        Config::parse(hard, soft, grace, reclaim, five, 0).unwrap_err()
    };
    assert_eq!(
        err("memory.free<1Gi", "", "", ""),
        "unsupported eviction signal memory.free"
    );
    assert_eq!(
        err("memory.available>1Gi", "", "", ""),
        "invalid eviction threshold syntax memory.available>1Gi, expected <signal><operator><value>"
    );
    assert_eq!(
        err("memory.available<1Gi,memory.available<2Gi", "", "", ""),
        "found duplicate eviction threshold for signal memory.available"
    );
    assert_eq!(
        err("", "memory.available<1Gi", "", ""),
        "grace period must be specified for the soft eviction threshold memory.available"
    );
    assert_eq!(
        err("memory.available<0", "", "", ""),
        "eviction threshold memory.available must be positive: 0"
    );
    assert!(err("nodefs.available<101%", "", "", "").contains("between 0% and 100%"));
    assert_eq!(
        err("", "", "memory.available=soon", ""),
        "time: invalid duration \"soon\""
    );
    let c = Config::parse(
        "nodefs.available<0%",
        "memory.available<1Gi",
        "memory.available=1m30s",
        "memory.available=500Mi",
        five,
        -1,
    )
    .unwrap();
    // A threshold of 0% is none.
    assert_eq!(c.thresholds.len(), 1);
    let soft = &c.thresholds[0];
    assert_eq!(soft.grace, Some(Duration::from_secs(90)));
    assert_eq!(soft.min_reclaim, Some(Amount::Quantity(500 * MI)));
    assert_eq!(go_duration("1.5h").unwrap(), Duration::from_secs(5400));
    assert_eq!(
        go_duration("2m0.5s").unwrap(),
        Duration::from_millis(120_500)
    );
}

#[test]
fn conditions_follow_thresholds_and_stay_for_the_transition_period() {
    let config = Config::parse(
        "memory.available<100Mi",
        "nodefs.available<20%",
        "nodefs.available=1m",
        "",
        Duration::from_secs(300),
        0,
    )
    .unwrap();
    let mut m = Manager::new(config);
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let low = seen(&[
        (Signal::MemoryAvailable, 50 * MI, 1024 * MI),
        (Signal::NodeFsAvailable, 10, 100),
    ]);
    let d = m.decide(&low, t0);
    assert_eq!(
        d.conditions,
        [Condition::MemoryPressure, Condition::DiskPressure]
    );
    // The hard memory threshold acts at once; the soft one waits.
    assert_eq!(
        d.reclaim,
        Some(Reclaim {
            signal: Signal::MemoryAvailable,
            hard: true,
            quantity: 100 * MI,
            available: 50 * MI,
        })
    );
    let disk_only = seen(&[
        (Signal::MemoryAvailable, 500 * MI, 1024 * MI),
        (Signal::NodeFsAvailable, 10, 100),
    ]);
    let d = m.decide(&disk_only, at(30));
    assert_eq!(
        d.conditions,
        [Condition::MemoryPressure, Condition::DiskPressure],
        "memory pressure stays for the transition period"
    );
    assert_eq!(d.reclaim, None, "the soft threshold is in its grace period");
    let d = m.decide(&disk_only, at(61));
    let reclaim = d.reclaim.unwrap();
    assert_eq!(
        (reclaim.signal, reclaim.hard),
        (Signal::NodeFsAvailable, false)
    );
    assert_eq!((reclaim.quantity, reclaim.available), (20, 10));
    let fine = seen(&[
        (Signal::MemoryAvailable, 500 * MI, 1024 * MI),
        (Signal::NodeFsAvailable, 50, 100),
    ]);
    let d = m.decide(&fine, at(301));
    assert_eq!(d.conditions, [Condition::DiskPressure]);
    assert_eq!(d.reclaim, None);
    assert_eq!(m.decide(&fine, at(362)), Decision::default());
    // Met again, the soft threshold's grace period starts over.
    assert_eq!(m.decide(&disk_only, at(400)).reclaim, None);
}

#[test]
fn a_met_threshold_is_acted_on_until_its_minimum_reclaim_is_available() {
    let config = Config::parse(
        "memory.available<100Mi",
        "",
        "",
        "memory.available=50Mi",
        Duration::ZERO,
        0,
    )
    .unwrap();
    let mut m = Manager::new(config);
    let now = Instant::now();
    let memory = |available| seen(&[(Signal::MemoryAvailable, available, 1024 * MI)]);
    assert!(m.decide(&memory(90 * MI), now).reclaim.is_some());
    // Above the threshold but short of its reclaim: still acted on.
    assert!(m.decide(&memory(120 * MI), now).reclaim.is_some());
    assert!(m.still_met(&memory(120 * MI)));
    assert!(m.decide(&memory(160 * MI), now).reclaim.is_none());
    // Not met at first sight, the reclaim does not count.
    assert!(m.decide(&memory(120 * MI), now).reclaim.is_none());
    // A transition period of zero reports no condition, as upstream.
    assert!(m.decide(&memory(90 * MI), now).conditions.is_empty());
}

#[test]
fn pods_rank_by_use_beyond_requests_then_priority_then_how_far_beyond() {
    let best_effort = pod(json!({}));
    let within = pod(json!({"containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"memory": "64Mi"}}}]}));
    let important = pod(json!({"priority": 1000}));
    let hungry = pod(json!({}));
    let (small, big, mid) = (using(10 << 20), using(200 << 20), using(50 << 20));
    let candidate = |pod, usage, local_bytes| Candidate {
        pod,
        usage: Some(usage),
        local_bytes,
        processes: 0,
    };
    let mut pods = vec![
        candidate(&within, &mid, 0),
        candidate(&important, &big, 0),
        candidate(&best_effort, &small, 0),
        candidate(&hungry, &big, 0),
    ];
    let order = |pods: &[Candidate<'_>]| -> Vec<*const Pod> {
        pods.iter().map(|c| c.pod as *const Pod).collect()
    };
    let of = |want: &[&Pod]| -> Vec<*const Pod> { want.iter().map(|p| *p as *const Pod).collect() };
    rank(Signal::MemoryAvailable, &mut pods);
    assert_eq!(
        order(&pods),
        of(&[&hungry, &best_effort, &important, &within])
    );
    // For PIDs, priority, then the most processes.
    pods[0].processes = 3;
    pods[1].processes = 7;
    pods[2].processes = 9;
    rank(Signal::PidAvailable, &mut pods);
    assert_eq!(
        order(&pods),
        of(&[&best_effort, &hungry, &within, &important])
    );
    // On the node's filesystem, logs and local volumes count beside the
    // writable layers; on the image filesystem, only the layers.
    let (layer, none) = (using_disk(50 << 20), using_disk(0));
    let mut pods = vec![
        candidate(&best_effort, &layer, 0),
        candidate(&hungry, &none, 200 << 20),
    ];
    rank(Signal::NodeFsAvailable, &mut pods);
    assert_eq!(order(&pods), of(&[&hungry, &best_effort]));
    rank(Signal::ImageFsAvailable, &mut pods);
    assert_eq!(order(&pods), of(&[&best_effort, &hungry]));
}

#[test]
fn processes_are_counted_by_the_container_whose_cgroup_holds_them() {
    let cgroupfs = "12:pids:/k8s.io/4b1c0ffee\n1:name=systemd:/k8s.io/4b1c0ffee\n0::/\n";
    assert_eq!(measure::container_of(cgroupfs), Some("4b1c0ffee"));
    let systemd = "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-4b1c0ffee.scope\n";
    assert_eq!(measure::container_of(systemd), Some("4b1c0ffee"));
    assert_eq!(measure::container_of("0::/\n"), None);
    // This very process runs in no container of the map.
    let none = HashMap::from([("4b1c0ffee".to_owned(), "uid".to_owned())]);
    assert!(measure::processes(&none).is_empty());
}

#[test]
fn pressure_refuses_pods_as_upstreams_admission_does() {
    let best_effort = pod(json!({}));
    let burstable = pod(json!({"containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"memory": "64Mi"}}}]}));
    let tolerating = pod(
        json!({"tolerations": [{"key": "node.kubernetes.io/memory-pressure",
        "operator": "Exists", "effect": "NoSchedule"}]}),
    );
    let critical = pod(json!({"priority": 2_000_001_000}));
    let memory = [Condition::MemoryPressure];
    assert_eq!(admit(&[], &best_effort), Ok(()));
    let refused = admit(&memory, &best_effort).unwrap_err();
    assert_eq!(refused.reason, "Evicted");
    assert_eq!(
        refused.message,
        "The node had condition: [MemoryPressure]. "
    );
    assert_eq!(admit(&memory, &burstable), Ok(()));
    assert_eq!(admit(&memory, &tolerating), Ok(()));
    // The class the API server wrote is read as it is.
    let mut written = burstable.clone();
    written.status = Some(k8s_openapi::api::core::v1::PodStatus {
        qos_class: Some("BestEffort".into()),
        ..Default::default()
    });
    assert!(admit(&memory, &written).is_err());
    let both = [Condition::MemoryPressure, Condition::DiskPressure];
    assert_eq!(
        admit(&both, &burstable).unwrap_err().message,
        "The node had condition: [MemoryPressure DiskPressure]. "
    );
    assert_eq!(admit(&both, &critical), Ok(()));
    assert!(is_critical(&critical));
    let mut static_pod = pod(json!({}));
    static_pod.metadata.annotations =
        Some([("kubernetes.io/config.source".to_owned(), "file".to_owned())].into());
    assert!(is_critical(&static_pod));
}

#[test]
fn evictions_say_why_and_how_long_the_pod_gets() {
    let p = pod(json!({"terminationGracePeriodSeconds": 20, "containers": [
        {"name": "c", "image": "i", "resources": {"requests": {"memory": "10Mi"}}}]}));
    let hard = Reclaim {
        signal: Signal::MemoryAvailable,
        hard: true,
        quantity: 100 * MI,
        available: 7512 * 1024,
    };
    assert_eq!(
        message(&hard, &p, Some(&using(12 << 20))),
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 7512Ki. Container c was using 12Mi, request is 10Mi, has larger consumption of memory. "
    );
    assert_eq!(
        message(&hard, &p, Some(&using(5 << 20))),
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 7512Ki. "
    );
    assert_eq!(grace_period(&hard, 10, &p), 0);
    let soft = Reclaim {
        hard: false,
        ..hard
    };
    assert_eq!(grace_period(&soft, 10, &p), 10);
    assert_eq!(grace_period(&soft, 60, &p), 20);
    assert_eq!(grace_period(&soft, -1, &p), 20);
}

#[test]
fn the_node_is_measured_from_the_kernels_figures() {
    let meminfo = "MemTotal:        2048000 kB\nMemFree:          512000 kB\nMemAvailable:    1024000 kB\nActive(file):     100000 kB\nInactive(file):   256000 kB\n";
    let m = measure::memory(meminfo).unwrap();
    assert_eq!(m.capacity, 2_048_000 * 1024);
    // Working set: total − free − inactive file.
    assert_eq!(m.available, (512_000 + 256_000) * 1024);
    let p = measure::pids("32768\n", "192735\n", "0.61 0.68 1.33 1/110 13133\n").unwrap();
    assert_eq!((p.available, p.capacity), (32768 - 110, 32768));
    let mut seen = Observations::new();
    let space = crate::node::Space {
        size: 100,
        available: 4,
        inodes: 0,
        inodes_free: 0,
    };
    measure::filesystem(
        &mut seen,
        space,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
    );
    assert_eq!(
        seen.len(),
        1,
        "a filesystem that counts no inodes has no inode signal"
    );
    // The defaults: 4 % left of the node's disk is disk pressure.
    let mut m = Manager::new(Config::default());
    let d = m.decide(&seen, Instant::now());
    assert_eq!(d.conditions, [Condition::DiskPressure]);
    assert_eq!(d.reclaim.unwrap().signal.resource(), "ephemeral-storage");
}
