use bytes::Bytes;

use crate::{Error, KeyValue, Revision, Store};

/// Reads a key, computes its next value and writes it with compare-and-swap,
/// retrying when another writer got there first (upstream's
/// `GuaranteedUpdate`). `next` sees `None` when the key is absent and
/// returns the new value, `None` to leave the key as it is, or its own
/// error. Returns the value and revision the key ends with.
pub async fn guaranteed_update<E, F>(
    store: &dyn Store,
    key: &str,
    mut next: F,
) -> Result<(Bytes, Revision), E>
where
    E: From<Error>,
    F: FnMut(Option<&KeyValue>) -> Result<Option<Bytes>, E>,
{
    loop {
        let current = store.get(key).await?;
        let value = match (next(current.as_ref())?, &current) {
            (Some(value), _) => value,
            // Unchanged, but stored in a form to renew (an old key): written
            // again as it is.
            (None, Some(kv)) if store.stale(kv) => kv.value.clone(),
            (None, Some(kv)) => return Ok((kv.value.clone(), kv.mod_rev)),
            (None, None) => {
                return Err(Error::NotFound {
                    key: key.to_owned(),
                }
                .into())
            }
        };
        let written = match &current {
            Some(kv) => store.update(key, value.clone(), kv.mod_rev).await,
            None => store.create(key, value.clone()).await,
        };
        match written {
            Ok(rev) => return Ok((value, rev)),
            Err(Error::Conflict { .. } | Error::AlreadyExists { .. } | Error::NotFound { .. }) => {
                continue
            }
            Err(e) => return Err(e.into()),
        }
    }
}
