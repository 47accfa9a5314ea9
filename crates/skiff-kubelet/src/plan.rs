//! What to do next for one pod, from its spec and what the runtime shows:
//! a pure function, as upstream's computePodActions.

use std::collections::{HashMap, HashSet};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, ContainerRestartRuleOnExitCodes, PodSpec};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// What the runtime reports of one pod's sandbox, read once per sync.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub pod_ip: String,
    /// The latest container of each name, with its status.
    pub latest: HashMap<String, cri::ContainerStatus>,
    /// The one before it, if any.
    pub previous: HashMap<String, cri::ContainerStatus>,
    /// The running containers whose startup probe passed.
    pub started: HashSet<String>,
}

/// Where a pod's init containers are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Done,
    Running,
    /// One failed and the pod's restartPolicy is Never.
    Failed,
}

/// The next steps for a pod's containers.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// Containers to start now, by name, with their attempt number.
    pub start: Vec<(String, u32)>,
    /// Exited containers waiting out their restart back-off.
    pub back_off: Vec<String>,
    /// Sidecars to stop, in this order: the app's containers are over.
    pub stop: Vec<String>,
    pub init: Init,
    /// When the earliest back-off ends, if any: the pod's next step is due
    /// then even if nothing else happens.
    pub due: Option<Timestamp>,
}

/// What a pod's sandbox calls for, as upstream's podSandboxChanged.
#[derive(Debug, PartialEq)]
pub enum SandboxStep {
    /// The newest sandbox is ready: the pod runs in it.
    Keep,
    /// No sandbox is ready: the next one is made with this attempt number,
    /// once what still runs in the dead one has stopped.
    Create(u32),
    /// The sandbox died after the pod's containers ran, and the pod never
    /// restarts them: nothing runs again, their last states are final.
    Over,
}

/// Decides about the pod's newest sandbox, given what ran in it.
pub fn sandbox_step(
    spec: &PodSpec,
    newest: Option<&cri::PodSandbox>,
    seen: &Observed,
) -> SandboxStep {
    let Some(sandbox) = newest else {
        return SandboxStep::Create(0);
    };
    if sandbox.state == cri::PodSandboxState::SandboxReady as i32 {
        return SandboxStep::Keep;
    }
    if spec.restart_policy.as_deref() == Some("Never") && !seen.latest.is_empty() {
        return SandboxStep::Over;
    }
    SandboxStep::Create(sandbox.metadata.as_ref().map_or(0, |m| m.attempt) + 1)
}

pub fn attempt_of(status: &cri::ContainerStatus) -> u32 {
    status.metadata.as_ref().map_or(0, |m| m.attempt)
}

pub fn exited(status: &cri::ContainerStatus) -> bool {
    status.state == cri::ContainerState::ContainerExited as i32
}

/// Created but never started (the agent stopped between the two), or in
/// a state the runtime does not know: started again as a new attempt, as
/// upstream does, whatever the restart policy.
pub fn never_started(status: &cri::ContainerStatus) -> bool {
    status.state == cri::ContainerState::ContainerCreated as i32
        || status.state == cri::ContainerState::ContainerUnknown as i32
}

pub fn running(status: &cri::ContainerStatus) -> bool {
    status.state == cri::ContainerState::ContainerRunning as i32
}

/// A CRI timestamp (nanoseconds) as a point in time.
pub fn instant(nanos: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Upstream's restart back-off after `attempt` restarts: the first restart
/// is immediate, then 10 s doubling per restart, up to 5 min.
pub fn restart_delay(attempt: u32) -> SignedDuration {
    match attempt {
        0 => SignedDuration::ZERO,
        n => SignedDuration::from_secs((10i64 << (n - 1).min(5)).min(300)),
    }
}

/// A pod's ephemeral containers as containers, each with the container
/// it targets.
pub fn ephemeral_containers(spec: &PodSpec) -> Vec<(Container, Option<String>)> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|e| {
            let mut c = serde_json::to_value(e).ok()?;
            let target = c.as_object_mut()?.remove("targetContainerName");
            let c: Container = serde_json::from_value(c).ok()?;
            Some((c, target.and_then(|t| t.as_str().map(str::to_owned))))
        })
        .collect()
}

