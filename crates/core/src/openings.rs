//! Openings of stored content: how a chunked upload of content the store
//! already holds can be kept off the disk.
//!
//! A chunked upload's digest is known only at its end, and its chunks must
//! be staged as they arrive (each is acknowledged). Most uploads are new
//! content, written straight through to the disk; but a client that did
//! not know the store holds a blob (a base layer pushed to a new
//! repository without a mount) sends it all again. So the first
//! [`OPENING`] bytes of every large blob committed are remembered, by
//! hash, in a bounded table; an upload that begins like one of them is
//! staged where dropping it costs nothing (the page cache, no flush), and
//! when its digest turns out to be stored, it is dropped before the disk
//! ever saw it. A wrong guess costs only speed: the commit's flush writes
//! what the upload staged.
//!
//! The table is a hint of this process, never a source of truth: it starts
//! empty and forgets the oldest openings past [`CAPACITY`].

use crate::{keys, Registry};
use berth_oci::Digest;
use berth_storage::ByteStream;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Bytes of a blob's beginning that stand for it.
pub(crate) const OPENING: usize = 64 * 1024;
/// Openings remembered (a digest each, held twice).
const CAPACITY: usize = 8192;

type Opening = Digest;

fn opening_of(head: &[u8]) -> Opening {
    let mut h = berth_oci::Algorithm::Sha256.hasher();
    h.update(head);
    h.finish()
}

/// The remembered openings, oldest first.
#[derive(Default)]
pub(crate) struct Openings {
    inner: Mutex<(HashSet<Opening>, VecDeque<Opening>)>,
}

impl Openings {
    fn note(&self, o: Opening) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *g;
        if !set.insert(o.clone()) {
            return;
        }
        order.push_back(o);
        if order.len() > CAPACITY {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }

    fn knows(&self, o: &Opening) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .contains(o)
    }
}

impl Registry {
    /// Remembers the opening of content just committed, if it is large
    /// enough to have one.
    pub(crate) async fn note_opening(&self, digest: &Digest) {
        let key = keys::blob(digest);
        let Ok(mut stream) = self.store.read(&key, 0, Some(OPENING as u64)).await else {
            return;
        };
        let mut head = Vec::with_capacity(OPENING);
        while let Some(Ok(chunk)) = stream.next().await {
            head.extend_from_slice(&chunk);
        }
        if head.len() == OPENING {
            self.sessions.openings.note(opening_of(&head));
        }
    }

    /// Reads the start of a body that begins an upload, and tells whether
    /// it opens like content the store holds. Returns the whole body again.
    pub(crate) async fn peek_opening(&self, mut body: ByteStream) -> (ByteStream, bool) {
        let mut seen: Vec<std::io::Result<Bytes>> = Vec::new();
        let mut len = 0;
        while len < OPENING {
            match body.next().await {
                Some(Ok(chunk)) => {
                    len += chunk.len();
                    seen.push(Ok(chunk));
                }
                Some(Err(e)) => {
                    seen.push(Err(e));
                    break;
                }
                None => break,
            }
        }
        let known = len >= OPENING && {
            let mut head = Vec::with_capacity(OPENING);
            for chunk in seen.iter().flatten() {
                let want = (OPENING - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..want]);
            }
            self.sessions.openings.knows(&opening_of(&head))
        };
        let replay = futures_util::stream::iter(seen).chain(body);
        (Box::pin(replay), known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest() {
        let t = Openings::default();
        for i in 0..CAPACITY + 10 {
            t.note(opening_of(&i.to_le_bytes()));
        }
        let g = t.inner.lock().unwrap();
        assert_eq!(g.0.len(), CAPACITY);
        assert_eq!(g.1.len(), CAPACITY);
        drop(g);
        assert!(!t.knows(&opening_of(&0usize.to_le_bytes())));
        assert!(t.knows(&opening_of(&(CAPACITY + 9).to_le_bytes())));
    }
}
