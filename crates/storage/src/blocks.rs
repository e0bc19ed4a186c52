//! Block-aligned batches: request-body bytes gathered so that a writer
//! that bypasses the page cache (`O_DIRECT`) can write them as they are.
//!
//! A direct write needs its memory address, its length and its file offset
//! to be multiples of the block size. A request body arrives in pieces of
//! any size at any address, so someone must copy it once; [`Gather`] makes
//! that one copy into batches that start at a block-aligned address and end
//! at a block-aligned file offset. The hasher reads the same batches and
//! the writer writes them without a second copy.

use bytes::Bytes;
use std::sync::Mutex;

/// The block size direct writes are aligned to.
pub const BLOCK: usize = 4096;

/// Whether `data` can be written directly as it is: it starts at a
/// block-aligned address and is whole blocks long.
pub fn is_whole_blocks(data: &[u8]) -> bool {
    !data.is_empty()
        && (data.as_ptr() as usize).is_multiple_of(BLOCK)
        && data.len().is_multiple_of(BLOCK)
}

/// Data bytes a [`BlockBuf`] holds at most.
pub const BUF: usize = 1024 * 1024;
/// Free buffers kept for the next push; more are given back to the
/// allocator.
const KEEP: usize = 8;

/// Buffers given back, ready for reuse: a push takes and returns a few
/// buffers per MiB, and taking them from here costs no allocation, no
/// page faults and no fragmentation of the allocator's arenas.
static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An append-only buffer of up to [`BUF`] bytes starting at a
/// block-aligned address, taken from a small free list and given back to
/// it when dropped (also when dropped as the owner of [`Bytes`]).
pub struct BlockBuf {
    /// `start` bytes of padding to an aligned address, then the data.
    mem: Vec<u8>,
    start: usize,
}

impl Default for BlockBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockBuf {
    /// An empty buffer. Its memory is never zeroed: only copied bytes are
    /// ever in it.
    pub fn new() -> BlockBuf {
        let reused = FREE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut mem = reused.unwrap_or_else(|| Vec::with_capacity(BUF + BLOCK));
        let start = mem.as_ptr().align_offset(BLOCK);
        mem.resize(start, 0);
        BlockBuf { mem, start }
    }

    pub fn len(&self) -> usize {
        self.mem.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.len() == BUF
    }

    pub fn filled(&self) -> &[u8] {
        &self.mem[self.start..]
    }

    /// Copies as much of `data` as fits under `limit` (at most [`BUF`])
    /// bytes; returns how much.
    pub fn push_upto(&mut self, data: &[u8], limit: usize) -> usize {
        let n = data.len().min(limit.min(BUF).saturating_sub(self.len()));
        self.mem.extend_from_slice(&data[..n]);
        n
    }

    /// Copies as much of `data` as fits; returns how much.
    pub fn push(&mut self, data: &[u8]) -> usize {
        self.push_upto(data, BUF)
    }

    /// The buffer as shared bytes; it goes back to the free list when the
    /// last of them is dropped.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for BlockBuf {
    fn as_ref(&self) -> &[u8] {
        self.filled()
    }
}

impl Drop for BlockBuf {
    fn drop(&mut self) {
        let mut mem = std::mem::take(&mut self.mem);
        if mem.capacity() != BUF + BLOCK {
            return;
        }
        mem.clear();
        let mut free = FREE.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < KEEP {
            free.push(mem);
        }
    }
}

/// Gathers bytes into block-aligned batches of [`BUF`] bytes, each ending
/// at a file offset that is a multiple of [`BLOCK`]; the first batch is
/// shorter when the bytes start mid-block.
pub struct Gather {
    buf: BlockBuf,
    /// Data bytes the batch being filled will hold.
    target: usize,
    /// File offset of the next byte added.
    offset: u64,
}

impl Gather {
    /// A gatherer for bytes that go to the file at `offset` onwards.
    pub fn new(offset: u64) -> Gather {
        Gather {
            buf: BlockBuf::new(),
            target: BUF - (offset % BLOCK as u64) as usize,
            offset,
        }
    }

    /// Copies `data` in, appending each batch it completes to `out`.
    pub fn add(&mut self, mut data: &[u8], out: &mut Vec<Bytes>) {
        while !data.is_empty() {
            let n = self.buf.push_upto(data, self.target);
            self.offset += n as u64;
            data = &data[n..];
            if self.buf.len() == self.target {
                out.push(std::mem::take(&mut self.buf).into_bytes());
                self.target = BUF;
            }
        }
    }

    /// What is left: a last batch shorter than the others, if any.
    pub fn finish(self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_aligned_in_memory_and_end_on_block_boundaries() {
        let data: Vec<u8> = (0..65536).map(|i| (i % 251) as u8).collect();
        let data: Vec<u8> = data.iter().cycle().take(3 * BUF + 123).copied().collect();
        for start in [0u64, 1, 4095, 4096, 70000] {
            let mut g = Gather::new(start);
            let mut out = Vec::new();
            for piece in data.chunks(100_000) {
                g.add(piece, &mut out);
            }
            let last = g.finish();
            let mut offset = start;
            for (i, b) in out.iter().enumerate() {
                assert!((b.as_ptr() as usize).is_multiple_of(BLOCK));
                offset += b.len() as u64;
                assert_eq!(offset % BLOCK as u64, 0, "batch {i} from {start}");
                if i > 0 {
                    assert!(is_whole_blocks(b));
                    assert_eq!(b.len(), BUF);
                }
            }
            let mut joined: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
            joined.extend(last.map(|b| b.to_vec()).unwrap_or_default());
            assert_eq!(joined, data, "from {start}");
        }
    }

    #[test]
    fn nothing_added_leaves_nothing() {
        assert!(Gather::new(5).finish().is_none());
        assert!(!is_whole_blocks(&[]));
    }
}
