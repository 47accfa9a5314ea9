//! The scheduler: watches unbound pods and nodes through the API, filters
//! and scores nodes with plugins, and binds each pod through
//! `pods/binding`. It never touches the store.

pub mod framework;
mod metrics;
pub mod node_info;
pub mod plugins;
pub mod queue;
mod run;
pub mod schedule;

pub use run::{run, Config, LEASE, SCHEDULER_NAME};
