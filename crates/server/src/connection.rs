//! What one client connection may hold: deadlines for silent, stalled and
//! trickling peers, and the cap on open connections.
//!
//! zot's `http.readTimeout` and `http.writeTimeout` are Go's total limits on
//! reading a request and writing a response; taken literally they would cut
//! every push or pull of a large blob over a slow link. Berth reads them as
//! progress windows instead:
//!
//! - a request head must arrive whole within [`Limits::header`] (30 s, or
//!   `readTimeout` if shorter), counted from the connection's start or from
//!   the first byte of a later request, so a connection that never sends a
//!   byte, or trickles a head, is closed;
//! - a connection idle between requests is closed after [`KEEP_ALIVE`]
//!   (longer than clients keep idle connections, 90 s for Go and Docker,
//!   so the client, not the server, ends it and no request races a close),
//!   or sooner when the cap needs room;
//! - a request body must deliver [`MIN_PROGRESS`] bytes (or end) in every
//!   `readTimeout` window once the handler reads it, or reading fails with
//!   [`Stalled`] (an upload keeps what it had received: the client resumes);
//! - a response write that is waiting on the client must move
//!   [`MIN_PROGRESS`] bytes in every `writeTimeout` window, or the
//!   connection is closed.
//!
//! Nothing here knows what a request means; it only sees bytes, requests in
//! flight and time. This module does not read the configuration file: it is
//! given [`Limits`].

use crate::config::Settings;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Bytes a request body or a stalled response must move in each window.
pub const MIN_PROGRESS: u64 = 64 * 1024;
/// The longest a request head may take, whatever `readTimeout` says.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may sit idle between requests (zot's too).
pub const KEEP_ALIVE: Duration = Duration::from_secs(120);
/// File descriptors kept aside for storage, logs and the like.
const FD_RESERVE: u64 = 64;
/// How long a connection must have been idle to be asked to make room: a
/// client between two quick requests keeps its connection.
const EVICT_MIN_IDLE: Duration = Duration::from_millis(500);
/// Idle connections asked to close at once when the cap is reached.
const EVICTING: usize = 8;
/// Most connections held open, however high the descriptor limit.
const MAX_CONNECTIONS: u64 = 65_536;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The deadlines and the cap in force.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must be whole this long after the connection opened or
    /// went idle.
    pub header: Duration,
    /// The window in which a request body must move (`readTimeout`).
    pub body: Option<Duration>,
    /// The window in which a stalled response must move (`writeTimeout`).
    pub write: Option<Duration>,
    /// Connections held open at most; past it idle ones make room.
    pub max_connections: usize,
}

impl Limits {
    /// The limits for `settings`, with the cap derived from the process's
    /// descriptor limit (see [`fd_limit`]).
    pub fn new(settings: &Settings, fds: u64) -> Limits {
        let header = settings
            .read_timeout
            .map_or(HEADER_TIMEOUT, |r| r.min(HEADER_TIMEOUT));
        // Each connection may hold one storage file besides its socket.
        let max = (fds.saturating_sub(FD_RESERVE) / 2).clamp(8, MAX_CONNECTIONS);
        Limits {
            header,
            body: settings.read_timeout,
            write: settings.write_timeout,
            max_connections: max as usize,
        }
    }
}

/// Raises the soft limit on open files to the hard one (as Go programs,
/// zot among them, do at start) and returns the limit in force.
pub fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let want = lim.rlim_max.min(1 << 20);
        if want > lim.rlim_cur {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = want;
            }
        }
    }
    lim.rlim_cur
}

