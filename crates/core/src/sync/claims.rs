//! One upstream fetch of a blob among replicas that share a store. Within a
//! process, a `Flight` already gathers every client of a (repository,
//! digest). Across processes, the replica that creates the claim object
//! (create-once: `put_if_absent`) fetches; the others wait until the blob is
//! linked and stored, then serve it as a local blob. Nothing rests on a held
//! database connection: the holder refreshes its claim while it works, and
//! a claim left unrefreshed (a replica that died) is taken over.
//!
//! Bounds: a waiter polls at most every [`POLL`], waits at most
//! [`CLAIM_WAIT`] in all, and a claim is stale after [`CLAIM_STALE`]
//! without a refresh. A waiter that runs out of patience fetches by
//! itself, so the promise is at most one fetch per replica, and in the
//! common case one in all.

use crate::{keys, Registry, Result};
use berth_oci::{Digest, RepoName};
use berth_storage::{Backend, Durability};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often a fetching replica refreshes its claim.
const CLAIM_REFRESH: Duration = Duration::from_secs(5);
/// A claim not refreshed for this long belongs to a replica that stopped.
const CLAIM_STALE: Duration = Duration::from_secs(30);
/// The longest a replica waits for another's fetch before fetching itself.
const CLAIM_WAIT: Duration = Duration::from_secs(20);
/// The longest pause between two looks at another replica's fetch.
const POLL: Duration = Duration::from_millis(250);

/// What a replica about to fetch a blob learned from the claims.
pub(super) enum Claim {
    /// This replica fetches; the claim goes when this is dropped.
    Mine(Held),
    /// Another replica fetched it meanwhile: it is linked and stored.
    Landed,
    /// Another replica's fetch took too long: fetch without a claim.
    Unclaimed,
}

/// A claim this replica holds, refreshed in the background.
pub(super) struct Held {
    store: Arc<dyn Backend>,
    key: String,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(refresher) = self.refresher.take() else {
            return;
        };
        refresher.abort();
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // No refresh may land after the removal.
                let _ = refresher.await;
                if let Err(e) = store.delete(&key, Durability::Lazy).await {
                    // Left behind, it goes stale and is taken over.
                    tracing::warn!(error = %e, "could not remove a pull-through claim");
                }
            });
        }
    }
}

impl Registry {
    /// Whether `digest` is both linked into `repo` and stored.
    pub(super) async fn landed(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self
            .store
            .stat(&keys::layer_link(repo, digest))
            .await?
            .is_some()
            && self.store.stat(&keys::blob(digest)).await?.is_some())
    }

    /// Claims the fetch of `digest` for `repo`, or waits for the replica
    /// that holds the claim.
    pub(super) async fn claim_fetch(&self, repo: &RepoName, digest: &Digest) -> Result<Claim> {
        let key = keys::sync_claim(repo, digest);
        let token = Bytes::from(uuid::Uuid::new_v4().simple().to_string());
        let began = Instant::now();
        let mut pause = Duration::from_millis(20);
        // The claim's last refresh as the store stamped it, and when this
        // replica first saw that stamp: a claim is stale once its stamp
        // has not changed for `CLAIM_STALE` by this replica's clock (no
        // two clocks are compared).
        let mut seen: Option<(SystemTime, Instant)> = None;
        loop {
            if self.landed(repo, digest).await? {
                return Ok(Claim::Landed);
            }
            if self.store.put_if_absent(&key, token.clone()).await? {
                let held = self.hold(key, token);
                // The last holder may have landed it and let go between
                // the two looks.
                if self.landed(repo, digest).await? {
                    return Ok(Claim::Landed);
                }
                return Ok(Claim::Mine(held));
            }
            // Gone between the two looks: tried again after the pause.
            if let Some(stamp) = self.store.modified(&key).await? {
                match seen {
                    Some((s, since)) if s == stamp => {
                        if since.elapsed() >= CLAIM_STALE {
                            // Two waiters may both take it over: then each
                            // fetches, still at most one per replica.
                            tracing::warn!(%repo, %digest, "taking over a stale pull-through claim");
                            self.store.delete(&key, Durability::Lazy).await?;
                            seen = None;
                            continue;
                        }
                    }
                    _ => seen = Some((stamp, Instant::now())),
                }
            }
            if began.elapsed() >= CLAIM_WAIT {
                return Ok(Claim::Unclaimed);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL);
        }
    }

    fn hold(&self, key: String, token: Bytes) -> Held {
        let store = self.store.clone();
        let k = key.clone();
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(CLAIM_REFRESH).await;
                // Taken over (this replica looked stale): no longer ours.
                if !matches!(store.get(&k).await, Ok(Some(t)) if t == token) {
                    return;
                }
                if let Err(e) = store.put(&k, token.clone(), Durability::Lazy).await {
                    tracing::warn!(error = %e, "could not refresh a pull-through claim");
                }
            }
        });
        Held {
            store: self.store.clone(),
            key,
            refresher: Some(refresher),
        }
    }
}
