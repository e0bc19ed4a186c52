//! Manifests, tags and the referrers index.
//!
//! A manifest's bytes live in the shared content store under its digest,
//! exactly as pushed. A repository holds it through a link that records the
//! media type to serve it with; tags point at digests. When a manifest has
//! a `subject`, a descriptor of it is written under the subject's digest, so
//! the referrers API reads one directory instead of scanning manifests.

use crate::{keys, CoreError, Registry, Result};
use berth_oci::manifest::{self, Descriptor};
use berth_oci::{Algorithm, Digest, Reference, RepoName, Tag};
use berth_storage::Durability;
use bytes::Bytes;

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// What a successful manifest push tells the client.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// The tags written by this push (the reference's, then the extra
    /// ones of a push by digest), in order.
    pub tags: Vec<Tag>,
}

/// How a push may write its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagWrite {
    /// Create the tag or move it (the caller may update tags).
    Overwrite,
    /// Only create it: exactly one of several racing pushes to a new tag
    /// wins, the others get [`CoreError::TagExists`] (immutable tags).
    CreateOnly,
}

fn parse_digest(bytes: &[u8]) -> Option<Digest> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

impl Registry {
    /// Validates and stores a manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        tag_write: TagWrite,
    ) -> Result<Pushed> {
        self.store_manifest(repo, reference, content_type, body, true, tag_write, &[])
            .await
    }

    /// Pushes a manifest by `digest` and writes `tags` to it (the
    /// distribution-spec's `tag` parameters), in order, each as its
    /// `TagWrite` says; one refused stops the rest, with those before it
    /// kept.
    pub async fn put_manifest_tagged(
        &self,
        repo: &RepoName,
        digest: &Digest,
        content_type: Option<&str>,
        body: Bytes,
        tags: &[(Tag, TagWrite)],
    ) -> Result<Pushed> {
        let reference = Reference::Digest(digest.clone());
        self.store_manifest(
            repo,
            &reference,
            content_type,
            body,
            true,
            TagWrite::CreateOnly,
            tags,
        )
        .await
    }

    /// Stores a manifest. `strict`: the blobs and child manifests it
    /// references must be in the repository (a push); a manifest cached
    /// from upstream is stored without them, which arrive when asked for.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
        strict: bool,
        tag_write: TagWrite,
        extra_tags: &[(Tag, TagWrite)],
    ) -> Result<Pushed> {
        let limit = self.options.max_manifest_size;
        if body.len() > limit {
            return Err(CoreError::ManifestTooLarge { limit });
        }
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of(algorithm, &body);
        if let Reference::Digest(declared) = reference {
            if *declared != digest {
                return Err(CoreError::DigestMismatch {
                    declared: declared.clone(),
                    computed: digest,
                });
            }
        }
        let m = manifest::parse(&body, content_type)
            .map_err(|e| CoreError::ManifestInvalid(e.to_string()))?;
        // Referenced blobs and child manifests must be in this repository.
        let required = m
            .blobs
            .iter()
            .filter(|d| strict && d.must_exist())
            .map(|d| (keys::layer_link(repo, &d.digest), &d.digest))
            .chain(
                m.manifests
                    .iter()
                    .filter(|_| strict)
                    .map(|d| (keys::manifest_link(repo, &d.digest), &d.digest)),
            );
        for (link, digest) in required {
            if self.store.stat(&link).await?.is_none() {
                return Err(CoreError::ManifestBlobUnknown(digest.clone()));
            }
        }

        let _turn = self.manifest_turn(repo, &digest).await?;
        // Content first, then the links that make it visible, the tag last:
        // a crash in between leaves unreferenced content, never a dangling tag.
        let size = body.len() as u64;
        let blob_key = keys::blob(&digest);
        self.store.put_if_absent(&blob_key, body.clone()).await?;
        let media_type = Bytes::from(m.media_type.clone());
        let link = keys::manifest_link(repo, &digest);
        let created = self.store.put_if_absent(&link, media_type.clone()).await?;
        if !created {
            // Pushed again: its link's time is when retention last saw it
            // pushed (lazily: the bytes are unchanged, only the time moves).
            self.store
                .put(&link, media_type.clone(), Durability::Lazy)
                .await?;
        }
        self.note_repo(repo);
        for d in m.blobs.iter().filter(|d| strict && d.must_exist()) {
            if self
                .store
                .stat(&keys::layer_link(repo, &d.digest))
                .await?
                .is_none()
            {
                // Collected between validation and now: relink while the
                // content is there, else the push fails (not acknowledged).
                if self.store.stat(&keys::blob(&d.digest)).await?.is_none() {
                    if created {
                        self.store.delete(&link, Durability::Durable).await?;
                    }
                    return Err(CoreError::ManifestBlobUnknown(d.digest.clone()));
                }
                self.link_blob(repo, &d.digest).await?;
            }
        }
        // Retention hides an unreferenced manifest, then looks for indexes
        // that use it: after linking this index, look at its children again.
        for child in m.manifests.iter().filter(|_| strict) {
            if self
                .store
                .stat(&keys::manifest_link(repo, &child.digest))
                .await?
                .is_none()
            {
                if created {
                    self.store.delete(&link, Durability::Durable).await?;
                }
                return Err(CoreError::ManifestBlobUnknown(child.digest.clone()));
            }
        }
        let subject = m.subject.as_ref().map(|s| s.digest.clone());
        let referrer_entry = match &subject {
            Some(subject) => {
                let descriptor = Descriptor {
                    media_type: m.media_type.clone(),
                    digest: digest.clone(),
                    size,
                    artifact_type: m.artifact_type.clone(),
                    annotations: m.annotations.clone(),
                    urls: None,
                    platform: None,
                };
                let json = serde_json::to_vec(&descriptor)
                    .map_err(|e| CoreError::ManifestInvalid(e.to_string()))?;
                let key = keys::referrer(repo, subject, &digest);
                self.store
                    .put_if_absent(&key, Bytes::from(json.clone()))
                    .await?;
                Some((key, Bytes::from(json)))
            }
            None => None,
        };
        let reference_tag;
        let to_tag = match reference {
            Reference::Tag(tag) => {
                reference_tag = [(tag.clone(), tag_write)];
                &reference_tag[..]
            }
            Reference::Digest(_) => extra_tags,
        };
        let mut tags = Vec::with_capacity(to_tag.len());
        let mut refused = None;
        for (tag, tag_write) in to_tag {
            if tags.contains(tag) {
                continue;
            }
            let key = keys::tag(repo, tag);
            let target = Bytes::from(digest.to_string());
            match tag_write {
                // Always written, even when unchanged: its time is the push
                // time retention judges by, and it tells retention that the
                // tag it decided to remove has been pushed again.
                TagWrite::Overwrite => self.store.put(&key, target, Durability::Durable).await?,
                // The store decides who was first, not an earlier look.
                // The loser's manifest stays linked by digest (content it
                // was allowed to create); only the tag is refused.
                TagWrite::CreateOnly => {
                    if !self.store.put_if_absent(&key, target).await? {
                        refused = Some(CoreError::TagExists(tag.clone()));
                        break;
                    }
                }
            }
            tags.push(tag.clone());
        }
        // Garbage collection and retention hide, then look for links and
        // tags; so after linking and tagging, look again and restore what
        // went in between (also when a tag was refused: the ones written
        // before it stay, and must not name a manifest collected meanwhile).
        if self.store.stat(&link).await?.is_none() {
            self.store.put_if_absent(&link, media_type).await?;
        }
        if let Some((key, json)) = referrer_entry {
            self.store.put_if_absent(&key, json).await?;
        }
        if self.store.stat(&blob_key).await?.is_none() {
            self.store.put_if_absent(&blob_key, body).await?;
        }
        if let Some(e) = refused {
            return Err(e);
        }
        Ok(Pushed {
            digest,
            subject,
            tags,
        })
    }

    /// The digest a tag points at, if the tag exists.
    pub async fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        Ok(self
            .store
            .get(&keys::tag(repo, tag))
            .await?
            .as_deref()
            .and_then(parse_digest))
    }

    /// Resolves a reference to a digest and the media type to serve.
    pub async fn resolve_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, String)> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                if let Some(found) = self.resolve_hinted(repo, t).await? {
                    return Ok(found);
                }
                let digest = self
                    .tag_target(repo, t)
                    .await?
                    .ok_or(CoreError::ManifestUnknown)?;
                self.tag_hints.note(repo, t, &digest);
                digest
            }
        };
        let media_type = self
            .store
            .get(&keys::manifest_link(repo, &digest))
            .await?
            .ok_or(CoreError::ManifestUnknown)?;
        Ok((digest, media_type_of(&media_type)))
    }

    /// A tag resolved in one round trip when the digest it named last time
    /// is a good guess: the tag and that digest's link are read together
    /// (one snapshot on the shared store), and the guess counts only if the
    /// tag still names it. `None`: no guess, or a wrong one (the tag
    /// moved; the caller reads again).
    async fn resolve_hinted(&self, repo: &RepoName, tag: &Tag) -> Result<Option<(Digest, String)>> {
        let Some(guess) = self.tag_hints.get(repo, tag) else {
            return Ok(None);
        };
        let tag_key = keys::tag(repo, tag);
        let link_key = keys::manifest_link(repo, &guess);
        let got = self.store.get_many(&[&tag_key, &link_key]).await?;
        let (Some(target), link) = (got[0].as_deref(), got[1].as_deref()) else {
            self.tag_hints.forget(repo, tag);
            return Err(CoreError::ManifestUnknown);
        };
        if parse_digest(target).as_ref() != Some(&guess) {
            self.tag_hints.forget(repo, tag);
            return Ok(None);
        }
        let media_type = link.ok_or(CoreError::ManifestUnknown)?;
        Ok(Some((guess, media_type_of(media_type))))
    }

    /// A manifest with its bytes, verified against its digest on every
    /// read (manifests are small): corrupt bytes are never served.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<StoredManifest> {
        let m = self.peek_manifest(repo, reference).await.inspect_err(|e| {
            if let CoreError::Corrupt(digest) = e {
                tracing::error!(%digest, %repo, "stored manifest does not match its digest");
            }
        })?;
        self.note_pull(repo, &m.digest);
        Ok(m)
    }

    /// Size of a manifest, for HEAD.
    pub async fn manifest_size(&self, digest: &Digest) -> Result<u64> {
        self.store
            .stat(&keys::blob(digest))
            .await?
            .ok_or(CoreError::ManifestUnknown)
    }

    /// Deletes a tag, or a manifest with every tag pointing at it.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let digest = match reference {
            Reference::Tag(t) => {
                return if self
                    .store
                    .delete(&keys::tag(repo, t), Durability::Durable)
                    .await?
                {
                    Ok(())
                } else {
                    Err(CoreError::ManifestUnknown)
                };
            }
            Reference::Digest(d) => d,
        };
        let _turn = self.manifest_turn(repo, digest).await?;
        let link = keys::manifest_link(repo, digest);
        if self.store.stat(&link).await?.is_none() {
            return Err(CoreError::ManifestUnknown);
        }
        // Tags first: once the link goes, nothing may point at it.
        for entry in self.store.list(&keys::tags(repo)).await? {
            let Some(tag) = Tag::parse(&entry.name) else {
                continue;
            };
            if self.tag_target(repo, &tag).await?.as_ref() == Some(digest) {
                self.store
                    .delete(&keys::tag(repo, &tag), Durability::Durable)
                    .await?;
            }
        }
        if let Some(body) = self.store.get(&keys::blob(digest)).await? {
            if let Ok(m) = manifest::parse(&body, None) {
                if let Some(subject) = m.subject {
                    self.store
                        .delete(
                            &keys::referrer(repo, &subject.digest, digest),
                            Durability::Durable,
                        )
                        .await?;
                }
            }
        }
        self.store.delete(&link, Durability::Durable).await?;
        self.forget_repo_if_empty(repo).await;
        Ok(())
    }

    /// The manifests of `repo` whose subject is `subject`, optionally only
    /// those of one artifact type: at most `limit`, beyond the entry
    /// `after`, read from the store a page at a time (a keyset walk of the
    /// subject's referrer entries). With the page comes the entry to go on
    /// after when more may follow.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Descriptor>, Option<String>)> {
        if limit == 0 {
            return Ok((Vec::new(), None));
        }
        let dir = keys::referrers(repo, subject);
        let batch = limit.saturating_add(1).clamp(16, 500);
        let mut out = Vec::new();
        let mut cursor = after.map(str::to_owned);
        loop {
            let entries = self
                .store
                .list_after(&dir, cursor.as_deref(), batch)
                .await?;
            let exhausted = entries.len() < batch;
            for entry in entries {
                if out.len() == limit {
                    // Another entry follows the page: go on after the last
                    // one taken.
                    return Ok((out, cursor));
                }
                cursor = Some(entry.name.clone());
                if let Some(d) = self.referrer(repo, &dir, &entry.name).await? {
                    if artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)) {
                        out.push(d);
                    }
                }
            }
            if exhausted {
                return Ok((out, None));
            }
        }
    }

    /// One referrer entry's descriptor, if it is readable and its manifest
    /// is still in the repository.
    async fn referrer(
        &self,
        repo: &RepoName,
        dir: &str,
        entry: &str,
    ) -> Result<Option<Descriptor>> {
        let Some(json) = self.store.get(&keys::child(dir, entry)).await? else {
            return Ok(None);
        };
        let Ok(d) = serde_json::from_slice::<Descriptor>(&json) else {
            tracing::warn!(repo = %repo, entry, "unreadable referrer entry skipped");
            return Ok(None);
        };
        let linked = self
            .store
            .stat(&keys::manifest_link(repo, &d.digest))
            .await?
            .is_some();
        Ok(linked.then_some(d))
    }
}