/// One connection's shared state: the requests in flight and since when it
/// has been idle, read by its watchdog.
pub struct ConnState {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` when the last request in flight ended.
    idle_since_ms: AtomicU64,
    /// One more than the milliseconds after `born` when the first byte of
    /// the next request arrived; 0 while none has.
    head_started_ms: AtomicU64,
    /// A request was ever served on this connection.
    served: AtomicBool,
    evicted: AtomicBool,
    /// Wakes the watchdog: the connection went idle, or must make room.
    changed: Notify,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            served: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Marks a request in flight until the guard (carried by the response
    /// body) is dropped.
    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Release);
        self.head_started_ms.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// Bytes arrived: if no request is in flight, a new one has begun, and
    /// its head is now on the clock.
    fn bytes_arrived(&self) {
        if self.is_idle() && self.head_started_ms.load(Ordering::Acquire) == 0 {
            let ms = self.born.elapsed().as_millis() as u64;
            self.head_started_ms.store(ms + 1, Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn idle_since(&self) -> Instant {
        self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// When this connection must be closed unless a request arrives.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        if !self.is_idle() {
            return None;
        }
        let started = self.head_started_ms.load(Ordering::Acquire);
        Some(if started > 0 {
            self.born + Duration::from_millis(started - 1) + limits.header
        } else if !self.served.load(Ordering::Acquire) {
            self.born + limits.header
        } else {
            self.idle_since() + KEEP_ALIVE
        })
    }
}

/// A request in flight on a connection.
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        let ms = s.born.elapsed().as_millis() as u64;
        s.idle_since_ms.store(ms, Ordering::Release);
        if s.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.head_started_ms.store(0, Ordering::Release);
            s.changed.notify_one();
        }
    }
}

/// The connections held open, for the cap: at it the longest-idle ones are
/// asked to close and the listener waits until one has; if every
/// connection has a request in flight, it waits for one to end.
pub struct Table {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
    /// Connections asked to close that have not closed yet.
    leaving: AtomicUsize,
    room: Notify,
    max: usize,
}

/// A connection's place in the [`Table`]; dropping it frees the place.
pub struct Slot {
    table: Arc<Table>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let removed = match self.table.conns.lock() {
            Ok(mut c) => c.remove(&self.id),
            Err(p) => p.into_inner().remove(&self.id),
        };
        if removed.is_some() && self.state.evicted.load(Ordering::Acquire) {
            self.table.leaving.fetch_sub(1, Ordering::AcqRel);
        }
        self.table.room.notify_one();
    }
}

impl Table {
    pub fn new(max: usize) -> Arc<Table> {
        Arc::new(Table {
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            leaving: AtomicUsize::new(0),
            room: Notify::new(),
            max,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        match self.conns.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the connection idle the longest (and for at least
    /// [`EVICT_MIN_IDLE`]) to close; false if there is none.
    pub fn evict_one(&self) -> bool {
        let conns = self.lock();
        let now = Instant::now();
        let victim = conns
            .values()
            .filter(|c| c.is_idle() && !c.evicted.load(Ordering::Acquire))
            .filter(|c| c.idle_since() + EVICT_MIN_IDLE <= now)
            .min_by_key(|c| c.idle_since());
        match victim {
            Some(v) => {
                v.evicted.store(true, Ordering::Release);
                self.leaving.fetch_add(1, Ordering::AcqRel);
                v.changed.notify_one();
                true
            }
            None => false,
        }
    }

    /// Returns once a new connection may be taken: below the cap at once;
    /// at it, idle connections are asked to leave (a few at a time) and
    /// this waits until one has closed. If none is idle, it waits for a
    /// connection to close or go idle.
    pub async fn wait_for_room(&self) {
        loop {
            let notified = self.room.notified();
            if self.len() < self.max {
                return;
            }
            if self.leaving.load(Ordering::Acquire) < EVICTING {
                self.evict_one();
            }
            // Check again when one closes, or now and then, as requests
            // finish without closing their connections.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Waits until every connection has closed.
    pub async fn drained(&self) {
        loop {
            let notified = self.room.notified();
            if self.is_empty() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Registers a new connection.
    pub fn admit(self: &Arc<Self>) -> Slot {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        self.lock().insert(id, state.clone());
        Slot {
            table: self.clone(),
            id,
            state,
        }
    }
}

/// Why a connection's watchdog asks it to close.
#[derive(Debug, PartialEq, Eq)]
pub enum Close {
    /// No request for [`Limits::header`].
    Idle,
    /// Room was needed for a new connection.
    Evicted,
}

/// Resolves when the connection should close: idle past its deadline, or
/// evicted. Never resolves while a request is in flight (the body and write
/// windows govern those).
pub async fn watchdog(state: &ConnState, limits: &Limits) -> Close {
    loop {
        let notified = state.changed.notified();
        if state.evicted.load(Ordering::Acquire) {
            return Close::Evicted;
        }
        match state.idle_deadline(limits) {
            Some(deadline) if deadline <= Instant::now() => return Close::Idle,
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = notified => {}
                }
            }
            None => {
                // A request is in flight: wait for it to end (or recheck now
                // and then, in case the end raced with this check).
                let _ = tokio::time::timeout(limits.header, notified).await;
            }
        }
    }
}

/// A progress window: `MIN_PROGRESS` bytes must move before each deadline.
/// Its timer is allocated once and re-armed, as windows open and close
/// often on a fast transfer.
struct Window {
    length: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Bytes counted when the window opened.
    base: u64,
}

impl Window {
    fn new(length: Duration) -> Window {
        Window {
            length,
            sleep: None,
            armed: false,
            base: 0,
        }
    }

    /// Opens a window at `moved` bytes if none is open.
    fn open(&mut self, moved: u64) {
        if self.armed {
            return;
        }
        self.armed = true;
        self.base = moved;
        let deadline = Instant::now() + self.length;
        match self.sleep.as_mut() {
            Some(s) => s.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    fn close(&mut self) {
        self.armed = false;
    }

    fn expired(&self) -> bool {
        self.armed && self.sleep.as_ref().is_some_and(|s| s.is_elapsed())
    }

    /// At the end of a window: enough moved opens the next, too little is
    /// an error.
    fn settle(&mut self, moved: u64) -> Result<(), ()> {
        if moved.saturating_sub(self.base) < MIN_PROGRESS {
            return Err(());
        }
        self.base = moved;
        let next = Instant::now() + self.length;
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(next);
        }
        Ok(())
    }

    /// Called while waiting on the peer: registers the deadline, and settles
    /// every window that ended.
    fn poll_wait(&mut self, cx: &mut Context<'_>, moved: u64) -> Result<(), ()> {
        self.open(moved);
        while let Some(s) = self.sleep.as_mut() {
            if s.as_mut().poll(cx).is_pending() {
                break;
            }
            self.settle(moved)?;
        }
        Ok(())
    }
}

/// A request body that failed to keep moving.
#[derive(Debug)]
pub struct Stalled {
    window: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the client sent fewer than {MIN_PROGRESS} bytes in {:?} (http.readTimeout)",
            self.window
        )
    }
}

impl std::error::Error for Stalled {}

/// A request body held to the `readTimeout` window once it is read.
pub struct PacedBody<B> {
    inner: B,
    window: Option<Window>,
    moved: u64,
}

impl<B> PacedBody<B> {
    pub fn new(inner: B, window: Option<Duration>) -> PacedBody<B> {
        PacedBody {
            inner,
            window: window.map(Window::new),
            moved: 0,
        }
    }
}

impl<B> Body for PacedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(window) = this.window.as_mut() else {
            return polled.map(|f| f.map(|r| r.map_err(Into::into)));
        };
        let length = window.length;
        let stalled = move || Stalled { window: length };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.moved += d.len() as u64;
                }
                window.open(this.moved);
                if window.expired()
                    && !this.inner.is_end_stream()
                    && window.settle(this.moved).is_err()
                {
                    return Poll::Ready(Some(Err(Box::new(stalled()))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                window.close();
                Poll::Ready(None)
            }
            Poll::Pending => match window.poll_wait(cx, this.moved) {
                Ok(()) => Poll::Pending,
                Err(()) => Poll::Ready(Some(Err(Box::new(stalled())))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that marks its request in flight until it is dropped.
pub struct Guarded<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The per-connection service: counts requests in flight, paces request
/// bodies and tells handlers the client's address.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
    body_window: Option<Duration>,
    peer: std::net::SocketAddr,
}

impl<S> Tracked<S> {
    pub fn new(
        inner: S,
        state: Arc<ConnState>,
        limits: &Limits,
        peer: std::net::SocketAddr,
    ) -> Tracked<S> {
        Tracked {
            inner,
            state,
            body_window: limits.body,
            peer,
        }
    }
}

type Request = http::Request<PacedBody<hyper::body::Incoming>>;

impl<S> tower::Service<http::Request<hyper::body::Incoming>> for Tracked<S>
where
    S: tower::Service<Request, Response = axum::response::Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Guarded<axum::body::Body>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let in_flight = self.state.enter();
        let window = self.body_window;
        let mut req = req.map(|b| PacedBody::new(b, window));
        req.extensions_mut().insert(crate::audit::Peer(self.peer));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| Guarded {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A client socket whose stalled writes are held to the `writeTimeout`
/// window: while the client is not taking what is sent, it must take
/// [`MIN_PROGRESS`] bytes per window or the connection fails.
/// It also tells the connection's state when a request's first bytes
/// arrive.
pub struct PacedIo<S> {
    inner: S,
    window: Option<Window>,
    written: u64,
    state: Arc<ConnState>,
}

impl<S> PacedIo<S> {
    pub fn new(inner: S, window: Option<Duration>, state: Arc<ConnState>) -> PacedIo<S> {
        PacedIo {
            inner,
            window: window.map(Window::new),
            written: 0,
            state,
        }
    }

    /// The write is waiting on the client: fails once a window passed with
    /// too little taken.
    fn waiting(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(w) = self.window.as_mut() else {
            return Ok(());
        };
        w.poll_wait(cx, self.written).map_err(|()| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took too little of the response (http.writeTimeout)",
            )
        })
    }

    /// What a write's poll means for the write window: bytes written move
    /// it; a write that cannot go on starts (or checks) the stall clock.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                self.wrote(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => match self.waiting(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }

    fn wrote(&mut self, n: usize) {
        self.written += n as u64;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PacedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PacedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                // Caught up: the client is taking what is sent.
                if let Some(w) = this.window.as_mut() {
                    w.close();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.waiting(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => match this.waiting(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }
}

/// Whether an accept error means the process is out of descriptors or
/// memory (back off and make room) rather than one failed handshake.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header: Duration) -> Limits {
        Limits {
            header,
            body: None,
            write: None,
            max_connections: 2,
        }
    }

    #[tokio::test]
    async fn a_full_table_evicts_the_longest_idle_connection() {
        let table = Table::new(2);
        let a = table.admit();
        tokio::time::sleep(EVICT_MIN_IDLE + Duration::from_millis(100)).await;
        let b = table.admit();
        let busy = b.state.enter();
        let waiting = tokio::time::timeout(Duration::from_millis(200), table.wait_for_room()).await;
        assert!(waiting.is_err(), "the cap holds until a connection closes");
        assert!(a.state.evicted.load(Ordering::Acquire));
        assert!(!b.state.evicted.load(Ordering::Acquire));
        let l = limits(Duration::from_secs(30));
        assert_eq!(watchdog(&a.state, &l).await, Close::Evicted);
        drop(a);
        table.wait_for_room().await;
        drop(busy);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
        let table = Table::new(8);
        let slot = table.admit();
        let l = limits(Duration::from_millis(20));
        assert_eq!(watchdog(&slot.state, &l).await, Close::Idle);
        let other = table.admit();
        let _busy = other.state.enter();
        let waited =
            tokio::time::timeout(Duration::from_millis(200), watchdog(&other.state, &l)).await;
        assert!(
            waited.is_err(),
            "a connection with a request in flight stays"
        );
    }
}
