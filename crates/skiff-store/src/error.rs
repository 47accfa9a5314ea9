use crate::Revision;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("key {key:?} not found")]
    NotFound { key: String },
    #[error("key {key:?} changed: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} is compacted; the oldest kept is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("revision {requested} is newer than the latest, {latest}")]
    FutureRevision {
        requested: Revision,
        latest: Revision,
    },
    #[error("embedded database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "embedded database {path} is in use by another process (another server on this data dir?)"
    )]
    InUse { path: String },
    #[error("embedded database {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the store is shut down")]
    Closed,
    /// A value could not be encrypted or decrypted (encryption at rest).
    #[error("transforming a stored value: {0}")]
    Transform(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