fn media_type_of(link: &[u8]) -> String {
    String::from_utf8_lossy(link).into_owned()
}

/// The digest each tag named when last resolved, by this process: only a
/// guess, checked against the store in the same read (never trusted).
/// Bounded: emptied when it reaches [`TagHints::MAX`] entries.
#[derive(Default)]
pub(crate) struct TagHints(std::sync::Mutex<std::collections::HashMap<String, Digest>>);

impl TagHints {
    const MAX: usize = 10_000;

    fn key(repo: &RepoName, tag: &Tag) -> String {
        format!("{repo}:{tag}")
    }

    fn get(&self, repo: &RepoName, tag: &Tag) -> Option<Digest> {
        let hints = self.0.lock().unwrap_or_else(|p| p.into_inner());
        hints.get(&Self::key(repo, tag)).cloned()
    }

    fn note(&self, repo: &RepoName, tag: &Tag, digest: &Digest) {
        let mut hints = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if hints.len() >= Self::MAX {
            hints.clear();
        }
        hints.insert(Self::key(repo, tag), digest.clone());
    }

    fn forget(&self, repo: &RepoName, tag: &Tag) {
        let mut hints = self.0.lock().unwrap_or_else(|p| p.into_inner());
        hints.remove(&Self::key(repo, tag));
    }
}
