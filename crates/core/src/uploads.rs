//! Blob upload sessions.
//!
//! A session is a staged object in the store plus a small record naming its
//! repository, so it survives a restart. While a process serves a session it
//! keeps the running sha256 of the bytes received (still at work on a
//! chunk's last batches after its 202, see the `pump` module); after a
//! restart, a refused chunk that came after such a chunk, or when the
//! client declares a digest of another algorithm, the staged bytes are
//! hashed again from storage. A blob becomes visible only by the backend's
//! atomic commit, after its digest matched.

use crate::pump::{pump, pump_hashed, RunningHash};
use crate::sessions::Session;
use crate::{keys, CoreError, Registry, Result};
use berth_oci::{Algorithm, Digest, Hasher, RepoName};
use berth_storage::{ByteStream, Durability, StageWriter, StorageError};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::SystemTime;

/// The persisted part of a session.
#[derive(Serialize, Deserialize)]
struct Record {
    repo: String,
    /// Seconds since the Unix epoch when the session was opened.
    #[serde(default)]
    started: u64,
}

/// Takes what it is given and keeps nothing: the writer of a push whose
/// content the store already holds, which is hashed and dropped.
#[derive(Default)]
struct Discard(u64);

#[async_trait::async_trait]
impl StageWriter for Discard {
    async fn write(&mut self, data: Bytes) -> berth_storage::Result<()> {
        self.0 += data.len() as u64;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> berth_storage::Result<u64> {
        Ok(self.0)
    }
}

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadState {
    pub id: String,
    /// Bytes received so far.
    pub size: u64,
}

/// Outcome of a mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The blob is now in the repository.
    Mounted,
    /// It could not be mounted; a fresh session was opened instead.
    Started(UploadState),
}

/// A chunk's declared place in the upload (inclusive byte offsets).
pub type ChunkRange = (u64, u64);

