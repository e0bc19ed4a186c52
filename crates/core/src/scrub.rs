//! Scrub: re-hash every stored blob and manifest and take out of service
//! any whose bytes no longer match their digest. A quarantined object is
//! moved under `quarantine/` (kept for inspection, never served): a pull of
//! it fails with BLOB_UNKNOWN instead of returning bad bytes, and pushing
//! the same content again repairs it.

use crate::{keys, Registry, Result};
use berth_oci::{Algorithm, Digest};
use berth_storage::StorageError;
use futures_util::StreamExt;

/// What a scrub pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    pub checked: u64,
    pub bytes: u64,
    /// Digests whose content did not match; now quarantined.
    pub corrupt: Vec<Digest>,
}

impl Registry {
    /// Re-hashes every blob. `progress` is called after each object.
    pub async fn scrub(&self, mut progress: impl FnMut(&ScrubReport)) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let top = keys::blob_shards(alg);
            for prefix in self.store.list(&top).await? {
                let dir = keys::child(&top, &prefix.name);
                for entry in self.store.list(&dir).await? {
                    let Ok(digest) = format!("{}:{}", alg.as_str(), entry.name).parse::<Digest>()
                    else {
                        continue;
                    };
                    let (ok, size) = match self.verify_stored(&digest).await {
                        Ok(r) => r,
                        Err(crate::CoreError::Storage(StorageError::NotFound)) => continue, // deleted meanwhile
                        // Unreadable (EIO on a failing disk): as bad as corrupt.
                        Err(e) => {
                            tracing::error!(%digest, error = %e, "stored content unreadable");
                            (false, 0)
                        }
                    };
                    report.checked += 1;
                    report.bytes += size;
                    if !ok {
                        self.store
                            .rename(
                                &keys::blob(&digest),
                                &keys::quarantined(&digest),
                                berth_storage::Durability::Durable,
                            )
                            .await?;
                        tracing::error!(%digest, "corrupt content quarantined");
                        report.corrupt.push(digest);
                    }
                    progress(&report);
                }
            }
        }
        Ok(report)
    }

    /// Whether stored content still hashes to its digest, and its size.
    async fn verify_stored(&self, digest: &Digest) -> Result<(bool, u64)> {
        let mut stream = self.store.read(&keys::blob(digest), 0, None).await?;
        let mut h = digest.algorithm().hasher();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(StorageError::Io)?;
            size += chunk.len() as u64;
            h.update(&chunk);
        }
        Ok((h.finish() == *digest, size))
    }
}
