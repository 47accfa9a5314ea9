//! What Skiff knows about Kubernetes objects, with no IO: the resource
//! registry, defaults, validation, selectors, patches (JSON, merge,
//! strategic merge, server-side apply), Table output and `Status` errors.
//!
//! Objects travel as `serde_json::Value`; each kind is checked against its
//! typed k8s-openapi struct through [`registry::ResourceType::decode`].

pub mod app_armor;
pub mod apply;
pub mod autoscaling;
pub mod certs;
pub mod cidr;
pub mod completion_indexes;
pub mod crd;
pub mod cron;
pub mod defaults;
pub mod endpoint_slices;
pub mod events;
pub mod fields;
pub mod limit_range;
pub mod meta;
pub mod metrics;
pub mod metrics_api;
pub mod node_fit;
pub mod openapi;
pub mod placement;
pub mod pod_containers;
pub mod pod_security;
pub mod protobuf;
pub mod qos;
pub mod quantity;
pub mod quota;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod sparse;
pub mod status;
pub mod strategic;
pub mod table;
pub mod text;
pub mod validate;
pub mod verb;
pub mod volumes;

pub use status::ApiError;
