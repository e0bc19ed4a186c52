//! Blobs fetched on demand. One `Flight` per (repository, digest): a task
//! pulls the upstream body through the push path's hashing and writing
//! threads into a staging object; every client reads it as it arrives (from
//! memory while it keeps up, else from the staging object, then from the
//! committed content), the last byte held back until the digest matched.

use super::claims;
use super::upstream::{self, Upstream, UpstreamError};
use super::Sync;
use crate::{keys, CoreError, Registry, Result};
use berth_oci::{Digest, RepoName};
use berth_storage::{ByteStream, StorageError};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
    outcome: Option<Outcome>,
}

/// How a fetch ended. What went wrong is logged where it happened; readers
/// and clients only learn which of these it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Verified and committed: the blob is stored.
    Stored,
    /// The upstream does not have it.
    NotFound,
    /// The upstream, the network or the store failed (logged).
    Failed,
    /// No fetch from the upstream came free in time.
    Busy,
}

impl Outcome {
    fn of(result: &std::result::Result<(), UpstreamError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Stored,
            Err(UpstreamError::NotFound) => Outcome::NotFound,
            Err(_) => Outcome::Failed,
        }
    }

    /// What a client that asked for the blob is answered.
    fn answer(self) -> Result<Option<BlobSource>> {
        match self {
            Outcome::Stored => Ok(Some(BlobSource::Local)),
            Outcome::NotFound => Ok(None),
            Outcome::Failed => Err(CoreError::Upstream(UPSTREAM_FAILED.into())),
            Outcome::Busy => Err(CoreError::UpstreamBusy),
        }
    }
}

/// A blob's name among the misses remembered: apart from a manifest of the
/// same digest (a reader asking for a layer's digest as a manifest must
/// not make the layer look missing upstream).
fn absent_blob(digest: &Digest) -> String {
    format!("blob {digest}")
}

/// The one thing a client learns of a failed fetch.
const UPSTREAM_FAILED: &str = "fetching the blob from the upstream registry failed";

