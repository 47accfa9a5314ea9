//! The node agent: joining a cluster with a node token, running pods with
//! real containers through containerd over CRI, serving their logs and exec
//! to the API server, and simulated nodes that
//! register, heartbeat and run pods on paper, so that the scheduler and
//! controllers can be exercised at scale with no containers.

pub mod admission;
pub mod agent;
pub mod app_armor;
pub mod containerd;
pub mod cri;
mod cri_config;
mod endpoint_auth;
mod env_file;
pub mod events;
pub mod eviction;
mod exec;
mod expansion;
#[cfg(test)]
mod fake_api;
mod hosts_file;
pub mod image_gc;
pub mod image_volumes;
pub mod join;
mod local_path;
mod local_storage;
pub mod log_rotation;
mod logs;
pub mod metrics;
pub mod node;
mod ownership;
pub mod pause_image;
pub mod plan;
pub mod pod_inputs;
pub mod pod_status;
pub mod pods;
mod port_forward;
pub mod probes;
mod pull_secrets;
mod pulls;
pub mod resize;
pub mod resource_metrics;
pub mod runtime;
mod runtime_stream;
pub mod security;
pub mod server;
mod service_env;
mod session;
pub mod simulated;
mod spdy;
mod termination;
pub mod usage;
