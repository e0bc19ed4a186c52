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

    /// The store's own secret, made once: `fresh` the first time any
    /// process asks (create-once, so racing replicas agree on one), what
    /// is stored ever after. The cookie key when the operator gave none,
    /// so every replica reads every cookie and sessions outlive restarts.
    pub async fn store_secret(&self, fresh: Bytes) -> Result<Bytes> {
        if let Some(b) = self.store.get(keys::STORE_SECRET).await? {
            return Ok(b);
        }
        self.store.put_if_absent(keys::STORE_SECRET, fresh).await?;
        self.store
            .get(keys::STORE_SECRET)
            .await?
            .ok_or(crate::CoreError::Storage(
                berth_storage::StorageError::NotFound,
            ))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Options, Registry};
    use bytes::Bytes;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_store_secret_is_made_once_and_agreed_on() {
        let store = Arc::new(berth_storage::mem::MemBackend::new());
        let a = Registry::new(store.clone(), Options::default());
        let b = Registry::new(store, Options::default());
        // Two processes asking at once keep one of their two candidates.
        let (x, y) = tokio::join!(
            a.store_secret(Bytes::from_static(&[1; 64])),
            b.store_secret(Bytes::from_static(&[2; 64]))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x, y);
        assert!(x == [1; 64][..] || x == [2; 64][..]);
        // Later candidates are ignored.
        assert_eq!(
            a.store_secret(Bytes::from_static(&[3; 64])).await.unwrap(),
            x
        );
    }
}
