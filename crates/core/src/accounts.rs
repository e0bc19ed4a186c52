//! Account records the server keeps beside the registry (API keys), stored
//! as opaque JSON under their lookup hash. The format belongs to the caller;
//! this module only decides where records live.

use crate::{keys, Registry, Result};
use berth_storage::Durability;
use bytes::Bytes;

impl Registry {
    /// Stores (or replaces) the record of an API key under its hash.
    pub async fn put_api_key(&self, hash: &str, record: Bytes) -> Result<()> {
        self.store
            .put(&keys::api_key(hash)?, record, Durability::Durable)
            .await?;
        Ok(())
    }

    /// Removes an API key record; returns whether it existed.
    pub async fn delete_api_key(&self, hash: &str) -> Result<bool> {
        Ok(self
            .store
            .delete(&keys::api_key(hash)?, Durability::Durable)
            .await?)
    }

    /// Every stored API key record.
    pub async fn api_keys(&self) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        for e in self.store.list(keys::API_KEYS).await? {
            if let Some(b) = self
                .store
                .get(&format!("{}/{}", keys::API_KEYS, e.name))
                .await?
            {
                out.push(b);
            }
        }
        Ok(out)
    }
}
