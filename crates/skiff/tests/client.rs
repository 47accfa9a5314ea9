//! A Kubernetes client library (kube-rs) against `skiff server`: list,
//! watch, create, patch, delete.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use support::Cluster;

async fn client(c: &Cluster) -> Client {
    let kubeconfig = Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"suite": "kube-rs"}},
        "data": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_list_watch_create_patch_delete() {
    let c = Cluster::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");

    let created = api
        .create(&PostParams::default(), &configmap("one"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());

    let list = api
        .list(&ListParams::default().labels("suite=kube-rs"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());

    let mut events = api
        .watch(&WatchParams::default().labels("suite=kube-rs"), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &configmap("two"))
        .await
        .unwrap();
    let patch = serde_json::json!({"data": {"k": "patched"}});
    let patched = api
        .patch("one", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // The reply is the object as stored: what a read returns, new
    // resourceVersion and managed fields included.
    assert_eq!(patched, api.get("one").await.unwrap());
    assert_ne!(patched.metadata.resource_version.as_deref(), Some(&*rv));
    assert_eq!(patched.data.clone().unwrap()["k"], "patched");
    let mut replaced = patched.clone();
    replaced.data = Some([("k".to_string(), "replaced".to_string())].into());
    let replaced = api
        .replace("one", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced, api.get("one").await.unwrap());
    api.delete("one", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            WatchEvent::Added(cm) => seen.push(format!("added {}", cm.metadata.name.unwrap())),
            WatchEvent::Modified(cm) => {
                seen.push(format!("modified {}", cm.metadata.name.unwrap()))
            }
            WatchEvent::Deleted(cm) => seen.push(format!("deleted {}", cm.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error: {e:?}"),
        }
    }
    assert_eq!(
        seen,
        ["added two", "modified one", "modified one", "deleted one"]
    );
    let err = api.get("one").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );

    // deletecollection removes exactly what the selector names.
    api.create(&PostParams::default(), &configmap("three"))
        .await
        .unwrap();
    let mut other = configmap("other");
    other.metadata.labels = Some([("suite".to_string(), "else".to_string())].into());
    api.create(&PostParams::default(), &other).await.unwrap();
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("suite=kube-rs"),
    )
    .await
    .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        // Every namespace holds the cluster CA, as upstream's do.
        .filter(|name| name != "kube-root-ca.crt")
        .collect();
    assert_eq!(left, ["other"]);
}

/// kube-runtime's watcher uses streaming lists (sendInitialEvents) first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watcher_with_streaming_list() {
    use kube::runtime::watcher::{self, Event};
    let c = Cluster::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    // Every namespace holds the cluster CA, published just after start:
    // once it is there, nothing but this test writes here.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while api.get_opt("kube-root-ca.crt").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "kube-root-ca.crt never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.create(&PostParams::default(), &configmap("before"))
        .await
        .unwrap();
    let config = watcher::Config::default().streaming_lists();
    let mut stream = watcher::watcher(api.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Init => {}
            Event::InitApply(cm) => initial.push(cm.metadata.name.unwrap()),
            Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    initial.retain(|name| name != "kube-root-ca.crt");
    assert_eq!(initial, ["before"]);
    api.create(&PostParams::default(), &configmap("after"))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("after")),
        other => panic!("unexpected {other:?}"),
    }
}
