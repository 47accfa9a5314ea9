//! The controller manager: the reconciliation loops that make desired
//! state real, on `skiff-runtime`.

pub mod certificates;
mod credentials;
pub mod cronjob;
pub mod csr_cleaner;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod gc;
pub mod hpa;
pub mod ipam;
pub mod job;
pub mod manager;
pub mod mirroring;
pub mod namespace;
pub mod node_lifecycle;
pub mod owned;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod resourcequota;
pub mod revisions;
pub mod rollout;
pub mod root_ca;
pub mod serviceaccount;
pub mod statefulset;
pub mod status;
mod topology_hints;
pub mod volume;
