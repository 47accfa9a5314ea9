//! Which EndpointSlices belong to a Service: those in its namespace
//! labelled with its name, as upstream's controller labels them.

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// The node label naming its zone, which its endpoints carry.
pub const ZONE: &str = "topology.kubernetes.io/zone";

/// The EndpointSlices of Service `ns/name`.
pub fn slices_of<'a>(
    slices: &'a [EndpointSlice],
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = &'a EndpointSlice> {
    slices.iter().filter(move |s| {
        s.metadata.namespace.as_deref() == Some(ns)
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME))
                .is_some_and(|n| n == name)
    })
}
