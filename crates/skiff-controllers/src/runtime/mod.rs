//! The controller runtime: informers feed caches and queue keys; workers
//! reconcile one key at a time; expectations guard against stale caches.

pub mod api;
pub mod cache;
pub mod controller;
pub mod events;
pub mod expectations;
#[cfg(test)]
pub mod fake;
pub mod metrics;
pub mod queue;
