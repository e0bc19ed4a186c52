//! A backend wrapper for tests that stops a chosen operation until the test
//! releases it, so that interleavings of concurrent work (a push against a
//! garbage collection pass, say) are driven by construction, not by chance.
//!
//! Work is told apart by an actor name set with [`Pausing::act`] (a tokio
//! task-local): a breakpoint armed for the actor `"gc"` never stops a
//! writer that happens to touch the same key. The wrapper can also age
//! objects: everything written before [`Pausing::age_everything`] reports an
//! ancient modification time, so grace delays can be tested without waiting.
//! Compiled only with the `testing` feature.

use crate::{Backend, ByteStream, Durability, Entry, Result, StageWriter};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

tokio::task_local! {
    static ACTOR: &'static str;
}

/// The actor of a breakpoint that stops whoever reaches it first.
pub const ANY: &str = "*";

/// The operations a breakpoint can stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Stat,
    Modified,
    Get,
    Put,
    PutIfAbsent,
    Delete,
    Rename,
    DeletePrefix,
    List,
    StageCommit,
}

/// Whether the operation stops before it runs or after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Before,
    After,
}

type Matcher = Box<dyn Fn(&str) -> bool + Send + Sync>;

struct Point {
    actor: &'static str,
    op: Op,
    when: When,
    /// Tested against the key (for a rename, its source).
    key: Matcher,
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// A stopped operation, seen from the test.
pub struct Breakpoint {
    reached: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

impl Breakpoint {
    /// Waits (at most 20 s) until the operation has stopped; panics if it
    /// never does, since the interleaving under test did not happen.
    pub async fn reached(&mut self) {
        tokio::time::timeout(Duration::from_secs(20), &mut self.reached)
            .await
            .expect("breakpoint never reached")
            .expect("breakpoint dropped");
    }

    /// Lets the stopped operation go on.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

/// The wrapper.
pub struct Pausing {
    inner: Arc<dyn Backend>,
    points: Mutex<Vec<Point>>,
    aged_before: Mutex<Option<SystemTime>>,
    /// One-shot failures (see [`Pausing::fail_next`]).
    failing: Mutex<Vec<(Op, Matcher)>>,
}

impl Pausing {
    pub fn new(inner: Arc<dyn Backend>) -> Pausing {
        Pausing {
            inner,
            points: Mutex::new(Vec::new()),
            aged_before: Mutex::new(None),
            failing: Mutex::new(Vec::new()),
        }
    }

    /// Makes the next `op` on a key that `key` accepts fail with an I/O
    /// error (a store that fails once), whoever runs it.
    pub fn fail_next(&self, op: Op, key: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((op, Box::new(key)));
    }

    fn fails(&self, op: Op, key: &str) -> bool {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match failing.iter().position(|(o, k)| *o == op && k(key)) {
            Some(i) => {
                drop(failing.remove(i));
                true
            }
            None => false,
        }
    }

    /// Runs `fut` as `actor`, the name breakpoints match.
    pub async fn act<F: std::future::Future>(actor: &'static str, fut: F) -> F::Output {
        ACTOR.scope(actor, fut).await
    }

    /// Arms a one-shot breakpoint: the first `op` by `actor` (or by anyone,
    /// for [`ANY`]: work spawned onto a task of its own has no actor) on a
    /// key that `key` accepts stops (`when`) until the breakpoint is
    /// released.
    pub fn pause(
        &self,
        actor: &'static str,
        op: Op,
        when: When,
        key: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Breakpoint {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        self.points
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Point {
                actor,
                op,
                when,
                key: Box::new(key),
                reached: reached_tx,
                release: release_rx,
            });
        Breakpoint {
            reached: reached_rx,
            release: release_tx,
        }
    }

    /// From now on, everything already written looks written long ago.
    pub fn age_everything(&self) {
        *self.aged_before.lock().unwrap_or_else(|p| p.into_inner()) = Some(SystemTime::now());
    }

