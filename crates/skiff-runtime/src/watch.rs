//! A watch with relist semantics and back-off: the one way every component
//! follows objects. A relist arrives whole, so its reader can forget
//! whatever it does not show (deleted while the watch was down). Objects
//! come without their `managedFields`, which no component reads and which
//! are most of a cached object's size (upstream's controller manager and
//! scheduler drop them from their caches too): they are read as
//! [`Lean`], which skips them unread; [`changes_without`] leaves out more,
//! for a reader that needs less.

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use crate::cache::Object;
use crate::lean::{Lean, Leaves, ManagedFields};
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
    changes_without::<K, ManagedFields>(api, config)
}

/// [`changes`], of objects read without what `L` leaves out.
pub fn changes_without<K: Object, L: Leaves>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Change<K>> + Send {
    let events = watcher::watcher(lean::<K, L>(api), config);
    gathered(events, K::kind(&()).into_owned(), |Lean(obj, _)| obj)
}

/// The changes of the objects of `resource`, perhaps known only at
/// run time (a custom resource), read as their metadata alone, as
/// upstream's metadata informers read them: for a reader that follows
/// every kind there is and needs no more (the garbage collector).
pub fn metadata_changes(
    client: kube::Client,
    resource: &ApiResource,
    config: watcher::Config,
) -> impl Stream<Item = Change<ObjectMeta>> + Send {
    let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(client, resource);
    let events = watcher::watcher(api, config);
    gathered(events, resource.kind.clone(), |obj| obj.metadata)
}

/// A watcher's events as changes, each object read through `read`:
/// failures are logged and the watch retried after a growing pause, and
/// a relist's events are gathered into one [`Change::Relisted`].
fn gathered<T, K: Send + 'static>(
    events: impl Stream<Item = watcher::Result<Event<T>>> + Send,
    kind: String,
    read: impl Fn(T) -> K + Send + 'static,
) -> impl Stream<Item = Change<K>> + Send {
    events
        .backoff(Doubling::new(FIRST_RETRY, MAX_RETRY))
        .scan(None::<Vec<K>>, move |relist, event| {
            let change = match event {
                Ok(event) => gather(relist, event_of(event, &read)),
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "watch failed; retrying");
                    None
                }
            };
            futures::future::ready(Some(change))
        })
        .filter_map(futures::future::ready)
}

/// `api`, reading its objects as [`Lean`].
fn lean<K: Object, L: Leaves>(api: Api<K>) -> Api<Lean<K, L>> {
    match api.namespace().map(str::to_owned) {
        Some(ns) => Api::namespaced_with(api.into_client(), &ns, &()),
        None => Api::all_with(api.into_client(), &()),
    }
}

/// `event` with its object read through `read`.
fn event_of<T, K>(event: Event<T>, read: impl Fn(T) -> K) -> Event<K> {
    match event {
        Event::Apply(obj) => Event::Apply(read(obj)),
        Event::Delete(obj) => Event::Delete(read(obj)),
        Event::Init => Event::Init,
        Event::InitApply(obj) => Event::InitApply(read(obj)),
        Event::InitDone => Event::InitDone,
    }
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
    use crate::lean::ForScheduler;

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

    #[tokio::test]
    async fn the_lean_api_is_at_the_same_place() {
        use k8s_openapi::api::core::v1::{Node, Pod};
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let pods = Api::<Pod>::namespaced(client.clone(), "a");
        let url = lean::<_, ManagedFields>(pods).resource_url().to_owned();
        assert_eq!(url, "/api/v1/namespaces/a/pods");
        let everywhere = Api::<Pod>::all(client.clone());
        let url = lean::<_, ForScheduler>(everywhere)
            .resource_url()
            .to_owned();
        assert_eq!(url, "/api/v1/pods");
        let nodes = Api::<Node>::all(client);
        let url = lean::<_, ManagedFields>(nodes).resource_url().to_owned();
        assert_eq!(url, "/api/v1/nodes");
    }
}
