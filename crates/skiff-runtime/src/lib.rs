//! The client runtime every component builds on: informers feed caches
//! and queue keys; workers reconcile one key at a time; expectations
//! guard against stale caches; writes go through the `Cluster` trait
//! (its in-memory fake behind the `testing` feature); events, correlated
//! as upstream's recorders do (`correlator`, and `series` for the events
//! API); work-queue metrics and leader election;
//! `watch` is the relisting watch they all stand on, `retry` the doubling
//! pauses between failed attempts, and `user_agent` how a component names
//! itself to the server.

pub mod api;
pub mod cache;
pub mod controller;
pub mod correlator;
pub mod events;
pub mod expectations;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod leader;
pub mod lean;
pub mod loopback;
pub mod metrics;
pub mod queue;
pub mod retry;
pub mod rotating;
pub mod series;
pub mod user_agent;
pub mod watch;
