//! Copies a whole store into another of any kind (`berth migrate`): the
//! filesystem into the shared store and back.
//!
//! Everything that matters is copied key by key: content first (each blob
//! streamed and hashed on the way, committed at its address only when it
//! matches, so nothing half-copied is ever visible), then repositories
//! (links, manifests' media types, tags, referrers, pull times), then
//! accounts (API keys, sessions). Upload sessions, the collector's trash and
//! lease, and quarantined content are left behind. The destination decides
//! what is left to do, so a run that stopped is finished by running it
//! again: content already at its address with its size is skipped, small
//! objects equal to the source's are skipped, the others are written over.
//! The source must not be served while it is copied.
//!
//! Modification times are not carried (a store cannot be told them): tags
//! and links take the time of the copy, which retention then reads as their
//! push time.

use crate::{keys, Registry, Result};
use berth_oci::Digest;
use berth_storage::{Backend, Durability};
use futures_util::StreamExt;

/// What a migration did.
#[derive(Debug, Default, Clone)]
pub struct MigrateReport {
    /// Objects written to the destination by this run, and their bytes.
    pub copied: usize,
    pub bytes: u64,
    /// Objects the destination already held as in the source.
    pub present: usize,
    /// Objects (copied or present) read back from the destination with
    /// the source's size after the copy (content copied by this run was
    /// also hashed on the way in).
    pub verified: usize,
    pub problems: Vec<String>,
}

/// The parts of a store that are copied, in this order.
const PARTS: [&str; 4] = [
    keys::BLOBS,
    keys::REPOSITORIES,
    keys::API_KEYS,
    keys::SESSIONS,
];

/// Every object key under `prefix` of `store`, depth first.
async fn keys_under(store: &dyn Backend, prefix: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut pending = vec![prefix.to_owned()];
    while let Some(dir) = pending.pop() {
        for e in store.list(&dir).await? {
            let key = format!("{dir}/{}", e.name);
            if e.is_dir {
                pending.push(key);
            } else if let Some(size) = store.stat(&key).await? {
                out.push((key, size));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The digest a content key names (`blobs/<alg>/<xx>/<hex>`).
fn digest_of(key: &str) -> Option<Digest> {
    let mut parts = key.split('/');
    let (_, alg, _, hex) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    format!("{alg}:{hex}").parse().ok()
}

/// Copies one blob, hashing it; commits it only if it matches its address.
async fn copy_content(
    from: &dyn Backend,
    to: &dyn Backend,
    key: &str,
    digest: &Digest,
) -> std::result::Result<u64, String> {
    let id = uuid::Uuid::new_v4().to_string();
    let copied = async {
        let mut body = from.read(key, 0, None).await.map_err(|e| e.to_string())?;
        let mut writer = to.stage_writer(&id, 0).await.map_err(|e| e.to_string())?;
        let mut hasher = digest.algorithm().hasher();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            hasher.update(&chunk);
            writer.write(chunk).await.map_err(|e| e.to_string())?;
        }
        let size = writer.finish().await.map_err(|e| e.to_string())?;
        let got = hasher.finish();
        if got != *digest {
            return Err(format!("content is {got}, not what its address says"));
        }
        to.stage_commit(&id, key, size)
            .await
            .map_err(|e| e.to_string())?;
        Ok(size)
    }
    .await;
    if copied.is_err() {
        let _ = to.stage_delete(&id).await;
    }
    copied
}

impl Registry {
    /// Copies this registry's store into `to` (see the module
    /// documentation), calling `progress` after each object.
    pub async fn migrate_to(
        &self,
        to: &dyn Backend,
        mut progress: impl FnMut(&MigrateReport),
    ) -> Result<MigrateReport> {
        let from = self.store.as_ref();
        let mut report = MigrateReport::default();
        let mut done = Vec::new();
        for part in PARTS {
            for (key, size) in keys_under(from, part).await? {
                if part == keys::BLOBS {
                    let Some(digest) = digest_of(&key) else {
                        report
                            .problems
                            .push(format!("{key}: not a content address"));
                        continue;
                    };
                    if to.stat(&key).await? == Some(size) {
                        report.present += 1;
                        done.push((key, size));
                    } else {
                        match copy_content(from, to, &key, &digest).await {
                            Ok(n) => {
                                report.copied += 1;
                                report.bytes = report.bytes.saturating_add(n);
                                done.push((key, size));
                            }
                            Err(e) => report.problems.push(format!("{key}: {e}")),
                        }
                    }
                } else {
                    let Some(data) = from.get(&key).await? else {
                        continue; // removed meanwhile
                    };
                    if to.get(&key).await?.as_ref() == Some(&data) {
                        report.present += 1;
                        done.push((key, size));
                    } else {
                        to.put(&key, data, Durability::Durable).await?;
                        report.copied += 1;
                        report.bytes = report.bytes.saturating_add(size);
                        done.push((key, size));
                    }
                }
                progress(&report);
            }
        }
        for (key, size) in &done {
            match to.stat(key).await? {
                Some(n) if n == *size => report.verified += 1,
                other => report
                    .problems
                    .push(format!("{key}: reads back as {other:?} bytes, not {size}")),
            }
        }
        Ok(report)
    }
}
