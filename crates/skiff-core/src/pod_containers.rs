//! What of a pod runs for its whole life: its app containers and its
//! sidecars, and the node's ports they ask for. The node agent, the
//! scheduler and the API server read them alike.

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

/// Whether an init container is a sidecar: started in the init sequence
/// but run beside the app's containers, restarted whenever it exits.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's sidecars, then its app containers.
pub fn long_running(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c));
    sidecars.chain(&spec.containers)
}

/// The ports of the node they ask for (`hostPort`).
pub fn host_ports(spec: &PodSpec) -> impl Iterator<Item = &ContainerPort> {
    long_running(spec)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
}
