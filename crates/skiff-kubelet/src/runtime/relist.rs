//! Container changes for runtimes that do not send them (upstream's
//! generic PLEG): one look at every sandbox and container each period, and
//! the uid of each pod whose sandboxes or containers appeared, changed
//! state or went.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_cri::v1 as cri;

use super::{ContainerRuntime, Events};
use crate::cri_config::UID_LABEL;

/// Each sandbox's and container's state and pod uid, by id (the two
/// kinds apart).
type Listed = HashMap<(Kind, String), (i32, String)>;

#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
enum Kind {
    Sandbox,
    Container,
}

fn listed(sandboxes: Vec<cri::PodSandbox>, containers: Vec<cri::Container>) -> Listed {
    let sandboxes = sandboxes.into_iter().map(|s| {
        let uid = s.metadata.map(|m| m.uid).unwrap_or_default();
        ((Kind::Sandbox, s.id), (s.state, uid))
    });
    let containers = containers.into_iter().map(|c| {
        let uid = c.labels.get(UID_LABEL).cloned().unwrap_or_default();
        ((Kind::Container, c.id), (c.state, uid))
    });
    sandboxes.chain(containers).collect()
}

/// The pods whose sandboxes or containers differ between two looks.
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

/// The uids of pods whose sandboxes or containers changed, from a look
/// every `every`.
pub fn relist(runtime: Arc<dyn ContainerRuntime>, every: Duration) -> Events {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = (runtime, Listed::new(), tick);
    futures::stream::unfold(start, |(runtime, mut before, mut tick)| async move {
        loop {
            tick.tick().await;
            let (Ok(sandboxes), Ok(containers)) =
                (runtime.sandboxes(&[]).await, runtime.containers(None).await)
            else {
                continue;
            };
            let now = listed(sandboxes, containers);
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

    fn sandbox(id: &str, uid: &str, state: cri::PodSandboxState) -> cri::PodSandbox {
        cri::PodSandbox {
            id: id.into(),
            state: state as i32,
            metadata: Some(cri::PodSandboxMetadata {
                uid: uid.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pods_whose_sandbox_dies_are_told() {
        use cri::PodSandboxState::{SandboxNotready as Dead, SandboxReady as Ready};
        let running = vec![container("c", "p1", cri::ContainerState::ContainerRunning)];
        let first = listed(vec![sandbox("a", "p1", Ready)], running.clone());
        assert!(changed(&first, &first).is_empty());
        let dead = listed(vec![sandbox("a", "p1", Dead)], running);
        assert_eq!(changed(&first, &dead), BTreeSet::from(["p1".into()]));
    }

    #[test]
    fn pods_whose_containers_appear_change_or_go_are_told() {
        use cri::ContainerState::{ContainerExited as Exited, ContainerRunning as Running};
        let listed = |containers| listed(Vec::new(), containers);
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
