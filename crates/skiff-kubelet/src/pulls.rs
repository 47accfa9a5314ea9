//! Image pulls shared across pods: pods that need the same image wait on
//! one pull, and pulls of different images run side by side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use k8s_cri::v1 as cri;

use crate::runtime::ContainerRuntime;

type Pull = Shared<BoxFuture<'static, Result<(), String>>>;

#[derive(Default)]
pub struct Pulls {
    in_flight: Mutex<HashMap<String, Pull>>,
}

impl Pulls {
    /// Pulls `image` with each of `auths` in turn until one serves (none:
    /// without credentials), or joins the same pull already under way;
    /// the error is the runtime's last message.
    pub async fn pull(
        &self,
        runtime: &Arc<dyn ContainerRuntime>,
        image: &str,
        auths: &[cri::AuthConfig],
    ) -> Result<(), String> {
        let mut result = Ok(());
        for auth in auths
            .iter()
            .map(Some)
            .chain(auths.is_empty().then_some(None))
        {
            result = self.pull_with(runtime, image, auth).await;
            if result.is_ok() {
                break;
            }
        }
        result
    }

    async fn pull_with(
        &self,
        runtime: &Arc<dyn ContainerRuntime>,
        image: &str,
        auth: Option<&cri::AuthConfig>,
    ) -> Result<(), String> {
        // Pulls share only under the same credentials.
        let who = auth.map(|a| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&a.username, &a.password).hash(&mut h);
            h.finish().to_string()
        });
        let key = format!("{image}\0{}", who.unwrap_or_default());
        let pull = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            in_flight
                .entry(key.clone())
                .or_insert_with(|| {
                    let (runtime, image, auth) = (runtime.clone(), image.to_owned(), auth.cloned());
                    async move {
                        let pulled = runtime.pull_image(&image, auth.as_ref()).await;
                        pulled.map_err(|e| e.message().to_owned())
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        let result = pull.clone().await;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // The finished pull goes; a newer one for the same image stays.
        if in_flight.get(&key).is_some_and(|p| p.ptr_eq(&pull)) {
            in_flight.remove(&key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{FakeRuntime, Pull as Scripted};

    #[tokio::test]
    async fn pods_needing_one_image_share_one_pull_while_another_hangs() {
        let fake = Arc::new(FakeRuntime::default());
        fake.registry(
            "app:1",
            Scripted::Succeeds {
                user: String::new(),
            },
        );
        fake.registry("stuck:1", Scripted::Hangs);
        let runtime: Arc<dyn ContainerRuntime> = fake.clone();
        let pulls = Pulls::default();
        let stuck = pulls.pull(&runtime, "stuck:1", &[]);
        let both = futures::future::join(
            pulls.pull(&runtime, "app:1", &[]),
            pulls.pull(&runtime, "app:1", &[]),
        );
        tokio::select! {
            _ = stuck => panic!("a hanging pull returned"),
            (a, b) = both => assert_eq!((a, b), (Ok(()), Ok(()))),
        }
        let pulled: Vec<String> = fake.pulls().into_iter().filter(|i| i == "app:1").collect();
        assert_eq!(pulled.len(), 1, "one pull for two pods");
        assert!(pulls.in_flight.lock().unwrap().contains_key("stuck:1\0"));
        assert!(!pulls.in_flight.lock().unwrap().contains_key("app:1\0"));
    }
}
