//! The node agent: joining a cluster with a node token, running pods with
//! real containers through containerd over CRI, and simulated nodes that
//! register, heartbeat and run pods on paper, so that the scheduler and
//! controllers can be exercised at scale with no containers.

pub mod agent;
pub mod containerd;
pub mod cri;
pub mod join;
pub mod node;
pub mod pod_inputs;
pub mod pods;
pub mod probes;
pub mod simulated;
