//! Online garbage collection: no lock, pushes never wait for it.
//!
//! A pass removes, when older than the grace delay, (1) a repository's blob
//! links that no manifest of that repository references, and (2) content
//! that no repository links. Manifests, tags and referrers are removed only
//! by [`crate::retention`], which a pass applies first; upload sessions are
//! expiry's.
//!
//! Correctness without a lock rests on one protocol, kept by both sides:
//! - writers link first, then look at the content (and restore it if gone);
//! - the collector hides candidates first (renames them out of sight), then
//!   looks again for links and references, restores whatever is now in use,
//!   and deletes the rest.
//!
//! In every interleaving either the collector sees the writer's link, or
//! the writer sees the content gone and puts its own verified copy back.
//!
//! Renames here need not be durable: after a power loss an object is either
//! where it was or in `gc-trash/`, from which start-up puts it back.
//! `hide` and `restore` are that protocol's moves (`restore` is the one
//! way back, for both collectors); retention uses them too.

use crate::lease::Lease;
use crate::retention::{Retention, RetentionReport};
use crate::{keys, CoreError, Registry, Result};
use berth_oci::{Algorithm, Digest, RepoName};
use berth_storage::Durability;
use bytes::Bytes;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

/// How a pass behaves.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Tag and manifest retention, applied first (`None`: manifests and
    /// tags are left alone).
    pub retention: Option<std::sync::Arc<Retention>>,
    /// Only what has been unreferenced for longer than this goes.
    pub delay: Duration,
    /// Report what would go, change nothing.
    pub dry_run: bool,
    /// Share of the time a pass may work, in (0, 1]: between bursts it
    /// sleeps so that pushes keep the machine (1.0 for the command line).
    pub pace: f64,
}

/// Keeps a pass to its share of the time, and its lease fresh.
struct Pacer<'a> {
    pace: f64,
    since: std::time::Instant,
    registry: &'a Registry,
    lease: Lease,
}

impl Pacer<'_> {
    /// Called often; sleeps after each burst of about 20 ms of work, and
    /// fails if another collector took the lease over.
    async fn tick(&mut self) -> Result<()> {
        if self.pace < 1.0 {
            let worked = self.since.elapsed();
            if worked >= Duration::from_millis(20) {
                // In slices, refreshing the lease between them: a long
                // pause must not let the lease of a live pass look stale.
                let mut rest = worked.mul_f64(1.0 / self.pace - 1.0);
                while !rest.is_zero() {
                    let slice = rest.min(Duration::from_secs(10));
                    tokio::time::sleep(slice).await;
                    rest -= slice;
                    self.registry.keep_lease(&mut self.lease).await?;
                }
                self.since = std::time::Instant::now();
            }
        }
        self.registry.keep_lease(&mut self.lease).await
    }
}

/// What a pass did (or, dry, would do).
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub repositories: usize,
    pub blobs_seen: usize,
    /// (repository, blob) links removed.
    pub links_removed: Vec<(String, Digest)>,
    pub blobs_removed: Vec<Digest>,
    pub bytes_reclaimed: u64,
    /// Candidates found in use again at the re-check and put back.
    pub restored: usize,
    /// Tags and manifests retention removed (or, dry, would).
    pub retention: RetentionReport,
    /// Bytes of content each repository links (at the mark), counting
    /// content shared with other repositories in each.
    pub repo_bytes: Vec<(String, u64)>,
    /// What the store's own sweep removed (objects a dead replica wrote
    /// and never recorded, on the shared store).
    pub swept: berth_storage::Swept,
}

/// How old an unrecorded object of the store must be before a pass sweeps
/// it (far beyond the bounded waits between writing and recording one).
pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

pub(crate) const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

fn digest_of(alg: Algorithm, name: &str) -> Option<Digest> {
    format!("{}:{name}", alg.as_str()).parse().ok()
}

