//! The push pipeline: how a body reaches a stage writer, hashed on the
//! way. Pushes, pull-through fetches and imports all go through [`pump`].
//!
//! Small bodies are hashed on the receiving task and passed on as they
//! come. Past [`HASH_OFFLOAD`] bytes the body goes by batches: copied once
//! into block-aligned batches when the writer writes those as they are
//! (the filesystem's direct writes, see `berth_storage::blocks`), else
//! gathered by reference with no copy. The batches are hashed on a lane of
//! blocking calls (`berth_storage::lane`), so receiving, hashing and
//! writing overlap and none waits for the others between batches.
//!
//! The hash comes back as a [`RunningHash`], which may still be at work on
//! the last batches when the body is written: a chunked upload keeps it
//! until its next request, so a chunk is answered once its bytes are
//! written, and its hashing ends while the client sends the next one.

use crate::{CoreError, Result};
use berth_oci::{Algorithm, Hasher};
use berth_storage::blocks::Gather;
use berth_storage::lane::Lane;
use berth_storage::{ByteStream, StageWriter, StorageError};
use bytes::Bytes;
use futures_util::StreamExt;

/// Bodies up to this size are hashed on the receiving task; past it the
/// hashing moves to a lane of blocking calls.
const HASH_OFFLOAD: usize = 256 * 1024;
/// Bytes hashed per job when the body is gathered by reference: each job
/// is a lock and maybe a wake-up, so bytes are gathered (block-aligned
/// batches are [`berth_storage::blocks::BUF`] bytes).
const BATCH: usize = 1024 * 1024;
/// Hashing jobs queued or running at most: what a push holds in memory
/// beyond its writer's share.
const HASH_DEPTH: usize = 3;

type HashLane = Lane<Hasher, Vec<Bytes>>;

/// The running hash of a body (or of an upload's chunks so far): on the
/// task, or on a lane that may still be hashing batches given to it.
// One per body or upload session, moved a few times per request: the
// hasher's size is no cost worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RunningHash {
    Here(Hasher),
    Lane(Algorithm, HashLane),
}

impl RunningHash {
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            RunningHash::Here(h) => h.algorithm(),
            RunningHash::Lane(a, _) => *a,
        }
    }

    /// The hash as it stands, unless a lane holds it.
    pub(crate) fn here(&self) -> Option<&Hasher> {
        match self {
            RunningHash::Here(h) => Some(h),
            RunningHash::Lane(..) => None,
        }
    }

    /// Waits until everything given is hashed; `None` if hashing failed.
    pub(crate) async fn settle(self) -> Option<Hasher> {
        match self {
            RunningHash::Here(h) => Some(h),
            RunningHash::Lane(_, lane) => lane.finish().await,
        }
    }

    /// Moves the hashing onto a lane, if it is not on one.
    fn onto_lane(self) -> (Algorithm, HashLane) {
        match self {
            RunningHash::Lane(a, lane) => (a, lane),
            RunningHash::Here(h) => {
                let a = h.algorithm();
                let lane = HashLane::new(h, HASH_DEPTH, |h: &mut Hasher, batch| {
                    for c in batch {
                        h.update(&c);
                    }
                });
                (a, lane)
            }
        }
    }
}

/// How a large body is cut into batches (see the module's documentation).
enum Batches {
    /// The writer is given the batches.
    Aligned(Gather),
    /// The writer is given the pieces as they come; the batch being
    /// gathered and its length.
    Shared(Vec<Bytes>, usize),
}

impl Batches {
    /// Whether the writer is given the batches.
    fn aligned(&self) -> bool {
        matches!(self, Batches::Aligned(_))
    }

    fn for_writer(writer: &dyn StageWriter) -> Batches {
        match writer.block_offset() {
            Some(at) => Batches::Aligned(Gather::new(at)),
            None => Batches::Shared(Vec::new(), 0),
        }
    }

    /// Takes a piece of the body; appends the batches it completed.
    fn add(&mut self, chunk: &Bytes, out: &mut Vec<Bytes>) {
        match self {
            Batches::Aligned(g) => g.add(chunk, out),
            Batches::Shared(batch, len) => {
                *len += chunk.len();
                batch.push(chunk.clone());
                if *len >= BATCH {
                    *len = 0;
                    out.append(batch);
                }
            }
        }
    }

    /// The rest, at the end of the body.
    fn finish(self, out: &mut Vec<Bytes>) {
        match self {
            Batches::Aligned(g) => out.extend(g.finish()),
            Batches::Shared(mut batch, _) => out.append(&mut batch),
        }
    }
}

