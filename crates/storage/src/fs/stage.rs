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
//!   when it returns. Two buffers of [`DIRECT_BUF`] alternate: one fills
//!   while the other is written. A part block at the end is written through
//!   the page cache, and the commit's fsync covers it (and the device
//!   cache). An append at an offset inside a block first reads that block's
//!   head back, so every direct write starts on a block boundary. Where
//!   the filesystem refuses `O_DIRECT` (tmpfs), the writer falls back to
//!   page-cache writes.
//! - **Cached** (for bytes that may be dropped unread: an upload that looks
//!   like content the store already holds): page-cache writes, no flush. If
//!   the upload is deleted before the kernel writes it back, the disk never
//!   sees it.

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
const ALIGN: usize = 4096;
/// Size of each of a direct writer's two buffers.
const DIRECT_BUF: usize = 1024 * 1024;

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

/// A page-aligned buffer of [`DIRECT_BUF`] bytes (safe code: a larger
/// vector, used from its first aligned byte).
struct Aligned {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new() -> Aligned {
        let mem = vec![0u8; DIRECT_BUF + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        Aligned { mem, start, len: 0 }
    }

    fn filled(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    /// Copies as much of `data` as fits; returns how much.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(DIRECT_BUF - self.len);
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == DIRECT_BUF
    }
}

/// A direct writer's state: `buf` holds the bytes from file offset `base`
/// (a block boundary) on; earlier bytes are on disk.
struct Direct {
    file: std::sync::Arc<File>,
    base: u64,
    buf: Aligned,
    spare: Option<Aligned>,
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
    let mut buf = Aligned::new();
    if head > 0 {
        let mut block = vec![0u8; head];
        File::open(path)?.read_exact_at(&mut block, base)?;
        buf.push(&block);
    }
    Ok(Some(Direct {
        file: std::sync::Arc::new(file),
        base,
        buf,
        spare: None,
    }))
}

/// Writes a full buffer at `base`; gives the buffer back emptied.
fn write_direct(file: &File, mut buf: Aligned, base: u64) -> (Aligned, io::Result<u64>) {
    let r = file
        .write_all_at(buf.filled(), base)
        .map(|_| buf.len as u64);
    buf.len = 0;
    (buf, r)
}

/// Writes what a direct writer holds at the end: whole blocks directly,
/// the part block after them through the page cache.
fn write_last(path: &Path, d: &Direct) -> io::Result<u64> {
    let bytes = d.buf.filled();
    let whole = bytes.len() - bytes.len() % ALIGN;
    if whole > 0 {
        d.file.write_all_at(&bytes[..whole], d.base)?;
    }
    if whole < bytes.len() {
        let f = OpenOptions::new().write(true).open(path)?;
        f.write_all_at(&bytes[whole..], d.base + whole as u64)?;
    }
    Ok(d.base + bytes.len() as u64)
}

/// What a finished blocking write hands back.
enum Landed {
    Cached(Option<File>, io::Result<u64>),
    Direct(Aligned, io::Result<u64>),
}

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
            Ok(Landed::Cached(file, Ok(n))) => {
                self.file = file;
                self.offset += n;
            }
            Ok(Landed::Direct(buf, Ok(n))) => {
                if let Some(d) = self.direct.as_mut() {
                    d.spare = Some(buf);
                    d.base += n;
                }
            }
            Ok(Landed::Cached(_, Err(e)) | Landed::Direct(_, Err(e))) => self.failed = Some(e),
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
                    Err(e) => return Landed::Cached(None, Err(e)),
                },
            };
            let written = write_chunks(&mut f, &batch);
            Landed::Cached(Some(f), written)
        }));
    }

    /// Switches to direct writes, before any batch was written; false
    /// where the filesystem refuses them.
    async fn enter_direct(&mut self) -> bool {
        let (path, offset) = (self.path.clone(), self.offset);
        let opened = spawn_blocking(move || open_direct(&path, offset)).await;
        match opened {
            Ok(Ok(Some(d))) => {
                self.direct = Some(d);
                for chunk in std::mem::take(&mut self.pending) {
                    self.push_direct(&chunk).await;
                }
                self.pending_len = 0;
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

    /// Copies bytes into the direct buffer, handing each full buffer to a
    /// blocking write (waiting for the previous one first).
    async fn push_direct(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.failed.is_none() {
            let Some(d) = self.direct.as_mut() else {
                return;
            };
            let n = d.buf.push(data);
            data = &data[n..];
            if !d.buf.is_full() {
                continue;
            }
            self.join().await;
            if self.failed.is_some() {
                return;
            }
            let Some(d) = self.direct.as_mut() else {
                return;
            };
            let next = d.spare.take().unwrap_or_else(Aligned::new);
            let full = std::mem::replace(&mut d.buf, next);
            let (file, base) = (d.file.clone(), d.base);
            self.running = Some(spawn_blocking(move || {
                let (buf, r) = write_direct(&file, full, base);
                Landed::Direct(buf, r)
            }));
        }
    }
}

#[async_trait::async_trait]
impl StageWriter for FsStageWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.failed.is_some() {
            return Ok(());
        }
        if self.direct.is_some() {
            self.push_direct(&data).await;
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

    async fn finish(self: Box<Self>) -> Result<u64> {
        let mut me = *self;
        me.join().await;
        if let Some(d) = me.direct.take() {
            if let Some(e) = me.failed {
                return Err(StorageError::Io(e));
            }
            let path = me.path.clone();
            return match spawn_blocking(move || write_last(&path, &d)).await {
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
