//! How many replicas one metric asks for, as upstream's replica
//! calculator decides: the ratio of current to target usage over the
//! ready pods, within a tolerance, with unready pods and pods missing
//! metrics counted so that they damp a change rather than cause one.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Changes smaller than this share of the target are not made.
pub const TOLERANCE: f64 = 0.1;
/// A pod's CPU is not trusted this long after it starts, unless ready.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// A pod that turned unready this soon after starting never was ready.
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// What the calculator needs of one pod.
#[derive(Clone, Debug)]
pub struct PodFacts {
    pub name: String,
    pub phase: String,
    pub deleting: bool,
    /// The Ready condition: whether true, and when it last changed.
    pub ready: Option<(bool, DateTime<Utc>)>,
    pub started: Option<DateTime<Utc>>,
    /// The pod's request of the resource (milli-units), summed over the
    /// containers counted; `None` when one of them requests none.
    pub request: Option<i64>,
}

/// One pod's usage: milli-units, when it was measured, over what window.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub value: i64,
    pub at: DateTime<Utc>,
    pub window: Duration,
}

/// The target of a metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// A percentage of the pods' requests.
    Utilization(i32),
    /// An average value per pod, in milli-units.
    AverageValue(i64),
}

/// The recommendation, and the figures for the autoscaler's status.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recommendation {
    pub replicas: i32,
    /// The average utilization in percent, for a Utilization target.
    pub utilization: Option<i32>,
    /// The average usage per pod, in milli-units.
    pub average: i64,
}

/// Pods sorted as upstream's `groupPods`: counted (ready with a metric),
/// unready, missing a metric, or ignored (deleting or failed).
struct Groups {
    ready: usize,
    unready: HashSet<String>,
    missing: HashSet<String>,
    ignored: HashSet<String>,
}

fn group(
    pods: &[PodFacts],
    metrics: &HashMap<String, Sample>,
    cpu: bool,
    now: DateTime<Utc>,
) -> Groups {
    let mut g = Groups {
        ready: 0,
        unready: HashSet::new(),
        missing: HashSet::new(),
        ignored: HashSet::new(),
    };
    for pod in pods {
        if pod.deleting || pod.phase == "Failed" {
            g.ignored.insert(pod.name.clone());
            continue;
        }
        if pod.phase == "Pending" {
            g.unready.insert(pod.name.clone());
            continue;
        }
        let Some(sample) = metrics.get(&pod.name) else {
            g.missing.insert(pod.name.clone());
            continue;
        };
        if cpu {
            let unready = match (pod.ready, pod.started) {
                (Some((ready, changed)), Some(started)) => {
                    if started + CPU_INITIALIZATION_PERIOD > now {
                        // Starting up: only a sample taken a full window
                        // after the pod became ready counts.
                        !ready || sample.at < changed + sample.window
                    } else {
                        // Never ready since it started: not counted.
                        !ready && started + INITIAL_READINESS_DELAY > changed
                    }
                }
                _ => true,
            };
            if unready {
                g.unready.insert(pod.name.clone());
                continue;
            }
        }
        g.ready += 1;
    }
    g
}

/// The usage ratio to the target, with the utilization (for percent
/// targets) and average usage of the samples given.
fn ratio(
    metrics: &HashMap<String, Sample>,
    requests: &HashMap<String, i64>,
    target: Target,
) -> Result<(f64, Option<i32>, i64), String> {
    let total: i64 = metrics.values().map(|s| s.value).sum();
    let average = total / metrics.len().max(1) as i64;
    match target {
        Target::Utilization(percent) => {
            let (mut used, mut requested) = (0i64, 0i64);
            for (name, s) in metrics {
                if let Some(r) = requests.get(name) {
                    used += s.value;
                    requested += r;
                }
            }
            if requested == 0 {
                return Err("no metrics returned matched known pods".into());
            }
            let utilization = (used * 100 / requested) as i32;
            Ok((
                f64::from(utilization) / f64::from(percent),
                Some(utilization),
                average,
            ))
        }
        Target::AverageValue(value) => Ok((average as f64 / value as f64, None, average)),
    }
}

