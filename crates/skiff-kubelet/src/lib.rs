//! The node agent. For now: joining a cluster with a node token, and
//! simulated nodes that register, heartbeat and run pods on paper, so that
//! the scheduler and controllers can be exercised at scale with no
//! containers.

pub mod join;
pub mod simulated;
