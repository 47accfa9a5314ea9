//! Encryption at rest, as upstream's `--encryption-provider-config`: an
//! `apiserver.config.k8s.io/v1 EncryptionConfiguration` names resources
//! and, for each, providers in order; the first encrypts what is written,
//! every one may read. Skiff has `aesgcm` (AES-GCM with 16- or 32-byte
//! keys, the storage key as authenticated data, upstream's
//! `k8s:enc:aesgcm:v1:<key name>:` prefix) and `identity` (plain); other
//! providers are refused at start. The transformer sits between the
//! watch cache and the backend, so only the file holds ciphertext.

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use skiff_store::{Error, KeyValue, ListOptions, ListPage, Result, Revision, Store, WatchStream};

const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Configuration {
    kind: String,
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<serde_yaml::Mapping>,
}

#[derive(Deserialize)]
struct KeysConfig {
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
struct KeyConfig {
    name: String,
    secret: String,
}

/// One provider: AES-GCM with named keys (the first encrypts), or none.
enum Provider {
    AesGcm(Vec<(String, LessSafeKey)>),
    Identity,
}

/// The providers of the resources under one key prefix.
struct Rule {
    prefix: String,
    providers: Vec<Provider>,
}

/// The transformers an EncryptionConfiguration asks for.
pub struct Transformers {
    rules: Vec<Rule>,
    random: SystemRandom,
    /// Values read that were not sealed by the first provider, by key and
    /// revision: an update writes them again even when unchanged.
    stale: std::sync::Mutex<std::collections::HashSet<(String, Revision)>>,
}

impl Transformers {
    /// Reads an EncryptionConfiguration file.
    pub fn load(path: &std::path::Path) -> std::result::Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let config: Configuration =
            serde_yaml::from_str(text).map_err(|e| format!("EncryptionConfiguration: {e}"))?;
        if config.kind != "EncryptionConfiguration" {
            return Err(format!(
                "kind {:?} is not EncryptionConfiguration",
                config.kind
            ));
        }
        let mut rules = Vec::new();
        for r in config.resources {
            if r.providers.is_empty() {
                return Err("a resource needs at least one provider".into());
            }
            for name in &r.resources {
                let (plural, group) = name.split_once('.').unwrap_or((name, ""));
                let resource = skiff_core::registry::preferred(group, plural)
                    .ok_or_else(|| format!("{name:?} is not a resource Skiff serves"))?;
                let providers = r
                    .providers
                    .iter()
                    .map(provider)
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                rules.push(Rule {
                    prefix: resource.key_prefix(),
                    providers,
                });
            }
        }
        Ok(Self {
            rules,
            random: SystemRandom::new(),
            stale: Default::default(),
        })
    }

    fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| key.starts_with(&r.prefix))
    }

    /// What is stored for `value` at `key`.
    fn seal(&self, key: &str, value: Bytes) -> Result<Bytes> {
        let Some(rule) = self.rule(key) else {
            return Ok(value);
        };
        match &rule.providers[0] {
            Provider::Identity => Ok(value),
            Provider::AesGcm(keys) => {
                let (name, aead) = &keys[0];
                let mut nonce = [0u8; 12];
                self.random
                    .fill(&mut nonce)
                    .map_err(|_| transform("no randomness for a nonce"))?;
                let mut sealed = value.to_vec();
                aead.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(key.as_bytes()),
                    &mut sealed,
                )
                .map_err(|_| transform("encrypting"))?;
                let mut out = Vec::with_capacity(PREFIX.len() + name.len() + 13 + sealed.len());
                out.extend_from_slice(PREFIX);
                out.extend_from_slice(name.as_bytes());
                out.push(b':');
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                Ok(Bytes::from(out))
            }
        }
    }

    /// The value stored at `key`, decrypted by whichever provider wrote it.
    fn open(&self, key: &str, stored: Bytes) -> Result<Bytes> {
        self.open_fresh(key, stored).map(|(value, _)| value)
    }

    /// The value stored at `key`, and whether the first provider sealed it.
    fn open_fresh(&self, key: &str, stored: Bytes) -> Result<(Bytes, bool)> {
        let Some(rule) = self.rule(key) else {
            return Ok((stored, true));
        };
        let first = match &rule.providers[0] {
            Provider::AesGcm(keys) => Some(keys[0].0.as_str()),
            Provider::Identity => None,
        };
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            let identity = rule
                .providers
                .iter()
                .any(|p| matches!(p, Provider::Identity));
            return if identity {
                Ok((stored, first.is_none()))
            } else {
                Err(transform(
                    "stored in plain text, and identity is not a provider",
                ))
            };
        };
        let keys = rule.providers.iter().flat_map(|p| match p {
            Provider::AesGcm(keys) => keys.as_slice(),
            Provider::Identity => &[],
        });
        for (name, aead) in keys {
            let Some(body) = rest
                .strip_prefix(name.as_bytes())
                .and_then(|b| b.strip_prefix(b":"))
            else {
                continue;
            };
            if body.len() < 12 {
                return Err(transform("the stored value is truncated"));
            }
            let (nonce, sealed) = body.split_at(12);
            let nonce =
                Nonce::try_assume_unique_for_key(nonce).map_err(|_| transform("a bad nonce"))?;
            let mut buf = sealed.to_vec();
            let plain = aead
                .open_in_place(nonce, Aad::from(key.as_bytes()), &mut buf)
                .map_err(|_| transform("the stored value does not decrypt"))?;
            let fresh = first == Some(name.as_str());
            return Ok((Bytes::copy_from_slice(plain), fresh));
        }
        Err(transform(
            "no provider has the key this value was encrypted with",
        ))
    }

    fn open_kv(&self, mut kv: KeyValue) -> Result<KeyValue> {
        let (value, fresh) = self.open_fresh(&kv.key, kv.value)?;
        kv.value = value;
        if !fresh {
            let mut stale = self.stale.lock().unwrap_or_else(|e| e.into_inner());
            stale.insert((kv.key.clone(), kv.mod_rev));
        }
        Ok(kv)
    }
}

fn transform(why: &str) -> Error {
    Error::Transform(why.to_owned())
}

fn provider(map: &serde_yaml::Mapping) -> std::result::Result<Provider, String> {
    let (kind, body) = map.iter().next().ok_or("an empty provider")?;
    let kind = kind.as_str().unwrap_or_default();
    match kind {
        "identity" => Ok(Provider::Identity),
        "aesgcm" => {
            let keys: KeysConfig =
                serde_yaml::from_value(body.clone()).map_err(|e| format!("aesgcm: {e}"))?;
            if keys.keys.is_empty() {
                return Err("aesgcm needs a key".into());
            }
            let keys = keys
                .keys
                .into_iter()
                .map(|k| Ok((k.name.clone(), aes_key(&k)?)))
                .collect::<std::result::Result<Vec<_>, String>>()?;
            Ok(Provider::AesGcm(keys))
        }
        other => Err(format!(
            "provider {other:?} is not supported by Skiff: use aesgcm or identity"
        )),
    }
}

/// An AES-GCM key from its base64 secret (16 or 32 bytes).
fn aes_key(k: &KeyConfig) -> std::result::Result<LessSafeKey, String> {
    let secret = base64::engine::general_purpose::STANDARD
        .decode(k.secret.trim())
        .map_err(|e| format!("aesgcm key {}: not base64: {e}", k.name))?;
    let algorithm = match secret.len() {
        16 => &AES_128_GCM,
        32 => &AES_256_GCM,
        n => {
            return Err(format!(
                "aesgcm key {}: {n} bytes; Skiff takes 16 or 32",
                k.name
            ))
        }
    };
    let key = UnboundKey::new(algorithm, &secret)
        .map_err(|_| format!("aesgcm key {}: unusable", k.name))?;
    Ok(LessSafeKey::new(key))
}

/// A store whose values under the configured resources are encrypted.
pub struct Encrypted {
    pub inner: std::sync::Arc<dyn Store>,
    pub transformers: std::sync::Arc<Transformers>,
}

