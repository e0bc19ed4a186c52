//! Berth's object store: keys to bytes, nothing about OCI.
//!
//! Layout:
//! - [`Backend`]: the trait every store implements (about ten path-level
//!   methods). Keys are `/`-separated relative paths made only by the core
//!   crate from validated names; a backend still refuses anything with an
//!   empty component or one starting with `.` (so no `..`, and room for a
//!   backend's own hidden files).
//! - [`fs::FsBackend`]: a directory on a local filesystem; atomic renames,
//!   fsync of data and directories when asked to be durable.
//! - [`mem::MemBackend`]: an in-memory store for tests.
//! - `suite`: the behaviour every backend must show, run against each, and
//!   `pause`: a wrapper that stops chosen operations so tests can drive
//!   interleavings. Both only with the `testing` feature (never in the
//!   server).
//!
//! Two kinds of objects exist. Plain objects are written whole with
//! [`Backend::put`] (small: tags, links, manifests). Large content is staged:
//! appended to an upload by id with [`Backend::stage_writer`] and moved into
//! its final key with [`Backend::stage_commit`], which is atomic: a reader
//! sees the whole object or nothing.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod blocks;
pub mod cluster;
pub mod fs;
#[cfg(any(test, feature = "testing"))]
pub mod garage_harness;
pub mod lane;
pub mod mem;
#[cfg(feature = "testing")]
pub mod pause;
#[cfg(any(test, feature = "testing"))]
pub mod pg_harness;
#[cfg(any(test, feature = "testing"))]
pub mod suite;

use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::time::SystemTime;

/// A stream of object bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// What can go wrong in a backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found")]
    NotFound,
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    #[error("staged upload is {actual} bytes, not {expected}")]
    Offset { expected: u64, actual: u64 },
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Whether a write must survive power loss before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the data and the directory entry before returning.
    Durable,
    /// Atomic, and safe against a process crash, but the OS may still hold
    /// it in memory: for bookkeeping a client never relies on (upload
    /// records), never for anything acknowledged.
    Lazy,
}

/// An entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub name: String,
    /// Whether deeper keys exist under `prefix/name/`.
    pub is_dir: bool,
}

/// Appends to a staged upload. Dropping it without `finish` leaves what was
/// already written in place (the upload can be resumed).
#[async_trait::async_trait]
pub trait StageWriter: Send {
    /// Queues bytes to be written. May wait when the writer is behind.
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Waits until everything queued is written; returns the staged size.
    async fn finish(self: Box<Self>) -> Result<u64>;
    /// The file offset of the next byte, when this writer writes whole
    /// block-aligned batches (see [`blocks`]) as they are, without copying
    /// them; `None` when it copies or gathers whatever it is given.
    fn block_offset(&self) -> Option<u64> {
        None
    }
}

