//! The filesystem's stage writer: how upload bytes reach the disk.
//!
//! Small uploads are gathered in memory and written in one blocking call at
//! `finish`. Past [`INLINE_WRITE`] bytes an upload is written in one of two
//! ways, each a series of short blocking calls while receiving goes on (so
//! a slow client holds no thread between its chunks):
//!
//! - **Through** (the default for content that will most likely be kept):
//!   copied into page-aligned buffers and written with `O_DIRECT`, which
//!   bypasses the page cache. On these machines a page-cache write costs
//!   about 1-3 s of kernel CPU per GiB and its later flush must still wait
//!   for the disk; a direct write costs about 0.06 s and is on the device
//!   when it returns. Writes go through a [`Lane`]: up to
//!   [`DIRECT_DEPTH`] wait or run in order on a blocking call while more
//!   bytes arrive, so the disk never waits for the receiving task. Bytes
//!   that come as whole block-aligned batches (see [`crate::blocks`]) are
//!   written as they are; anything else is first copied into page-aligned
//!   buffers ([`BlockBuf`]). A part block at the end is written through
//!   the page cache, and the commit's fsync covers it (and the device
//!   cache). An append at an offset inside a block first reads that block's
//!   head back, so every direct write starts on a block boundary. Where
//!   the filesystem refuses `O_DIRECT` (tmpfs), the writer falls back to
//!   page-cache writes.
//! - **Cached** (for bytes that may be dropped unread: an upload that looks
//!   like content the store already holds): page-cache writes, no flush. If
//!   the upload is deleted before the kernel writes it back, the disk never
//!   sees it.

use crate::blocks::{is_whole_blocks, BlockBuf, BLOCK};
use crate::lane::Lane;
use crate::{Result, StageWriter, StorageError};
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tokio::task::{spawn_blocking, JoinHandle};

/// Request-body bytes a cached writer may gather while a batch is written.
const MAX_PENDING: usize = 2 * 1024 * 1024;
/// Bytes a stage writer gathers before it writes a batch.
pub(super) const INLINE_WRITE: usize = 256 * 1024;
/// What `O_DIRECT` needs aligned: buffer addresses, lengths and offsets.
const ALIGN: usize = BLOCK;
/// Direct writes queued or running at most, per upload.
const DIRECT_DEPTH: usize = 3;

/// How a stage writer places its bytes (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    Through,
    Cached,
}

/// Opens a staged upload for appending at `offset` (0 creates it afresh).
fn open_stage(path: &Path, offset: u64) -> io::Result<File> {
    if offset == 0 {
        return OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path);
    }
    let f = OpenOptions::new().append(true).open(path)?;
    let actual = f.metadata()?.len();
    if actual != offset {
        return Err(io::Error::other(format!(
            "staged upload is {actual} bytes, not {offset}"
        )));
    }
    Ok(f)
}

fn write_chunks(f: &mut File, chunks: &[Bytes]) -> io::Result<u64> {
    let mut n = 0;
    for c in chunks {
        f.write_all(c)?;
        n += c.len() as u64;
    }
    Ok(n)
}

/// What the write lane holds: the file, and the first failure (later
/// writes are skipped).
struct DirectFile {
    file: File,
    failed: Option<io::Error>,
}

/// Writes whole blocks at their (block-aligned) file offset.
fn write_blocks(f: &mut DirectFile, (bytes, at): (Bytes, u64)) {
    if f.failed.is_none() {
        if let Err(e) = f.file.write_all_at(&bytes, at) {
            f.failed = Some(e);
        }
    }
}

/// A direct writer's state: `buf` holds the bytes from file offset `base`
/// (a block boundary) on; earlier bytes are on disk or in the lane.
struct Direct {
    lane: Lane<DirectFile, (Bytes, u64)>,
    base: u64,
    buf: BlockBuf,
}

impl Direct {
    /// Hands the copy buffer to the lane (if it holds anything).
    async fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let full = std::mem::take(&mut self.buf);
        let at = self.base;
        self.base += full.len() as u64;
        self.lane.push((full.into_bytes(), at)).await;
    }

    /// Queues bytes: a block-aligned batch that lands on a block boundary
    /// as it is, anything else through the copy buffer.
    async fn push(&mut self, data: Bytes) {
        if is_whole_blocks(&data)
            && (self.base + self.buf.len() as u64).is_multiple_of(ALIGN as u64)
        {
            self.flush().await;
            let at = self.base;
            self.base += data.len() as u64;
            self.lane.push((data, at)).await;
            return;
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = self.buf.push(rest);
            rest = &rest[n..];
            if self.buf.is_full() {
                self.flush().await;
            }
        }
    }
}

/// Opens `path` for direct writes at `offset` and returns a buffer filled
/// with the head of `offset`'s block; `None` where `O_DIRECT` is refused.
fn open_direct(path: &Path, offset: u64) -> io::Result<Option<Direct>> {
    let mut opts = OpenOptions::new();
    opts.write(true).custom_flags(libc::O_DIRECT);
    if offset == 0 {
        opts.create(true).truncate(true);
    }
    let file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e),
    };
    let actual = file.metadata()?.len();
    if actual != offset {
        return Err(io::Error::other(format!(
            "staged upload is {actual} bytes, not {offset}"
        )));
    }
    let head = (offset % ALIGN as u64) as usize;
    let base = offset - head as u64;
    let mut buf = BlockBuf::new();
    if head > 0 {
        let mut block = vec![0u8; head];
        File::open(path)?.read_exact_at(&mut block, base)?;
        buf.push(&block);
    }
    let lane = Lane::new(
        DirectFile { file, failed: None },
        DIRECT_DEPTH,
        write_blocks,
    );
    Ok(Some(Direct { lane, base, buf }))
}

