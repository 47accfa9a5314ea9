//! A component names itself to the server in its `User-Agent`, as
//! upstream's do (`kube-scheduler/v1.35.0 …`): the server takes the field
//! manager of a write that names none from it, and the audit log shows it.
//! Set where a component's client is built (its configuration, or the
//! in-process client's stack), so no layer is added per request.

use hyper::header::{HeaderValue, USER_AGENT};

/// The `User-Agent` of `component` (`kube-scheduler`, `kubelet` …).
pub fn value(component: &str) -> HeaderValue {
    let agent = format!("{component}/v1.35.0-skiff.{}", env!("CARGO_PKG_VERSION"));
    HeaderValue::from_str(&agent).expect("component names are header-safe")
}

/// `config`, its clients sending `component`'s `User-Agent`.
pub fn set(config: &mut kube::Config, component: &str) {
    config.headers.retain(|(name, _)| name != USER_AGENT);
    config.headers.push((USER_AGENT, value(component)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_is_named_once_with_the_version() {
        let mut config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        set(&mut config, "kubelet");
        set(&mut config, "kube-scheduler");
        let agents: Vec<&HeaderValue> = config
            .headers
            .iter()
            .filter(|(name, _)| name == USER_AGENT)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(agents.len(), 1);
        let agent = agents[0].to_str().unwrap();
        assert!(
            agent.starts_with("kube-scheduler/v1.35.0-skiff."),
            "{agent}"
        );
    }
}
