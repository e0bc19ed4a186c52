//! When each manifest was last pulled, for retention's `pulledWithin` and
//! `mostRecentlyPulledCount`: noted in memory on each manifest GET (at most
//! once a minute per manifest) and written to `repositories/<r>/_pulls` by
//! the pull-time worker and at shutdown. Stored times are read back
//! saturating, so a corrupt file cannot overflow a clock.

use crate::{keys, Registry, Result};
use berth_oci::{Digest, RepoName};
use berth_storage::Durability;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Pull times are noted at most this often per manifest.
const PULL_RESOLUTION: u64 = 60;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A time stored as seconds since the Unix epoch, read back. Stored numbers
/// may be corrupt: one past what `SystemTime` can hold reads as `now` (for a
/// pull time: just pulled, so nothing is removed on its account) instead of
/// overflowing.
pub(crate) fn stored_time(secs: u64, now: SystemTime) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(now)
}

impl Registry {
    /// Notes that a manifest was served (for `pulledWithin` and
    /// `mostRecentlyPulledCount`). Memory only; see [`Registry::flush_pulls`].
    pub fn note_pull(&self, repo: &RepoName, digest: &Digest) {
        let now = unix(SystemTime::now());
        let mut pulls = self.noted_pulls();
        // Every manifest GET comes here: no allocation when already noted.
        if let Some(at) = pulls.get_mut(repo).and_then(|m| m.get_mut(digest)) {
            if now >= *at + PULL_RESOLUTION {
                *at = now;
            }
            return;
        }
        pulls
            .entry(repo.clone())
            .or_default()
            .insert(digest.clone(), now);
    }

    /// Writes the pull times noted since the last flush (merged with what
    /// is stored, the later time winning). A time leaves memory only once
    /// it is written, so retention (which reads both) sees it throughout,
    /// and a flush that fails or is cut short loses nothing: the next one
    /// writes it. Every repository is tried; the first error is returned.
    pub async fn flush_pulls(&self) -> Result<()> {
        let repos: Vec<RepoName> = self.noted_pulls().keys().cloned().collect();
        let mut failed = None;
        for repo in repos {
            if let Err(e) = self.flush_repo_pulls(&repo).await {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    async fn flush_repo_pulls(&self, repo: &RepoName) -> Result<()> {
        let Some(times) = self.noted_pulls().get(repo).cloned() else {
            return Ok(());
        };
        {
            // Read, merge and write in one turn: replicas flushing the same
            // repository at once lose none of each other's times.
            let _turn = self.store.exclusive(&keys::pulls(repo)).await?;
            let mut stored = self.stored_pulls(repo).await?;
            for (d, &t) in &times {
                let at = stored.entry(d.to_string()).or_insert(0);
                *at = (*at).max(t);
            }
            self.write_pulls(repo, &stored).await?;
        }
        // Written: forget what was, unless noted again meanwhile.
        let mut noted = self.noted_pulls();
        if let Some(m) = noted.get_mut(repo) {
            m.retain(|d, t| times.get(d).is_none_or(|w| *t > *w));
            if m.is_empty() {
                noted.remove(repo);
            }
        }
        Ok(())
    }

    /// Forgets what memory holds of these manifests' pull times.
    pub(crate) fn forget_noted_pulls<'a>(
        &self,
        repo: &RepoName,
        digests: impl Iterator<Item = &'a Digest>,
    ) {
        let mut noted = self.noted_pulls();
        if let Some(m) = noted.get_mut(repo) {
            for d in digests {
                m.remove(d);
            }
            if m.is_empty() {
                noted.remove(repo);
            }
        }
    }

    fn noted_pulls(&self) -> std::sync::MutexGuard<'_, crate::PullTimes> {
        self.pulls.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn stored_pulls(&self, repo: &RepoName) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .store
            .get(&keys::pulls(repo))
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    pub(crate) async fn write_pulls(
        &self,
        repo: &RepoName,
        times: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let json = serde_json::to_vec(times).unwrap_or_default();
        self.store
            .put(&keys::pulls(repo), Bytes::from(json), Durability::Lazy)
            .await?;
        Ok(())
    }

    /// When each manifest of a repository was last pulled.
    pub async fn pull_times(&self, repo: &RepoName) -> Result<HashMap<Digest, SystemTime>> {
        let mut out: HashMap<Digest, u64> = self
            .stored_pulls(repo)
            .await?
            .into_iter()
            .filter_map(|(d, t)| Some((d.parse().ok()?, t)))
            .collect();
        if let Some(pending) = self.noted_pulls().get(repo) {
            for (d, &t) in pending {
                let at = out.entry(d.clone()).or_insert(0);
                *at = (*at).max(t);
            }
        }
        let now = SystemTime::now();
        Ok(out
            .into_iter()
            .map(|(d, t)| (d, stored_time(t, now)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn digest(n: u8) -> Digest {
        Digest::of(berth_oci::Algorithm::Sha256, &[n])
    }

    fn mem_registry() -> Registry {
        Registry::new(
            Arc::new(berth_storage::mem::MemBackend::new()),
            crate::Options::default(),
        )
    }

    /// Stored pull times past what `SystemTime` holds (before the fix,
    /// `UNIX_EPOCH + secs` panicked and took the GC pass with it).
    #[tokio::test]
    async fn corrupt_pull_times_read_without_panicking() {
        let reg = mem_registry();
        let repo = RepoName::parse("corrupt/pulls").unwrap();
        let (a, b) = (digest(1), digest(2));
        let stored = serde_json::json!({ a.as_str(): u64::MAX, b.as_str(): 1_000u64 });
        reg.store
            .put(
                &keys::pulls(&repo),
                Bytes::from(stored.to_string()),
                Durability::Durable,
            )
            .await
            .unwrap();
        let before = SystemTime::now();
        let times = reg.pull_times(&repo).await.unwrap();
        assert!(times[&a] >= before && times[&a] <= SystemTime::now());
        assert_eq!(times[&b], UNIX_EPOCH + Duration::from_secs(1_000));
    }

    /// An upload record whose start time is `u64::MAX` (before the fix,
    /// the expiry loop panicked on it).
    #[tokio::test]
    async fn corrupt_upload_start_time_does_not_panic_expiry() {
        let reg = mem_registry();
        let record = serde_json::json!({ "repo": "r", "started": u64::MAX });
        reg.store
            .put(
                &keys::upload("0a1b2c3d-corrupt"),
                Bytes::from(record.to_string()),
                Durability::Durable,
            )
            .await
            .unwrap();
        reg.expire_uploads().await.unwrap();
        assert_eq!(stored_time(u64::MAX, UNIX_EPOCH), UNIX_EPOCH);
        assert_eq!(
            stored_time(60, SystemTime::now()),
            UNIX_EPOCH + Duration::from_secs(60)
        );
    }
}
