//! What the web interface reads, and nothing it writes: tag names with
//! their push times, manifests read without counting as a pull, small
//! blobs (image configurations) by digest, and the catalog in either
//! order. Everything here is a read of what the registry already stores;
//! permissions are the server's business.

use crate::manifests::StoredManifest;
use crate::{keys, CoreError, Registry, Result};
use berth_oci::{Digest, Reference, RepoName, Tag};
use bytes::Bytes;
use std::time::SystemTime;

impl Registry {
    /// Every tag name of a repository, sorted by bytes.
    /// [`CoreError::NameUnknown`] when the repository holds nothing.
    pub async fn tag_names(&self, repo: &RepoName) -> Result<Vec<String>> {
        Ok(self.list_tags(repo, None, None).await?.items)
    }

    /// When a tag was last pushed (a push rewrites its tag every time),
    /// `None` if the tag does not exist.
    pub async fn tag_pushed(&self, repo: &RepoName, tag: &Tag) -> Result<Option<SystemTime>> {
        Ok(self.store.modified(&keys::tag(repo, tag)).await?)
    }

    /// When a manifest was last pushed to a repository (its link's time),
    /// `None` if the repository does not hold it.
    pub async fn manifest_pushed(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<SystemTime>> {
        Ok(self
            .store
            .modified(&keys::manifest_link(repo, digest))
            .await?)
    }

    /// A manifest with its bytes, verified like [`Registry::get_manifest`],
    /// but not noted as a pull: looking at an image is not pulling it.
    pub async fn peek_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let (digest, media_type) = self.resolve_manifest(repo, reference).await?;
        let cached = self
            .manifest_bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest);
        let body = match cached {
            Some(body) => body,
            None => {
                let body = self
                    .store
                    .get(&keys::blob(&digest))
                    .await?
                    .ok_or(CoreError::ManifestUnknown)?;
                if Digest::of(digest.algorithm(), &body) != digest {
                    return Err(CoreError::Corrupt(digest));
                }
                self.manifest_bodies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(digest.clone(), body.clone());
                body
            }
        };
        Ok(StoredManifest {
            digest,
            media_type,
            body,
        })
    }

    /// A blob of `repo` read whole, when it is linked there and at most
    /// `limit` bytes long (`Ok(None)` otherwise): for image configurations,
    /// which are small. Verified against its digest.
    pub async fn small_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<Bytes>> {
        if self
            .store
            .stat(&keys::layer_link(repo, digest))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        match self.store.stat(&keys::blob(digest)).await? {
            Some(size) if size <= limit => {}
            _ => return Ok(None),
        }
        let Some(body) = self.store.get(&keys::blob(digest)).await? else {
            return Ok(None);
        };
        if Digest::of(digest.algorithm(), &body) != *digest {
            return Err(CoreError::Corrupt(digest.clone()));
        }
        Ok(Some(body))
    }

    /// Repository names in descending order, before `before` (exclusive),
    /// at most `n`, among those `visible` accepts: the catalog read
    /// backwards, for a list sorted Z to A.
    pub async fn catalog_descending(
        &self,
        n: usize,
        before: Option<&str>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<crate::listing::Page> {
        self.catalog_page(n, before, true, visible).await
    }
}