    async fn check(&self, op: Op, when: When, key: &str) {
        let actor = ACTOR.try_with(|a| *a).ok();
        let point = {
            let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
            let at = points.iter().position(|p| {
                (p.actor == ANY || Some(p.actor) == actor)
                    && p.op == op
                    && p.when == when
                    && (p.key)(key)
            });
            at.map(|i| points.remove(i))
        };
        if let Some(p) = point {
            let _ = p.reached.send(());
            let _ = p.release.await;
        }
    }
}

/// Runs one inner call between the two checks.
macro_rules! around {
    ($self:ident, $op:expr, $key:expr, $call:expr) => {{
        $self.check($op, When::Before, $key).await;
        if $self.fails($op, $key) {
            return Err(crate::StorageError::Io(std::io::Error::other(
                "failure injected by the test",
            )));
        }
        let out = $call;
        $self.check($op, When::After, $key).await;
        out
    }};
}

#[async_trait::async_trait]
impl Backend for Pausing {
    async fn stat(&self, key: &str) -> Result<Option<u64>> {
        around!(self, Op::Stat, key, self.inner.stat(key).await)
    }

    async fn modified(&self, key: &str) -> Result<Option<SystemTime>> {
        let t = around!(self, Op::Modified, key, self.inner.modified(key).await)?;
        let aged = *self.aged_before.lock().unwrap_or_else(|p| p.into_inner());
        Ok(t.map(|t| match aged {
            Some(cut) if t <= cut => SystemTime::UNIX_EPOCH,
            _ => t,
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        around!(self, Op::Get, key, self.inner.get(key).await)
    }

    async fn read(&self, key: &str, start: u64, end: Option<u64>) -> Result<ByteStream> {
        self.inner.read(key, start, end).await
    }

    async fn put(&self, key: &str, data: Bytes, durability: Durability) -> Result<()> {
        around!(
            self,
            Op::Put,
            key,
            self.inner.put(key, data, durability).await
        )
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        around!(
            self,
            Op::PutIfAbsent,
            key,
            self.inner.put_if_absent(key, data).await
        )
    }

    async fn delete(&self, key: &str, durability: Durability) -> Result<bool> {
        around!(
            self,
            Op::Delete,
            key,
            self.inner.delete(key, durability).await
        )
    }

    async fn rename(&self, from: &str, to: &str, durability: Durability) -> Result<()> {
        around!(
            self,
            Op::Rename,
            from,
            self.inner.rename(from, to, durability).await
        )
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        around!(
            self,
            Op::DeletePrefix,
            prefix,
            self.inner.delete_prefix(prefix).await
        )
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        around!(self, Op::List, prefix, self.inner.list(prefix).await)
    }

    async fn stage_writer(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>> {
        self.inner.stage_writer(id, offset).await
    }

    async fn stage_writer_cached(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>> {
        self.inner.stage_writer_cached(id, offset).await
    }

    async fn stage_from(&self, id: &str, key: &str) -> Result<bool> {
        self.inner.stage_from(id, key).await
    }

    async fn stage_size(&self, id: &str) -> Result<Option<u64>> {
        self.inner.stage_size(id).await
    }

    async fn stage_read(&self, id: &str, start: u64) -> Result<ByteStream> {
        self.inner.stage_read(id, start).await
    }

    async fn stage_commit(&self, id: &str, key: &str, size: u64) -> Result<()> {
        around!(
            self,
            Op::StageCommit,
            key,
            self.inner.stage_commit(id, key, size).await
        )
    }

    async fn stage_truncate(&self, id: &str, size: u64, from: Option<u64>) -> Result<()> {
        self.inner.stage_truncate(id, size, from).await
    }

    async fn stage_delete(&self, id: &str) -> Result<()> {
        self.inner.stage_delete(id).await
    }

    async fn stage_list(&self) -> Result<Vec<(String, SystemTime)>> {
        self.inner.stage_list().await
    }

    async fn list_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        self.inner.list_after(prefix, after, limit).await
    }

    async fn exclusive(&self, name: &str) -> Result<crate::Turn> {
        self.inner.exclusive(name).await
    }

    async fn sweep(&self, older_than: Duration, dry_run: bool) -> Result<crate::Swept> {
        self.inner.sweep(older_than, dry_run).await
    }
}