pub use skiff_core::pod_containers::is_sidecar;

/// Whether a container that exited with `code` runs again, as upstream's
/// container restart rules decide: the first of its rules that matches
/// the code, else its own restartPolicy, else the pod's (`pod_policy`).
pub fn restarts(c: &Container, pod_policy: &str, code: i32) -> bool {
    let rules = c.restart_policy_rules.iter().flatten();
    let matching = rules
        .filter(|r| r.exit_codes.as_ref().is_some_and(|e| code_matches(e, code)))
        .map(|r| r.action == "Restart")
        .next();
    matching.unwrap_or_else(|| match c.restart_policy.as_deref().unwrap_or(pod_policy) {
        "Always" => true,
        "OnFailure" => code != 0,
        _ => false,
    })
}

fn code_matches(e: &ContainerRestartRuleOnExitCodes, code: i32) -> bool {
    let listed = e.values.iter().flatten().any(|v| *v == code);
    match e.operator.as_str() {
        "In" => listed,
        "NotIn" => !listed,
        _ => false,
    }
}

/// Decides which containers start now, which wait and which stop, as
/// upstream's computePodActions: init containers one at a time, each to
/// success, except sidecars, after whose start (and startup probe) the
/// next begins; then the app's containers together. Once an app container
/// has been created the init sequence is over: only sidecars run again.
/// Once every app container has exited for good, the sidecars stop.
pub fn plan(spec: &PodSpec, seen: &Observed, now: Timestamp) -> Plan {
    let restart = spec.restart_policy.as_deref().unwrap_or("Always");
    // Init containers retry a failure unless the pod never restarts.
    let init_policy = if restart == "Never" {
        "Never"
    } else {
        "OnFailure"
    };
    let mut plan = Plan {
        start: Vec::new(),
        back_off: Vec::new(),
        stop: Vec::new(),
        init: Init::Done,
        due: None,
    };
    // An exited container restarts once its back-off is over.
    let again = |plan: &mut Plan, name: &str, s: &cri::ContainerStatus| {
        let due = instant(s.finished_at) + restart_delay(attempt_of(s));
        if now >= due {
            plan.start.push((name.to_owned(), attempt_of(s) + 1));
        } else {
            plan.back_off.push(name.to_owned());
            plan.due = Some(plan.due.map_or(due, |d| d.min(due)));
        }
    };
    let latest = |c: &Container| seen.latest.get(&c.name);
    let initialized = spec.containers.iter().any(|c| latest(c).is_some());
    let over = initialized
        && spec
            .containers
            .iter()
            .all(|c| latest(c).is_some_and(|s| exited(s) && !restarts(c, restart, s.exit_code)));
    for c in spec.init_containers.iter().flatten() {
        if is_sidecar(c) {
            if over {
                if latest(c).is_some_and(running) {
                    plan.stop.insert(0, c.name.clone());
                }
                continue;
            }
            match latest(c) {
                None => plan.start.push((c.name.clone(), 0)),
                Some(s) if exited(s) => again(&mut plan, &c.name, s),
                Some(s) if never_started(s) => plan.start.push((c.name.clone(), attempt_of(s) + 1)),
                Some(_) if c.startup_probe.is_none() || seen.started.contains(&c.name) => continue,
                Some(_) => {}
            }
            if !initialized {
                plan.init = Init::Running;
                return plan;
            }
            continue;
        }
        let done = latest(c).is_some_and(|s| exited(s) && s.exit_code == 0);
        if initialized || done {
            continue;
        }
        plan.init = Init::Running;
        match latest(c) {
            None => plan.start.push((c.name.clone(), 0)),
            Some(s) if exited(s) && !restarts(c, init_policy, s.exit_code) => {
                plan.init = Init::Failed
            }
            Some(s) if exited(s) => again(&mut plan, &c.name, s),
            Some(s) if never_started(s) => plan.start.push((c.name.clone(), attempt_of(s) + 1)),
            Some(_) => {}
        }
        return plan;
    }
    for c in &spec.containers {
        match latest(c) {
            None => plan.start.push((c.name.clone(), 0)),
            Some(s) if exited(s) && restarts(c, restart, s.exit_code) => {
                again(&mut plan, &c.name, s)
            }
            Some(s) if never_started(s) => plan.start.push((c.name.clone(), attempt_of(s) + 1)),
            Some(_) => {}
        }
    }
    // Ephemeral containers (`kubectl debug`) start once, never again.
    for c in spec.ephemeral_containers.iter().flatten() {
        if !seen.latest.contains_key(&c.name) {
            plan.start.push((c.name.clone(), 0));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000_000_000;

    fn spec(init: &[&str], main: &[&str], restart: &str) -> PodSpec {
        let c = |n: &&str| Container {
            name: n.to_string(),
            ..Default::default()
        };
        PodSpec {
            init_containers: (!init.is_empty()).then(|| init.iter().map(c).collect()),
            containers: main.iter().map(c).collect(),
            restart_policy: Some(restart.into()),
            ..Default::default()
        }
    }

    fn status(state: cri::ContainerState, attempt: u32, code: i32) -> cri::ContainerStatus {
        cri::ContainerStatus {
            metadata: Some(cri::ContainerMetadata {
                name: String::new(),
                attempt,
            }),
            state: state as i32,
            exit_code: code,
            started_at: T0,
            finished_at: if state == cri::ContainerState::ContainerExited {
                T0
            } else {
                0
            },
            ..Default::default()
        }
    }

    fn seen(of: &[(&str, cri::ContainerStatus)]) -> Observed {
        Observed {
            latest: of.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(),
            ..Default::default()
        }
    }

    fn after(secs: i64) -> Timestamp {
        instant(T0) + SignedDuration::from_secs(secs)
    }

    use cri::ContainerState::{ContainerExited as Exited, ContainerRunning as Running};

    #[test]
    fn a_dead_sandbox_is_replaced_unless_the_pod_never_restarts() {
        let sandbox = |state: cri::PodSandboxState, attempt: u32| cri::PodSandbox {
            state: state as i32,
            metadata: Some(cri::PodSandboxMetadata {
                attempt,
                ..Default::default()
            }),
            ..Default::default()
        };
        use cri::PodSandboxState::{SandboxNotready as Dead, SandboxReady as Ready};
        let ran = seen(&[("app", status(Exited, 0, 0))]);
        let cases = [
            (
                "a new pod gets its first",
                "Always",
                None,
                seen(&[]),
                SandboxStep::Create(0),
            ),
            (
                "a ready one stays",
                "Never",
                Some(sandbox(Ready, 2)),
                ran.clone(),
                SandboxStep::Keep,
            ),
            (
                "a dead one is replaced by the next attempt",
                "Always",
                Some(sandbox(Dead, 2)),
                ran.clone(),
                SandboxStep::Create(3),
            ),
            (
                "OnFailure replaces it too",
                "OnFailure",
                Some(sandbox(Dead, 0)),
                ran.clone(),
                SandboxStep::Create(1),
            ),
            (
                "a Never pod whose containers ran is over",
                "Never",
                Some(sandbox(Dead, 0)),
                ran,
                SandboxStep::Over,
            ),
            (
                "a Never pod that ran nothing yet gets another",
                "Never",
                Some(sandbox(Dead, 0)),
                seen(&[]),
                SandboxStep::Create(1),
            ),
        ];
        for (name, restart, newest, seen, step) in cases {
            let spec = spec(&[], &["app"], restart);
            assert_eq!(sandbox_step(&spec, newest.as_ref(), &seen), step, "{name}");
        }
    }

    #[test]
    fn back_off_doubles_from_ten_seconds_to_five_minutes() {
        let secs: Vec<i64> = (0..8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn plans() {
        let starts = |v: &[(&str, u32)]| -> Vec<(String, u32)> {
            v.iter().map(|(n, a)| (n.to_string(), *a)).collect()
        };
        struct Case {
            name: &'static str,
            spec: PodSpec,
            seen: Observed,
            now: Timestamp,
            start: Vec<(String, u32)>,
            back_off: Vec<&'static str>,
            init: Init,
            due: Option<Timestamp>,
        }
        let cases = [
            Case {
                name: "a new pod starts its first init container only",
                spec: spec(&["i1", "i2"], &["app"], "Always"),
                seen: seen(&[]),
                now: after(0),
                start: starts(&[("i1", 0)]),
                back_off: vec![],
                init: Init::Running,
                due: None,
            },
            Case {
                name: "a running init container holds the rest back",
                spec: spec(&["i1", "i2"], &["app"], "Always"),
                seen: seen(&[("i1", status(Running, 0, 0))]),
                now: after(0),
                start: vec![],
                back_off: vec![],
                init: Init::Running,
                due: None,
            },
            Case {
                name: "a finished init container lets the next one start",
                spec: spec(&["i1", "i2"], &["app"], "Always"),
                seen: seen(&[("i1", status(Exited, 0, 0))]),
                now: after(0),
                start: starts(&[("i2", 0)]),
                back_off: vec![],
                init: Init::Running,
                due: None,
            },
            Case {
                name: "after the init containers, every app container starts",
                spec: spec(&["i1"], &["a", "b"], "Always"),
                seen: seen(&[("i1", status(Exited, 0, 0))]),
                now: after(0),
                start: starts(&[("a", 0), ("b", 0)]),
                back_off: vec![],
                init: Init::Done,
                due: None,
            },
            Case {
                name: "a failed init container with restartPolicy Never fails the pod",
                spec: spec(&["i1"], &["app"], "Never"),
                seen: seen(&[("i1", status(Exited, 0, 1))]),
                now: after(100),
                start: vec![],
                back_off: vec![],
                init: Init::Failed,
                due: None,
            },
            Case {
                name: "a failed init container restarts at once the first time",
                spec: spec(&["i1"], &["app"], "OnFailure"),
                seen: seen(&[("i1", status(Exited, 0, 1))]),
                now: after(0),
                start: starts(&[("i1", 1)]),
                back_off: vec![],
                init: Init::Running,
                due: None,
            },
            Case {
                name: "a container created but never started starts anew, even with Never",
                spec: spec(&[], &["app", "b"], "Never"),
                seen: seen(&[
                    ("app", status(cri::ContainerState::ContainerCreated, 0, 0)),
                    ("b", status(Running, 0, 0)),
                ]),
                now: after(0),
                start: starts(&[("app", 1)]),
                back_off: vec![],
                init: Init::Done,
                due: None,
            },
            Case {
                name: "an init container in an unknown state starts anew",
                spec: spec(&["i1"], &["app"], "Always"),
                seen: seen(&[("i1", status(cri::ContainerState::ContainerUnknown, 3, 0))]),
                now: after(0),
                start: starts(&[("i1", 4)]),
                back_off: vec![],
                init: Init::Running,
                due: None,
            },
            Case {
                name: "a crashed container waits out its back-off",
                spec: spec(&[], &["app"], "Always"),
                seen: seen(&[("app", status(Exited, 2, 1))]),
                now: after(19),
                start: vec![],
                back_off: vec!["app"],
                init: Init::Done,
                due: Some(after(20)),
            },
            Case {
                name: "and restarts when it is over",
                spec: spec(&[], &["app"], "Always"),
                seen: seen(&[("app", status(Exited, 2, 1))]),
                now: after(20),
                start: starts(&[("app", 3)]),
                back_off: vec![],
                init: Init::Done,
                due: None,
            },
            Case {
                name: "OnFailure leaves a successful container alone",
                spec: spec(&[], &["ok", "bad"], "OnFailure"),
                seen: seen(&[("ok", status(Exited, 0, 0)), ("bad", status(Exited, 0, 2))]),
                now: after(0),
                start: starts(&[("bad", 1)]),
                back_off: vec![],
                init: Init::Done,
                due: None,
            },
            Case {
                name: "Never restarts nothing",
                spec: spec(&[], &["a"], "Never"),
                seen: seen(&[("a", status(Exited, 0, 2))]),
                now: after(600),
                start: vec![],
                back_off: vec![],
                init: Init::Done,
                due: None,
            },
            Case {
                name: "the earliest back-off is when the pod is due",
                spec: spec(&[], &["a", "b"], "Always"),
                seen: seen(&[("a", status(Exited, 3, 1)), ("b", status(Exited, 1, 1))]),
                now: after(1),
                start: vec![],
                back_off: vec!["a", "b"],
                init: Init::Done,
                due: Some(after(10)),
            },
        ];
        for case in cases {
            let p = plan(&case.spec, &case.seen, case.now);
            assert_eq!(p.start, case.start, "{}", case.name);
            assert_eq!(p.back_off, case.back_off, "{}", case.name);
            assert_eq!(p.init, case.init, "{}", case.name);
            assert_eq!(p.due, case.due, "{}", case.name);
        }
    }

    /// `spec` with its init container `name` made a sidecar, with a
    /// startup probe if `probed`.
    fn with_sidecar(mut spec: PodSpec, name: &str, probed: bool) -> PodSpec {
        for c in spec.init_containers.iter_mut().flatten() {
            if c.name == name {
                c.restart_policy = Some("Always".into());
                c.startup_probe = probed.then(Default::default);
            }
        }
        spec
    }

    #[test]
    fn sidecars_start_in_the_init_sequence_and_run_beside_the_app() {
        let pod = with_sidecar(spec(&["side", "i2"], &["app"], "Never"), "side", false);
        let steps = [
            (
                "a new pod starts its sidecar first",
                seen(&[]),
                vec![("side", 0)],
            ),
            (
                "the next init container starts once the sidecar runs",
                seen(&[("side", status(Running, 0, 0))]),
                vec![("i2", 0)],
            ),
            (
                "the app starts beside the running sidecar",
                seen(&[
                    ("side", status(Running, 0, 0)),
                    ("i2", status(Exited, 0, 0)),
                ]),
                vec![("app", 0)],
            ),
            (
                "a sidecar that exits restarts, whatever the pod's policy",
                seen(&[
                    ("side", status(Exited, 0, 0)),
                    ("i2", status(Exited, 0, 0)),
                    ("app", status(Running, 0, 0)),
                ]),
                vec![("side", 1)],
            ),
        ];
        for (name, seen, start) in steps {
            let p = plan(&pod, &seen, after(0));
            let start: Vec<(String, u32)> =
                start.iter().map(|(n, a)| (n.to_string(), *a)).collect();
            assert_eq!(p.start, start, "{name}");
            assert!(p.stop.is_empty(), "{name}");
        }
        // While the app runs, the init sequence is over: a sidecar's
        // back-off holds nothing back.
        let crashed = seen(&[
            ("side", status(Exited, 3, 1)),
            ("i2", status(Exited, 0, 0)),
            ("app", status(Running, 0, 0)),
        ]);
        let p = plan(&pod, &crashed, after(1));
        assert_eq!((p.back_off, p.init), (vec!["side".to_string()], Init::Done));
    }

    #[test]
    fn a_sidecar_with_a_startup_probe_holds_the_next_back_until_it_passes() {
        let pod = with_sidecar(spec(&["side", "i2"], &["app"], "Always"), "side", true);
        let mut running = seen(&[("side", status(Running, 0, 0))]);
        let p = plan(&pod, &running, after(0));
        assert_eq!((p.start.len(), p.init), (0, Init::Running));
        running.started.insert("side".into());
        assert_eq!(
            plan(&pod, &running, after(0)).start,
            vec![("i2".to_string(), 0)]
        );
    }

    #[test]
    fn sidecars_stop_in_reverse_once_the_app_is_over() {
        let pod = with_sidecar(
            with_sidecar(spec(&["s1", "s2"], &["app"], "OnFailure"), "s1", false),
            "s2",
            false,
        );
        let over = seen(&[
            ("s1", status(Running, 0, 0)),
            ("s2", status(Running, 0, 0)),
            ("app", status(Exited, 0, 0)),
        ]);
        let p = plan(&pod, &over, after(0));
        assert_eq!(p.stop, ["s2", "s1"]);
        assert!(p.start.is_empty());
        // A failed app container restarts under OnFailure: not over.
        let failed = seen(&[
            ("s1", status(Running, 0, 0)),
            ("s2", status(Running, 0, 0)),
            ("app", status(Exited, 0, 1)),
        ]);
        let p = plan(&pod, &failed, after(0));
        assert_eq!((p.stop.len(), p.start), (0, vec![("app".to_string(), 1)]));
    }

    #[test]
    fn a_container_restarts_by_its_own_rules_before_the_pods() {
        let rule = |op: &str, codes: &[i32]| serde_json::json!({"action": "Restart", "exitCodes": {"operator": op, "values": codes}});
        let container = |policy: Option<&str>, rules: Vec<serde_json::Value>| -> Container {
            serde_json::from_value(serde_json::json!({
                "name": "c", "restartPolicy": policy, "restartPolicyRules": rules,
            }))
            .unwrap()
        };
        let cases = [
            (
                "no rules: the pod's policy",
                container(None, vec![]),
                "OnFailure",
                1,
                true,
            ),
            (
                "no rules: the pod's policy, success",
                container(None, vec![]),
                "OnFailure",
                0,
                false,
            ),
            (
                "its own policy over the pod's",
                container(Some("Never"), vec![]),
                "Always",
                1,
                false,
            ),
            (
                "a matching In rule restarts",
                container(Some("Never"), vec![rule("In", &[42])]),
                "Never",
                42,
                true,
            ),
            (
                "an unmatched rule falls back",
                container(Some("Never"), vec![rule("In", &[42])]),
                "Always",
                1,
                false,
            ),
            (
                "NotIn matches the codes not listed",
                container(Some("Never"), vec![rule("NotIn", &[0, 1])]),
                "Never",
                3,
                true,
            ),
            (
                "NotIn leaves the listed ones",
                container(Some("Never"), vec![rule("NotIn", &[0, 1])]),
                "Never",
                1,
                false,
            ),
        ];
        for (name, c, pod_policy, code, want) in cases {
            assert_eq!(restarts(&c, pod_policy, code), want, "{name}");
        }
        // In a plan: a Never pod whose container restarts on 42.
        let mut pod = spec(&[], &["c"], "Never");
        pod.containers[0] = container(Some("Never"), vec![rule("In", &[42])]);
        let p = plan(&pod, &seen(&[("c", status(Exited, 0, 42))]), after(0));
        assert_eq!(p.start, vec![("c".to_string(), 1)]);
        assert!(plan(&pod, &seen(&[("c", status(Exited, 0, 1))]), after(0))
            .start
            .is_empty());
    }

    #[test]
    fn ephemeral_containers_start_once_and_never_again() {
        let mut pod = spec(&[], &["app"], "Always");
        pod.ephemeral_containers = Some(vec![serde_json::from_value(
            serde_json::json!({"name": "debug", "image": "busybox", "targetContainerName": "app"}),
        )
        .unwrap()]);
        let running = seen(&[("app", status(Running, 0, 0))]);
        assert_eq!(
            plan(&pod, &running, after(1)).start,
            vec![("debug".to_string(), 0)]
        );
        let done = seen(&[
            ("app", status(Running, 0, 0)),
            ("debug", status(Exited, 0, 1)),
        ]);
        assert!(plan(&pod, &done, after(600)).start.is_empty());
        let (c, target) = &ephemeral_containers(&pod)[0];
        assert_eq!((c.name.as_str(), target.as_deref()), ("debug", Some("app")));
    }
}
