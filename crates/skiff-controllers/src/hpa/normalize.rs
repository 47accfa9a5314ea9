//! From a recommendation to the replicas to set, as upstream's
//! autoscaler does: stabilized over recent recommendations, then held to
//! the scaling policies' rates and to min and max. Time is passed in, so
//! that tests move a clock rather than sleep.

use chrono::{DateTime, Duration, Utc};

/// How fast one direction may scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub stabilization: Duration,
    /// `Max` (the policy allowing the most change), `Min` or `Disabled`.
    pub select: String,
    pub policies: Vec<Policy>,
}

/// One policy: so many pods, or percent of them, per period.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub percent: bool,
    pub value: i32,
    pub period: Duration,
}

/// The behavior of one autoscaler.
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

/// What an autoscaler remembers between reconciles.
#[derive(Clone, Debug, Default)]
pub struct History {
    recommendations: Vec<(DateTime<Utc>, i32)>,
    /// Replicas added (positive) or removed (negative) at each rescale.
    changes: Vec<(DateTime<Utc>, i32)>,
}

/// A condition to set: AbleToScale or ScalingLimited, with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Said {
    pub reason: &'static str,
    pub message: &'static str,
}

/// The outcome of normalizing: replicas, then why for each condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalized {
    pub replicas: i32,
    pub able: Said,
    /// Whether the limits changed the stabilized recommendation.
    pub limited: bool,
    pub limit: Said,
}

const WITHIN: Said = Said {
    reason: "DesiredWithinRange",
    message: "the desired count is within the acceptable range",
};

impl History {
    /// Records a rescale from `from` to `to` replicas.
    pub fn rescaled(&mut self, from: i32, to: i32, now: DateTime<Utc>, keep: Duration) {
        self.changes.retain(|(t, _)| *t > now - keep);
        self.changes.push((now, to - from));
    }

    /// Replicas added and removed within `period` before `now`.
    fn changed_within(&self, period: Duration, now: DateTime<Utc>) -> (i32, i32) {
        let recent = self.changes.iter().filter(|(t, _)| *t > now - period);
        recent.fold((0, 0), |(up, down), (_, c)| {
            if *c > 0 {
                (up + c, down)
            } else {
                (up, down - c)
            }
        })
    }

    /// Records `desired` and returns it stabilized: no lower than the
    /// lowest recommendation in the scale-up window, no higher than the
    /// highest in the scale-down window.
    fn stabilize(
        &mut self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        now: DateTime<Utc>,
    ) -> i32 {
        let up_cutoff = now - behavior.up.stabilization;
        let down_cutoff = now - behavior.down.stabilization;
        let (mut up, mut down) = (desired, desired);
        let mut old = None;
        for (i, (t, r)) in self.recommendations.iter().enumerate() {
            if *t > up_cutoff {
                up = up.min(*r);
            }
            if *t > down_cutoff {
                down = down.max(*r);
            }
            if *t < up_cutoff && *t < down_cutoff {
                old = Some(i);
            }
        }
        match old {
            Some(i) => self.recommendations[i] = (now, desired),
            None => self.recommendations.push((now, desired)),
        }
        current.max(up).min(down)
    }

    /// The replicas to set for `desired`, under `behavior` and the bounds.
    pub fn normalize(
        &mut self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        (min, max): (i32, i32),
        now: DateTime<Utc>,
    ) -> Normalized {
        let stabilized = self.stabilize(behavior, current, desired, now);
        let able = if stabilized == desired {
            Said {
                reason: "ReadyForNewScale",
                message: "recommended size matches current size",
            }
        } else if desired >= current {
            Said {
                reason: "ScaleUpStabilized",
                message: "recent recommendations were lower than current one, applying the lowest recent recommendation",
            }
        } else {
            Said {
                reason: "ScaleDownStabilized",
                message: "recent recommendations were higher than current one, applying the highest recent recommendation",
            }
        };
        let (replicas, limit) = self.limit(behavior, current, stabilized, (min, max), now);
        Normalized {
            replicas,
            able,
            limited: replicas != stabilized,
            limit,
        }
    }

    /// Holds `desired` to the policies' rates and the bounds.
    fn limit(
        &self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        (min, max): (i32, i32),
        now: DateTime<Utc>,
    ) -> (i32, Said) {
        if desired > current {
            let limit = self.up_limit(&behavior.up, current, now).max(current);
            let (allowed, why) = if max > limit {
                (limit, Said {
                    reason: "ScaleUpLimit",
                    message: "the desired replica count is increasing faster than the maximum scale rate",
                })
            } else {
                (
                    max,
                    Said {
                        reason: "TooManyReplicas",
                        message: "the desired replica count is more than the maximum replica count",
                    },
                )
            };
            if desired > allowed {
                return (allowed, why);
            }
        } else if desired < current {
            let limit = self.down_limit(&behavior.down, current, now).min(current);
            let (allowed, why) = if min < limit {
                (limit, Said {
                    reason: "ScaleDownLimit",
                    message: "the desired replica count is decreasing faster than the maximum scale rate",
                })
            } else {
                (
                    min,
                    Said {
                        reason: "TooFewReplicas",
                        message: "the desired replica count is less than the minimum replica count",
                    },
                )
            };
            if desired < allowed {
                return (allowed, why);
            }
        }
        (desired, WITHIN)
    }

