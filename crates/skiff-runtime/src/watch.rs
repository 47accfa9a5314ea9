//! A watch with relist semantics and back-off: the one way every component
//! follows objects. A relist arrives whole, so its reader can forget
//! whatever it does not show (deleted while the watch was down). Objects
//! come without their `managedFields`, which no component reads and which
//! are most of a cached object's size (upstream's controller manager and
//! scheduler drop them from their caches too).

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use crate::cache::Object;
use crate::retry::Doubling;

/// One step of a watch.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// Every object there is: any other is gone.
    Relisted(Vec<K>),
    /// Added or modified.
    Applied(K),
    Deleted(K),
}

/// The first wait after a failed watch; it doubles up to [`MAX_RETRY`] and
/// starts again once an event arrives.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(8);

/// The changes of `api`'s objects, for ever: failures are logged and the
/// watch retried after a growing pause.
pub fn changes<K: Object>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Change<K>> + Send {
    let events = watcher::watcher(api, config).backoff(Doubling::new(FIRST_RETRY, MAX_RETRY));
    events
        .scan(None::<Vec<K>>, |relist, event| {
            let change = match event {
                Ok(event) => gather(relist, slim(event)),
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                    None
                }
            };
            futures::future::ready(Some(change))
        })
        .filter_map(futures::future::ready)
}

/// The event without its object's `managedFields`.
fn slim<K: kube::Resource>(event: Event<K>) -> Event<K> {
    event.modify(|obj| obj.meta_mut().managed_fields = None)
}

/// Folds the watcher's relist events into one [`Change::Relisted`].
fn gather<K>(relist: &mut Option<Vec<K>>, event: Event<K>) -> Option<Change<K>> {
    match event {
        Event::Init => {
            *relist = Some(Vec::new());
            None
        }
        Event::InitApply(obj) => {
            relist.get_or_insert_default().push(obj);
            None
        }
        Event::InitDone => Some(Change::Relisted(relist.take().unwrap_or_default())),
        Event::Apply(obj) => Some(Change::Applied(obj)),
        Event::Delete(obj) => Some(Change::Deleted(obj)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relist_arrives_whole_and_other_events_one_by_one() {
        let mut relist = None;
        assert!(gather(&mut relist, Event::Init).is_none());
        assert!(gather(&mut relist, Event::InitApply(1)).is_none());
        assert!(gather(&mut relist, Event::InitApply(2)).is_none());
        assert!(
            matches!(gather(&mut relist, Event::InitDone), Some(Change::Relisted(v)) if v == [1, 2])
        );
        assert!(matches!(
            gather(&mut relist, Event::Apply(3)),
            Some(Change::Applied(3))
        ));
        assert!(matches!(
            gather(&mut relist, Event::Delete(1)),
            Some(Change::Deleted(1))
        ));
        // An empty relist still says that everything is gone.
        gather(&mut relist, Event::Init);
        assert!(
            matches!(gather(&mut relist, Event::InitDone), Some(Change::Relisted(v)) if v.is_empty())
        );
    }

    #[test]
    fn objects_come_without_their_field_managers() {
        use k8s_openapi::api::core::v1::Pod;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        let Event::Apply(slimmed) = slim(Event::Apply(pod)) else {
            panic!("the event changed kind");
        };
        assert_eq!(slimmed.metadata.managed_fields, None);
        assert_eq!(slimmed.metadata.name.as_deref(), Some("p"));
    }
}
