//! Pull-through cache and mirroring (zot's `extensions.sync`).
//!
//! - [`content`]: zot's `content` rules: which upstream repositories a
//!   registry covers, the local names they get, and the tag filters.
//! - [`upstream`]: the HTTP client of an upstream registry.
//! - `blobs`: blobs fetched on demand, one flight per blob, read by every
//!   client as they arrive.
//! - `mirror`: the polling copy of whole images (`pollInterval`).
//!
//! This file holds the extension in force ([`Sync`]), routing a local name
//! to an upstream, and manifests fetched on demand.
//!
//! On demand, a pull of a manifest or blob the store lacks (and that a rule
//! maps) fetches it. A manifest is stored once its digest is verified, with
//! its blobs left to arrive when asked for. A blob is written to a staging
//! area while it is hashed, and clients read it from there as it arrives;
//! it becomes content only after its digest matched. Concurrent requests
//! for the same manifest or blob share one upstream request. A digest that
//! is present never contacts upstream; a tag is checked with a HEAD at most
//! once per `manifestCheckInterval`, and a failing upstream leaves the
//! cached copy served.
//!
//! Mirroring (`pollInterval`) copies whole images: children and blobs
//! first, the tagged manifest last, skipping what is already here, so an
//! interrupted pass resumes where it stopped.

mod blobs;
mod claims;
pub mod content;
mod mirror;
pub mod upstream;

pub use blobs::{BlobSource, Want};

use crate::manifests::TagWrite;
use crate::{CoreError, Registry, Result};
use berth_oci::{Digest, Reference, RepoName};
use bytes::Bytes;
use content::ContentRule;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use upstream::{Upstream, UpstreamError, MANIFEST_ACCEPT};

/// One entry of `registries`, resolved.
pub struct SyncRegistry {
    pub upstream: Arc<Upstream>,
    pub on_demand: bool,
    pub poll_interval: Option<Duration>,
    pub content: Vec<ContentRule>,
    pub manifest_check_interval: Duration,
}

/// Counters the server exports as metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Pulls answered from the cache without fetching.
    pub hits: AtomicU64,
    /// Pulls that fetched from upstream.
    pub misses: AtomicU64,
    /// Upstream requests that failed (unreachable, erroring, bad data).
    pub upstream_errors: AtomicU64,
    /// Images copied by mirroring.
    pub mirrored: AtomicU64,
    /// Misses answered from the memory of what upstream did not have.
    pub negative_hits: AtomicU64,
    /// Misses refused because the upstream's fetches were all in use.
    pub throttled: AtomicU64,
}

/// How long an upstream's "not found" is remembered: within it, asking
/// again for the same name costs the upstream nothing (a tag pushed
/// upstream meanwhile is seen at most this late).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// The longest a request waits for another's fetch of the same manifest:
/// the permit's wait, the headers' and the whole request's, and a margin.
const FETCH_LOCK_WAIT: Duration = Duration::from_secs(240);
/// Most "not found" answers remembered.
const NEGATIVE_MAX: usize = 10_000;

/// Held while one request fetches a manifest; the others wait on it.
type FetchLock = Arc<tokio::sync::Mutex<()>>;

/// The sync extension in force (replaced whole on a configuration reload).
pub struct Sync {
    pub registries: Vec<SyncRegistry>,
    /// One lock per (repository, reference) being fetched.
    manifest_fetches: Mutex<HashMap<(RepoName, String), FetchLock>>,
    blob_flights: Mutex<HashMap<(RepoName, Digest), Arc<blobs::Flight>>>,
    /// When each (repository, tag) was last checked upstream.
    checked: Mutex<HashMap<(RepoName, String), Instant>>,
    /// (repository, reference or digest) the upstream did not have, and when.
    absent: Mutex<HashMap<(RepoName, String), Instant>>,
}

impl Sync {
    pub fn new(registries: Vec<SyncRegistry>) -> Sync {
        Sync {
            registries,
            manifest_fetches: Mutex::default(),
            blob_flights: Mutex::default(),
            checked: Mutex::default(),
            absent: Mutex::default(),
        }
    }

    /// Whether the upstream said it lacks `what` less than [`NEGATIVE_TTL`] ago.
    pub(super) fn known_absent(&self, repo: &RepoName, what: &str) -> bool {
        self.absent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(repo.clone(), what.to_owned()))
            .is_some_and(|t| t.elapsed() < NEGATIVE_TTL)
    }

    pub(super) fn note_absent(&self, repo: &RepoName, what: &str) {
        let mut absent = self.absent.lock().unwrap_or_else(|p| p.into_inner());
        if absent.len() >= NEGATIVE_MAX {
            absent.retain(|_, t| t.elapsed() < NEGATIVE_TTL);
            if absent.len() >= NEGATIVE_MAX {
                absent.clear();
            }
        }
        absent.insert((repo.clone(), what.to_owned()), Instant::now());
    }

    /// The on-demand registry, rule and upstream name for a local name.
    fn route(&self, repo: &RepoName) -> Option<(&SyncRegistry, &ContentRule, String)> {
        self.registries
            .iter()
            .filter(|r| r.on_demand)
            .find_map(|r| {
                let (rule, source) = content::route(&r.content, repo.as_str())?;
                let source = match r.upstream.urls().first() {
                    Some(u) if upstream::is_docker_hub(u) && !source.contains('/') => {
                        format!("library/{source}")
                    }
                    _ => source,
                };
                Some((r, rule, source))
            })
    }

    fn fetch_lock(&self, repo: &RepoName, reference: &str) -> FetchLock {
        let mut locks = self
            .manifest_fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds (bounded map).
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks
            .entry((repo.clone(), reference.to_owned()))
            .or_default()
            .clone()
    }

    fn checked_within(&self, repo: &RepoName, tag: &str, within: Duration) -> bool {
        self.checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(repo.clone(), tag.to_owned()))
            .is_some_and(|t| t.elapsed() < within)
    }

    fn mark_checked(&self, repo: &RepoName, tag: &str) {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if checked.len() > 100_000 {
            checked.clear();
        }
        checked.insert((repo.clone(), tag.to_owned()), Instant::now());
    }
}

