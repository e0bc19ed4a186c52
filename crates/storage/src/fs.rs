//! A store in a directory of a local filesystem.
//!
//! Objects are files at their key below the root. Every visible file got
//! there by a rename (or a hard link, for create-once) of a fully written
//! temporary file in the same directory, so a crash leaves the old object or
//! the new one, never part of one. Temporary and staged files live under
//! names starting with `.`, which no key can have.

use crate::{
    check_id, check_key, Backend, ByteStream, Durability, Entry, Result, StageWriter, StorageError,
};
use bytes::Bytes;
use stage::{FsStageWriter, Placement};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::task::{spawn_blocking, JoinHandle};

mod stage;

/// Objects up to this size are read in one go; larger ones are streamed.
const SMALL_READ: u64 = 256 * 1024;
/// Size of each chunk of a streamed read.
const READ_CHUNK: usize = 1024 * 1024;

/// A filesystem store.
#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
    /// fsync the data of staged uploads before they become visible
    /// (`storage.commit`). Small objects are always fsynced.
    sync_data: bool,
    /// Write large uploads with `O_DIRECT` where the filesystem takes it.
    direct: bool,
    /// One store, one process: turns are local locks.
    turns: std::sync::Arc<crate::LocalTurns>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    match spawn_blocking(f).await {
        Ok(r) => r.map_err(StorageError::Io),
        Err(e) => Err(StorageError::Io(io::Error::other(e))),
    }
}

fn not_found_to_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents. When `durable`, the parent of
/// each directory it created is fsynced, so that a new repository's or a
/// new digest prefix's directory survives power loss along with the object
/// put in it (an fsync of the object's own directory does not cover the
/// entry that names that directory).
fn make_dirs(dir: &Path, durable: bool) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut created = Vec::new();
    let mut d = dir;
    while !d.exists() {
        created.push(d);
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    fs::create_dir_all(dir)?;
    if durable {
        for c in created.iter().rev() {
            if let Some(p) = c.parent() {
                sync_dir(p)?;
            }
        }
    }
    Ok(())
}

fn temp_name(dir: &Path) -> PathBuf {
    dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()))
}

/// Writes `data` to a fresh temporary file next to `path` and returns it.
fn write_temp(path: &Path, data: &[u8], sync: bool) -> io::Result<PathBuf> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("key has no parent"))?;
    make_dirs(dir, sync)?;
    let tmp = temp_name(dir);
    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    let res = f
        .write_all(data)
        .and_then(|_| if sync { f.sync_all() } else { Ok(()) });
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

impl FsBackend {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>, sync_data: bool) -> Result<FsBackend> {
        let root = root.into();
        fs::create_dir_all(root.join(".uploads"))?;
        Ok(FsBackend {
            root,
            sync_data,
            direct: true,
            turns: Default::default(),
        })
    }

    /// Opens a tree that another program owns, to read it: nothing is
    /// created (an `open` makes `.uploads/`). The caller never writes
    /// through it (an image layout being imported, say).
    pub fn reader(root: impl Into<PathBuf>) -> FsBackend {
        FsBackend {
            root: root.into(),
            sync_data: false,
            direct: false,
            turns: Default::default(),
        }
    }

    /// Never writes with `O_DIRECT`: uploads go through the page cache,
    /// as they do where a filesystem refuses it.
    pub fn without_direct_writes(mut self) -> FsBackend {
        self.direct = false;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key, false)?;
        Ok(self.root.join(key))
    }

    fn stage_path(&self, id: &str) -> Result<PathBuf> {
        check_id(id)?;
        Ok(self.root.join(".uploads").join(id))
    }

    async fn open_stage(
        &self,
        id: &str,
        offset: u64,
        placement: Placement,
    ) -> Result<Box<dyn StageWriter>> {
        let path = self.stage_path(id)?;
        let actual = match tokio::fs::metadata(&path).await {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound && offset == 0 => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(actual) = actual {
            if actual != offset {
                return Err(StorageError::Offset {
                    expected: offset,
                    actual,
                });
            }
        }
        Ok(Box::new(FsStageWriter::new(path, offset, placement)))
    }
}

