//! The upload sessions a process serves, each behind its own lock (see
//! `uploads`), and the bound on how many it holds open.

use crate::pump::RunningHash;
use berth_oci::RepoName;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The most upload sessions a process holds open (begun and neither
/// finished, cancelled nor expired). Past it a new upload is refused with
/// 429: a client opening sessions in a loop would otherwise grow memory
/// and the store's records without end. Legitimate pushes hold a few per
/// layer in flight; abandoned ones go at expiry.
pub const MAX_OPEN_UPLOADS: usize = 50_000;

/// How long a session that never received a byte is kept (opening one
/// costs a client nothing; the configured TTL applies once it holds bytes,
/// when shorter).
pub const EMPTY_UPLOAD_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

pub(crate) struct Session {
    pub(crate) repo: RepoName,
    /// Bytes staged so far.
    pub(crate) size: u64,
    /// Running hash of those bytes, if this process saw all of them; it
    /// may still be hashing the last chunk's tail (see [`crate::pump`]).
    pub(crate) hash: Option<RunningHash>,
    /// Finished, cancelled or expired: requests that queued on the lock
    /// meanwhile find the session unknown.
    pub(crate) closed: bool,
    /// Its first chunk opened like content the store holds: stage it
    /// where dropping costs nothing (see [`crate::openings`]).
    pub(crate) cached: bool,
}

/// Live sessions of this process, each behind its own lock so that two
/// requests on one upload are serialized and different uploads never wait
/// for each other.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Session>>>>,
    /// Stages that pin stored content while a push of it is hashed (see
    /// [`Registry::pin`]); expiry leaves them alone.
    pins: Mutex<std::collections::HashSet<String>>,
    pub(crate) openings: crate::openings::Openings,
}

impl Sessions {
    /// Upload sessions this process is serving now.
    pub fn live(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Session>>> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Adds a new session, unless [`MAX_OPEN_UPLOADS`] are open.
    pub(crate) fn open(&self, id: &str, s: Session) -> Option<Arc<tokio::sync::Mutex<Session>>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.len() >= MAX_OPEN_UPLOADS {
            return None;
        }
        let s = Arc::new(tokio::sync::Mutex::new(s));
        Some(live.entry(id.to_owned()).or_insert(s).clone())
    }

    pub(crate) fn insert(&self, id: &str, s: Session) -> Arc<tokio::sync::Mutex<Session>> {
        let s = Arc::new(tokio::sync::Mutex::new(s));
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_insert(s)
            .clone()
    }

    pub(crate) fn remove(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub(crate) fn pinned(&self, id: &str) -> bool {
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    pub(crate) fn set_pin(&self, id: &str, on: bool) {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            pins.insert(id.to_owned());
        } else {
            pins.remove(id);
        }
    }
}
