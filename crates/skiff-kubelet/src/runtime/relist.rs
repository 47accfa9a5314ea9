//! Container changes for runtimes that do not send them (upstream's
//! generic PLEG): one look at every container each period, and the uid
//! of each pod whose containers appeared, changed state or went.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_cri::v1 as cri;

use super::{ContainerRuntime, Events};
use crate::cri_config::UID_LABEL;

/// Each container's state and pod uid, by container id.
type Listed = HashMap<String, (i32, String)>;

fn listed(containers: Vec<cri::Container>) -> Listed {
    containers
        .into_iter()
        .map(|c| {
            let uid = c.labels.get(UID_LABEL).cloned().unwrap_or_default();
            (c.id, (c.state, uid))
        })
        .collect()
}

/// The pods whose containers differ between two looks.
fn changed(before: &Listed, now: &Listed) -> BTreeSet<String> {
    let mut uids = BTreeSet::new();
    for (id, (state, uid)) in now {
        if before.get(id).map(|(s, _)| s) != Some(state) {
            uids.insert(uid.clone());
        }
    }
    for (id, (_, uid)) in before {
        if !now.contains_key(id) {
            uids.insert(uid.clone());
        }
    }
    uids.remove("");
    uids
}

/// The uids of pods whose containers changed, from a look every `every`.
pub fn relist(runtime: Arc<dyn ContainerRuntime>, every: Duration) -> Events {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = (runtime, Listed::new(), tick);
    futures::stream::unfold(start, |(runtime, mut before, mut tick)| async move {
        loop {
            tick.tick().await;
            let Ok(containers) = runtime.containers(None).await else {
                continue;
            };
            let now = listed(containers);
            let uids = changed(&before, &now);
            before = now;
            if !uids.is_empty() {
                return Some((uids, (runtime, before, tick)));
            }
        }
    })
    .flat_map(futures::stream::iter)
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, uid: &str, state: cri::ContainerState) -> cri::Container {
        cri::Container {
            id: id.into(),
            state: state as i32,
            labels: [(UID_LABEL.to_owned(), uid.to_owned())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn pods_whose_containers_appear_change_or_go_are_told() {
        use cri::ContainerState::{ContainerExited as Exited, ContainerRunning as Running};
        let first = listed(vec![
            container("a", "p1", Running),
            container("b", "p2", Running),
        ]);
        assert_eq!(
            changed(&Listed::new(), &first),
            BTreeSet::from(["p1".into(), "p2".into()])
        );
        assert!(changed(&first, &first).is_empty(), "nothing changed");
        let exited = listed(vec![
            container("a", "p1", Exited),
            container("b", "p2", Running),
        ]);
        assert_eq!(changed(&first, &exited), BTreeSet::from(["p1".into()]));
        let gone = listed(vec![container("a", "p1", Exited)]);
        assert_eq!(changed(&exited, &gone), BTreeSet::from(["p2".into()]));
    }
}