impl Registry {
    /// Opens a new, empty upload session for `repo`.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadState> {
        self.start_upload_for(repo, Algorithm::Sha256).await
    }

    /// Opens an upload whose digest will be of `algorithm` (hashed as it
    /// comes, instead of again from storage at completion).
    pub async fn start_upload_for(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
    ) -> Result<UploadState> {
        let id = uuid::Uuid::new_v4().to_string();
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let record = serde_json::to_vec(&Record {
            repo: repo.to_string(),
            started,
        })
        .map_err(std::io::Error::other)
        .map_err(StorageError::Io)?;
        // Counted before anything is written; the record need not survive
        // power loss (a client whose session vanished starts another). The
        // staged bytes appear on first write.
        let session = Session {
            repo: repo.clone(),
            size: 0,
            hash: Some(RunningHash::Here(algorithm.hasher())),
            closed: false,
            cached: false,
        };
        self.sessions
            .open(&id, session)
            .ok_or(CoreError::TooManyUploads)?;
        let written = self
            .store
            .put(&keys::upload(&id), Bytes::from(record), Durability::Lazy)
            .await;
        if let Err(e) = written {
            self.sessions.remove(&id);
            return Err(e.into());
        }
        Ok(UploadState { id, size: 0 })
    }

    /// Finds a session of `repo` (loading it from storage after a restart)
    /// and locks it; a session closed while this waited is unknown.
    async fn session(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<Session>> {
        let s = match self.sessions.get(id) {
            Some(s) => s,
            None => {
                let record = self
                    .store
                    .get(&keys::upload(id))
                    .await?
                    .ok_or(CoreError::UploadUnknown)?;
                let record: Record =
                    serde_json::from_slice(&record).map_err(|_| CoreError::UploadUnknown)?;
                let size = self.store.stage_size(id).await?.unwrap_or(0);
                let repo = RepoName::parse(&record.repo).ok_or(CoreError::UploadUnknown)?;
                self.sessions.insert(
                    id,
                    Session {
                        repo,
                        size,
                        hash: None,
                        closed: false,
                        cached: false,
                    },
                )
            }
        };
        // Bounded: another request on this upload (a chunk trickling in)
        // must not hold every later one, and its connection, for good.
        let mut guard = tokio::time::timeout(crate::UPLOAD_SESSION_WAIT, s.lock_owned())
            .await
            .map_err(|_| CoreError::UploadBusy)?;
        if guard.repo != *repo || guard.closed {
            return Err(CoreError::UploadUnknown);
        }
        // Another process sharing the store (a replica) may have appended
        // to it, finished it or cancelled it meanwhile: the store decides.
        match self.store.stage_size(id).await? {
            Some(n) if n == guard.size => {}
            Some(n) => {
                guard.size = n;
                guard.hash = None; // it did not see those bytes
            }
            None if guard.size == 0 && self.store.stat(&keys::upload(id)).await?.is_some() => {}
            None => {
                guard.closed = true;
                self.sessions.remove(id);
                return Err(CoreError::UploadUnknown);
            }
        }
        Ok(guard)
    }

    /// How many bytes an upload holds.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadState> {
        let size = self.session(repo, id).await?.size;
        Ok(UploadState {
            id: id.to_owned(),
            size,
        })
    }

    /// Appends a chunk. With `range`, it must start where the upload ends.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<UploadState> {
        let (me, repo, id) = (self.clone(), repo.clone(), id.to_owned());
        to_completion(async move {
            let mut s = me.session(&repo, &id).await?;
            me.append_locked(&id, &mut s, range, body).await?;
            Ok(UploadState { id, size: s.size })
        })
        .await
    }

    async fn append_locked(
        &self,
        id: &str,
        s: &mut Session,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<()> {
        check_start(range, s.size)?;
        let body = if s.size == 0 {
            let (body, known) = self.peek_opening(body).await;
            s.cached = known;
            body
        } else {
            body
        };
        let opened = if s.cached {
            self.store.stage_writer_cached(id, s.size).await
        } else {
            self.store.stage_writer(id, s.size).await
        };
        let writer = match opened {
            Ok(w) => w,
            // The disk disagrees with what this process recorded: believe
            // the disk, forget the running hash, and let the client resume.
            Err(StorageError::Offset { actual, .. }) => {
                s.size = actual;
                s.hash = None;
                return Err(CoreError::ChunkOutOfOrder { size: actual });
            }
            Err(e) => return Err(e.into()),
        };
        // A refused chunk is not appended: a length that disagrees with its
        // Content-Range, or a store that failed (a full disk), puts the
        // upload back as it was. A body that broke off (the client went
        // away) keeps what arrived, so the upload can be resumed from there.
        // The chunk is answered once written, its hashing maybe still at
        // work on a lane. A hash on a lane can't be set aside to be put
        // back: after a refused chunk the upload is hashed from disk at
        // the end.
        let (before, kept) = (s.size, s.hash.as_ref().and_then(|h| h.here().cloned()));
        // Where this chunk ended, when known: the cut is made only if the
        // upload still ends there (another replica may have appended).
        let mut ended = None;
        let result = match pump(body, writer, s.hash.take()).await {
            Ok((size, hash)) => match check_end(range, size) {
                Err(e) => {
                    ended = Some(size);
                    Err(e)
                }
                Ok(()) => {
                    s.size = size;
                    s.hash = hash;
                    return Ok(());
                }
            },
            Err(e @ CoreError::Body(_)) => {
                s.size = self.store.stage_size(id).await?.unwrap_or(0);
                return Err(e);
            }
            // Another process sharing the store appended meanwhile: cutting
            // back to where this chunk began would cut its bytes too.
            // Believe the store; the upload is hashed from it at the end.
            Err(CoreError::Storage(StorageError::Offset { actual, .. })) => {
                s.size = actual;
                return Err(CoreError::ChunkOutOfOrder { size: actual });
            }
            Err(e) => Err(e),
        };
        match self.store.stage_truncate(id, before, ended).await {
            Ok(()) => {
                s.size = before;
                s.hash = kept.map(RunningHash::Here);
            }
            // Could not cut back (or another replica appended after this
            // chunk): believe the store and forget the running hash, which
            // may disagree with it.
            Err(_) => {
                s.size = self.store.stage_size(id).await?.unwrap_or(0);
            }
        }
        result
    }

    /// Completes an upload: appends a last chunk if any, checks the digest,
    /// and makes the blob visible in `repo`.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: Option<ByteStream>,
    ) -> Result<()> {
        let (me, repo, id, digest) = (self.clone(), repo.clone(), id.to_owned(), digest.clone());
        to_completion(async move { me.finish_locked(&repo, &id, &digest, range, body).await }).await
    }

    async fn finish_locked(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: Option<ByteStream>,
    ) -> Result<()> {
        let mut s = self.session(repo, id).await?;
        let hashing = s
            .hash
            .as_ref()
            .is_some_and(|h| h.algorithm() == digest.algorithm());
        // The store holds this content: the last chunk is hashed and none
        // of it kept. The hash so far is settled first, so that a refused
        // chunk can put it back; one that failed leaves the chunk staged.
        let mut stored_from = None;
        if body.is_some() && hashing && self.is_stored(digest).await? {
            stored_from = match s.hash.take() {
                Some(h) => h.settle().await,
                None => None,
            };
            s.hash = stored_from.clone().map(RunningHash::Here);
        }
        let mut pin = None;
        match (body, stored_from) {
            (Some(body), Some(hasher)) => match self.pin(digest).await? {
                Some(p) => {
                    if let Err(e) = self.discard_locked(&mut s, range, body, hasher).await {
                        self.unpin(&p).await;
                        return Err(e);
                    }
                    pin = Some(p);
                }
                None => self.append_locked(id, &mut s, range, body).await?,
            },
            (Some(body), None) => self.append_locked(id, &mut s, range, body).await?,
            // Nothing was ever written (the empty blob): stage it empty.
            (None, _) if s.size == 0 => {
                let writer = self.store.stage_writer(id, 0).await.map_err(|e| match e {
                    // Another process appended meanwhile.
                    StorageError::Offset { actual, .. } => {
                        CoreError::ChunkOutOfOrder { size: actual }
                    }
                    e => e.into(),
                })?;
                writer.finish().await?;
            }
            (None, _) => {}
        }
        let settled = match s.hash.take() {
            Some(h) if h.algorithm() == digest.algorithm() => h.settle().await,
            _ => None,
        };
        let computed = match settled {
            Some(h) => h.finish(),
            None => self.rehash(id, digest.algorithm()).await?,
        };
        let result = if computed != *digest {
            Err(CoreError::DigestMismatch {
                declared: digest.clone(),
                computed,
            })
        } else {
            let committed = match &pin {
                Some(pin) => self.commit_pinned(repo, pin, digest, s.size).await,
                None => self.commit_blob(repo, id, digest, s.size).await,
            };
            if committed.is_ok() && s.size >= crate::openings::OPENING as u64 {
                self.note_opening(digest).await;
            }
            committed
        };
        if let Some(pin) = &pin {
            self.unpin(pin).await;
        }
        // The record before the stage, here as in cancel and expiry: while
        // the record lives, a replica may start a missing stage anew at 0.
        s.closed = true;
        self.store
            .delete(&keys::upload(id), Durability::Lazy)
            .await?;
        if result.is_err() || pin.is_some() {
            let _ = self.store.stage_delete(id).await;
        }
        self.sessions.remove(id);
        result
    }

    /// Like [`Registry::append_locked`] for a chunk of content the store
    /// already holds: hashed from `hasher` (the session's, settled),
    /// checked and dropped. A refused or broken chunk leaves the session
    /// as it was.
    async fn discard_locked(
        &self,
        s: &mut Session,
        range: Option<ChunkRange>,
        body: ByteStream,
        hasher: Hasher,
    ) -> Result<()> {
        check_start(range, s.size)?;
        let (got, hasher) = pump_hashed(body, Box::new(Discard::default()), hasher).await?;
        let size = s.size + got;
        check_end(range, size)?;
        s.size = size;
        s.hash = Some(RunningHash::Here(hasher));
        Ok(())
    }

    async fn is_stored(&self, digest: &Digest) -> Result<bool> {
        Ok(self.store.stat(&keys::blob(digest)).await?.is_some())
    }

    /// Pins stored content for a push that only hashes its body: a stage
    /// sharing the content's bytes, so that a collection pass that removes
    /// the content meanwhile cannot take it from under the push (the
    /// commit puts it back, as with an upload's own copy). `None` if the
    /// content is not there.
    async fn pin(&self, digest: &Digest) -> Result<Option<String>> {
        let id = uuid::Uuid::new_v4().to_string();
        self.sessions.set_pin(&id, true);
        // A pin that cannot be made (too many links) only means staging.
        if let Ok(true) = self.store.stage_from(&id, &keys::blob(digest)).await {
            Ok(Some(id))
        } else {
            self.sessions.set_pin(&id, false);
            Ok(None)
        }
    }

    /// Commits a push whose body was hashed and dropped: links, and if the
    /// content went meanwhile, puts the pin back, once its bytes proved to
    /// still match (a pin shares whatever is on disk, which scrub may have
    /// quarantined as corrupt while the push went on).
    async fn commit_pinned(
        &self,
        repo: &RepoName,
        pin: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let created = self.link_blob(repo, digest).await?;
        let put_back = self.put_back_pin(pin, digest, size).await;
        self.unlink_if_refused(put_back, repo, digest, created)
            .await
    }

    async fn put_back_pin(&self, pin: &str, digest: &Digest, size: u64) -> Result<()> {
        let key = keys::blob(digest);
        if self.store.stat(&key).await?.is_some() {
            return Ok(());
        }
        if self.rehash(pin, digest.algorithm()).await? != *digest {
            return Err(CoreError::UploadInvalid(format!(
                "the stored copy of {digest} went bad during this push: push it again"
            )));
        }
        self.store
            .stage_commit(pin, &key, size)
            .await
            .map_err(changed_meanwhile)
    }

    async fn unpin(&self, id: &str) {
        let _ = self.store.stage_delete(id).await;
        self.sessions.set_pin(id, false);
    }

    /// Uploads a whole blob in one request (POST with `digest`).
    pub async fn upload_whole(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<()> {
        let (me, repo, digest) = (self.clone(), repo.clone(), digest.clone());
        to_completion(async move { me.upload_whole_inner(&repo, &digest, body).await }).await
    }

    async fn upload_whole_inner(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<()> {
        // Content the store holds is hashed and dropped, under a pin;
        // anything else is staged.
        let (id, writer, pinned) = match self.pin(digest).await? {
            Some(pin) => (
                pin,
                Box::new(Discard::default()) as Box<dyn StageWriter>,
                true,
            ),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                let writer = self.store.stage_writer(&id, 0).await?;
                (id, writer, false)
            }
        };
        let pumped = pump_hashed(body, writer, digest.algorithm().hasher()).await;
        let result = match pumped {
            Err(e) => Err(e),
            Ok((size, hasher)) => {
                let computed = hasher.finish();
                if computed == *digest {
                    let committed = if pinned {
                        self.commit_pinned(repo, &id, digest, size).await
                    } else {
                        self.commit_blob(repo, &id, digest, size).await
                    };
                    if committed.is_ok() && size >= crate::openings::OPENING as u64 {
                        self.note_opening(digest).await;
                    }
                    committed
                } else {
                    Err(CoreError::DigestMismatch {
                        declared: digest.clone(),
                        computed,
                    })
                }
            }
        };
        if pinned {
            self.unpin(&id).await;
        } else if result.is_err() {
            let _ = self.store.stage_delete(&id).await;
        }
        result
    }

    /// Abandons an upload.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        let (me, repo, id) = (self.clone(), repo.clone(), id.to_owned());
        to_completion(async move {
            let mut s = me.session(&repo, &id).await?;
            // Closed from here. The record goes first: while it lives with
            // no stage, another replica may start the stage anew at 0 (same
            // length, other bytes) under a replica's running hash.
            s.closed = true;
            me.store
                .delete(&keys::upload(&id), Durability::Lazy)
                .await?;
            me.store.stage_delete(&id).await?;
            me.sessions.remove(&id);
            Ok(())
        })
        .await
    }

    /// Mounts a blob into `repo` from `from` (or, without `from`, from any
    /// repository of this registry); when it cannot, opens a session.
    pub async fn mount(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> Result<Mount> {
        let available = match from {
            Some(src) => self
                .store
                .stat(&keys::layer_link(src, digest))
                .await?
                .is_some(),
            None => true,
        };
        if available && self.store.stat(&keys::blob(digest)).await?.is_some() {
            // Link, then make sure the content is still there (see commit_blob).
            self.link_blob(repo, digest).await?;
            if self.store.stat(&keys::blob(digest)).await?.is_some() {
                return Ok(Mount::Mounted);
            }
            self.store
                .delete(&keys::layer_link(repo, digest), Durability::Durable)
                .await?;
        }
        Ok(Mount::Started(self.start_upload(repo).await?))
    }

    /// Removes sessions untouched for longer than the configured TTL, and
    /// those never written after [`crate::sessions::EMPTY_UPLOAD_TTL`].
    /// Returns how many were removed.
    pub async fn expire_uploads(&self) -> Result<usize> {
        let now = SystemTime::now();
        let ttl = self.options.upload_ttl;
        let mut last_touched: HashMap<String, SystemTime> =
            self.store.stage_list().await?.into_iter().collect();
        // Sessions opened but never written have a record and no stage.
        for entry in self.store.list(keys::UPLOADS).await? {
            if last_touched.contains_key(&entry.name)
                || berth_storage::check_id(&entry.name).is_err()
            {
                continue;
            }
            let started = match self.store.get(&keys::upload(&entry.name)).await? {
                Some(json) => serde_json::from_slice::<Record>(&json).map_or(0, |r| r.started),
                None => continue,
            };
            // Dated back so that the one TTL check below removes it once
            // it has been empty for EMPTY_UPLOAD_TTL.
            let early = ttl.saturating_sub(crate::sessions::EMPTY_UPLOAD_TTL);
            let dated = crate::pulls::stored_time(started, now).checked_sub(early);
            last_touched.insert(entry.name, dated.unwrap_or(SystemTime::UNIX_EPOCH));
        }
        let mut removed = 0;
        for (id, touched) in last_touched {
            if now.duration_since(touched).unwrap_or_default() < ttl {
                continue;
            }
            // Busy sessions are not expired under a client's feet; an idle
            // one is closed while held, so no request resumes it halfway.
            if self.sessions.pinned(&id) {
                continue;
            }
            let _held = match self.sessions.get(&id) {
                Some(s) => match s.try_lock_owned() {
                    Ok(mut g) => {
                        g.closed = true;
                        Some(g)
                    }
                    Err(_) => continue,
                },
                None => None,
            };
            // The record first (see cancel_upload).
            self.store
                .delete(&keys::upload(&id), Durability::Lazy)
                .await?;
            self.store.stage_delete(&id).await?;
            self.sessions.remove(&id);
            removed += 1;
        }
        Ok(removed)
    }

    async fn rehash(&self, id: &str, algorithm: Algorithm) -> Result<Digest> {
        let mut stream = self.store.stage_read(id, 0).await?;
        let mut h = algorithm.hasher();
        while let Some(chunk) = stream.next().await {
            h.update(&chunk.map_err(StorageError::Io)?);
        }
        Ok(h.finish())
    }

    /// Moves verified staged content (`size` bytes) to its content address
    /// and links it.
    pub(crate) async fn commit_blob(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        // Link first, then look at the content: garbage collection hides
        // content first, then looks for links. Whatever the interleaving,
        // either GC sees this link and keeps the content, or this sees the
        // content gone and puts its own verified copy in place.
        let created = self.link_blob(repo, digest).await?;
        let key = keys::blob(digest);
        let placed = if self.store.stat(&key).await?.is_some() {
            self.store.stage_delete(id).await.map_err(Into::into)
        } else {
            self.store
                .stage_commit(id, &key, size)
                .await
                .map_err(changed_meanwhile)
        };
        self.unlink_if_refused(placed, repo, digest, created).await
    }

    /// A link this push created is taken back when the content behind it
    /// could not be put in place and is not there: a manifest must not
    /// find a link with nothing behind it.
    async fn unlink_if_refused(
        &self,
        placed: Result<()>,
        repo: &RepoName,
        digest: &Digest,
        created: bool,
    ) -> Result<()> {
        if placed.is_err() && created && self.store.stat(&keys::blob(digest)).await?.is_none() {
            self.store
                .delete(&keys::layer_link(repo, digest), Durability::Durable)
                .await?;
        }
        placed
    }

    /// Links a blob into a repository, refreshing an existing link so that
    /// garbage collection sees it as new; whether the link is new.
    pub(crate) async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let link = keys::layer_link(repo, digest);
        let created = self.store.put_if_absent(&link, Bytes::new()).await?;
        if !created {
            self.store
                .put(&link, Bytes::new(), Durability::Durable)
                .await?;
        }
        self.note_repo(repo);
        Ok(created)
    }
}

