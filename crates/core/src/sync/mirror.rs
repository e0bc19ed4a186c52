//! Mirroring (`pollInterval`): whole images copied from upstream, children
//! and blobs first and the tag last, skipping what is here, so an
//! interrupted pass resumes where it stopped.

use super::{upstream_err, SyncRegistry};
use crate::manifests::TagWrite;
use crate::{keys, CoreError, Registry, Result};
use berth_oci::{Digest, Reference, RepoName, Tag};
use std::sync::atomic::Ordering;

impl Registry {
    /// Copies one tagged image (children and blobs first, the tag last).
    /// Returns whether anything was copied.
    pub async fn mirror_image(
        &self,
        reg: &SyncRegistry,
        source: &str,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<bool> {
        let reference = Reference::Tag(tag.clone());
        if self
            .upstream_unchanged(&reg.upstream, source, repo, &reference)
            .await?
        {
            return Ok(false);
        }
        let (body, content_type) = self
            .get_upstream_manifest(&reg.upstream, source, &reference)
            .await?;
        let parsed = berth_oci::manifest::parse(&body, content_type.as_deref())
            .map_err(|e| CoreError::Upstream(format!("upstream manifest: {e}")))?;
        for child in &parsed.manifests {
            self.mirror_child(reg, source, repo, &child.digest, 1)
                .await?;
        }
        self.mirror_blobs(reg, source, repo, &parsed.blobs).await?;
        self.store_manifest(
            repo,
            &reference,
            content_type.as_deref(),
            body,
            true,
            TagWrite::Overwrite,
            &[],
        )
        .await?;
        self.sync_stats.mirrored.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Copies a child manifest of an index with everything below it
    /// (indexes of indexes too, a few levels deep).
    async fn mirror_child(
        &self,
        reg: &SyncRegistry,
        source: &str,
        repo: &RepoName,
        digest: &Digest,
        depth: usize,
    ) -> Result<()> {
        const DEEPEST: usize = 4;
        if depth > DEEPEST {
            return Err(CoreError::Upstream(format!(
                "indexes nested deeper than {DEEPEST} levels"
            )));
        }
        let child = Reference::Digest(digest.clone());
        if self.resolve_manifest(repo, &child).await.is_err() {
            self.fetch_manifest(&reg.upstream, source, repo, &child, false)
                .await?;
        }
        let body = self
            .store
            .get(&keys::blob(digest))
            .await?
            .ok_or(CoreError::ManifestUnknown)?;
        let m = berth_oci::manifest::parse(&body, None)
            .map_err(|e| CoreError::Upstream(format!("upstream manifest {digest}: {e}")))?;
        for grandchild in &m.manifests {
            Box::pin(self.mirror_child(reg, source, repo, &grandchild.digest, depth + 1)).await?;
        }
        self.mirror_blobs(reg, source, repo, &m.blobs).await
    }

    async fn mirror_blobs(
        &self,
        reg: &SyncRegistry,
        source: &str,
        repo: &RepoName,
        blobs: &[berth_oci::manifest::Descriptor],
    ) -> Result<()> {
        for b in blobs.iter().filter(|b| b.must_exist()) {
            if self.blob_size(repo, &b.digest).await.is_ok() {
                continue;
            }
            match self
                .fetch_blob_whole(&reg.upstream, source, repo, &b.digest)
                .await?
            {
                true => {}
                false => return Err(CoreError::ManifestBlobUnknown(b.digest.clone())),
            }
        }
        Ok(())
    }

    /// One mirroring pass of a registry's content rules. Returns the
    /// number of images copied.
    pub async fn mirror(&self, reg: &SyncRegistry) -> Result<usize> {
        let mut catalog: Option<Vec<String>> = None;
        let mut copied = 0;
        for rule in &reg.content {
            let sources = match rule.static_repository() {
                Some(name) => vec![name],
                None => {
                    if catalog.is_none() {
                        catalog = Some(reg.upstream.catalog().await.map_err(upstream_err)?);
                    }
                    catalog
                        .iter()
                        .flatten()
                        .filter(|r| rule.covers_upstream(r))
                        .cloned()
                        .collect()
                }
            };
            for source in sources {
                let Some(local) = RepoName::parse(&rule.destination_of(&source)) else {
                    tracing::warn!(upstream = source, "mirroring: no valid local name; skipped");
                    continue;
                };
                let tags = match reg.upstream.tags(&source).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(upstream = source, error = %e, "mirroring: cannot list tags");
                        continue;
                    }
                };
                for tag in rule.tags.filter(tags) {
                    let Some(tag) = Tag::parse(&tag) else {
                        continue;
                    };
                    match self.mirror_image(reg, &source, &local, &tag).await {
                        Ok(true) => {
                            copied += 1;
                            tracing::info!(upstream = source, repository = %local, %tag, "mirrored");
                        }
                        Ok(false) => {}
                        Err(e) => self.sync_failed("mirroring an image failed", &e),
                    }
                }
            }
        }
        Ok(copied)
    }
}
