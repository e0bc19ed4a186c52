//! Account records the server keeps beside the registry (API keys, login
//! sessions), stored as opaque JSON under a lookup hash. The format belongs
//! to the caller; this module only decides where records live.

use crate::{keys, Registry, Result};
use berth_storage::Durability;
use bytes::Bytes;

/// The kinds of account record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    ApiKey,
    Session,
}

impl Registry {
    /// Stores (or replaces) a record under its hash.
    pub async fn put_record(&self, kind: RecordKind, hash: &str, record: Bytes) -> Result<()> {
        self.store
            .put(&keys::record(kind, hash)?, record, Durability::Durable)
            .await?;
        Ok(())
    }

    /// A record, if present.
    pub async fn get_record(&self, kind: RecordKind, hash: &str) -> Result<Option<Bytes>> {
        Ok(self.store.get(&keys::record(kind, hash)?).await?)
    }

    /// Removes a record; returns whether it existed.
    pub async fn delete_record(&self, kind: RecordKind, hash: &str) -> Result<bool> {
        Ok(self
            .store
            .delete(&keys::record(kind, hash)?, Durability::Durable)
            .await?)
    }

    /// Every record of a kind.
    pub async fn records(&self, kind: RecordKind) -> Result<Vec<Bytes>> {
        let dir = keys::records(kind);
        let mut out = Vec::new();
        for e in self.store.list(dir).await? {
            if let Some(b) = self.store.get(&keys::child(dir, &e.name)).await? {
                out.push(b);
            }
        }
        Ok(out)
    }
}
