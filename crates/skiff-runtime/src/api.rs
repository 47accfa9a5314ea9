//! The writes controllers make, behind a trait: the real one goes to the API
//! server, and unit tests use an in-memory fake that records every call.

use async_trait::async_trait;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::ApiResource;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{reason} ({code}): {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("talking to the API server: {0}")]
    Transport(String),
    /// A name that cannot be one segment of a URL path, refused before any
    /// request is made.
    #[error("invalid resource name {name:?}: {problem}")]
    InvalidName { name: String, problem: &'static str },
    #[error("decoding {kind}: {source}")]
    Decode {
        kind: String,
        source: serde_json::Error,
    },
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { code: 404, .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { code: 409, .. })
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => Error::Api {
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => Error::Transport(other.to_string()),
        }
    }
}

/// Which object a write is about.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub resource: ApiResource,
    pub namespace: Option<String>,
    pub name: String,
}

impl Target {
    /// The name as one segment of the object's URL path ([`path_segment`]).
    pub fn segment(&self) -> Result<&str, Error> {
        path_segment(&self.name)
    }

    pub fn of<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: &str) -> Self {
        Target {
            resource: ApiResource::erase::<K>(&()),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }
}

/// A name as one segment of a URL path. Names read from a user's object
/// (an owner reference, a pod's Secret or claim) are not all validated by
/// the API server, so one with a `/`, a `%` or a lone `.` or `..` is
/// refused here, as client-go's request builder does, rather than
/// addressing another resource.
pub fn path_segment(name: &str) -> Result<&str, Error> {
    let problem = match name {
        "" => "may not be empty",
        "." => "may not be '.'",
        ".." => "may not be '..'",
        n if n.contains('/') => "may not contain '/'",
        n if n.contains('%') => "may not contain '%'",
        _ => return Ok(name),
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        problem,
    })
}

/// How to delete.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deletion {
    /// Only delete the object with this uid.
    pub uid: Option<String>,
    pub propagation: Option<&'static str>,
    pub grace_seconds: Option<u32>,
}

/// The writes controllers make.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Creates `obj` (its `apiVersion` and `kind` tell the resource).
    async fn create(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        obj: Value,
    ) -> Result<Value, Error>;
    /// A JSON merge patch of the object, or of its status subresource.
    async fn merge_patch(
        &self,
        target: &Target,
        patch: Value,
        status: bool,
    ) -> Result<Value, Error>;
    /// A JSON patch (RFC 6902), e.g. to edit a list with a test first.
    async fn json_patch(&self, target: &Target, patch: Value) -> Result<Value, Error>;
    async fn delete(&self, target: &Target, how: Deletion) -> Result<(), Error>;
    /// Reads an object from the API server rather than a cache.
    async fn get(&self, target: &Target) -> Result<Option<Value>, Error>;
    /// Reads a subresource of an object (`scale`); none when there is no
    /// such object or subresource.
    async fn get_subresource(
        &self,
        target: &Target,
        subresource: &str,
    ) -> Result<Option<Value>, Error>;
    /// Lists the objects of a resource in a namespace (or everywhere).
    async fn list(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, Error>;
    /// Deletes every object of a resource in a namespace.
    async fn delete_collection(&self, resource: &ApiResource, namespace: &str)
        -> Result<(), Error>;
    /// Replaces a subresource (namespaces' `finalize`).
    async fn replace_subresource(
        &self,
        target: &Target,
        subresource: &str,
        obj: Value,
    ) -> Result<Value, Error>;
    /// Records an event; it never fails the caller.
    fn event(&self, event: Value);
}

/// The custom resources the definitions serve now, each at every served
/// version, with whether it is namespaced.
pub async fn custom_resources(cluster: &dyn Cluster) -> Result<Vec<(ApiResource, bool)>, Error> {
    let definitions = ApiResource::erase::<CustomResourceDefinition>(&());
    let mut out = Vec::new();
    for crd in cluster.list(&definitions, None).await? {
        out.extend(served_by(&decode::<CustomResourceDefinition>(crd)?));
    }
    Ok(out)
}

/// The resources one definition serves, at each served version, with
/// whether they are namespaced.
pub fn served_by(crd: &CustomResourceDefinition) -> Vec<(ApiResource, bool)> {
    let spec = &crd.spec;
    let versions = spec.versions.iter().filter(|v| v.served);
    versions
        .map(|v| {
            let resource = ApiResource {
                group: spec.group.clone(),
                version: v.name.clone(),
                api_version: format!("{}/{}", spec.group, v.name),
                kind: spec.names.kind.clone(),
                plural: spec.names.plural.clone(),
            };
            (resource, spec.scope != "Cluster")
        })
        .collect()
}

/// Creates an object in the collection at `url` without decoding the
/// reply, which only repeats it: for writes nobody reads back (events).
pub async fn create_unread(
    client: &kube::Client,
    url: &str,
    obj: &impl Serialize,
) -> Result<(), kube::Error> {
    let body = serde_json::to_vec(obj).map_err(kube::Error::SerdeError)?;
    let request = kube::core::Request::new(url)
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(request).await.map(drop)
}

/// Patches the status of object `name` in the collection at `url` without
/// decoding the reply, the whole object: for a writer that keeps what it
/// sent (the agent's status reports).
pub async fn patch_status_unread<P: Serialize>(
    client: &kube::Client,
    url: &str,
    name: &str,
    patch: &Patch<P>,
) -> Result<(), kube::Error> {
    let request = kube::core::Request::new(url)
        .patch_subresource("status", name, &PatchParams::default(), patch)
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(request).await.map(drop)
}

