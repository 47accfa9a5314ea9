//! Per-controller credentials, as upstream's controller manager with
//! `--use-service-account-credentials`: the informers read as the
//! manager itself, while each loop writes as its own service account
//! `kube-system/<name>`, bound to `system:controller:<name>`, so a loop
//! can do no more than its own role allows. Tokens come from the
//! TokenRequest API and are renewed at four fifths of their life.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;
use skiff_runtime::rotating::Rotating;

/// Where the controllers' service accounts live.
const NAMESPACE: &str = "kube-system";
/// How long a controller's token lives (upstream's one hour).
const TOKEN_SECONDS: i64 = 3600;

pub struct Credentials {
    /// The manager's own client: it makes the accounts and their tokens.
    root: Client,
    /// How to reach the server, without the manager's identity.
    base: kube::Config,
}

impl Credentials {
    pub fn new(root: Client, config: &kube::Config) -> Self {
        let mut base = config.clone();
        base.auth_info = Default::default();
        Self { root, base }
    }

    /// A client acting as `kube-system/<name>`, once the account and a
    /// token for it can be had (retried until then); a task renews the
    /// token for as long as the process runs.
    pub async fn client(&self, name: &str) -> Client {
        let what = format!("getting a token for controller {name}");
        let (client, expires) = skiff_runtime::retry::until_ok(
            &what,
            Duration::from_millis(250),
            Duration::from_secs(8),
            || self.token_client(name),
        )
        .await;
        let rotating = Rotating::new(client);
        let shared = rotating.client();
        let (root, base, name) = (self.root.clone(), self.base.clone(), name.to_owned());
        tokio::spawn(async move {
            let renewer = Self { root, base };
            let mut expires = expires;
            loop {
                let now = chrono::Utc::now().timestamp();
                let at = expires - TOKEN_SECONDS / 5;
                tokio::time::sleep(Duration::from_secs((at - now).max(1) as u64)).await;
                match renewer.token_client(&name).await {
                    Ok((client, next)) => {
                        rotating.replace(client);
                        expires = next;
                    }
                    Err(e) => {
                        tracing::warn!(controller = %name, error = %e, "renewing a token");
                        expires = chrono::Utc::now().timestamp() + TOKEN_SECONDS / 5 + 10;
                    }
                }
            }
        });
        shared
    }

    /// A client with a fresh token for `name`'s account (made if
    /// missing), and when the token expires.
    async fn token_client(&self, name: &str) -> Result<(Client, i64), kube::Error> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.root.clone(), NAMESPACE);
        let account = serde_json::from_value(json!({"metadata": {"name": name}}))
            .expect("a valid ServiceAccount");
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let issued = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?;
        let Some(status) = issued.status else {
            return Err(kube::Error::Service(
                format!("the token request for {name} came back without a token").into(),
            ));
        };
        let mut config = self.base.clone();
        config.auth_info = serde_json::from_value(json!({"token": status.token}))
            .expect("a token is a valid credential");
        let expires = status.expiration_timestamp.0.as_second();
        Ok((Client::try_from(config)?, expires))
    }
}