/// One blob being fetched, shared by every client that asked for it.
pub(super) struct Flight {
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

/// How long a HEAD waits for a running fetch to learn the size.
const HEAD_PATIENCE: Duration = Duration::from_secs(2);

/// How many bytes arrive between two notes to the readers of a blob.
const NOTIFY_EVERY: u64 = 1024 * 1024;

/// Gathers a network body's small pieces into batches of about
/// `BATCH` bytes: one copy, instead of a trip through the hashing and
/// writing threads for every few kilobytes.
fn coalesce(
    s: impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
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

/// A fetch must move at least [`STALL_BYTES`] in every [`STALL_WINDOW`]
/// (about 4 KiB/s), else it is given up: the client's read timeout only
/// sees silence, and an upstream that drips a byte now and then would hold
/// its permit, its staging object and its waiting clients for ever.
const STALL_WINDOW: Duration = Duration::from_secs(60);
const STALL_BYTES: u64 = 256 * 1024;

/// Bytes seen in the current window.
#[derive(Debug)]
struct Progress {
    since: std::time::Instant,
    bytes: u64,
}

impl Progress {
    fn new(now: std::time::Instant) -> Progress {
        Progress {
            since: now,
            bytes: 0,
        }
    }

    /// Counts `n` bytes arriving at `now`; false once a whole window went
    /// by with too few.
    fn note(&mut self, n: u64, now: std::time::Instant) -> bool {
        self.bytes += n;
        if now.duration_since(self.since) < STALL_WINDOW {
            return true;
        }
        let moved = self.bytes >= STALL_BYTES;
        *self = Progress::new(now);
        moved
    }
}

/// Ends a body with an error once it stalls (see [`Progress`]).
fn watchdog(
    s: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let mut progress = Progress::new(std::time::Instant::now());
    s.map(move |piece| {
        let piece = piece.map_err(std::io::Error::other)?;
        if progress.note(piece.len() as u64, std::time::Instant::now()) {
            Ok(piece)
        } else {
            Err(std::io::Error::other(
                "the upstream sent too little for too long",
            ))
        }
    })
}

/// The most blob fetches (running or waiting for a permit) at once: a
/// client asking for many digests is refused (429) past it, instead of
/// leaving a task per digest behind.
const MAX_FLIGHTS: usize = 256;

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

impl Registry {
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
        if self.remembered_absent(&sync, repo, &absent_blob(digest)) {
            return Ok(None);
        }
        let existing = sync
            .blob_flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if want == Want::Head {
            if let Some(f) = &existing {
                // A fetch about to start tells the size; one waiting for
                // another replica's is not waited for (an upstream HEAD
                // answers at once).
                let mut rx = f.state.subscribe();
                let started = rx.wait_for(|s| s.started || s.outcome.is_some());
                let size = match tokio::time::timeout(HEAD_PATIENCE, started).await {
                    Ok(Ok(st)) => st.size,
                    _ => None,
                };
                if let Some(size) = size {
                    return Ok(Some(BlobSource::Size(size)));
                }
            }
            let Some(_turn) = upstream.permit().await else {
                self.sync_stats.throttled.fetch_add(1, Ordering::Relaxed);
                return Err(CoreError::UpstreamBusy);
            };
            let resp = upstream
                .request(
                    reqwest::Method::HEAD,
                    &source,
                    &format!("blobs/{digest}"),
                    None,
                )
                .await;
            // A failure is the upstream's, not a missing blob: 502, as a
            // GET's would be (a 404 would tell clients it does not exist).
            return match resp {
                Ok(r) => match upstream::announced_length(&r) {
                    Some(size) => Ok(Some(BlobSource::Size(size))),
                    None => {
                        let e = UpstreamError::Failed("a blob HEAD without a length".into());
                        self.sync_failed("upstream blob HEAD failed", &e);
                        Err(CoreError::Upstream(UPSTREAM_FAILED.into()))
                    }
                },
                Err(UpstreamError::NotFound) => {
                    sync.note_absent(repo, &absent_blob(digest));
                    Ok(None)
                }
                Err(e) => {
                    self.sync_failed("upstream blob HEAD failed", &e);
                    Err(CoreError::Upstream(UPSTREAM_FAILED.into()))
                }
            };
        }
        let flight = match existing {
            Some(f) => f,
            None => {
                let mut flights = sync.blob_flights.lock().unwrap_or_else(|p| p.into_inner());
                match flights.get(&key) {
                    Some(f) => f.clone(),
                    None if flights.len() >= MAX_FLIGHTS => {
                        self.sync_stats.throttled.fetch_add(1, Ordering::Relaxed);
                        return Err(CoreError::UpstreamBusy);
                    }
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
                .map_err(|_| CoreError::Upstream(UPSTREAM_FAILED.into()))?
                .clone();
            return st.outcome.map_or(Ok(None), Outcome::answer);
        }
        let st = rx
            .wait_for(|s| s.started || s.outcome.is_some())
            .await
            .map_err(|_| CoreError::Upstream(UPSTREAM_FAILED.into()))?
            .clone();
        if let Some(outcome) = st.outcome {
            return outcome.answer();
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
                let mut flights = self
                    .sync
                    .blob_flights
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                // Only this flight: a later one may have the key now.
                if flights
                    .get(&self.key)
                    .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
                {
                    flights.remove(&self.key);
                }
                drop(flights);
                self.flight.state.send_modify(|s| {
                    if s.outcome.is_none() {
                        tracing::warn!("a pull-through fetch stopped before it ended");
                        s.outcome = Some(Outcome::Failed);
                    }
                });
            }
        }
        let _ending = Ending {
            sync: sync.clone(),
            key: key.clone(),
            flight: flight.clone(),
        };
        // The flight leaves the table before its readers learn how it
        // ended, so that a later miss starts a fetch of its own.
        let end = |outcome: Outcome| {
            let mut flights = sync.blob_flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(&key);
            }
            drop(flights);
            flight.state.send_modify(|s| s.outcome = Some(outcome));
        };
        let (repo, digest) = &key;
        // Among replicas sharing the store, one fetches; the others wait
        // for it and serve what it stored.
        let claim = if self.options.shared_store {
            self.claim_fetch(repo, digest).await
        } else {
            Ok(claims::Claim::Unclaimed)
        };
        let _claim = match claim {
            Ok(claims::Claim::Landed) => return end(Outcome::Stored),
            Ok(claims::Claim::Mine(held)) => Some(held),
            Ok(claims::Claim::Unclaimed) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim a pull-through fetch; fetching without");
                None
            }
        };
        let Some(_turn) = upstream.permit().await else {
            self.sync_stats.throttled.fetch_add(1, Ordering::Relaxed);
            return end(Outcome::Busy);
        };
        let result = self
            .fetch_blob(&upstream, &source, repo, digest, &flight)
            .await;
        if let Err(UpstreamError::NotFound) = result {
            sync.note_absent(repo, &absent_blob(digest));
        }
        match &result {
            Ok(()) => {
                tracing::info!(repository = %repo, %digest, upstream = source, "fetched blob from upstream")
            }
            Err(UpstreamError::NotFound) => {}
            Err(e) => self.sync_failed("fetching a blob from upstream failed", e),
        }
        end(Outcome::of(&result));
    }

