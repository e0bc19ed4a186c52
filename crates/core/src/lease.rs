//! One collection pass at a time per store. A pass (garbage collection with
//! retention, or the start-up recovery of an interrupted one) holds a lease:
//! the newest object of a ladder `gc-leases/<generation>`. Each generation
//! is created once (`put_if_absent`), so the store alone decides every race:
//!
//! - Taking the lease creates the generation after the newest, and only
//!   when the newest is free: a release mark, or a holder that has not
//!   refreshed it for [`LEASE_TTL`], or one that names a process of this
//!   machine (host name and boot) that no longer runs (a Berth killed
//!   mid-pass and started again recovers its hidden objects at start-up).
//!   Of two takers, one creates that generation and the other finds it;
//!   a taker whose write lands after others took, released and removed
//!   that generation sees a newer one and gives it up.
//! - A pass holds the lease while its generation is the newest. It
//!   refreshes by rewriting its own generation's object (nobody else ever
//!   writes it), then looks whether a newer one appeared: if so it was
//!   presumed dead and taken over, and it stops.
//! - A pass ends by creating the next generation as a release mark, which
//!   fails harmlessly if a taker created it first.
//!
//! So neither a refresh nor a release can undo a takeover, whatever stalls
//! where (an earlier single object, read and then rewritten, could). A
//! taker removes the generations older than the one it superseded, so the
//! ladder stays at two or three objects. What no lease can rule out: a pass
//! that stalls for longer than [`LEASE_TTL`] after it last looked works on
//! until its next look (at most [`REFRESH`] of work). A pass cut short by
//! shutdown is undone by [`Registry::end_collection`].

use crate::{keys, CoreError, Registry, Result};
use berth_storage::Durability;
use bytes::Bytes;
use std::time::{Duration, Instant, SystemTime};

/// How long an unrefreshed lease keeps other collectors out.
pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// How often a working pass refreshes its lease.
const REFRESH: Duration = Duration::from_secs(30);
/// What a generation holds once its pass ended.
const RELEASED: &[u8] = b"released";

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    holder: Bytes,
    generation: u64,
    refreshed: Instant,
}

impl Registry {
    /// Takes the lease, or `CoreError::Busy` when a live pass holds it.
    pub(crate) async fn take_lease(&self) -> Result<Lease> {
        let holder = Bytes::from(format!(
            "{} pid {} machine {}",
            uuid::Uuid::new_v4().simple(),
            std::process::id(),
            this_machine().unwrap_or_else(|| "unknown".into())
        ));
        let stale_since = SystemTime::now()
            .checked_sub(LEASE_TTL)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if self.legacy_lease_held(stale_since).await? {
            return Err(CoreError::Busy);
        }
        let generations = self.lease_generations().await?;
        let next = match generations.last() {
            None => 1,
            Some(&newest) => {
                let key = keys::gc_lease(newest);
                // Gone meanwhile: only a taker of a newer one removes it.
                let Some(seen) = self.store.get(&key).await? else {
                    return Err(CoreError::Busy);
                };
                if seen != RELEASED {
                    let dead = died_here(&seen);
                    match self.store.modified(&key).await? {
                        Some(t) if t >= stale_since && !dead => return Err(CoreError::Busy),
                        None => return Err(CoreError::Busy),
                        Some(_) => tracing::warn!(
                            "taking over the collection lease of a pass that stopped refreshing it"
                        ),
                    }
                }
                newest + 1
            }
        };
        if !self
            .store
            .put_if_absent(&keys::gc_lease(next), holder.clone())
            .await?
        {
            return Err(CoreError::Busy);
        }
        // A taker that stalled before its write may have created a
        // generation others already went past and removed: it holds only
        // if nothing newer exists.
        if !self.lease_is_newest(next).await? {
            let _ = self
                .store
                .delete(&keys::gc_lease(next), Durability::Lazy)
                .await;
            return Err(CoreError::Busy);
        }
        // The generation superseded stays (its holder may still look);
        // older ones are of no use to anyone.
        for &old in generations.iter().filter(|&&g| g + 1 < next) {
            if let Err(e) = self
                .store
                .delete(&keys::gc_lease(old), Durability::Lazy)
                .await
            {
                tracing::warn!(error = %e, "could not remove an old collection lease");
            }
        }
        *self.held_lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(next);
        Ok(Lease {
            holder,
            generation: next,
            refreshed: Instant::now(),
        })
    }