#[async_trait]
impl Store for Encrypted {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let sealed = self.transformers.seal(key, value)?;
        self.inner.create(key, sealed).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        match self.inner.get(key).await? {
            Some(kv) => Ok(Some(self.transformers.open_kv(kv)?)),
            None => Ok(None),
        }
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage> {
        let mut page = self.inner.list(prefix, opts).await?;
        page.items = page
            .items
            .into_iter()
            .map(|kv| self.transformers.open_kv(kv))
            .collect::<Result<_>>()?;
        Ok(page)
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let sealed = self.transformers.seal(key, value)?;
        let rev = self.inner.update(key, sealed, expected).await?;
        let mut stale = self
            .transformers
            .stale
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        stale.remove(&(key.to_owned(), expected));
        Ok(rev)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let kv = self.inner.delete(key, expected).await?;
        self.transformers.open_kv(kv)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let transformers = self.transformers.clone();
        let stream = self.inner.watch(prefix, after).await?;
        Ok(stream
            .map(move |event| {
                let mut event = event?;
                if let Some(prev) = event.prev.take() {
                    event.prev = Some(transformers.open(&event.kv.key, prev)?);
                }
                event.kv = transformers.open_kv(event.kv)?;
                Ok(event)
            })
            .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    fn stale(&self, kv: &KeyValue) -> bool {
        let stale = self.transformers.stale.lock();
        let stale = stale.unwrap_or_else(|e| e.into_inner());
        stale.contains(&(kv.key.clone(), kv.mod_rev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aesgcm:
      keys:
      - {name: new, secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}
      - {name: old, secret: AAECAwQFBgcICQoLDA0ODw==}
  - identity: {}
";

    #[test]
    fn secrets_are_sealed_with_the_first_key_and_opened_with_any() {
        let t = Transformers::parse(CONFIG).unwrap();
        let key = "/registry/core/secrets/default/s";
        let plain = Bytes::from_static(br#"{"data":{"k":"c2VrcmV0"}}"#);
        let sealed = t.seal(key, plain.clone()).unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:new:"));
        assert!(!sealed.windows(8).any(|w| w == b"c2VrcmV0"));
        assert_eq!(t.open(key, sealed.clone()).unwrap(), plain);
        // Moved to another key, the value does not open (the key is the
        // authenticated data).
        assert!(t
            .open("/registry/core/secrets/default/other", sealed.clone())
            .is_err());
        // Plain values written before encryption read through identity.
        assert_eq!(t.open(key, plain.clone()).unwrap(), plain);
        // Other resources are untouched.
        let map = "/registry/core/configmaps/default/m";
        assert_eq!(t.seal(map, plain.clone()).unwrap(), plain);
        // A value sealed with the second key (before a rotation) opens too.
        let before = Transformers::parse(&CONFIG.replace(
            "      - {name: new, secret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=}\n",
            "",
        ))
        .unwrap();
        let old = before.seal(key, plain.clone()).unwrap();
        assert!(old.starts_with(b"k8s:enc:aesgcm:v1:old:"));
        assert_eq!(t.open(key, old).unwrap(), plain);
        let tampered = {
            let mut v = sealed.to_vec();
            let last = v.len() - 1;
            v[last] ^= 1;
            Bytes::from(v)
        };
        assert!(t.open(key, tampered).is_err());
    }

    #[test]
    fn unsupported_providers_and_keys_are_refused() {
        let aescbc = CONFIG.replace("aesgcm:", "aescbc:");
        let err = Transformers::parse(&aescbc).err().unwrap();
        assert!(err.contains("\"aescbc\" is not supported"), "{err}");
        let short = CONFIG.replace(
            "AAECAwQFBgcICQoLDA0ODw==",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX",
        );
        assert!(Transformers::parse(&short)
            .err()
            .unwrap()
            .contains("24 bytes"));
        let unknown = CONFIG.replace("[secrets]", "[widgets]");
        assert!(Transformers::parse(&unknown)
            .err()
            .unwrap()
            .contains("widgets"));
        let no_identity = CONFIG.replace("  - identity: {}\n", "");
        let t = Transformers::parse(&no_identity).unwrap();
        assert!(t
            .open("/registry/core/secrets/a/b", Bytes::from_static(b"{}"))
            .is_err());
    }
}