/// Streams a file region as a series of short blocking reads, one chunk
/// read ahead: a client that stops reading holds a chunk of memory and the
/// open file, never a blocking thread.
fn stream_file(file: File, start: u64, end: u64) -> ByteStream {
    Box::pin(FileChunks {
        file: Some(file),
        pos: start,
        end,
        next: None,
    })
}

/// The state of [`stream_file`]: the file travels into each blocking read
/// and back, so reads need no shared handle and no zeroed buffer.
struct FileChunks {
    file: Option<File>,
    pos: u64,
    end: u64,
    next: Option<JoinHandle<(File, io::Result<Bytes>)>>,
}

impl FileChunks {
    /// Starts reading the chunk at `pos`, if any is left.
    fn read_ahead(&mut self) {
        let Some(mut file) = self.file.take().filter(|_| self.pos < self.end) else {
            return;
        };
        let (pos, want) = (self.pos, (self.end - self.pos).min(READ_CHUNK as u64));
        self.next = Some(spawn_blocking(move || {
            let read = file.seek(SeekFrom::Start(pos)).and_then(|_| {
                // Read into spare capacity: no zeroing of each chunk first.
                let mut buf = Vec::with_capacity(want as usize);
                (&mut file).take(want).read_to_end(&mut buf)?;
                Ok(Bytes::from(buf))
            });
            (file, read)
        }));
    }
}

