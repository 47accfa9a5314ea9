//! Pieces of the controller runtime that kube-runtime does not provide.
//! Leader election lets several copies of a component run while only one
//! acts.

pub mod leader;