/// A large body on its way: the batching and, when hashing, the lane.
struct Large {
    batches: Batches,
    lane: Option<(Algorithm, HashLane)>,
    /// Completed batches not yet handed on.
    full: Vec<Bytes>,
}

impl Large {
    fn new(writer: &dyn StageWriter, hash: Option<RunningHash>) -> Large {
        Large {
            batches: Batches::for_writer(writer),
            lane: hash.map(RunningHash::onto_lane),
            full: Vec::new(),
        }
    }

    /// Takes a piece of the body and hands on what it completed.
    async fn add(&mut self, chunk: Bytes, writer: &mut dyn StageWriter) -> Result<()> {
        self.batches.add(&chunk, &mut self.full);
        let aligned = self.batches.aligned();
        if !aligned {
            writer.write(chunk).await?;
        }
        let lane = self.lane.as_ref().map(|(_, l)| l);
        hand_on(&mut self.full, aligned, lane, writer).await
    }

    /// Hands on what is left gathered (also after a body broke off: what
    /// arrived is written); gives back the hash, if hashing, with its lane
    /// maybe still at work.
    async fn finish(self, writer: &mut dyn StageWriter) -> (Result<()>, Option<RunningHash>) {
        let Large {
            batches,
            lane,
            mut full,
        } = self;
        let aligned = batches.aligned();
        batches.finish(&mut full);
        let handed = hand_on(&mut full, aligned, lane.as_ref().map(|(_, l)| l), writer).await;
        (handed, lane.map(|(a, l)| RunningHash::Lane(a, l)))
    }
}

/// Completed batches to the hash lane, and to the writer when it is given
/// batches (`aligned`).
async fn hand_on(
    full: &mut Vec<Bytes>,
    aligned: bool,
    lane: Option<&HashLane>,
    writer: &mut dyn StageWriter,
) -> Result<()> {
    if full.is_empty() {
        return Ok(());
    }
    let full = std::mem::take(full);
    if aligned {
        for b in &full {
            writer.write(b.clone()).await?;
        }
    }
    if let Some(lane) = lane {
        lane.push(full).await;
    }
    Ok(())
}

/// Streams a body into a stage writer, hashing as it goes (see the
/// module's documentation). Returns the staged size and the hash, which
/// may still be at work; on an error the hash is lost. The writer is always
/// finished, so whatever was received before a client error is on disk.
pub(crate) async fn pump(
    mut body: ByteStream,
    mut writer: Box<dyn StageWriter>,
    hash: Option<RunningHash>,
) -> Result<(u64, Option<RunningHash>)> {
    // A hash already on a lane stays there: what comes is hashed after
    // what the lane holds.
    let (mut here, mut large) = match hash {
        Some(h @ RunningHash::Lane(..)) => (None, Some(Large::new(writer.as_ref(), Some(h)))),
        Some(RunningHash::Here(h)) => (Some(h), None),
        None => (None, None),
    };
    let mut seen = 0usize;
    let mut failure = None;
    loop {
        let chunk = match body.next().await {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                failure = Some(CoreError::Body(e));
                break;
            }
        };
        seen += chunk.len();
        if large.is_none() && seen > HASH_OFFLOAD {
            let h = here.take().map(RunningHash::Here);
            large = Some(Large::new(writer.as_ref(), h));
        }
        let added = match large.as_mut() {
            Some(l) => l.add(chunk, writer.as_mut()).await,
            None => {
                if let Some(h) = here.as_mut() {
                    h.update(&chunk);
                }
                writer.write(chunk).await.map_err(Into::into)
            }
        };
        if let Err(e) = added {
            failure = Some(e);
            break;
        }
    }
    let mut hash = here.map(RunningHash::Here);
    if let Some(l) = large {
        let (handed, h) = l.finish(writer.as_mut()).await;
        if let Err(e) = handed {
            failure.get_or_insert(e);
        }
        hash = h;
    }
    let size = writer.finish().await;
    match (failure, size) {
        (Some(e), _) => Err(e),
        (None, Ok(size)) => Ok((size, hash)),
        (None, Err(e)) => Err(e.into()),
    }
}

/// [`pump`] with the hash waited for: the staged size and the hash of the
/// body, which `hasher` had seen the start of.
pub(crate) async fn pump_hashed(
    body: ByteStream,
    writer: Box<dyn StageWriter>,
    hasher: Hasher,
) -> Result<(u64, Hasher)> {
    let (size, hash) = pump(body, writer, Some(RunningHash::Here(hasher))).await?;
    let settled = match hash {
        Some(h) => h.settle().await,
        None => None,
    };
    let hasher =
        settled.ok_or_else(|| StorageError::Io(std::io::Error::other("hashing failed")))?;
    Ok((size, hasher))
}
