//! Building replies: JSON bodies, `Status` errors, content negotiation.

use axum::body::Body;
use axum::response::Response;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use serde_json::Value;
use skiff_core::ApiError;

/// A JSON body ending in a newline, as upstream's encoder writes it, an
/// object's fields in upstream's order (clients compare bodies byte for
/// byte).
pub fn json(code: u16, value: &Value) -> Response {
    let mut body = match value.as_object() {
        Some(map) => {
            let mut out = Vec::with_capacity(1024);
            skiff_core::protobuf::order::write(&mut out, map);
            out
        }
        None => serde_json::to_vec(value).unwrap_or_default(),
    };
    body.push(b'\n');
    bytes(code, "application/json", body)
}

pub fn bytes(code: u16, content_type: &str, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

pub fn error(e: &ApiError) -> Response {
    let reply = json(e.code, &e.to_status());
    match e.said.as_deref() {
        Some(said) => crate::audit::annotated(
            crate::handlers::with_warnings(reply, &said.warnings),
            said.audit.clone(),
        ),
        None => reply,
    }
}

/// 429 beyond the in-flight caps, with upstream's body and `Retry-After`.
pub fn too_many_requests() -> Response {
    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": "Too many requests, please try again later.",
        "reason": "TooManyRequests", "details": {"retryAfterSeconds": 1}, "code": 429});
    let mut r = json(429, &status);
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    r
}

/// Whether the first media type the client accepts that the server serves
/// is Kubernetes protobuf, as the object or as its metadata
/// (client-go's typed and metadata clients); Tables are JSON only.
pub fn wants_protobuf(accept: &str) -> bool {
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        match params.next().unwrap_or("") {
            skiff_core::protobuf::CONTENT_TYPE => {
                let served = params.all(|p| {
                    !p.starts_with("as=")
                        || p == "as=PartialObjectMetadata"
                        || p == "as=PartialObjectMetadataList"
                });
                if served {
                    return true;
                }
            }
            "application/json" | "application/yaml" | "application/*" | "*/*" => return false,
            _ => {}
        }
    }
    false
}

/// A JSON reply re-encoded as protobuf, when its object has a protobuf
/// form (custom resources and Tables have none, as upstream's).
pub async fn to_protobuf(reply: Response) -> Response {
    let json = reply
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json {
        return reply;
    }
    let (mut head, body) = reply.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(head, Body::empty());
    };
    match skiff_core::protobuf::encode::transcode(&body) {
        Ok(encoded) => {
            head.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(skiff_core::protobuf::CONTENT_TYPE),
            );
            Response::from_parts(head, Body::from(encoded))
        }
        Err(why) => {
            tracing::debug!(reason = why.0, "answering in JSON");
            Response::from_parts(head, Body::from(body))
        }
    }
}

/// Whether the client asked for a `meta.k8s.io` Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let part = part.replace(' ', "");
        part.contains("as=Table") && part.contains("g=meta.k8s.io")
    })
}

/// Whether the client asked for metadata only (`PartialObjectMetadata`,
/// or its list), as informers and garbage collectors do.
pub fn wants_metadata(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|part| {
        let part = part.replace(' ', "");
        part.contains("as=PartialObjectMetadata") && part.contains("g=meta.k8s.io")
    })
}

/// An object's metadata alone, as `PartialObjectMetadata`.
pub fn partial(obj: &Value) -> Value {
    serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// Whether the client accepts aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let part = part.replace(' ', "");
        part.contains("as=APIGroupDiscoveryList") && part.contains("v=v2")
    })
}

/// Maps a store failure on object `name` of `r` to the API's error.
pub fn store_error(
    e: skiff_store::Error,
    r: &skiff_core::registry::ResourceType,
    name: &str,
) -> ApiError {
    use skiff_store::Error as E;
    match e {
        E::AlreadyExists { .. } => ApiError::already_exists(r.group, r.plural, name),
        E::NotFound { .. } => ApiError::not_found(r.group, r.plural, name),
        E::Conflict { .. } => ApiError::stale(r.group, r.plural, name),
        E::Compacted { requested, .. } => {
            ApiError::gone(format!("too old resource version: {requested}"))
        }
        E::FutureRevision { requested, latest } => ApiError::timeout(format!(
            "Too large resource version: {requested}, current: {latest}"
        )),
        other => ApiError::internal(other.to_string()),
    }
}