    /// Fetches one blob whole, outside any flight (mirroring). Whether
    /// the upstream had it.
    pub(super) async fn fetch_blob_whole(
        &self,
        upstream: &Upstream,
        source: &str,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        match self
            .fetch_blob(upstream, source, repo, digest, &Flight::new())
            .await
        {
            Ok(()) => Ok(true),
            Err(UpstreamError::NotFound) => Ok(false),
            Err(e) => {
                self.sync_failed("fetching a blob from upstream failed", &e);
                Err(CoreError::Upstream(UPSTREAM_FAILED.into()))
            }
        }
    }

    /// Fetches a blob into the flight's staging object and commits it once
    /// its digest matched; on failure nothing of it stays.
    async fn fetch_blob(
        &self,
        upstream: &Upstream,
        source: &str,
        repo: &RepoName,
        digest: &Digest,
        flight: &Flight,
    ) -> std::result::Result<(), UpstreamError> {
        let result = self
            .fetch_into_stage(upstream, source, repo, digest, flight)
            .await;
        if result.is_err() {
            let _ = self.store.stage_delete(&flight.stage).await;
        }
        result
    }

    async fn fetch_into_stage(
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
        let body: ByteStream =
            Box::pin(coalesce(watchdog(resp.bytes_stream())).map(move |chunk| {
                let chunk = chunk?;
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
        let hashed = crate::pump::pump_hashed(body, writer, digest.algorithm().hasher()).await;
        let (written, hasher) = hashed.map_err(|e| bad(format!("{digest}: {e}")))?;
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
        self.commit_blob(repo, &flight.stage, digest, written)
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
            /// Where the read of the staging object in `inner` began.
            read_from: Option<u64>,
            /// The last read of the staging object found nothing new.
            idle: bool,
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
            read_from: None,
            idle: false,
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
                        None => {
                            t.idle = t.read_from == Some(t.pos);
                            t.inner = None;
                            t.read_from = None;
                        }
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
                // Without an announced size, the end is unknown: only what
                // the fetch has counted (it counts after passing a piece
                // on), less a byte, goes out before the check.
                let allowed = if st.verified || st.outcome.is_some() {
                    u64::MAX
                } else {
                    st.size.unwrap_or(st.received).saturating_sub(1)
                };
                match st.outcome {
                    // Committed: what memory does not hold from here on
                    // comes from the content itself.
                    Some(Outcome::Stored)
                        if t.pending.front().is_none_or(|(off, _)| *off > t.pos) =>
                    {
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
                    Some(Outcome::NotFound | Outcome::Failed | Outcome::Busy) => {
                        t.last = true;
                        return Some((Err(std::io::Error::other(UPSTREAM_FAILED)), t));
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
                // From the staging object (what is on disk now), up to the
                // next piece in memory.
                let until = allowed.min(t.pending.front().map_or(u64::MAX, |(off, _)| *off));
                if until > t.pos && !t.idle {
                    if let Ok(s) = t.reg.store.stage_read(&t.flight.stage, t.pos).await {
                        t.inner = Some(take(s, until - t.pos));
                        t.read_from = Some(t.pos);
                        continue;
                    }
                }
                t.idle = false;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_body_that_drips_is_given_up_and_a_slow_one_is_not() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // A byte every 5 s: the first window that closes condemns it.
        let mut drip = Progress::new(t0);
        assert!((1..12).all(|i| drip.note(1, at(5 * i))));
        assert!(!drip.note(1, at(60)));
        // 8 KiB/s: every window carries more than the floor.
        let mut slow = Progress::new(t0);
        assert!((1..=600).all(|i| slow.note(8 * 1024, at(i))));
        // A burst, then silence until the read timeout: the window with the
        // burst passes; the next one (one byte) does not.
        let mut burst = Progress::new(t0);
        assert!(burst.note(STALL_BYTES, at(1)));
        assert!(burst.note(0, at(61)));
        assert!(!burst.note(1, at(122)));
    }
}
