//! Pull-through cache and mirroring (zot's `extensions.sync`).
//!
//! - [`content`]: zot's `content` rules: which upstream repositories a
//!   registry covers, the local names they get, and the tag filters.
//! - [`upstream`]: the HTTP client of an upstream registry.
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

pub mod content;
pub mod upstream;

use crate::{keys, CoreError, Registry, Result};
use berth_oci::{Digest, Reference, RepoName, Tag};
use berth_storage::{ByteStream, StorageError};
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
}

/// What a fetch of a blob is doing.
#[derive(Debug, Clone, Default)]
struct FlightState {
    /// The upstream answered: its Content-Length, if it sent one.
    started: bool,
    size: Option<u64>,
    received: u64,
    /// The whole blob arrived and matched its digest (it may not be
    /// committed yet).
    verified: bool,
    /// `None` while running.
    outcome: Option<std::result::Result<(), String>>,
}

/// One blob being fetched, shared by every client that asked for it.
struct Flight {
    stage: String,
    state: tokio::sync::watch::Sender<FlightState>,
    /// The fetched bytes as they pass, with their offsets, for readers
    /// that keep up (the others read the staging object).
    live: tokio::sync::broadcast::Sender<(u64, Bytes)>,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            stage: format!("sync-{}", uuid::Uuid::new_v4().simple()),
            state: tokio::sync::watch::channel(FlightState::default()).0,
            live: tokio::sync::broadcast::channel(LIVE_PIECES).0,
        }
    }
}

/// Pieces (of about a MiB) a reader may fall behind the fetch before it
/// reads from the staging object instead. Small on purpose: holding more
/// pieces alive made the allocator hand out fresh pages for each one, and
/// a cold 1 GiB pull cost twice the CPU (measured with 16).
const LIVE_PIECES: usize = 2;

/// Held while one request fetches a manifest; the others wait on it.
type FetchLock = Arc<tokio::sync::Mutex<()>>;

/// The sync extension in force (replaced whole on a configuration reload).
pub struct Sync {
    pub registries: Vec<SyncRegistry>,
    /// One lock per (repository, reference) being fetched.
    manifest_fetches: Mutex<HashMap<(RepoName, String), FetchLock>>,
    blob_flights: Mutex<HashMap<(RepoName, Digest), Arc<Flight>>>,
    /// When each (repository, tag) was last checked upstream.
    checked: Mutex<HashMap<(RepoName, String), Instant>>,
}