/// A store of objects by key.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Size of an object, `None` if absent.
    async fn stat(&self, key: &str) -> Result<Option<u64>>;
    /// When an object was last written, `None` if absent.
    async fn modified(&self, key: &str) -> Result<Option<SystemTime>>;
    /// A whole (small) object, `None` if absent.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    /// Several whole (small) objects, in the order asked: one round trip
    /// on the shared store, where small objects are also read in one
    /// snapshot. This default reads them one after the other.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }
    /// Bytes `start..end` of an object (`end` = its size when `None`).
    async fn read(&self, key: &str, start: u64, end: Option<u64>) -> Result<ByteStream>;
    /// Creates or replaces an object atomically.
    async fn put(&self, key: &str, data: Bytes, durability: Durability) -> Result<()>;
    /// Creates an object if absent, atomically and durably; returns whether
    /// it was created.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool>;
    /// Removes an object; returns whether it existed.
    async fn delete(&self, key: &str, durability: Durability) -> Result<bool>;
    /// Moves an object to another key (replacing what is there), atomically.
    async fn rename(&self, from: &str, to: &str, durability: Durability) -> Result<()>;
    /// Removes every object under a prefix.
    async fn delete_prefix(&self, prefix: &str) -> Result<()>;
    /// The entries directly under a prefix (`""` for the root), sorted by name.
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>>;

    /// At most `limit` entries of [`Backend::list`] whose names sort after
    /// `after` (a page; the shared store answers it with one indexed query
    /// instead of reading the whole directory).
    async fn list_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let all = self.list(prefix).await?;
        let start = after.map_or(0, |a| all.partition_point(|e| e.name.as_str() <= a));
        Ok(all.into_iter().skip(start).take(limit).collect())
    }

    /// The directories at any depth below `prefix` that hold a directory
    /// named one of `children`, as paths relative to `prefix`, in byte order (or
    /// reversed), strictly beyond `from`, at most `limit`: a page of a
    /// keyset walk. The shared store answers it with one indexed query;
    /// this default walks the tree, for stores that keep their own index.
    async fn dirs_holding(
        &self,
        prefix: &str,
        children: &[&str],
        from: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> Result<Vec<String>> {
        check_key(prefix, true)?;
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let dir = match (prefix.is_empty(), rel.is_empty()) {
                (_, true) => prefix.to_owned(),
                (true, false) => rel.clone(),
                (false, false) => format!("{prefix}/{rel}"),
            };
            for e in self.list(&dir).await?.into_iter().filter(|e| e.is_dir) {
                if children.contains(&e.name.as_str()) && !rel.is_empty() {
                    found.push(rel.clone());
                }
                pending.push(if rel.is_empty() {
                    e.name
                } else {
                    format!("{rel}/{}", e.name)
                });
            }
        }
        found.sort();
        found.dedup();
        if descending {
            found.reverse();
        }
        let beyond = |d: &String| match from {
            None => true,
            Some(f) if descending => d.as_str() < f,
            Some(f) => d.as_str() > f,
        };
        Ok(found.into_iter().filter(beyond).take(limit).collect())
    }

    /// Opens a staged upload for appending at `offset`, which must equal
    /// its current size: 0 creates it, or takes one that holds nothing. A
    /// stage with bytes is never replaced (another process sharing the
    /// store may be writing it): [`StorageError::Offset`].
    async fn stage_writer(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>>;
    /// Like [`Backend::stage_writer`], for bytes that may well be dropped
    /// unread (an upload that looks like content the store holds): a
    /// backend that can keeps them where dropping costs nothing rather than
    /// writing them through. A commit is as durable either way.
    async fn stage_writer_cached(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>>;
    /// Stages the object at `key` as upload `id`, sharing its bytes where
    /// the store can (a hard link): a pin on content that a collector may
    /// remove meanwhile, put back with [`Backend::stage_commit`] if it was.
    /// Such a stage is never appended to. Returns false if `key` is absent.
    async fn stage_from(&self, id: &str, key: &str) -> Result<bool>;
    /// Size of a staged upload, `None` if absent.
    async fn stage_size(&self, id: &str) -> Result<Option<u64>>;
    /// Reads a staged upload from `start` to its current end (to rebuild a
    /// hash after restart, or to serve a blob still arriving).
    async fn stage_read(&self, id: &str, start: u64) -> Result<ByteStream>;
    /// Moves a staged upload into `key`, atomically and durably, if it
    /// holds `size` bytes: the size that was verified. One that holds
    /// another (appended to or cut meanwhile by another process sharing
    /// the store) stays staged, and the answer is [`StorageError::Offset`].
    async fn stage_commit(&self, id: &str, key: &str, size: u64) -> Result<()>;
    /// Cuts a staged upload back to `size` bytes (no longer than it is):
    /// how a refused chunk is undone. With `from`, only if it holds `from`
    /// bytes (where the refused chunk ended): one that holds another size
    /// (appended to by another process sharing the store) is left as it
    /// is, and the answer is [`StorageError::Offset`].
    async fn stage_truncate(&self, id: &str, size: u64, from: Option<u64>) -> Result<()>;
    /// Removes a staged upload, if present.
    async fn stage_delete(&self, id: &str) -> Result<()>;
    /// Staged uploads with their last modification time.
    async fn stage_list(&self) -> Result<Vec<(String, SystemTime)>>;

    /// Waits for the turn named `name` among everything that shares this
    /// store (this process alone on a filesystem, every replica on the
    /// shared store); the turn lasts until the guard is dropped. Unrelated
    /// names may share a turn (they are hashed), never the reverse.
    async fn exclusive(&self, name: &str) -> Result<Turn>;

    /// Removes what the store's own protocol left behind and nothing can
    /// reach any more, once older than `older_than` (on the shared store:
    /// objects a replica wrote and died before recording). Reports what it
    /// removed, or with `dry_run` would remove. Stores with nothing of the
    /// kind remove nothing.
    async fn sweep(&self, _older_than: std::time::Duration, _dry_run: bool) -> Result<Swept> {
        Ok(Swept::default())
    }
}

/// What [`Backend::sweep`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub objects: usize,
    pub bytes: u64,
}

/// A turn taken with [`Backend::exclusive`], given back when dropped.
pub struct Turn(#[allow(dead_code)] Box<dyn Send + Sync>);

impl Turn {
    pub fn new(held: impl Send + Sync + 'static) -> Turn {
        Turn(Box::new(held))
    }
}

/// Turns within one process: 64 striped locks.
pub struct LocalTurns {
    stripes: Vec<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

impl Default for LocalTurns {
    fn default() -> LocalTurns {
        LocalTurns {
            stripes: (0..64).map(|_| Default::default()).collect(),
        }
    }
}

impl std::fmt::Debug for LocalTurns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalTurns")
    }
}

impl LocalTurns {
    pub async fn take(&self, name: &str) -> Turn {
        let stripe = (turn_hash(name) % self.stripes.len() as u64) as usize;
        Turn::new(self.stripes[stripe].clone().lock_owned().await)
    }
}

/// A stable 64-bit hash of a turn's name (FNV-1a): the same in every
/// process, so replicas agree on it.
pub fn turn_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checks a key (or prefix, which may be empty) before it touches a store.
pub fn check_key(key: &str, allow_empty: bool) -> Result<()> {
    if key.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(StorageError::InvalidKey(key.into()))
        };
    }
    let bad = key
        .split('/')
        .any(|c| c.is_empty() || c.starts_with('.') || c.contains(['\\', '\0']));
    if bad {
        Err(StorageError::InvalidKey(key.into()))
    } else {
        Ok(())
    }
}

/// Checks a staged upload id.
pub fn check_id(id: &str) -> Result<()> {
    if !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(id.into()))
    }
}