    /// Refreshes the lease when it is due; fails if another collector took
    /// it over (this pass was presumed dead and must stop).
    pub(crate) async fn keep_lease(&self, lease: &mut Lease) -> Result<()> {
        if lease.refreshed.elapsed() < REFRESH {
            return Ok(());
        }
        // Its own generation, which no one else writes; then the look, so
        // that a takeover decided on the old stamp is seen at once.
        self.store
            .put(
                &keys::gc_lease(lease.generation),
                lease.holder.clone(),
                Durability::Lazy,
            )
            .await?;
        if !self.lease_is_newest(lease.generation).await? {
            return Err(CoreError::Busy);
        }
        lease.refreshed = Instant::now();
        Ok(())
    }

    /// At shutdown, after the workers were stopped: a pass this process had
    /// running was cut short, so put back what it hid and give up its
    /// lease (else the next start would wait for the lease to go stale).
    pub async fn end_collection(&self) -> Result<()> {
        let held = self
            .held_lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(generation) = held else {
            return Ok(());
        };
        if self.lease_is_newest(generation).await? {
            self.recover_trash().await?;
            self.mark_released(generation).await?;
        }
        Ok(())
    }

    /// Ends a pass: the next generation, unless a taker made it first.
    pub(crate) async fn release_lease(&self, lease: Lease) -> Result<()> {
        self.held_lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.mark_released(lease.generation).await
    }

    async fn mark_released(&self, generation: u64) -> Result<()> {
        self.store
            .put_if_absent(
                &keys::gc_lease(generation + 1),
                Bytes::from_static(RELEASED),
            )
            .await?;
        Ok(())
    }

    async fn lease_is_newest(&self, generation: u64) -> Result<bool> {
        Ok(self.lease_generations().await?.last() == Some(&generation))
    }

    /// The generations present, oldest first.
    async fn lease_generations(&self) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = self
            .store
            .list(keys::GC_LEASES)
            .await?
            .iter()
            .filter(|e| !e.is_dir)
            .filter_map(|e| keys::gc_lease_generation(&e.name))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Whether a Berth from before the ladder holds its single lease
    /// object (replicas of two versions side by side during an upgrade).
    /// A stale one is removed. That Berth does not see the ladder, so while
    /// versions are mixed only the newer ones keep out of its way.
    async fn legacy_lease_held(&self, stale_since: SystemTime) -> Result<bool> {
        let Some(seen) = self.store.get(keys::LEGACY_GC_LEASE).await? else {
            return Ok(false);
        };
        let fresh = !died_here(&seen)
            && self
                .store
                .modified(keys::LEGACY_GC_LEASE)
                .await?
                .is_some_and(|t| t >= stale_since);
        if !fresh {
            self.store
                .delete(keys::LEGACY_GC_LEASE, Durability::Lazy)
                .await?;
        }
        Ok(fresh)
    }
}

/// This machine as lease holders record it: its host name and the kernel's
/// boot id (a process of another boot is certainly gone). `None` where
/// either cannot be read (no `/proc`): then no holder is ever judged dead
/// early, only stale.
fn this_machine() -> Option<String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
    };
    let host = read("/proc/sys/kernel/hostname")?;
    let boot = read("/proc/sys/kernel/random/boot_id")?;
    std::path::Path::new("/proc/self")
        .exists()
        .then(|| format!("{host}/{boot}"))
}