impl Sync {
    pub fn new(registries: Vec<SyncRegistry>) -> Sync {
        Sync {
            registries,
            manifest_fetches: Mutex::default(),
            blob_flights: Mutex::default(),
            checked: Mutex::default(),
        }
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

/// How a blob the store lacked is answered.
pub enum BlobSource {
    /// Now stored and linked: serve it as any local blob.
    Local,
    /// Arriving: its size if upstream said, and its bytes as they come.
    Arriving { size: Option<u64>, body: ByteStream },
    /// For HEAD: upstream's size, nothing fetched.
    Size(u64),
}

/// How a blob is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Head,
    /// Streamed as it arrives.
    Stream,
    /// Only once whole (a range request, or mirroring).
    Whole,
}

fn upstream_err(e: UpstreamError) -> CoreError {
    match e {
        UpstreamError::NotFound => CoreError::ManifestUnknown,
        e => CoreError::Upstream(e.to_string()),
    }
}

/// How many bytes arrive between two notes to the readers of a blob.
const NOTIFY_EVERY: u64 = 1024 * 1024;

/// Gathers a network body's small pieces into batches of about
/// `BATCH` bytes: one copy, instead of a trip through the hashing and
/// writing threads for every few kilobytes.
fn coalesce(
    s: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Send + 'static {
    const BATCH: usize = 1024 * 1024;
    futures_util::stream::unfold((Box::pin(s), false), |(mut s, done)| async move {
        if done {
            return None;
        }
        let mut buf = bytes::BytesMut::new();
        loop {
            match s.next().await {
                Some(Ok(b)) if buf.is_empty() && b.len() >= BATCH => {
                    return Some((Ok(b), (s, false)));
                }
                Some(Ok(b)) => {
                    if buf.is_empty() {
                        buf.reserve(BATCH);
                    }
                    buf.extend_from_slice(&b);
                    if buf.len() >= BATCH {
                        return Some((Ok(buf.freeze()), (s, false)));
                    }
                }
                Some(Err(e)) => return Some((Err(e), (s, true))),
                None if buf.is_empty() => return None,
                None => return Some((Ok(buf.freeze()), (s, true))),
            }
        }
    })
}

/// The first `n` bytes of a stream.
fn take(s: ByteStream, n: u64) -> ByteStream {
    Box::pin(futures_util::stream::unfold(
        (s, n),
        |(mut s, left)| async move {
            if left == 0 {
                return None;
            }
            match s.next().await? {
                Ok(mut b) => {
                    if b.len() as u64 > left {
                        b.truncate(left as usize);
                    }
                    let left = left - b.len() as u64;
                    Some((Ok(b), (s, left)))
                }
                Err(e) => Some((Err(e), (s, 0))),
            }
        },
    ))
}

/// Reads a manifest body, refusing more than `limit` bytes.
async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Bytes> {
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

fn header_digest(resp: &reqwest::Response) -> Option<Digest> {
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
        let lock = sync.fetch_lock(repo, &reference.to_string());
        let _one_fetch = lock.lock().await;
        // Another request may have done the work while this one waited.
        let present = self.resolve_manifest(repo, reference).await.is_ok();
        if let Some(t) = &tag {
            if present && sync.checked_within(repo, t.as_str(), reg.manifest_check_interval) {
                self.sync_stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        } else if present {
            return Ok(());
        }
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
            Err(CoreError::ManifestUnknown) => Ok(()),
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
        let tail = format!("manifests/{reference}");
        if cached_tag {
            let resp = upstream
                .request(reqwest::Method::HEAD, source, &tail, Some(MANIFEST_ACCEPT))
                .await
                .map_err(upstream_err)?;
            let local = self
                .resolve_manifest(repo, reference)
                .await
                .ok()
                .map(|(d, _)| d);
            if header_digest(&resp).is_some_and(|d| Some(&d) == local.as_ref()) {
                return Ok(false);
            }
        }
        let (body, content_type, declared) = self
            .get_upstream_manifest(upstream, source, reference)
            .await?;
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
        self.store_manifest(repo, reference, content_type.as_deref(), body, false)
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

    /// GETs a manifest upstream: its bytes (at most the manifest size
    /// limit), media type, and the digest the upstream declares.
    async fn get_upstream_manifest(
        &self,
        upstream: &Upstream,
        source: &str,
        reference: &Reference,
    ) -> Result<(Bytes, Option<String>, Option<Digest>)> {
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
        Ok((body, content_type, declared))
    }

    /// After a local miss of a blob: fetches it if a rule maps the
    /// repository (as distribution's proxy does, any blob the upstream has
    /// under that name). `None`: sync does not apply (the miss stands).
    pub async fn sync_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        want: Want,
    ) -> Result<Option<BlobSource>> {
        let Some(sync) = self.sync() else {
            return Ok(None);
        };
        let Some((reg, _, source)) = sync.route(repo) else {
            return Ok(None);
        };
        let upstream = reg.upstream.clone();
        let key = (repo.clone(), digest.clone());
        let existing = sync
            .blob_flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if want == Want::Head {
            if let Some(f) = &existing {
                let mut rx = f.state.subscribe();
                let st = rx.wait_for(|s| s.started || s.outcome.is_some()).await;
                if let Some(size) = st.ok().and_then(|s| s.size) {
                    return Ok(Some(BlobSource::Size(size)));
                }
            }
            let resp = upstream
                .request(
                    reqwest::Method::HEAD,
                    &source,
                    &format!("blobs/{digest}"),
                    None,
                )
                .await;
            return match resp {
                Ok(r) => Ok(upstream::announced_length(&r).map(BlobSource::Size)),
                Err(UpstreamError::NotFound) => Ok(None),
                Err(e) => {
                    self.sync_failed("upstream blob HEAD failed", &e);
                    Ok(None)
                }
            };
        }
        let flight = match existing {
            Some(f) => f,
            None => {
                let mut flights = sync.blob_flights.lock().unwrap_or_else(|p| p.into_inner());
                match flights.get(&key) {
                    Some(f) => f.clone(),
                    None => {
                        let flight = Arc::new(Flight::new());
                        flights.insert(key.clone(), flight.clone());
                        self.sync_stats.misses.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(self.clone().run_flight(
                            sync.clone(),
                            upstream,
                            source,
                            key,
                            flight.clone(),
                        ));
                        flight
                    }
                }
            }
        };
        let mut rx = flight.state.subscribe();
        if want == Want::Whole {
            let st = rx
                .wait_for(|s| s.outcome.is_some())
                .await
                .map_err(|_| CoreError::Upstream("fetch abandoned".into()))?
                .clone();
            return match st.outcome {
                Some(Ok(())) => Ok(Some(BlobSource::Local)),
                Some(Err(e)) if e == "not found upstream" => Ok(None),
                Some(Err(e)) => Err(CoreError::Upstream(e)),
                None => Ok(None),
            };
        }
        let st = rx
            .wait_for(|s| s.started || s.outcome.is_some())
            .await
            .map_err(|_| CoreError::Upstream("fetch abandoned".into()))?
            .clone();
        match st.outcome {
            Some(Ok(())) => return Ok(Some(BlobSource::Local)),
            Some(Err(e)) if e == "not found upstream" => return Ok(None),
            Some(Err(e)) => return Err(CoreError::Upstream(e)),
            None => {}
        }
        Ok(Some(BlobSource::Arriving {
            size: st.size,
            body: self.tail(flight, digest.clone()),
        }))
    }

    /// Fetches one blob into the staging area, hashing as it goes; commits
    /// it only if the digest (and the announced size) match.
    async fn run_flight(
        self,
        sync: Arc<Sync>,
        upstream: Arc<Upstream>,
        source: String,
        key: (RepoName, Digest),
        flight: Arc<Flight>,
    ) {
        // Whatever happens to this task (a panic, an abort), the flight
        // ends and its readers wake.
        struct Ending {
            sync: Arc<Sync>,
            key: (RepoName, Digest),
            flight: Arc<Flight>,
        }
        impl Drop for Ending {
            fn drop(&mut self) {
                self.sync
                    .blob_flights
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.key);
                self.flight.state.send_modify(|s| {
                    if s.outcome.is_none() {
                        s.outcome = Some(Err("the fetch stopped".into()));
                    }
                });
            }
        }
        let _ending = Ending {
            sync: sync.clone(),
            key: key.clone(),
            flight: flight.clone(),
        };
        let (repo, digest) = &key;
        let result = self
            .fetch_blob(&upstream, &source, repo, digest, &flight)
            .await;
        if result.is_err() {
            let _ = self.store.stage_delete(&flight.stage).await;
        }
        match &result {
            Ok(()) => {
                tracing::info!(repository = %repo, %digest, upstream = source, "fetched blob from upstream")
            }
            Err(UpstreamError::NotFound) => {}
            Err(e) => self.sync_failed("fetching a blob from upstream failed", e),
        }
        sync.blob_flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        flight.state.send_modify(|s| {
            s.outcome = Some(result.map_err(|e| e.to_string()));
        });
    }

    async fn fetch_blob(
        &self,
        upstream: &Upstream,
        source: &str,
        repo: &RepoName,
        digest: &Digest,
        flight: &Flight,
    ) -> std::result::Result<(), UpstreamError> {
        let bad = |m: String| UpstreamError::Failed(m);
        let resp = upstream
            .request(
                reqwest::Method::GET,
                source,
                &format!("blobs/{digest}"),
                None,
            )
            .await?;
        let size = resp.content_length();
        flight.state.send_modify(|s| {
            s.started = true;
            s.size = size;
        });
        let storage = |e: StorageError| bad(format!("storage: {e}"));
        let writer = self
            .store
            .stage_writer(&flight.stage, 0)
            .await
            .map_err(storage)?;
        // Counted as it passes; readers are told every so often (they also
        // look by themselves now and then).
        let mut received = 0u64;
        let mut told = 0u64;
        let state = flight.state.clone();
        let live = flight.live.clone();
        let body: ByteStream = Box::pin(coalesce(resp.bytes_stream()).map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            // No reader listening is no error.
            let _ = live.send((received, chunk.clone()));
            received += chunk.len() as u64;
            if size.is_some_and(|s| received > s) {
                return Err(std::io::Error::other("more bytes than announced"));
            }
            if received - told >= NOTIFY_EVERY {
                told = received;
                state.send_modify(|s| s.received = received);
            }
            Ok(chunk)
        }));
        // Hashed on a thread of its own and written on another, as pushes are.
        let mut hasher = digest.algorithm().hasher();
        let written = crate::uploads::pump(body, writer, Some(&mut hasher))
            .await
            .map_err(|e| bad(format!("{digest}: {e}")))?;
        if size.is_some_and(|s| written != s) {
            return Err(bad(format!(
                "{digest}: truncated ({written} of {} bytes)",
                size.unwrap_or(0)
            )));
        }
        let actual = hasher.finish();
        if actual != *digest {
            return Err(bad(format!("upstream sent {actual} for {digest}")));
        }
        // Verified: readers may have the last byte now, while the content
        // is made durable and visible.
        flight.state.send_modify(|s| {
            s.received = written;
            s.verified = true;
        });
        self.commit_blob(repo, &flight.stage, digest)
            .await
            .map_err(|e| bad(format!("commit: {e}")))?;
        Ok(())
    }

    /// A blob's bytes as they arrive: from memory as the fetch passes them
    /// on, from the staging object for what went by before this reader
    /// came (or while it lagged), then from the committed content.
    fn tail(&self, flight: Arc<Flight>, digest: Digest) -> ByteStream {
        struct Tail {
            reg: Registry,
            rx: tokio::sync::watch::Receiver<FlightState>,
            live: tokio::sync::broadcast::Receiver<(u64, Bytes)>,
            /// Pieces received from the fetch, not yet (wholly) sent.
            pending: std::collections::VecDeque<(u64, Bytes)>,
            flight: Arc<Flight>,
            digest: Digest,
            pos: u64,
            inner: Option<ByteStream>,
            last: bool,
        }
        let start = Tail {
            reg: self.clone(),
            rx: flight.state.subscribe(),
            live: flight.live.subscribe(),
            pending: std::collections::VecDeque::new(),
            flight,
            digest,
            pos: 0,
            inner: None,
            last: false,
        };
        Box::pin(futures_util::stream::unfold(start, |mut t| async move {
            use tokio::sync::broadcast::error::TryRecvError;
            loop {
                if let Some(inner) = &mut t.inner {
                    match inner.next().await {
                        Some(Ok(b)) => {
                            t.pos += b.len() as u64;
                            return Some((Ok(b), t));
                        }
                        Some(Err(e)) => {
                            t.inner = None;
                            t.last = true;
                            return Some((Err(e), t));
                        }
                        None => t.inner = None,
                    }
                }
                if t.last {
                    return None;
                }
                // Bounded: a reader that does not keep up lets the channel
                // overflow, and reads the staging object instead.
                while t.pending.len() <= LIVE_PIECES {
                    match t.live.try_recv() {
                        Ok(piece) => t.pending.push_back(piece),
                        // Fell behind: what it missed is on disk.
                        Err(TryRecvError::Lagged(_)) => t.pending.clear(),
                        Err(_) => break,
                    }
                }
                while t
                    .pending
                    .front()
                    .is_some_and(|(off, b)| off + b.len() as u64 <= t.pos)
                {
                    t.pending.pop_front();
                }
                let st = t.rx.borrow_and_update().clone();
                // The last byte waits for the digest check: a client never
                // holds a whole blob that failed it.
                let allowed = if st.verified || st.outcome.is_some() {
                    u64::MAX
                } else {
                    st.size.map_or(u64::MAX, |n| n.saturating_sub(1))
                };
                match st.outcome {
                    // Committed: what memory does not hold from here on
                    // comes from the content itself.
                    Some(Ok(())) if t.pending.front().is_none_or(|(off, _)| *off > t.pos) => {
                        t.pending.clear();
                        t.last = true;
                        if t.pos >= st.received {
                            return None;
                        }
                        match t
                            .reg
                            .store
                            .read(&keys::blob(&t.digest), t.pos, Some(st.received))
                            .await
                        {
                            Ok(s) => {
                                t.inner = Some(s);
                                continue;
                            }
                            Err(e) => return Some((Err(std::io::Error::other(e)), t)),
                        }
                    }
                    Some(Err(e)) => {
                        t.last = true;
                        return Some((Err(std::io::Error::other(e)), t));
                    }
                    _ => {}
                }
                // From memory, when the next piece covers where this is.
                if let Some((off, b)) = t.pending.front() {
                    if *off <= t.pos && t.pos < allowed {
                        let from = (t.pos - off) as usize;
                        let to = (b.len() as u64).min(allowed - off) as usize;
                        if to > from {
                            let piece = b.slice(from..to);
                            t.pos += piece.len() as u64;
                            return Some((Ok(piece), t));
                        }
                    }
                }
                // From the staging object, up to the next piece in memory.
                let on_disk = t
                    .reg
                    .store
                    .stage_size(&t.flight.stage)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let until = on_disk
                    .min(allowed)
                    .min(t.pending.front().map_or(u64::MAX, |(off, _)| *off));
                if until > t.pos {
                    if let Ok(s) = t.reg.store.stage_read(&t.flight.stage, t.pos).await {
                        t.inner = Some(take(s, until - t.pos));
                        continue;
                    }
                }
                // Nothing to send yet: wait for a piece or news (and look at
                // the disk again soon: writes land after they are counted).
                tokio::select! {
                    piece = t.live.recv() => match piece {
                        Ok(p) if t.pending.len() <= LIVE_PIECES => t.pending.push_back(p),
                        _ => t.pending.clear(),
                    },
                    _ = t.rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        }))
    }

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
        let head = reg
            .upstream
            .request(
                reqwest::Method::HEAD,
                source,
                &format!("manifests/{tag}"),
                Some(MANIFEST_ACCEPT),
            )
            .await
            .map_err(upstream_err)?;
        let local = self.tag_target(repo, tag).await?;
        if let (Some(up), Some(here)) = (header_digest(&head), &local) {
            if up == *here {
                return Ok(false);
            }
        }
        let (body, content_type, declared) = self
            .get_upstream_manifest(&reg.upstream, source, &reference)
            .await?;
        if let Some(d) = &declared {
            if Digest::of(d.algorithm(), &body) != *d {
                return Err(CoreError::Upstream(format!(
                    "upstream manifest {source}:{tag} does not match its digest"
                )));
            }
        }
        let parsed = berth_oci::manifest::parse(&body, content_type.as_deref())
            .map_err(|e| CoreError::Upstream(format!("upstream manifest: {e}")))?;
        for child in &parsed.manifests {
            self.mirror_child(reg, source, repo, &child.digest, 1)
                .await?;
        }
        self.mirror_blobs(reg, source, repo, &parsed.blobs).await?;
        self.store_manifest(repo, &reference, content_type.as_deref(), body, true)
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
            match self.sync_blob_from(reg, source, repo, &b.digest).await? {
                true => {}
                false => return Err(CoreError::ManifestBlobUnknown(b.digest.clone())),
            }
        }
        Ok(())
    }

    /// Fetches one blob whole (mirroring).
    async fn sync_blob_from(
        &self,
        reg: &SyncRegistry,
        source: &str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        let flight = Flight::new();
        match self
            .fetch_blob(&reg.upstream, source, repo, digest, &flight)
            .await
        {
            Ok(()) => Ok(true),
            Err(UpstreamError::NotFound) => {
                let _ = self.store.stage_delete(&flight.stage).await;
                Ok(false)
            }
            Err(e) => {
                let _ = self.store.stage_delete(&flight.stage).await;
                Err(CoreError::Upstream(e.to_string()))
            }
        }
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