impl futures_util::Stream for FileChunks {
    type Item = io::Result<Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<io::Result<Bytes>>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if this.next.is_none() {
            this.read_ahead();
        }
        let Some(handle) = this.next.as_mut() else {
            return Poll::Ready(None);
        };
        let joined = futures_util::ready!(std::pin::Pin::new(handle).poll(cx));
        this.next = None;
        let (file, read) = match joined {
            Ok(r) => r,
            Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
        };
        match read {
            Ok(chunk) if chunk.is_empty() => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "object shrank",
            )))),
            Ok(chunk) => {
                this.pos += chunk.len() as u64;
                this.file = Some(file);
                this.read_ahead();
                Poll::Ready(Some(Ok(chunk)))
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

#[async_trait::async_trait]
impl Backend for FsBackend {
    async fn stat(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        let meta = not_found_to_none(tokio::fs::metadata(&path).await)?;
        Ok(meta.filter(|m| m.is_file()).map(|m| m.len()))
    }

    async fn modified(&self, key: &str) -> Result<Option<SystemTime>> {
        let path = self.path(key)?;
        let meta = not_found_to_none(tokio::fs::metadata(&path).await)?;
        Ok(meta
            .filter(|m| m.is_file())
            .map(|m| m.modified())
            .transpose()?)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        Ok(not_found_to_none(tokio::fs::read(&path).await)?.map(Bytes::from))
    }

    async fn read(&self, key: &str, start: u64, end: Option<u64>) -> Result<ByteStream> {
        let path = self.path(key)?;
        let (file, size) = blocking(move || {
            let f = File::open(&path)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(io) if io.kind() == io::ErrorKind::NotFound => StorageError::NotFound,
            e => e,
        })?;
        let end = end.unwrap_or(size).min(size);
        let start = start.min(end);
        if end - start <= SMALL_READ {
            let mut file = file;
            let data = blocking(move || {
                file.seek(SeekFrom::Start(start))?;
                let mut buf = vec![0; (end - start) as usize];
                file.read_exact(&mut buf)?;
                Ok(Bytes::from(buf))
            })
            .await?;
            return Ok(Box::pin(futures_util::stream::iter([Ok(data)])));
        }
        Ok(stream_file(file, start, end))
    }

    async fn put(&self, key: &str, data: Bytes, durability: Durability) -> Result<()> {
        let path = self.path(key)?;
        let durable = durability == Durability::Durable;
        blocking(move || {
            let tmp = write_temp(&path, &data, durable)?;
            if let Err(e) = fs::rename(&tmp, &path) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            if durable {
                sync_dir(parent(&path))?;
            }
            Ok(())
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let path = self.path(key)?;
        blocking(move || {
            if path.exists() {
                return Ok(false);
            }
            if data.is_empty() {
                // An empty object needs no temporary: creating the name is
                // atomic, and there is no content to be torn.
                make_dirs(parent(&path), true)?;
                return match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(_) => sync_dir(parent(&path)).map(|_| true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                };
            }
            let tmp = write_temp(&path, &data, true)?;
            // A hard link fails if the name exists: create-once without a race.
            let res = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match res {
                Ok(()) => sync_dir(parent(&path)).map(|_| true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn delete(&self, key: &str, durability: Durability) -> Result<bool> {
        let path = self.path(key)?;
        blocking(move || {
            let existed = not_found_to_none(fs::remove_file(&path))?.is_some();
            if existed && durability == Durability::Durable {
                sync_dir(parent(&path))?;
            }
            Ok(existed)
        })
        .await
    }

    async fn rename(&self, from: &str, to: &str, durability: Durability) -> Result<()> {
        let (src, dst) = (self.path(from)?, self.path(to)?);
        blocking(move || {
            make_dirs(parent(&dst), durability == Durability::Durable)?;
            fs::rename(&src, &dst)?;
            if durability == Durability::Durable {
                sync_dir(parent(&dst))?;
                sync_dir(parent(&src))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(io) if io.kind() == io::ErrorKind::NotFound => StorageError::NotFound,
            e => e,
        })
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let path = self.path(prefix)?;
        blocking(move || not_found_to_none(fs::remove_dir_all(&path)).map(|_| ())).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        check_key(prefix, true)?;
        let dir = self.root.join(prefix);
        blocking(move || {
            let Some(rd) = not_found_to_none(fs::read_dir(&dir))? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for ent in rd {
                let ent = ent?;
                let Ok(name) = ent.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                out.push(Entry {
                    name,
                    is_dir: ent.file_type()?.is_dir(),
                });
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn stage_writer(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>> {
        let placement = if self.direct {
            Placement::Through
        } else {
            Placement::Cached
        };
        self.open_stage(id, offset, placement).await
    }

    async fn stage_writer_cached(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>> {
        self.open_stage(id, offset, Placement::Cached).await
    }

    async fn stage_from(&self, id: &str, key: &str) -> Result<bool> {
        let (stage, src) = (self.stage_path(id)?, self.path(key)?);
        blocking(move || {
            not_found_to_none(fs::remove_file(&stage))?;
            Ok(not_found_to_none(fs::hard_link(&src, &stage))?.is_some())
        })
        .await
    }

    async fn stage_size(&self, id: &str) -> Result<Option<u64>> {
        let path = self.stage_path(id)?;
        Ok(not_found_to_none(tokio::fs::metadata(&path).await)?.map(|m| m.len()))
    }

    async fn stage_read(&self, id: &str, start: u64) -> Result<ByteStream> {
        let path = self.stage_path(id)?;
        let (file, size) = blocking(move || {
            let f = File::open(&path)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(io) if io.kind() == io::ErrorKind::NotFound => StorageError::NotFound,
            e => e,
        })?;
        Ok(stream_file(file, start.min(size), size))
    }

    async fn stage_commit(&self, id: &str, key: &str, size: u64) -> Result<()> {
        let src = self.stage_path(id)?;
        let dst = self.path(key)?;
        let sync_data = self.sync_data;
        blocking(move || {
            // One process appends to a stage at a time (its session's
            // lock): what is seen here stays until the rename.
            let f = File::open(&src)?;
            let actual = f.metadata()?.len();
            if actual != size {
                return Ok(Err(StorageError::Offset {
                    expected: size,
                    actual,
                }));
            }
            if sync_data {
                f.sync_all()?;
            }
            let dir = dst
                .parent()
                .ok_or_else(|| io::Error::other("key has no parent"))?;
            make_dirs(dir, sync_data)?;
            fs::rename(&src, &dst)?;
            if sync_data {
                sync_dir(dir)?;
            }
            Ok(Ok(()))
        })
        .await
        .map_err(|e| match e {
            StorageError::Io(io) if io.kind() == io::ErrorKind::NotFound => StorageError::NotFound,
            e => e,
        })?
    }

    async fn stage_truncate(&self, id: &str, size: u64, from: Option<u64>) -> Result<()> {
        let path = self.stage_path(id)?;
        blocking(move || {
            let f = fs::OpenOptions::new().write(true).open(&path)?;
            let actual = f.metadata()?.len();
            if let Some(expected) = from.filter(|&e| e != actual) {
                return Ok(Err(StorageError::Offset { expected, actual }));
            }
            if actual > size {
                f.set_len(size)?;
            }
            Ok(Ok(()))
        })
        .await?
    }

    async fn stage_delete(&self, id: &str) -> Result<()> {
        let path = self.stage_path(id)?;
        blocking(move || not_found_to_none(fs::remove_file(&path)).map(|_| ())).await
    }

    async fn stage_list(&self) -> Result<Vec<(String, SystemTime)>> {
        let dir = self.root.join(".uploads");
        blocking(move || {
            let mut out = Vec::new();
            for ent in fs::read_dir(&dir)? {
                let ent = ent?;
                let Ok(name) = ent.file_name().into_string() else {
                    continue;
                };
                if check_id(&name).is_ok() {
                    out.push((name, ent.metadata()?.modified()?));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn exclusive(&self, name: &str) -> Result<crate::Turn> {
        Ok(self.turns.take(name).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stage::INLINE_WRITE;

    #[tokio::test]
    async fn passes_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBackend::open(dir.path(), true).unwrap();
        crate::suite::run(&store).await;
    }

    #[tokio::test]
    async fn passes_the_suite_without_direct_writes() {
        // What a filesystem that refuses O_DIRECT gets.
        let dir = tempfile::tempdir().unwrap();
        let store = FsBackend::open(dir.path(), true)
            .unwrap()
            .without_direct_writes();
        crate::suite::run(&store).await;
    }

    /// Pages of a file held in the page cache.
    fn resident_pages(path: &Path) -> usize {
        let f = File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of an open file, unmapped
        // before returning; `vec` has one byte per page of the mapping.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
        }
        vec.iter().filter(|b| *b & 1 == 1).count()
    }

    #[tokio::test]
    async fn large_uploads_bypass_the_page_cache_unless_they_may_be_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBackend::open(dir.path(), true).unwrap();
        let len = 8 * 1024 * 1024 + 100;
        for (cached, id) in [(false, "through"), (true, "cached")] {
            let mut w = if cached {
                store.stage_writer_cached(id, 0).await.unwrap()
            } else {
                store.stage_writer(id, 0).await.unwrap()
            };
            for _ in 0..len / 65_536 {
                w.write(Bytes::from(vec![7u8; 65_536])).await.unwrap();
            }
            w.write(Bytes::from(vec![7u8; len % 65_536])).await.unwrap();
            assert_eq!(w.finish().await.unwrap(), len as u64);
            let resident = resident_pages(&store.stage_path(id).unwrap());
            if cached {
                assert!(resident > 2000, "{id}: {resident} pages resident");
            } else {
                // Only the part block at the end went through the cache.
                assert!(resident <= 2, "{id}: {resident} pages resident");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_writes_of_gathered_batches_and_odd_pieces_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBackend::open(dir.path(), true).unwrap();
        let data: Vec<u8> = (0..5 * 1024 * 1024 + 777u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // Three appends, two of them starting mid-block: odd pieces first
        // (the writer turns direct past its inline size), then batches
        // gathered from the offset the writer names.
        let cuts = [0, 300_001, 2 * 1024 * 1024 + 5, data.len()];
        for w in cuts.windows(2) {
            let mut writer = store.stage_writer("mixed", w[0] as u64).await.unwrap();
            let part = &data[w[0]..w[1]];
            let (head, rest) = part.split_at(270_000);
            for p in head.chunks(9_999) {
                writer.write(Bytes::copy_from_slice(p)).await.unwrap();
            }
            let at = writer.block_offset().unwrap();
            assert_eq!(at, (w[0] + head.len()) as u64);
            let mut gather = crate::blocks::Gather::new(at);
            let mut out = Vec::new();
            for p in rest.chunks(65_537) {
                gather.add(p, &mut out);
                for b in out.drain(..) {
                    writer.write(b).await.unwrap();
                }
            }
            if let Some(b) = gather.finish() {
                writer.write(b).await.unwrap();
            }
            assert_eq!(writer.finish().await.unwrap(), w[1] as u64);
        }
        assert_eq!(fs::read(store.stage_path("mixed").unwrap()).unwrap(), data);
    }

    #[tokio::test]
    async fn no_temporary_file_is_left_or_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBackend::open(dir.path(), false).unwrap();
        store
            .put("a/b", Bytes::from_static(b"x"), Durability::Durable)
            .await
            .unwrap();
        store
            .put("a/b", Bytes::from_static(b"y"), Durability::Lazy)
            .await
            .unwrap();
        assert!(!store
            .put_if_absent("a/b", Bytes::from_static(b"z"))
            .await
            .unwrap());
        let names: Vec<_> = fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["b"]);
        assert_eq!(store.get("a/b").await.unwrap().unwrap(), "y");
    }

    /// A runtime with one worker and only two blocking threads, so that a
    /// stream holding a blocking thread would starve every other call.
    fn two_blocking_threads() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn stalled_reads_hold_no_blocking_thread() {
        let rt = two_blocking_threads();
        rt.block_on(async {
            use futures_util::StreamExt;
            let dir = tempfile::tempdir().unwrap();
            let store = FsBackend::open(dir.path(), false).unwrap();
            let big = Bytes::from(vec![7u8; 8 * READ_CHUNK]);
            store.put("big", big, Durability::Lazy).await.unwrap();
            store
                .put("small", Bytes::from_static(b"s"), Durability::Lazy)
                .await
                .unwrap();
            // More readers than blocking threads, each taking one chunk and
            // then nothing more, like clients that stopped reading.
            let mut stalled = Vec::new();
            for _ in 0..6 {
                let mut s = store.read("big", 0, None).await.unwrap();
                assert_eq!(s.next().await.unwrap().unwrap().len(), READ_CHUNK);
                stalled.push(s);
            }
            let other =
                tokio::time::timeout(std::time::Duration::from_secs(30), store.get("small"))
                    .await
                    .expect("storage calls still get a thread");
            assert_eq!(other.unwrap().unwrap(), "s");
            drop(stalled);
        });
    }

    #[test]
    fn stalled_uploads_hold_no_blocking_thread() {
        let rt = two_blocking_threads();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = FsBackend::open(dir.path(), false).unwrap();
            store
                .put("small", Bytes::from_static(b"s"), Durability::Lazy)
                .await
                .unwrap();
            // More uploads than blocking threads, each past the size at
            // which batches are written, then waiting on its client.
            let mut writers = Vec::new();
            for i in 0..6 {
                let mut w = store.stage_writer(&format!("u{i}"), 0).await.unwrap();
                for _ in 0..4 {
                    w.write(Bytes::from(vec![i as u8; INLINE_WRITE / 2]))
                        .await
                        .unwrap();
                }
                writers.push(w);
            }
            let other =
                tokio::time::timeout(std::time::Duration::from_secs(30), store.get("small"))
                    .await
                    .expect("storage calls still get a thread");
            assert_eq!(other.unwrap().unwrap(), "s");
            for (i, w) in writers.into_iter().enumerate() {
                assert_eq!(w.finish().await.unwrap(), 2 * INLINE_WRITE as u64);
                assert_eq!(
                    store.stage_size(&format!("u{i}")).await.unwrap(),
                    Some(2 * INLINE_WRITE as u64)
                );
            }
        });
    }
}
