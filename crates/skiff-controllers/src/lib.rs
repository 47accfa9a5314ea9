//! The controller manager: a small controller runtime and the
//! reconciliation loops that make desired state real.

pub mod deployment;
pub mod leader;
pub mod manager;
pub mod owned;
pub mod pods;
pub mod replicaset;
pub mod rollout;
pub mod runtime;
