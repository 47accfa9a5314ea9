//! `/openapi/v3`: the index and one document per group-version, generated
//! once and served with a content hash so clients can cache them.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::response::Response;
use serde_json::json;
use sha2::{Digest, Sha256};
use skiff_core::openapi::{document as generate, gv_path};
use skiff_core::registry::group_versions;
use skiff_core::ApiError;

use crate::response;

struct Document {
    body: Vec<u8>,
    hash: String,
}

fn documents() -> &'static HashMap<String, Document> {
    static DOCS: OnceLock<HashMap<String, Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut docs = HashMap::new();
        for (group, versions) in group_versions() {
            for version in versions {
                if let Some(doc) = generate(group, version) {
                    docs.insert(gv_path(group, version), Document::of(&doc));
                }
            }
        }
        docs
    })
}

impl Document {
    fn of(doc: &serde_json::Value) -> Self {
        let body = serde_json::to_vec(doc).unwrap_or_default();
        let hash: String = Sha256::digest(&body)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        Self { body, hash }
    }
}

/// The documents of the custom group-versions served now.
fn custom_documents() -> HashMap<String, Document> {
    let mut docs = HashMap::new();
    for (group, versions) in group_versions() {
        for version in versions {
            let path = gv_path(group, version);
            if documents().contains_key(&path) {
                continue;
            }
            if let Some(doc) = skiff_core::openapi::custom_document(group, version) {
                docs.insert(path, Document::of(&doc));
            }
        }
    }
    docs
}

pub fn index() -> Response {
    let custom = custom_documents();
    let paths: serde_json::Map<String, serde_json::Value> = documents()
        .iter()
        .chain(custom.iter())
        .map(|(path, d)| {
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", d.hash)}),
            )
        })
        .collect();
    response::json(200, &json!({"paths": paths}))
}

pub fn document(group: &str, version: &str) -> Result<Response, ApiError> {
    let path = gv_path(group, version);
    let custom;
    let doc = match documents().get(&path) {
        Some(doc) => doc,
        None => {
            let group_version = skiff_core::openapi::custom_document(group, version)
                .ok_or_else(|| ApiError::no_route(&format!("/openapi/v3/{path}")))?;
            custom = Document::of(&group_version);
            &custom
        }
    };
    let mut reply = response::bytes(200, "application/json", doc.body.clone());
    reply.headers_mut().insert(
        "Cache-Control",
        hyper::header::HeaderValue::from_static("public, immutable"),
    );
    reply.headers_mut().insert(
        "Etag",
        hyper::header::HeaderValue::from_str(&format!("\"{}\"", doc.hash))
            .unwrap_or(hyper::header::HeaderValue::from_static("\"\"")),
    );
    Ok(reply)
}
