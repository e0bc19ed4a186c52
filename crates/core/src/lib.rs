//! The registry: what the OCI distribution API does, over a storage backend.
//!
//! Layout:
//! - [`keys`]: where each thing lives in the object store (the only module
//!   that builds storage keys).
//! - [`uploads`]: blob upload sessions: streaming, hashing, resuming,
//!   committing, mounting, expiring.
//! - [`blobs`]: reading and unlinking blobs of a repository.
//! - [`manifests`]: validating, storing, resolving and deleting manifests and
//!   tags, and the referrers index kept beside them.
//! - [`listing`]: tag lists and the catalog, with `n`/`last` pagination.
//! - [`accounts`]: where API key records live (their format is the server's).
//! - [`scrub`]: re-hashing stored content and quarantining what is corrupt.
//! - [`sync`]: the pull-through cache and mirroring of upstream registries.
//! - [`gc`]: online garbage collection (hide, re-check, delete; no lock).
//! - [`retention`]: which tags and untagged manifests a repository keeps
//!   (zot's policies), and the pull times they are judged by.
//!
//! This crate knows nothing of HTTP: it takes validated names and digests
//! from `berth-oci`, byte streams for bodies, and answers with data or a
//! [`CoreError`]. It never checks permissions; the server authorizes each
//! request once before calling in.
//!
//! Architecture invariant: every write a client can observe (a blob linked
//! into a repository, a manifest, a tag) is durable in storage before the
//! call returns, and content becomes visible only after its digest matched.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod accounts;
pub mod blobs;
pub mod browse;
pub mod gc;
pub mod import;
pub mod keys;
pub mod lease;
pub mod listing;
pub mod manifests;
pub mod migrate;
mod openings;
pub mod pulls;
mod pump;
pub mod retention;
pub mod scrub;
pub mod sessions;
pub mod sync;
pub mod uploads;

/// The longest a request waits for another request on the same upload.
pub const UPLOAD_SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

use berth_oci::Digest;
use berth_storage::{Backend, StorageError};
use std::sync::Arc;

pub use berth_storage::ByteStream;

/// What a registry operation can fail with. The server maps each variant to
/// an OCI error code and status in one place.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("blob unknown to the repository")]
    BlobUnknown,
    #[error("upload session unknown")]
    UploadUnknown,
    #[error("upload invalid: {0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload ends (416). Carries the
    /// number of bytes the upload holds.
    #[error("chunk does not continue the upload, which holds {size} bytes")]
    ChunkOutOfOrder { size: u64 },
    #[error("digest mismatch: computed {computed}, declared {declared}")]
    DigestMismatch { declared: Digest, computed: Digest },
    #[error("digest invalid: {0}")]
    DigestInvalid(String),
    #[error("digest algorithm unsupported: {0}")]
    Unsupported(String),
    #[error("size invalid: {0}")]
    SizeInvalid(String),
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error("manifest larger than {limit} bytes")]
    ManifestTooLarge { limit: usize },
    #[error("repository unknown")]
    NameUnknown,
    /// Another collection pass holds the store (see [`lease`]).
    #[error("another garbage collection pass is running on this store")]
    Busy,
    /// A create-only tag write found the tag already there.
    #[error("tag {0} exists and may not be moved")]
    TagExists(berth_oci::Tag),
    /// Stored content no longer matches its digest (found on read).
    #[error("stored content of {0} is corrupt")]
    Corrupt(Digest),
    /// Another request on the same upload held it for longer than a
    /// request waits ([`UPLOAD_SESSION_WAIT`]): retry later.
    #[error("the upload is busy with another request")]
    UploadBusy,
    /// [`sessions::MAX_OPEN_UPLOADS`] uploads are open: retry later.
    #[error("too many uploads are open")]
    TooManyUploads,
    /// Every fetch from the upstream is in use (pull-through): retry later.
    #[error("too many fetches from the upstream registry at once")]
    UpstreamBusy,
    /// An upstream registry failed or sent bad data (pull-through).
    #[error("upstream: {0}")]
    Upstream(String),
    /// The client's request body failed while it was being read.
    #[error("request body: {0}")]
    Body(std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T> = std::result::Result<T, CoreError>;

type PullTimes =
    std::collections::HashMap<berth_oci::RepoName, std::collections::HashMap<Digest, u64>>;

/// Tunables of the registry core.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_size: usize,
    /// Upload sessions untouched for this long are removed by `expire_uploads`.
    pub upload_ttl: std::time::Duration,
    /// Other processes write the same store (replicas): the catalog is
    /// read from the store by keyset queries at each request, and a
    /// pull-through fetch is claimed in the store so that one replica
    /// fetches a blob. Otherwise this process is the only writer: an
    /// index built once is kept current by its own writes, and its own
    /// flights gather the clients of a blob.
    pub shared_store: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_manifest_size: 4 * 1024 * 1024,
            upload_ttl: std::time::Duration::from_secs(24 * 3600),
            shared_store: false,
        }
    }
}