/// Creates a typed object.
pub async fn create<K>(cluster: &dyn Cluster, obj: &Value) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let ns = obj["metadata"]["namespace"].as_str();
    let created = cluster
        .create(&ApiResource::erase::<K>(&()), ns, obj.clone())
        .await?;
    decode(created)
}

/// Deletes `obj` and no later object of its name (its uid is the
/// precondition); one already gone is no error.
pub async fn delete_exact<K>(cluster: &dyn Cluster, obj: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>,
{
    let meta = obj.meta();
    let target = Target::of::<K>(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or(""),
    );
    let how = Deletion {
        uid: meta.uid.clone(),
        ..Default::default()
    };
    match cluster.delete(&target, how).await {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// Decodes a typed object.
pub fn decode<K: Resource<DynamicType = ()> + DeserializeOwned>(v: Value) -> Result<K, Error> {
    serde_json::from_value(v).map_err(|source| Error::Decode {
        kind: K::kind(&()).into_owned(),
        source,
    })
}

/// A typed object as JSON.
pub fn encode<K: Serialize>(obj: &K) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// The real cluster: the API server.
#[derive(Clone)]
pub struct KubeCluster {
    client: kube::Client,
    events: crate::events::Sink,
}

impl KubeCluster {
    pub fn new(client: kube::Client) -> Self {
        Self {
            events: crate::events::Sink::new(client.clone()),
            client,
        }
    }

    fn api(&self, r: &ApiResource, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, r),
            None => Api::all_with(self.client.clone(), r),
        }
    }
}

fn to_value(obj: DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn create(&self, r: &ApiResource, ns: Option<&str>, obj: Value) -> Result<Value, Error> {
        let obj: DynamicObject = serde_json::from_value(obj).map_err(|source| Error::Decode {
            kind: "object".into(),
            source,
        })?;
        let created = self.api(r, ns).create(&PostParams::default(), &obj).await?;
        Ok(to_value(created))
    }

    async fn merge_patch(&self, t: &Target, patch: Value, status: bool) -> Result<Value, Error> {
        let api = self.api(&t.resource, t.namespace.as_deref());
        let params = PatchParams::default();
        let patched = if status {
            api.patch_status(t.segment()?, &params, &Patch::Merge(&patch))
                .await?
        } else {
            api.patch(t.segment()?, &params, &Patch::Merge(&patch))
                .await?
        };
        Ok(to_value(patched))
    }

    async fn json_patch(&self, t: &Target, patch: Value) -> Result<Value, Error> {
        let patch: json_patch::Patch =
            serde_json::from_value(patch).map_err(|source| Error::Decode {
                kind: "JSON patch".into(),
                source,
            })?;
        let api = self.api(&t.resource, t.namespace.as_deref());
        let patched = api
            .patch(
                t.segment()?,
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await?;
        Ok(to_value(patched))
    }

    async fn delete(&self, t: &Target, how: Deletion) -> Result<(), Error> {
        let params = DeleteParams {
            grace_period_seconds: how.grace_seconds,
            propagation_policy: match how.propagation {
                Some("Foreground") => Some(kube::api::PropagationPolicy::Foreground),
                Some("Orphan") => Some(kube::api::PropagationPolicy::Orphan),
                Some(_) => Some(kube::api::PropagationPolicy::Background),
                None => None,
            },
            preconditions: how.uid.map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        self.api(&t.resource, t.namespace.as_deref())
            .delete(t.segment()?, &params)
            .await?;
        Ok(())
    }

    async fn get(&self, t: &Target) -> Result<Option<Value>, Error> {
        Ok(self
            .api(&t.resource, t.namespace.as_deref())
            .get_opt(t.segment()?)
            .await?
            .map(to_value))
    }

    async fn get_subresource(&self, t: &Target, sub: &str) -> Result<Option<Value>, Error> {
        let api = self.api(&t.resource, t.namespace.as_deref());
        match api.get_subresource(sub, t.segment()?).await {
            Ok(obj) => Ok(Some(to_value(obj))),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, r: &ApiResource, ns: Option<&str>) -> Result<Vec<Value>, Error> {
        let list = self.api(r, ns).list(&Default::default()).await?;
        Ok(list.items.into_iter().map(to_value).collect())
    }

    async fn delete_collection(&self, r: &ApiResource, ns: &str) -> Result<(), Error> {
        self.api(r, Some(ns))
            .delete_collection(&DeleteParams::background(), &Default::default())
            .await?;
        Ok(())
    }

    async fn replace_subresource(&self, t: &Target, sub: &str, obj: Value) -> Result<Value, Error> {
        let replaced = self
            .api(&t.resource, t.namespace.as_deref())
            .replace_subresource(sub, t.segment()?, &PostParams::default(), &obj)
            .await?;
        Ok(to_value(replaced))
    }

    fn event(&self, event: Value) {
        self.events.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn a_name_is_one_path_segment_or_refused() {
        let name = |n: &str| Target::of::<Pod>(Some("d"), n).segment().map(str::to_owned);
        assert_eq!(name("web-1.a").unwrap(), "web-1.a");
        for (bad, problem) in [
            ("", "may not be empty"),
            (".", "may not be '.'"),
            ("..", "may not be '..'"),
            ("../secrets", "may not contain '/'"),
            ("a%2Fb", "may not contain '%'"),
        ] {
            let e = name(bad).unwrap_err().to_string();
            assert!(e.contains(problem), "{bad}: {e}");
        }
    }
}