/// Whether a lease names a process of this machine (same host name, same
/// boot), other than this one, that no longer runs.
fn died_here(holder: &[u8]) -> bool {
    let Some(here) = this_machine() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(holder) else {
        return false;
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .copied()
    };
    let (Some(pid), Some(machine)) = (
        field("pid").and_then(|p| p.parse::<u32>().ok()),
        field("machine"),
    ) else {
        return false;
    };
    machine == here
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_storage::mem::MemBackend;
    use berth_storage::pause::{Op, Pausing, When};
    use berth_storage::Backend;
    use std::sync::Arc;

    /// Two replicas (or a server and `berth gc`) over one store.
    fn two() -> (Arc<Pausing>, Registry, Registry) {
        let store = Arc::new(Pausing::new(Arc::new(MemBackend::new())));
        let a = Registry::new(store.clone(), crate::Options::default());
        let b = Registry::new(store.clone(), crate::Options::default());
        (store, a, b)
    }

    fn due(lease: &mut Lease) {
        lease.refreshed = Instant::now().checked_sub(REFRESH * 2).unwrap();
    }

    fn lease_key(k: &str) -> bool {
        k.starts_with("gc-lease")
    }

    /// A refresh that stalls while another collector takes the lease over
    /// (the holder looked dead) does not take it back: the refresher learns
    /// it lost, the taker keeps it, and a third collector stays out.
    #[tokio::test]
    async fn a_stalled_refresh_does_not_undo_a_takeover() {
        let (store, a, b) = two();
        let mut first = a.take_lease().await.unwrap();
        due(&mut first);
        let mut stop = store.pause("a", Op::Put, When::Before, lease_key);
        let refresh = tokio::spawn(Pausing::act(
            "a",
            async move { a.keep_lease(&mut first).await },
        ));
        stop.reached().await;
        store.age_everything();
        let mut second = b.take_lease().await.unwrap();
        stop.release();
        assert!(matches!(refresh.await.unwrap(), Err(CoreError::Busy)));
        due(&mut second);
        b.keep_lease(&mut second).await.unwrap();
        assert!(matches!(b.take_lease().await, Err(CoreError::Busy)));
    }

    /// The same for a pass that ends: its release, stalled across a
    /// takeover, leaves the taker's lease in force.
    #[tokio::test]
    async fn a_stalled_release_does_not_undo_a_takeover() {
        let (store, a, b) = two();
        let first = a.take_lease().await.unwrap();
        let mut stop = store.pause("a", Op::PutIfAbsent, When::Before, lease_key);
        let third = a.clone();
        let release = tokio::spawn(Pausing::act(
            "a",
            async move { a.release_lease(first).await },
        ));
        stop.reached().await;
        store.age_everything();
        let mut second = b.take_lease().await.unwrap();
        stop.release();
        release.await.unwrap().unwrap();
        due(&mut second);
        b.keep_lease(&mut second).await.unwrap();
        assert!(matches!(third.take_lease().await, Err(CoreError::Busy)));
        b.release_lease(second).await.unwrap();
        third.take_lease().await.unwrap();
    }

    /// A taker that stalls before it writes its generation, while others
    /// take, release and tidy that generation away, does not hold the
    /// lease when its write lands on the emptied name.
    #[tokio::test]
    async fn a_stalled_taker_does_not_hold_a_generation_gone_by() {
        let (store, a, b) = two();
        let mut stop = store.pause("a", Op::PutIfAbsent, When::Before, lease_key);
        let taker = a.clone();
        let late = tokio::spawn(Pausing::act("a", async move { taker.take_lease().await }));
        stop.reached().await;
        let second = b.take_lease().await.unwrap();
        b.release_lease(second).await.unwrap();
        let _third = b.take_lease().await.unwrap();
        stop.release();
        assert!(matches!(late.await.unwrap(), Err(CoreError::Busy)));
        assert!(matches!(a.take_lease().await, Err(CoreError::Busy)));
    }

    /// Passes one after another keep the ladder at a few objects.
    #[tokio::test]
    async fn the_ladder_stays_short() {
        let (store, a, b) = two();
        for r in [&a, &b].into_iter().cycle().take(10) {
            let lease = r.take_lease().await.unwrap();
            r.release_lease(lease).await.unwrap();
        }
        let kept = store.list(keys::GC_LEASES).await.unwrap();
        assert!(kept.len() <= 3, "{} generations kept", kept.len());
        assert_eq!(a.lease_generations().await.unwrap().last(), Some(&20));
    }

    /// A Berth from before the ladder holds a single object: while it is
    /// fresh no pass starts; once stale it is removed and passes run.
    #[tokio::test]
    async fn the_single_lease_object_of_an_older_berth_is_honoured() {
        let (store, a, _) = two();
        store
            .put_if_absent(keys::LEGACY_GC_LEASE, Bytes::from_static(b"older berth"))
            .await
            .unwrap();
        assert!(matches!(a.take_lease().await, Err(CoreError::Busy)));
        store.age_everything();
        let lease = a.take_lease().await.unwrap();
        assert_eq!(store.get(keys::LEGACY_GC_LEASE).await.unwrap(), None);
        a.release_lease(lease).await.unwrap();
    }
}