/// The replicas `target` asks for, given the pods the scale selects and
/// their samples; `resource` names the resource for messages.
pub fn recommend(
    current: i32,
    pods: &[PodFacts],
    mut metrics: HashMap<String, Sample>,
    target: Target,
    resource: &str,
    now: DateTime<Utc>,
) -> Result<Recommendation, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let g = group(pods, &metrics, resource == "cpu", now);
    metrics.retain(|name, _| !g.ignored.contains(name) && !g.unready.contains(name));
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let mut requests = HashMap::new();
    if let Target::Utilization(_) = target {
        for pod in pods {
            let Some(r) = pod.request else {
                return Err(format!(
                    "missing request for {resource} in Pod {}",
                    pod.name
                ));
            };
            requests.insert(pod.name.clone(), r);
        }
    }
    let (usage_ratio, utilization, average) = ratio(&metrics, &requests, target)?;
    let done = |replicas| Recommendation {
        replicas,
        utilization,
        average,
    };
    let scale_up_with_unready = !g.unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && g.missing.is_empty() {
        if (1.0 - usage_ratio).abs() <= TOLERANCE {
            return Ok(done(current));
        }
        return Ok(done((usage_ratio * g.ready as f64).ceil() as i32));
    }
    // Missing pods count as using all of their request (or the target,
    // when above it) on a scale-down, nothing on a scale-up.
    let stand_in = |name: &str, up: bool| -> i64 {
        if up {
            return 0;
        }
        match target {
            Target::Utilization(percent) => {
                requests.get(name).copied().unwrap_or(0) * i64::from(percent.max(100)) / 100
            }
            Target::AverageValue(value) => value,
        }
    };
    if usage_ratio != 1.0 {
        for name in &g.missing {
            metrics.insert(
                name.clone(),
                Sample {
                    value: stand_in(name, usage_ratio > 1.0),
                    at: now,
                    window: Duration::ZERO,
                },
            );
        }
    }
    if scale_up_with_unready {
        for name in &g.unready {
            metrics.insert(
                name.clone(),
                Sample {
                    value: 0,
                    at: now,
                    window: Duration::ZERO,
                },
            );
        }
    }
    let (new_ratio, _, _) = ratio(&metrics, &requests, target)?;
    let direction_flipped =
        (usage_ratio < 1.0 && new_ratio > 1.0) || (usage_ratio > 1.0 && new_ratio < 1.0);
    if (1.0 - new_ratio).abs() <= TOLERANCE || direction_flipped {
        return Ok(done(current));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(done(current));
    }
    Ok(done(replicas))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    /// A running pod, ready long ago, requesting `request` millicores.
    fn pod(name: &str, request: i64) -> PodFacts {
        PodFacts {
            name: name.into(),
            phase: "Running".into(),
            deleting: false,
            ready: Some((true, at(0))),
            started: Some(at(0)),
            request: Some(request),
        }
    }

    fn samples(values: &[(&str, i64)]) -> HashMap<String, Sample> {
        values
            .iter()
            .map(|(n, v)| {
                let s = Sample {
                    value: *v,
                    at: at(1000),
                    window: Duration::from_secs(15),
                };
                (n.to_string(), s)
            })
            .collect()
    }

    const NOW: i64 = 1000;

    #[test]
    fn table() {
        struct Case {
            why: &'static str,
            current: i32,
            pods: Vec<PodFacts>,
            metrics: Vec<(&'static str, i64)>,
            target: Target,
            want: Result<i32, &'static str>,
        }
        let unready = PodFacts {
            ready: Some((false, at(990))),
            started: Some(at(980)),
            ..pod("c", 100)
        };
        let pending = PodFacts {
            phase: "Pending".into(),
            ..pod("c", 100)
        };
        let deleting = PodFacts {
            deleting: true,
            ..pod("c", 100)
        };
        let no_request = PodFacts {
            request: None,
            ..pod("b", 100)
        };
        let cases = vec![
            Case {
                why: "twice the target doubles the pods",
                current: 2,
                pods: vec![pod("a", 100), pod("b", 100)],
                metrics: vec![("a", 100), ("b", 100)],
                target: Target::Utilization(50),
                want: Ok(4),
            },
            Case {
                why: "within the tolerance nothing changes",
                current: 2,
                pods: vec![pod("a", 100), pod("b", 100)],
                metrics: vec![("a", 54), ("b", 54)],
                target: Target::Utilization(50),
                want: Ok(2),
            },
            Case {
                why: "half the target halves the pods",
                current: 4,
                pods: vec![pod("a", 100), pod("b", 100), pod("c", 100), pod("d", 100)],
                metrics: vec![("a", 20), ("b", 30), ("c", 25), ("d", 25)],
                target: Target::Utilization(50),
                want: Ok(2),
            },
            Case {
                why: "one core busy on a 100m request asks for far more",
                current: 1,
                pods: vec![pod("a", 100)],
                metrics: vec![("a", 1000)],
                target: Target::Utilization(50),
                want: Ok(20),
            },
            Case {
                why: "an unready pod counts as idle on a scale-up",
                current: 3,
                pods: vec![pod("a", 100), pod("b", 100), unready.clone()],
                metrics: vec![("a", 100), ("b", 100), ("c", 500)],
                target: Target::Utilization(50),
                // (100+100+0)/300 = 67 % of request, ratio 1.33 → 4.
                want: Ok(4),
            },
            Case {
                why: "a pending pod damps a scale-up the same way",
                current: 3,
                pods: vec![pod("a", 100), pod("b", 100), pending],
                metrics: vec![("a", 60), ("b", 60)],
                target: Target::Utilization(50),
                // Ratio 1.2 alone; with the pending pod at 0: 0.8, flipped.
                want: Ok(3),
            },
            Case {
                why: "a pod without metrics counts as at its request on a scale-down",
                current: 3,
                pods: vec![pod("a", 100), pod("b", 100), pod("c", 100)],
                metrics: vec![("a", 10), ("b", 10)],
                target: Target::Utilization(50),
                // (10+10+100)/300 = 40 %, ratio 0.8 → ceil(2.4) = 3.
                want: Ok(3),
            },
            Case {
                why: "deleting pods are left out",
                current: 3,
                pods: vec![pod("a", 100), pod("b", 100), deleting],
                metrics: vec![("a", 100), ("b", 100), ("c", 0)],
                target: Target::Utilization(50),
                want: Ok(4),
            },
            Case {
                why: "an average value target",
                current: 2,
                pods: vec![pod("a", 0), pod("b", 0)],
                metrics: vec![("a", 300_000), ("b", 300_000)],
                target: Target::AverageValue(100_000),
                want: Ok(6),
            },
            Case {
                why: "a utilization needs every pod's request",
                current: 2,
                pods: vec![pod("a", 100), no_request],
                metrics: vec![("a", 100), ("b", 100)],
                target: Target::Utilization(50),
                want: Err("missing request for cpu in Pod b"),
            },
            Case {
                why: "no pods",
                current: 2,
                pods: vec![],
                metrics: vec![],
                target: Target::Utilization(50),
                want: Err("no pods returned by selector while calculating replica count"),
            },
            Case {
                why: "no metrics",
                current: 1,
                pods: vec![pod("a", 100)],
                metrics: vec![],
                target: Target::Utilization(50),
                want: Err("did not receive metrics for targeted pods (pods might be unready)"),
            },
        ];
        for c in cases {
            let got = recommend(
                c.current,
                &c.pods,
                samples(&c.metrics),
                c.target,
                "cpu",
                at(NOW),
            )
            .map(|r| r.replicas);
            assert_eq!(got, c.want.map_err(str::to_owned), "{}", c.why);
        }
    }

    #[test]
    fn a_young_pods_first_window_after_ready_is_not_trusted() {
        let young = PodFacts {
            ready: Some((true, at(995))),
            started: Some(at(990)),
            ..pod("b", 100)
        };
        // b's sample (taken at 1000, 15 s window) overlaps its start.
        let r = recommend(
            2,
            &[pod("a", 100), young],
            samples(&[("a", 100), ("b", 1000)]),
            Target::Utilization(50),
            "cpu",
            at(NOW),
        )
        .unwrap();
        // Only a counts at first (200 %), b as idle: (100+0)/200 = 50 %.
        assert_eq!(r.replicas, 2);
        assert_eq!(r.utilization, Some(100));
        // Memory has no such grace.
        let young = PodFacts {
            ready: Some((true, at(995))),
            started: Some(at(990)),
            ..pod("b", 100)
        };
        let r = recommend(
            2,
            &[pod("a", 100), young],
            samples(&[("a", 100), ("b", 100)]),
            Target::Utilization(50),
            "memory",
            at(NOW),
        )
        .unwrap();
        assert_eq!(r.replicas, 4);
    }
}