    fn up_limit(&self, rules: &Rules, current: i32, now: DateTime<Utc>) -> i32 {
        let proposals = rules.policies.iter().map(|p| {
            let (added, removed) = self.changed_within(p.period, now);
            let start = current - added + removed;
            if p.percent {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            } else {
                start + p.value
            }
        });
        match rules.select.as_str() {
            "Disabled" => current,
            "Min" => proposals.min().unwrap_or(i32::MAX),
            _ => proposals.max().unwrap_or(i32::MIN),
        }
    }

    fn down_limit(&self, rules: &Rules, current: i32, now: DateTime<Utc>) -> i32 {
        let proposals = rules.policies.iter().map(|p| {
            let (added, removed) = self.changed_within(p.period, now);
            let start = current - added + removed;
            if p.percent {
                (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
            } else {
                start - p.value
            }
        });
        match rules.select.as_str() {
            "Disabled" => current,
            "Min" => proposals.max().unwrap_or(i32::MIN),
            _ => proposals.min().unwrap_or(i32::MAX),
        }
    }
}

impl Behavior {
    /// Upstream's defaults, with `down_window` for the scale-down
    /// stabilization (`--horizontal-pod-autoscaler-downscale-stabilization`).
    pub fn default_with(down_window: Duration) -> Self {
        let period = Duration::seconds(15);
        Behavior {
            up: Rules {
                stabilization: Duration::zero(),
                select: "Max".into(),
                policies: vec![
                    Policy {
                        percent: false,
                        value: 4,
                        period,
                    },
                    Policy {
                        percent: true,
                        value: 100,
                        period,
                    },
                ],
            },
            down: Rules {
                stabilization: down_window,
                select: "Max".into(),
                policies: vec![Policy {
                    percent: true,
                    value: 100,
                    period,
                }],
            },
        }
    }

    /// The longest policy period: how long scale events must be kept.
    pub fn longest_period(&self) -> Duration {
        let all = self.up.policies.iter().chain(&self.down.policies);
        all.map(|p| p.period).max().unwrap_or(Duration::zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn defaults() -> Behavior {
        Behavior::default_with(Duration::seconds(300))
    }

    #[test]
    fn scale_up_is_held_to_four_pods_or_double_per_period() {
        let b = defaults();
        let mut h = History::default();
        let n = h.normalize(&b, 1, 20, (1, 50), at(0));
        assert_eq!(n.replicas, 5, "1 + 4 pods beats 1 × 2");
        assert_eq!(n.limit.reason, "ScaleUpLimit");
        assert!(n.limited);
        h.rescaled(1, 5, at(0), b.longest_period());
        // Within the same period the four pods are used up.
        let n = h.normalize(&b, 5, 20, (1, 50), at(5));
        assert_eq!(n.replicas, 5);
        // A period later: 5 × 2 = 10 beats 5 + 4.
        let n = h.normalize(&b, 5, 20, (1, 50), at(16));
        assert_eq!(n.replicas, 10);
        let n = h.normalize(&b, 10, 20, (1, 12), at(40));
        assert_eq!((n.replicas, n.limit.reason), (12, "TooManyReplicas"));
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_in_its_window() {
        let b = Behavior::default_with(Duration::seconds(60));
        let mut h = History::default();
        assert_eq!(h.normalize(&b, 5, 5, (1, 10), at(0)).replicas, 5);
        let n = h.normalize(&b, 5, 1, (1, 10), at(30));
        assert_eq!(n.replicas, 5, "5 was recommended 30 s ago");
        assert_eq!(n.able.reason, "ScaleDownStabilized");
        assert_eq!(h.normalize(&b, 5, 1, (1, 10), at(61)).replicas, 1);
    }

    #[test]
    fn policies_select_and_disable() {
        let mut b = defaults();
        b.down.stabilization = Duration::zero();
        b.down.policies = vec![
            Policy {
                percent: false,
                value: 1,
                period: Duration::seconds(60),
            },
            Policy {
                percent: true,
                value: 50,
                period: Duration::seconds(60),
            },
        ];
        let mut h = History::default();
        // Max: the policy allowing the most change, 50 % of 10.
        assert_eq!(h.normalize(&b, 10, 1, (1, 10), at(0)).replicas, 5);
        b.down.select = "Min".into();
        let n = h.normalize(&b, 10, 1, (1, 10), at(1));
        assert_eq!((n.replicas, n.limit.reason), (9, "ScaleDownLimit"));
        b.down.select = "Disabled".into();
        assert_eq!(h.normalize(&b, 10, 1, (1, 10), at(2)).replicas, 10);
        b.up.select = "Disabled".into();
        assert_eq!(h.normalize(&b, 3, 8, (1, 10), at(3)).replicas, 3);
    }

    #[test]
    fn scale_up_stabilization_takes_the_lowest_recent_recommendation() {
        let mut b = defaults();
        b.up.stabilization = Duration::seconds(30);
        let mut h = History::default();
        assert_eq!(h.normalize(&b, 2, 2, (1, 10), at(0)).replicas, 2);
        let n = h.normalize(&b, 2, 6, (1, 10), at(10));
        assert_eq!((n.replicas, n.able.reason), (2, "ScaleUpStabilized"));
        assert_eq!(h.normalize(&b, 2, 6, (1, 10), at(31)).replicas, 6);
    }

    #[test]
    fn below_min_comes_back_to_min() {
        let mut b = defaults();
        b.down.stabilization = Duration::zero();
        let mut h = History::default();
        let n = h.normalize(&b, 4, 0, (2, 10), at(0));
        assert_eq!((n.replicas, n.limit.reason), (2, "TooFewReplicas"));
    }
}
