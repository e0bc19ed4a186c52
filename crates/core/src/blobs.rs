//! Blobs as a repository sees them: present only if linked into it.

use crate::{keys, CoreError, Registry, Result};
use berth_oci::{Digest, RepoName};
use berth_storage::{ByteStream, Durability, StorageError};

impl Registry {
    /// Size of a blob of `repo`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        if self
            .store
            .stat(&keys::layer_link(repo, digest))
            .await?
            .is_none()
        {
            return Err(CoreError::BlobUnknown);
        }
        self.store
            .stat(&keys::blob(digest))
            .await?
            .ok_or(CoreError::BlobUnknown)
    }

    /// Bytes `start..end` of a blob whose presence was checked with
    /// [`Registry::blob_size`].
    pub async fn read_blob(&self, digest: &Digest, start: u64, end: u64) -> Result<ByteStream> {
        self.store
            .read(&keys::blob(digest), start, Some(end))
            .await
            .map_err(|e| match e {
                StorageError::NotFound => CoreError::BlobUnknown,
                e => e.into(),
            })
    }

    /// Removes a blob from a repository. The content stays for other
    /// repositories; garbage collection reclaims it when nothing links it.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self
            .store
            .delete(&keys::layer_link(repo, digest), Durability::Durable)
            .await?
        {
            self.forget_repo_if_empty(repo).await;
            Ok(())
        } else {
            Err(CoreError::BlobUnknown)
        }
    }
}