/// The registry. Cheap to clone; all state is in the store and in the
/// table of live upload sessions.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Backend>,
    options: Arc<Options>,
    sessions: Arc<sessions::Sessions>,
    catalog: Arc<listing::CatalogIndex>,
    /// What each manifest references, remembered by garbage collection.
    gc_refs: Arc<std::sync::Mutex<std::collections::HashMap<Digest, Arc<retention::Refs>>>>,
    /// The pull-through cache in force, if any (swapped on reload).
    sync: Arc<std::sync::RwLock<Option<Arc<sync::Sync>>>>,
    sync_stats: Arc<sync::SyncStats>,
    /// Sizes of content, remembered by garbage collection.
    blob_sizes: Arc<std::sync::Mutex<std::collections::HashMap<Digest, u64>>>,
    /// Pull times noted since they were last written, per repository.
    pulls: Arc<std::sync::Mutex<PullTimes>>,
    /// The generation of the collection lease this process holds, if any
    /// (see [`lease`]).
    held_lease: Arc<std::sync::Mutex<Option<u64>>>,
    /// Manifest bodies by digest, verified when read: content never
    /// changes, so this is never stale (whether a repository or tag still
    /// names it is asked of the store every time).
    manifest_bodies: Arc<std::sync::Mutex<ManifestBodies>>,
    /// What each tag named when last resolved: a guess that lets a pull
    /// by tag read the tag and the manifest's link in one round trip.
    tag_hints: Arc<manifests::TagHints>,
}

/// A bounded cache of manifest bodies (at most 16 MiB in all).
#[derive(Default)]
struct ManifestBodies {
    by_digest: std::collections::HashMap<Digest, bytes::Bytes>,
    bytes: usize,
}

impl ManifestBodies {
    const BUDGET: usize = 16 * 1024 * 1024;

    fn get(&self, d: &Digest) -> Option<bytes::Bytes> {
        self.by_digest.get(d).cloned()
    }

    fn insert(&mut self, d: Digest, body: bytes::Bytes) {
        if body.len() > Self::BUDGET / 16 || self.by_digest.contains_key(&d) {
            return;
        }
        while self.bytes + body.len() > Self::BUDGET {
            let Some(k) = self.by_digest.keys().next().cloned() else {
                break;
            };
            if let Some(b) = self.by_digest.remove(&k) {
                self.bytes -= b.len();
            }
        }
        self.bytes += body.len();
        self.by_digest.insert(d, body);
    }
}

impl Registry {
    pub fn new(store: Arc<dyn Backend>, options: Options) -> Registry {
        Registry {
            store,
            options: Arc::new(options),
            sessions: Arc::default(),
            catalog: Arc::default(),
            gc_refs: Arc::default(),
            pulls: Arc::default(),
            sync: Arc::default(),
            sync_stats: Arc::default(),
            blob_sizes: Arc::default(),
            held_lease: Arc::default(),
            manifest_bodies: Arc::default(),
            tag_hints: Arc::default(),
        }
    }

    /// The turn a manifest's push and delete in one repository take (and
    /// nothing else), among everything sharing the store: a delete cannot
    /// unlink a manifest that a concurrent push of the same bytes, on any
    /// replica, has just acknowledged.
    pub(crate) async fn manifest_turn(
        &self,
        repo: &berth_oci::RepoName,
        digest: &Digest,
    ) -> Result<berth_storage::Turn> {
        Ok(self
            .store
            .exclusive(&keys::manifest_turn(repo, digest))
            .await?)
    }

    /// Upload sessions this process is serving now.
    pub fn uploads_in_progress(&self) -> usize {
        self.sessions.live()
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub fn store(&self) -> &Arc<dyn Backend> {
        &self.store
    }
}