/// Writes what a direct writer holds at the end: whole blocks directly,
/// the part block after them through the page cache.
fn write_last(path: &Path, file: &File, buf: &BlockBuf, base: u64) -> io::Result<u64> {
    let bytes = buf.filled();
    let whole = bytes.len() - bytes.len() % ALIGN;
    if whole > 0 {
        file.write_all_at(&bytes[..whole], base)?;
    }
    if whole < bytes.len() {
        let f = OpenOptions::new().write(true).open(path)?;
        f.write_all_at(&bytes[whole..], base + whole as u64)?;
    }
    Ok(base + bytes.len() as u64)
}

/// What a finished page-cache write hands back.
type Landed = (Option<File>, io::Result<u64>);

/// Appends to a staged file (see the module's documentation).
pub(super) struct FsStageWriter {
    path: PathBuf,
    placement: Placement,
    /// Bytes on disk once the batch being written lands (cached writes).
    offset: u64,
    /// Open once a first cached batch was written.
    file: Option<File>,
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Writing directly, once past [`INLINE_WRITE`].
    direct: Option<Direct>,
    running: Option<JoinHandle<Landed>>,
    /// A write failed: later data is dropped and `finish` reports it.
    failed: Option<io::Error>,
}

impl FsStageWriter {
    pub(super) fn new(path: PathBuf, offset: u64, placement: Placement) -> FsStageWriter {
        FsStageWriter {
            path,
            placement,
            offset,
            file: None,
            pending: Vec::new(),
            pending_len: 0,
            direct: None,
            running: None,
            failed: None,
        }
    }

    /// Waits for the write in flight, if any.
    async fn join(&mut self) {
        let Some(task) = self.running.take() else {
            return;
        };
        match task.await {
            Ok((file, Ok(n))) => {
                self.file = file;
                self.offset += n;
            }
            Ok((_, Err(e))) => self.failed = Some(e),
            Err(e) => self.failed = Some(io::Error::other(e)),
        }
    }

    /// Starts writing what was gathered (opening the file the first time).
    fn start_cached(&mut self) {
        let batch = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let (path, offset, file) = (self.path.clone(), self.offset, self.file.take());
        self.running = Some(spawn_blocking(move || {
            let mut f = match file {
                Some(f) => f,
                None => match open_stage(&path, offset) {
                    Ok(f) => f,
                    Err(e) => return (None, Err(e)),
                },
            };
            let written = write_chunks(&mut f, &batch);
            (Some(f), written)
        }));
    }

    /// Switches to direct writes, before any batch was written; false
    /// where the filesystem refuses them.
    async fn enter_direct(&mut self) -> bool {
        let (path, offset) = (self.path.clone(), self.offset);
        let opened = spawn_blocking(move || open_direct(&path, offset)).await;
        match opened {
            Ok(Ok(Some(d))) => {
                self.pending_len = 0;
                let pending = std::mem::take(&mut self.pending);
                let d = self.direct.insert(d);
                for chunk in pending {
                    d.push(chunk).await;
                }
                true
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                self.failed = Some(e);
                true
            }
            Err(e) => {
                self.failed = Some(io::Error::other(e));
                true
            }
        }
    }
}

#[async_trait::async_trait]
impl StageWriter for FsStageWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        if let Some(d) = self.direct.as_mut() {
            d.push(data).await;
            return Ok(());
        }
        self.pending_len += data.len();
        self.pending.push(data);
        if self.pending_len < INLINE_WRITE {
            return Ok(());
        }
        if self.placement == Placement::Through && self.file.is_none() && self.running.is_none() {
            if self.enter_direct().await {
                return Ok(());
            }
            // Refused here: write through the page cache from now on.
            self.placement = Placement::Cached;
        }
        if let Some(task) = &self.running {
            if !task.is_finished() && self.pending_len < MAX_PENDING {
                return Ok(()); // keep receiving while the last batch lands
            }
            self.join().await;
            if self.failed.is_some() {
                self.pending.clear();
                self.pending_len = 0;
                return Ok(());
            }
        }
        self.start_cached();
        Ok(())
    }

    fn block_offset(&self) -> Option<u64> {
        if self.placement != Placement::Through {
            return None;
        }
        Some(match &self.direct {
            Some(d) => d.base + d.buf.len() as u64,
            None => self.offset + self.pending_len as u64,
        })
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let mut me = *self;
        me.join().await;
        if let Some(d) = me.direct.take() {
            if let Some(e) = me.failed {
                return Err(StorageError::Io(e));
            }
            let Direct { lane, base, buf } = d;
            let file = match lane.finish().await {
                Some(DirectFile { file, failed: None }) => file,
                Some(DirectFile {
                    failed: Some(e), ..
                }) => return Err(StorageError::Io(e)),
                None => return Err(io::Error::other("a direct write panicked").into()),
            };
            let path = me.path.clone();
            return match spawn_blocking(move || write_last(&path, &file, &buf, base)).await {
                Ok(Ok(size)) => Ok(size),
                Ok(Err(e)) => Err(StorageError::Io(e)),
                Err(e) => Err(StorageError::Io(io::Error::other(e))),
            };
        }
        if me.failed.is_none() && (me.file.is_none() || !me.pending.is_empty()) {
            me.start_cached();
            me.join().await;
        }
        match me.failed {
            Some(e) => Err(StorageError::Io(e)),
            None => Ok(me.offset),
        }
    }
}