/// A chunk must start where the upload ends.
fn check_start(range: Option<ChunkRange>, size: u64) -> Result<()> {
    match range {
        Some((start, _)) if start != size => Err(CoreError::ChunkOutOfOrder { size }),
        _ => Ok(()),
    }
}

/// A chunk must end where its Content-Range said.
fn check_end(range: Option<ChunkRange>, size: u64) -> Result<()> {
    match range {
        Some((start, end)) if size != end + 1 => Err(CoreError::SizeInvalid(format!(
            "Content-Range {start}-{end} but the chunk ended with the upload at {size} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Runs upload work on a task of its own, so that a client that goes away
/// cannot cut it short between writing bytes and recording them.
async fn to_completion<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| CoreError::Storage(StorageError::Io(std::io::Error::other(e))))?
}

/// A stage that no longer holds the bytes that were verified (a replica
/// sharing the store appended to it or cut it while this one completed
/// it) is not committed: the client is told its upload went wrong.
fn changed_meanwhile(e: StorageError) -> CoreError {
    match e {
        StorageError::Offset { expected, actual } => CoreError::UploadInvalid(format!(
            "the upload changed while it was completed ({actual} bytes staged, {expected} verified)"
        )),
        // Cancelled meanwhile.
        StorageError::NotFound => CoreError::UploadUnknown,
        e => e.into(),
    }
}
