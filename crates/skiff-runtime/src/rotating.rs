//! A client whose credential can be replaced while it is in use: each
//! request goes through the current one (requests already sent finish
//! on the old). Node certificates and controllers' tokens rotate so.

use std::sync::{Arc, RwLock};

#[derive(Clone)]
pub struct Rotating(Arc<RwLock<kube::Client>>);

impl Rotating {
    pub fn new(client: kube::Client) -> Self {
        Self(Arc::new(RwLock::new(client)))
    }

    /// A client that always uses the current credential.
    pub fn client(&self) -> kube::Client {
        let current = self.0.clone();
        let service = tower::service_fn(move |req| {
            let client = current.read().unwrap_or_else(|e| e.into_inner()).clone();
            async move { client.send(req).await }
        });
        kube::Client::new(service, "default")
    }

    pub fn replace(&self, client: kube::Client) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = client;
    }
}
