//! One collection pass at a time per store. A pass (garbage collection with
//! retention, or the start-up recovery of an interrupted one) holds a lease:
//! an object created once at `gc-lease`, refreshed while the pass works and
//! removed when it ends. A second collector, in this process or another
//! (`berth gc` beside a running server), finds the lease held and stays out,
//! so it can neither put back what the first has hidden nor hide what the
//! first is restoring. A lease left by a pass that died is taken over once
//! it has not been refreshed for [`LEASE_TTL`], or at once when it names a
//! process of this machine (host name and boot) that no longer runs (a Berth killed mid-pass and
//! started again recovers its hidden objects at start-up). A pass cut short
//! by shutdown is undone by [`Registry::end_collection`].

use crate::{keys, CoreError, Registry, Result};
use berth_storage::{Durability, StorageError};
use bytes::Bytes;
use std::time::{Duration, Instant, SystemTime};

/// How long an unrefreshed lease keeps other collectors out.
pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// How often a working pass refreshes its lease.
const REFRESH: Duration = Duration::from_secs(30);

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    holder: Bytes,
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
        let lease = || Lease {
            holder: holder.clone(),
            refreshed: Instant::now(),
        };
        if self
            .store
            .put_if_absent(keys::GC_LEASE, holder.clone())
            .await?
        {
            return Ok(self.held(lease()));
        }
        let stale_since = SystemTime::now()
            .checked_sub(LEASE_TTL)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let seen = self.store.get(keys::GC_LEASE).await?;
        let dead = seen.as_deref().is_some_and(died_here);
        match self.store.modified(keys::GC_LEASE).await? {
            Some(t) if t >= stale_since && !dead => return Err(CoreError::Busy),
            _ => {}
        }
        // Stale: move it aside atomically (only one taker can), and keep it
        // only if what moved is the lease judged stale, not a fresh one
        // written meanwhile by another taker.
        let aside = keys::gc_lease_aside(&uuid::Uuid::new_v4().simple().to_string());
        match self
            .store
            .rename(keys::GC_LEASE, &aside, Durability::Lazy)
            .await
        {
            Ok(()) => {}
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let moved = self.store.get(&aside).await?;
        self.store.delete(&aside, Durability::Lazy).await?;
        if let Some(moved) = moved.filter(|m| Some(m) != seen.as_ref()) {
            self.store.put_if_absent(keys::GC_LEASE, moved).await?;
            return Err(CoreError::Busy);
        }
        if self
            .store
            .put_if_absent(keys::GC_LEASE, holder.clone())
            .await?
        {
            tracing::warn!("took over the collection lease of a pass that stopped refreshing it");
            Ok(self.held(lease()))
        } else {
            Err(CoreError::Busy)
        }
    }

    /// Refreshes the lease when it is due; fails if another collector took
    /// it over (this pass was presumed dead and must stop).
    pub(crate) async fn keep_lease(&self, lease: &mut Lease) -> Result<()> {
        if lease.refreshed.elapsed() < REFRESH {
            return Ok(());
        }
        if self.store.get(keys::GC_LEASE).await?.as_ref() != Some(&lease.holder) {
            return Err(CoreError::Busy);
        }
        self.store
            .put(keys::GC_LEASE, lease.holder.clone(), Durability::Lazy)
            .await?;
        lease.refreshed = Instant::now();
        Ok(())
    }

    fn held(&self, lease: Lease) -> Lease {
        *self.held_lease.lock().unwrap_or_else(|p| p.into_inner()) = Some(lease.holder.clone());
        lease
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
        let Some(holder) = held else {
            return Ok(());
        };
        if self.store.get(keys::GC_LEASE).await?.as_ref() == Some(&holder) {
            self.recover_trash().await?;
            self.store
                .delete(keys::GC_LEASE, Durability::Durable)
                .await?;
        }
        Ok(())
    }

    /// Ends a pass: removes the lease if it is still this pass's.
    pub(crate) async fn release_lease(&self, lease: Lease) -> Result<()> {
        self.held_lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if self.store.get(keys::GC_LEASE).await?.as_ref() == Some(&lease.holder) {
            self.store
                .delete(keys::GC_LEASE, Durability::Durable)
                .await?;
        }
        Ok(())
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