impl std::fmt::Debug for Sync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&[String]> = self.registries.iter().map(|r| r.upstream.urls()).collect();
        f.debug_struct("Sync").field("upstreams", &urls).finish()
    }
}

pub(super) fn upstream_err(e: UpstreamError) -> CoreError {
    match e {
        UpstreamError::NotFound => CoreError::ManifestUnknown,
        e => CoreError::Upstream(e.to_string()),
    }
}

/// Reads a manifest body, refusing more than `limit` bytes.
pub(super) async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Bytes> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(CoreError::Upstream(format!(
            "upstream manifest larger than {limit} bytes"
        )));
    }
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| CoreError::Upstream(format!("manifest body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(CoreError::Upstream(format!(
                "upstream manifest larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

pub(super) fn header_digest(resp: &reqwest::Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl Registry {
    /// Counters of the pull-through cache (kept across reloads).
    pub fn sync_stats(&self) -> &SyncStats {
        &self.sync_stats
    }

    /// Whether `what` is known to be missing upstream (counted when so).
    fn remembered_absent(&self, sync: &Sync, repo: &RepoName, what: &str) -> bool {
        let known = sync.known_absent(repo, what);
        if known {
            self.sync_stats
                .negative_hits
                .fetch_add(1, Ordering::Relaxed);
        }
        known
    }

    fn sync_failed(&self, what: &str, e: &dyn std::fmt::Display) {
        self.sync_stats
            .upstream_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "{what}");
    }

    /// The sync extension in force, if any.
    pub fn sync(&self) -> Option<Arc<Sync>> {
        self.sync.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs (or removes) the sync extension; fetches in progress finish.
    pub fn set_sync(&self, sync: Option<Arc<Sync>>) {
        *self.sync.write().unwrap_or_else(|p| p.into_inner()) = sync;
    }

    /// Before a manifest is served: fetches it if it is missing and a rule
    /// maps the repository, or revalidates a cached tag once per interval.
    /// Does nothing for repositories no rule maps.
    pub async fn sync_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        let Some(sync) = self.sync() else {
            return Ok(());
        };
        let Some((reg, rule, source)) = sync.route(repo) else {
            return Ok(());
        };
        let present = self.resolve_manifest(repo, reference).await.is_ok();
        let tag = match reference {
            Reference::Digest(_) if present => {
                self.sync_stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Reference::Digest(_) => None,
            Reference::Tag(t) => {
                if !rule.tags.allows(t.as_str()) {
                    return Ok(());
                }
                if present && sync.checked_within(repo, t.as_str(), reg.manifest_check_interval) {
                    self.sync_stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Some(t.clone())
            }
        };
        let wanted = reference.to_string();
        if !present && self.remembered_absent(&sync, repo, &wanted) {
            return Ok(());
        }
        let lock = sync.fetch_lock(repo, &wanted);
        // The fetch holding it ends within its own bounds; this wait is
        // bounded all the same (a cached copy is then served as it is).
        let Ok(_one_fetch) = tokio::time::timeout(FETCH_LOCK_WAIT, lock.lock()).await else {
            self.sync_stats.throttled.fetch_add(1, Ordering::Relaxed);
            return if present {
                Ok(())
            } else {
                Err(CoreError::UpstreamBusy)
            };
        };
        // Another request may have done the work while this one waited.
        let present = self.resolve_manifest(repo, reference).await.is_ok();
        if !present && self.remembered_absent(&sync, repo, &wanted) {
            return Ok(());
        }
        if let Some(t) = &tag {
            if present && sync.checked_within(repo, t.as_str(), reg.manifest_check_interval) {
                self.sync_stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        } else if present {
            return Ok(());
        }
        let Some(_turn) = reg.upstream.permit().await else {
            self.sync_stats.throttled.fetch_add(1, Ordering::Relaxed);
            // A cached copy is served as it is; a miss is refused for now.
            return if present {
                Ok(())
            } else {
                Err(CoreError::UpstreamBusy)
            };
        };
        let result = self
            .fetch_manifest(
                &reg.upstream,
                &source,
                repo,
                reference,
                tag.is_some() && present,
            )
            .await;
        match result {
            Ok(fetched) => {
                if let Some(t) = &tag {
                    sync.mark_checked(repo, t.as_str());
                }
                if fetched {
                    self.sync_stats.misses.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.sync_stats.hits.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) if present => {
                // Serve the cached copy; try upstream again after the interval.
                self.sync_failed("upstream check failed; serving the cached manifest", &e);
                if let Some(t) = &tag {
                    sync.mark_checked(repo, t.as_str());
                }
                Ok(())
            }
            Err(CoreError::ManifestUnknown) => {
                sync.note_absent(repo, &wanted);
                Ok(())
            }
            Err(e) => {
                self.sync_failed("fetching a manifest from upstream failed", &e);
                Err(e)
            }
        }
    }

    /// Fetches a manifest (a HEAD first when a tag is cached, to skip an
    /// unchanged one) and stores it. Returns whether it fetched.
    async fn fetch_manifest(
        &self,
        upstream: &Upstream,
        source: &str,
        repo: &RepoName,
        reference: &Reference,
        cached_tag: bool,
    ) -> Result<bool> {
        if cached_tag
            && self
                .upstream_unchanged(upstream, source, repo, reference)
                .await?
        {
            return Ok(false);
        }
        let (body, content_type) = self
            .get_upstream_manifest(upstream, source, reference)
            .await?;
        self.store_manifest(
            repo,
            reference,
            content_type.as_deref(),
            body,
            false,
            TagWrite::Overwrite,
            &[],
        )
        .await
        .map_err(|e| match e {
            CoreError::ManifestInvalid(m) => {
                CoreError::Upstream(format!("upstream manifest {source}:{reference}: {m}"))
            }
            e => e,
        })?;
        tracing::info!(repository = %repo, %reference, upstream = source, "fetched manifest from upstream");
        Ok(true)
    }

    /// Whether the upstream's manifest for a reference (asked with a HEAD)
    /// is the one stored here under it.
    pub(super) async fn upstream_unchanged(
        &self,
        upstream: &Upstream,
        source: &str,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<bool> {
        let resp = upstream
            .request(
                reqwest::Method::HEAD,
                source,
                &format!("manifests/{reference}"),
                Some(MANIFEST_ACCEPT),
            )
            .await
            .map_err(upstream_err)?;
        let local = self.resolve_manifest(repo, reference).await.ok();
        Ok(header_digest(&resp).is_some_and(|d| local.is_some_and(|(here, _)| here == d)))
    }

    /// GETs a manifest upstream and checks it: its bytes (at most the
    /// manifest size limit), which must match the digest asked for, or
    /// else the digest the upstream declares; and its media type.
    pub(super) async fn get_upstream_manifest(
        &self,
        upstream: &Upstream,
        source: &str,
        reference: &Reference,
    ) -> Result<(Bytes, Option<String>)> {
        let resp = upstream
            .request(
                reqwest::Method::GET,
                source,
                &format!("manifests/{reference}"),
                Some(MANIFEST_ACCEPT),
            )
            .await
            .map_err(upstream_err)?;
        let declared = header_digest(&resp);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
        let body = read_limited(resp, self.options.max_manifest_size).await?;
        let expected = match reference {
            Reference::Digest(d) => Some(d.clone()),
            Reference::Tag(_) => declared,
        };
        if let Some(d) = &expected {
            let actual = Digest::of(d.algorithm(), &body);
            if actual != *d {
                return Err(CoreError::Upstream(format!(
                    "upstream manifest {source}:{reference} is {actual}, not {d}"
                )));
            }
        }
        Ok((body, content_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use content::TagFilter;

    fn registry(url: &str, prefix: &str, on_demand: bool) -> SyncRegistry {
        SyncRegistry {
            upstream: Arc::new(
                Upstream::new(
                    &[url.to_owned()],
                    HashMap::new(),
                    true,
                    Vec::new(),
                    0,
                    Duration::from_secs(1),
                )
                .unwrap(),
            ),
            on_demand,
            poll_interval: None,
            content: vec![ContentRule::new(prefix, None, false, TagFilter::default()).unwrap()],
            manifest_check_interval: Duration::from_secs(60),
        }
    }

    fn route(s: &Sync, name: &str) -> Option<String> {
        s.route(&RepoName::parse(name).unwrap()).map(|(_, _, n)| n)
    }

    #[test]
    fn docker_hub_names_get_library_and_the_first_on_demand_registry_wins() {
        let s = Sync::new(vec![
            registry("https://mirror.example", "**", false),
            registry("https://docker.io", "**", true),
            registry("https://ghcr.io", "**", true),
        ]);
        assert_eq!(route(&s, "alpine").as_deref(), Some("library/alpine"));
        assert_eq!(route(&s, "bitnami/redis").as_deref(), Some("bitnami/redis"));
        let s = Sync::new(vec![registry("https://ghcr.io", "**", true)]);
        assert_eq!(route(&s, "alpine").as_deref(), Some("alpine"));
        let s = Sync::new(vec![registry("https://ghcr.io", "team/*", true)]);
        assert_eq!(route(&s, "other/x"), None);
    }
}