impl Registry {
    /// The digests a repository holds links for: (`_layers` or `_manifests`).
    pub(crate) async fn linked(&self, repo: &RepoName, kind: &str) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in ALGORITHMS {
            let dir = keys::links(repo, kind, alg);
            for e in self.store.list(&dir).await? {
                out.extend(digest_of(alg, &e.name));
            }
        }
        Ok(out)
    }

    /// Blobs the manifests of a repository reference.
    async fn referenced_by_manifests(&self, repo: &RepoName) -> Result<HashSet<Digest>> {
        let mut out = HashSet::new();
        for m in self.linked(repo, keys::MANIFESTS).await? {
            match self.refs(&m).await? {
                Some(refs) => out.extend(refs.blobs.iter().cloned()),
                None if self.store.stat(&keys::blob(&m)).await?.is_none() => {}
                // Unreadable: keep every link of the repository rather than guess.
                None => return Ok(self.linked(repo, keys::LAYERS).await?.into_iter().collect()),
            }
        }
        Ok(out)
    }

    /// The size of stored content, remembered (a digest's size never
    /// changes); 0 if it is gone.
    async fn size_of(&self, d: &Digest) -> Result<u64> {
        if let Some(n) = self
            .blob_sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
        {
            return Ok(*n);
        }
        let Some(n) = self.store.stat(&keys::blob(d)).await? else {
            return Ok(0);
        };
        let mut sizes = self.blob_sizes.lock().unwrap_or_else(|p| p.into_inner());
        if sizes.len() >= 4_000_000 {
            sizes.clear();
        }
        sizes.insert(d.clone(), n);
        Ok(n)
    }

    /// Every repository, parsed.
    async fn repositories(&self) -> Result<Vec<RepoName>> {
        Ok(self
            .walk_repositories()
            .await?
            .iter()
            .filter_map(|r| RepoName::parse(r))
            .collect())
    }

    async fn older_than(&self, key: &str, cutoff: SystemTime) -> Result<bool> {
        Ok(self.store.modified(key).await?.is_some_and(|t| t < cutoff))
    }

    /// Puts back everything a pass hid and did not finish with (a pass
    /// interrupted by a crash). Run at start-up and before each pass; what
    /// is really garbage is simply collected again. While another pass
    /// holds the lease this does nothing (`Ok(0)`): its hidden objects are
    /// its own, and if it died, the pass that takes its lease over recovers.
    pub async fn recover_gc_trash(&self) -> Result<usize> {
        let lease = match self.take_lease().await {
            Ok(l) => l,
            Err(CoreError::Busy) => return Ok(0),
            Err(e) => return Err(e),
        };
        let out = self.recover_trash().await;
        self.release_lease(lease).await?;
        out
    }

    pub(crate) async fn recover_trash(&self) -> Result<usize> {
        let mut restored = 0;
        for pass in self.store.list(keys::GC_TRASH).await? {
            let dir = keys::gc_pass(&pass.name);
            restored += self.put_back(&dir, "").await?;
            // `restore` removed each entry it handled; the directory goes
            // only when nothing arrived in it meanwhile (never a blind
            // delete of objects no one has looked at again).
            if self.store.list(&dir).await?.is_empty() {
                self.store.delete_prefix(&dir).await?;
            }
        }
        if restored > 0 {
            tracing::warn!(
                restored,
                "put back content an interrupted garbage collection had hidden"
            );
        }
        Ok(restored)
    }

    /// Moves an object out of sight into `trash`; `None` if it was gone
    /// (or could not be moved: then it stays, and is not collected).
    pub(crate) async fn hide(&self, key: &str, trash: &str) -> Option<String> {
        let to = keys::hidden(trash, key);
        if keys::unhidden(&to[trash.len() + 1..]).is_none() {
            // Named by hash: the key first, so an interrupted pass can
            // always tell where the object goes back.
            let recorded = self
                .store
                .put_if_absent(&keys::hidden_key(&to), Bytes::from(key.to_owned()))
                .await;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, key, "could not hide an object for collection");
                return None;
            }
        }
        match self.store.rename(key, &to, Durability::Lazy).await {
            Ok(()) => Some(to),
            Err(berth_storage::StorageError::NotFound) => None,
            Err(e) => {
                tracing::warn!(error = %e, key, "could not hide an object for collection");
                None
            }
        }
    }

    /// Puts one hidden object back at `key`: the only way anything hidden
    /// returns. What a writer wrote at `key` meanwhile always wins and the
    /// hidden copy is dropped: content is renamed back only where absent
    /// (the same digest is the same bytes, whoever wrote them), small
    /// objects (tags, links, referrer entries) are created only if absent,
    /// never renamed over a writer's fresh one (which would make it look
    /// old to the next pass). Returns whether the hidden copy went back.
    pub(crate) async fn restore(&self, hidden: &str, key: &str) -> Result<bool> {
        let back = if self.store.stat(key).await?.is_some() {
            false
        } else if key.starts_with(keys::BLOBS) {
            match self.store.rename(hidden, key, Durability::Lazy).await {
                Ok(()) => return Ok(true),
                Err(berth_storage::StorageError::NotFound) => false,
                Err(e) => return Err(e.into()),
            }
        } else {
            match self.store.get(hidden).await? {
                Some(data) => self.store.put_if_absent(key, data).await?,
                None => false,
            }
        };
        self.store.delete(hidden, Durability::Lazy).await?;
        let name = hidden.rsplit('/').next().unwrap_or(hidden);
        if keys::unhidden(name).is_none() {
            self.store
                .delete(&keys::hidden_key(hidden), Durability::Lazy)
                .await?;
        }
        // A delete may have taken the repository out of the catalog while
        // all its links were hidden: it holds something again.
        if back {
            if let Some(repo) = keys::repo_of(key) {
                self.note_repo(&repo);
            }
        }
        Ok(back)
    }

    /// Puts back what a pass hid in `dir` under keys starting with `prefix`.
    async fn put_back(&self, dir: &str, prefix: &str) -> Result<usize> {
        let mut restored = 0;
        for e in self.store.list(dir).await? {
            let hidden = keys::child(dir, &e.name);
            if e.name.ends_with(".key") {
                // The key of an object named by hash: goes with it, or
                // alone if the object never got there.
                let object = hidden.trim_end_matches(".key");
                if self.store.stat(object).await?.is_none() {
                    self.store.delete(&hidden, Durability::Lazy).await?;
                }
                continue;
            }
            let original = match keys::unhidden(&e.name) {
                Some(k) => k,
                None => match self.store.get(&keys::hidden_key(&hidden)).await? {
                    Some(k) => String::from_utf8_lossy(&k).into_owned(),
                    None => continue,
                },
            };
            if berth_storage::check_key(&original, false).is_err() || !original.starts_with(prefix)
            {
                continue;
            }
            if self.restore(&hidden, &original).await? {
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// One pass. `progress` gets a line now and then. Fails with
    /// `CoreError::Busy`, changing nothing, while another pass holds the
    /// store.
    pub async fn gc(&self, opts: GcOptions, progress: impl FnMut(&str)) -> Result<GcReport> {
        let mut pacer = Pacer {
            pace: opts.pace.clamp(0.01, 1.0),
            since: std::time::Instant::now(),
            registry: self,
            lease: self.take_lease().await?,
        };
        let out = self.gc_pass(opts, progress, &mut pacer).await;
        if let Err(e) = &out {
            // A pass cut short by an error (or a takeover) may have hidden
            // content a writer has since linked: put everything hidden back
            // now, not at the next pass. Restoring never loses anything (a
            // running pass then finds less to delete).
            tracing::warn!(error = %e, "a collection pass failed; putting back what it hid");
            if let Err(e) = self.recover_trash().await {
                tracing::warn!(error = %e, "could not put back what a failed pass hid");
            }
        }
        self.release_lease(pacer.lease).await?;
        out
    }

    async fn gc_pass(
        &self,
        opts: GcOptions,
        mut progress: impl FnMut(&str),
        pacer: &mut Pacer<'_>,
    ) -> Result<GcReport> {
        self.recover_trash().await?;
        let cutoff = SystemTime::now()
            .checked_sub(opts.delay)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = GcReport::default();
        let repos: Vec<RepoName> = self.repositories().await?;
        report.repositories = repos.len();
        let trash = keys::gc_pass(&uuid::Uuid::new_v4().simple().to_string());

        // Retention first: what it unlinks is collected in this same pass.
        if let Some(retention) = &opts.retention {
            if let Err(e) = self.flush_pulls().await {
                tracing::warn!(error = %e, "could not write pull times before retention");
            }
            let dry = opts.dry_run || retention.dry_run;
            for repo in &repos {
                pacer.tick().await?;
                match self.retain_repo(repo, retention, dry, &trash).await {
                    Ok(r) => {
                        report.retention.tags_removed.extend(r.tags_removed);
                        report
                            .retention
                            .manifests_removed
                            .extend(r.manifests_removed);
                    }
                    // One repository's trouble does not stop the pass; what
                    // it had hidden goes back at once.
                    Err(e) => {
                        tracing::warn!(repository = %repo, error = %e, "retention skipped this repository");
                        let prefix = keys::repo_prefix(repo);
                        if let Err(e) = self.put_back(&trash, &prefix).await {
                            tracing::warn!(repository = %repo, error = %e, "could not put back what retention hid");
                        }
                    }
                }
            }
            progress(&format!(
                "retention: {} tags and {} manifests {}",
                report.retention.tags_removed.len(),
                report.retention.manifests_removed.len(),
                if dry { "would go" } else { "removed" }
            ));
        }

        // Mark: links nothing references, and everything linked.
        let mut link_candidates: BTreeMap<RepoName, Vec<Digest>> = BTreeMap::new();
        let mut in_use: HashSet<Digest> = HashSet::new();
        for (i, repo) in repos.iter().enumerate() {
            let referenced = self.referenced_by_manifests(repo).await?;
            let layers = self.linked(repo, keys::LAYERS).await?;
            let manifests = self.linked(repo, keys::MANIFESTS).await?;
            let mut bytes = 0;
            for d in layers.iter().chain(&manifests) {
                bytes += self.size_of(d).await?;
            }
            report.repo_bytes.push((repo.to_string(), bytes));
            for d in layers {
                if !referenced.contains(&d)
                    && self.older_than(&keys::layer_link(repo, &d), cutoff).await?
                {
                    link_candidates.entry(repo.clone()).or_default().push(d);
                } else {
                    in_use.insert(d);
                }
            }
            in_use.extend(manifests);
            pacer.tick().await?;
            if i % 100 == 99 {
                progress(&format!("marked {} of {} repositories", i + 1, repos.len()));
            }
        }
        let mut blob_candidates: Vec<(Digest, u64)> = Vec::new();
        for alg in ALGORITHMS {
            let top = keys::blob_shards(alg);
            for prefix in self.store.list(&top).await? {
                for e in self.store.list(&keys::child(&top, &prefix.name)).await? {
                    let Some(d) = digest_of(alg, &e.name) else {
                        continue;
                    };
                    report.blobs_seen += 1;
                    pacer.tick().await?;
                    let key = keys::blob(&d);
                    if !in_use.contains(&d) && self.older_than(&key, cutoff).await? {
                        let size = self.store.stat(&key).await?.unwrap_or(0);
                        blob_candidates.push((d, size));
                    }
                }
            }
        }
        progress(&format!(
            "{} unreferenced links, {} unreferenced blobs",
            link_candidates.values().map(Vec::len).sum::<usize>(),
            blob_candidates.len()
        ));
        if opts.dry_run {
            report.links_removed = link_candidates
                .into_iter()
                .flat_map(|(r, ds)| ds.into_iter().map(move |d| (r.to_string(), d)))
                .collect();
            report.bytes_reclaimed = blob_candidates.iter().map(|(_, s)| s).sum();
            report.blobs_removed = blob_candidates.into_iter().map(|(d, _)| d).collect();
            self.store.delete_prefix(&trash).await?;
            report.swept = self.store.sweep(ORPHAN_GRACE, true).await?;
            return Ok(report);
        }

        // Hide.
        let mut hidden_links = Vec::new();
        for (repo, digests) in &link_candidates {
            for d in digests {
                pacer.tick().await?;
                if let Some(at) = self.hide(&keys::layer_link(repo, d), &trash).await {
                    hidden_links.push((repo.clone(), d.clone(), at));
                }
            }
        }
        let mut hidden_blobs = Vec::new();
        for (d, size) in &blob_candidates {
            pacer.tick().await?;
            if let Some(at) = self.hide(&keys::blob(d), &trash).await {
                hidden_blobs.push((d.clone(), *size, at));
            }
        }

        // Look again, with the candidates out of sight: restore what a writer
        // has started using since the mark.
        let mut referenced_now: BTreeMap<RepoName, HashSet<Digest>> = BTreeMap::new();
        for (repo, d, at) in &hidden_links {
            pacer.tick().await?;
            if !referenced_now.contains_key(repo) {
                referenced_now.insert(repo.clone(), self.referenced_by_manifests(repo).await?);
            }
            let link = keys::layer_link(repo, d);
            let live_link = self.store.stat(&link).await?.is_some();
            if live_link || referenced_now[repo].contains(d) {
                self.restore(at, &link).await?;
                report.restored += 1;
            } else {
                report.links_removed.push((repo.to_string(), d.clone()));
            }
        }
        if !hidden_blobs.is_empty() {
            let mut linked_now: HashSet<Digest> = HashSet::new();
            let repos: Vec<RepoName> = self.repositories().await?;
            for repo in &repos {
                pacer.tick().await?;
                linked_now.extend(self.linked(repo, keys::LAYERS).await?);
                linked_now.extend(self.linked(repo, keys::MANIFESTS).await?);
            }
            for (d, size, at) in &hidden_blobs {
                if linked_now.contains(d) {
                    self.restore(at, &keys::blob(d)).await?;
                    report.restored += 1;
                } else {
                    report.blobs_removed.push(d.clone());
                    report.bytes_reclaimed += size;
                }
            }
        }
        self.store.delete_prefix(&trash).await?;
        // Repositories this pass emptied leave the catalog.
        let emptied: HashSet<&str> = report
            .links_removed
            .iter()
            .map(|(r, _)| r.as_str())
            .chain(
                report
                    .retention
                    .manifests_removed
                    .iter()
                    .map(|(r, _)| r.as_str()),
            )
            .collect();
        for repo in emptied.into_iter().filter_map(RepoName::parse) {
            self.forget_repo_if_empty(&repo).await;
        }
        report.swept = self.store.sweep(ORPHAN_GRACE, false).await?;
        Ok(report)
    }
}
