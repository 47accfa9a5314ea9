//! Kubernetes protobuf replies for clients that list
//! `application/vnd.kubernetes.protobuf` first (client-go's typed and
//! metadata clients), read back with upstream's message definitions (the
//! k8s-pb crate); Tables and custom resources stay JSON.

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use support::Cluster;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const CLIENT_GO: &str = "application/vnd.kubernetes.protobuf, application/json";

/// The type and message of a protobuf body, checking its content type.
async fn unwrap(reply: reqwest::Response) -> (String, Vec<u8>) {
    let content_type = reply.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, PROTOBUF);
    let body = reply.bytes().await.unwrap();
    let unknown = Unknown::decode(body.strip_prefix(b"k8s\0").expect("the magic")).unwrap();
    (
        unknown.type_meta.unwrap().kind.unwrap(),
        unknown.raw.unwrap(),
    )
}

#[test]
fn clients_asking_for_protobuf_get_it() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "cfg", "--from-literal=k=v"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = c.https().build().unwrap();
    let token = c.admin_token();
    let url = format!("{}/api/v1/namespaces/default/configmaps", c.url());
    let get = |url: String, accept: &'static str| {
        client
            .get(url)
            .bearer_auth(&token)
            .header("accept", accept)
            .send()
    };
    runtime.block_on(async {
        let (kind, raw) = unwrap(get(format!("{url}/cfg"), CLIENT_GO).await.unwrap()).await;
        assert_eq!(kind, "ConfigMap");
        let cm = pb::ConfigMap::decode(raw.as_slice()).unwrap();
        assert_eq!(cm.data["k"], "v");
        let meta = cm.metadata.unwrap();
        assert_eq!(meta.name.as_deref(), Some("cfg"));
        assert!(meta.creation_timestamp.unwrap().seconds.unwrap() > 0);
        let rv = meta.resource_version.unwrap();

        let (kind, raw) = unwrap(get(url.clone(), CLIENT_GO).await.unwrap()).await;
        assert_eq!(kind, "ConfigMapList");
        let list = pb::ConfigMapList::decode(raw.as_slice()).unwrap();
        let names: Vec<_> = list.items.iter().filter_map(|i| i.metadata.as_ref()?.name.clone()).collect();
        assert!(names.contains(&"cfg".to_owned()), "{names:?}");

        // The metadata client's list (the garbage collector's).
        let metadata = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        let (kind, raw) = unwrap(get(url.clone(), metadata).await.unwrap()).await;
        assert_eq!(kind, "PartialObjectMetadataList");
        let list = meta::PartialObjectMetadataList::decode(raw.as_slice()).unwrap();
        assert!(list.items.iter().any(|i| i.metadata.as_ref().and_then(|m| m.name.as_deref()) == Some("cfg")));

        // Writes answer in protobuf too; errors may stay JSON (client-go
        // decodes by the reply's content type).
        let created = client
            .post(url.clone())
            .bearer_auth(&token)
            .header("accept", CLIENT_GO)
            .json(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "second"}, "data": {"n": "2"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let (kind, raw) = unwrap(created).await;
        assert_eq!(kind, "ConfigMap");
        assert_eq!(pb::ConfigMap::decode(raw.as_slice()).unwrap().data["n"], "2");

        // kubectl's Table stays JSON.
        let table = get(url.clone(), "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
            .await
            .unwrap();
        assert_eq!(table.headers()["content-type"], "application/json");

        // A watch: length-prefixed WatchEvents, each object enveloped.
        let watch = get(
            format!("{url}?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dsecond"),
            CLIENT_GO,
        )
            .await
            .unwrap();
        assert_eq!(
            watch.headers()["content-type"],
            "application/vnd.kubernetes.protobuf;stream=watch"
        );
        let mut stream = watch.bytes_stream();
        let mut buf = Vec::new();
        let event = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if buf.len() >= 4 {
                    let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                    if buf.len() >= 4 + len {
                        return meta::WatchEvent::decode(&buf[4..4 + len]).unwrap();
                    }
                }
                buf.extend_from_slice(&stream.next().await.unwrap().unwrap());
            }
        })
        .await
        .expect("a watch event");
        assert_eq!(event.r#type.as_deref(), Some("ADDED"));
        let object = event.object.unwrap().raw.unwrap();
        let unknown = Unknown::decode(object.strip_prefix(b"k8s\0").unwrap()).unwrap();
        assert_eq!(unknown.type_meta.unwrap().kind.as_deref(), Some("ConfigMap"));
        let cm = pb::ConfigMap::decode(unknown.raw.unwrap().as_slice()).unwrap();
        assert_eq!(cm.metadata.unwrap().name.as_deref(), Some("second"));
    });
}
