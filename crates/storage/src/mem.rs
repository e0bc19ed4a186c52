//! An in-memory store, for tests. Same contract as the filesystem one.

use crate::{
    check_id, check_key, Backend, ByteStream, Durability, Entry, Result, StageWriter, StorageError,
};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

#[derive(Default)]
struct Inner {
    objects: BTreeMap<String, Bytes>,
    times: BTreeMap<String, SystemTime>,
    stages: BTreeMap<String, (BytesMut, SystemTime)>,
}

/// A store held in memory.
#[derive(Default, Clone)]
pub struct MemBackend {
    inner: Arc<Mutex<Inner>>,
    turns: Arc<crate::LocalTurns>,
}

impl MemBackend {
    pub fn new() -> MemBackend {
        MemBackend::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps torn.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct MemStageWriter {
    store: MemBackend,
    id: String,
}

#[async_trait::async_trait]
impl StageWriter for MemStageWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let mut g = self.store.lock();
        let (buf, t) = g.stages.get_mut(&self.id).ok_or(StorageError::NotFound)?;
        buf.extend_from_slice(&data);
        *t = SystemTime::now();
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let g = self.store.lock();
        Ok(g.stages.get(&self.id).map_or(0, |(b, _)| b.len() as u64))
    }
}

#[async_trait::async_trait]
impl Backend for MemBackend {
    async fn stat(&self, key: &str) -> Result<Option<u64>> {
        check_key(key, false)?;
        Ok(self.lock().objects.get(key).map(|b| b.len() as u64))
    }

    async fn modified(&self, key: &str) -> Result<Option<SystemTime>> {
        check_key(key, false)?;
        let g = self.lock();
        Ok(g.objects
            .contains_key(key)
            .then(|| g.times.get(key).copied().unwrap_or(SystemTime::UNIX_EPOCH)))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        check_key(key, false)?;
        Ok(self.lock().objects.get(key).cloned())
    }

    async fn read(&self, key: &str, start: u64, end: Option<u64>) -> Result<ByteStream> {
        check_key(key, false)?;
        let data = self
            .lock()
            .objects
            .get(key)
            .cloned()
            .ok_or(StorageError::NotFound)?;
        let end = end.unwrap_or(data.len() as u64).min(data.len() as u64) as usize;
        let start = (start as usize).min(end);
        Ok(Box::pin(futures_util::stream::iter([Ok(
            data.slice(start..end)
        )])))
    }

    async fn put(&self, key: &str, data: Bytes, _: Durability) -> Result<()> {
        check_key(key, false)?;
        let mut g = self.lock();
        g.objects.insert(key.to_owned(), data);
        g.times.insert(key.to_owned(), SystemTime::now());
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        check_key(key, false)?;
        let mut g = self.lock();
        if g.objects.contains_key(key) {
            return Ok(false);
        }
        g.objects.insert(key.to_owned(), data);
        g.times.insert(key.to_owned(), SystemTime::now());
        Ok(true)
    }

    async fn delete(&self, key: &str, _: Durability) -> Result<bool> {
        check_key(key, false)?;
        let mut g = self.lock();
        g.times.remove(key);
        Ok(g.objects.remove(key).is_some())
    }

    async fn rename(&self, from: &str, to: &str, _: Durability) -> Result<()> {
        check_key(from, false)?;
        check_key(to, false)?;
        let mut g = self.lock();
        let data = g.objects.remove(from).ok_or(StorageError::NotFound)?;
        g.objects.insert(to.to_owned(), data);
        // A rename keeps the modification time, as on a file system.
        if let Some(t) = g.times.remove(from) {
            g.times.insert(to.to_owned(), t);
        }
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        check_key(prefix, false)?;
        let p = format!("{prefix}/");
        self.lock().objects.retain(|k, _| !k.starts_with(&p));
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        check_key(prefix, true)?;
        let p = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let g = self.lock();
        let mut out = BTreeSet::new();
        for k in g.objects.range(p.clone()..).map(|(k, _)| k) {
            let Some(rest) = k.strip_prefix(&p) else {
                break;
            };
            match rest.split_once('/') {
                Some((dir, _)) => out.insert(Entry {
                    name: dir.to_owned(),
                    is_dir: true,
                }),
                None => out.insert(Entry {
                    name: rest.to_owned(),
                    is_dir: false,
                }),
            };
        }
        Ok(out.into_iter().collect())
    }

    async fn stage_writer(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>> {
        check_id(id)?;
        let mut g = self.lock();
        let actual = match g.stages.get(id) {
            Some((data, _)) => data.len() as u64,
            None if offset == 0 => {
                g.stages
                    .insert(id.to_owned(), (BytesMut::new(), SystemTime::now()));
                0
            }
            None => return Err(StorageError::NotFound),
        };
        if actual != offset {
            return Err(StorageError::Offset {
                expected: offset,
                actual,
            });
        }
        Ok(Box::new(MemStageWriter {
            store: self.clone(),
            id: id.to_owned(),
        }))
    }

    async fn stage_writer_cached(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>> {
        self.stage_writer(id, offset).await
    }

    async fn stage_from(&self, id: &str, key: &str) -> Result<bool> {
        check_id(id)?;
        check_key(key, false)?;
        let mut g = self.lock();
        let Some(data) = g.objects.get(key).cloned() else {
            return Ok(false);
        };
        g.stages.insert(
            id.to_owned(),
            (BytesMut::from(&data[..]), SystemTime::now()),
        );
        Ok(true)
    }

    async fn stage_truncate(&self, id: &str, size: u64, from: Option<u64>) -> Result<()> {
        check_id(id)?;
        let mut g = self.lock();
        let (b, _) = g.stages.get_mut(id).ok_or(StorageError::NotFound)?;
        let actual = b.len() as u64;
        if let Some(expected) = from.filter(|&e| e != actual) {
            return Err(StorageError::Offset { expected, actual });
        }
        b.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        Ok(())
    }

    async fn stage_size(&self, id: &str) -> Result<Option<u64>> {
        check_id(id)?;
        Ok(self.lock().stages.get(id).map(|(b, _)| b.len() as u64))
    }

    async fn stage_read(&self, id: &str, start: u64) -> Result<ByteStream> {
        check_id(id)?;
        let data = self
            .lock()
            .stages
            .get(id)
            .map(|(b, _)| {
                let start = usize::try_from(start).unwrap_or(usize::MAX).min(b.len());
                Bytes::copy_from_slice(&b[start..])
            })
            .ok_or(StorageError::NotFound)?;
        Ok(Box::pin(futures_util::stream::iter([Ok(data)])))
    }

    async fn stage_commit(&self, id: &str, key: &str, size: u64) -> Result<()> {
        check_id(id)?;
        check_key(key, false)?;
        let mut g = self.lock();
        let actual = g.stages.get(id).ok_or(StorageError::NotFound)?.0.len() as u64;
        if actual != size {
            return Err(StorageError::Offset {
                expected: size,
                actual,
            });
        }
        let (data, _) = g.stages.remove(id).ok_or(StorageError::NotFound)?;
        g.objects.insert(key.to_owned(), data.freeze());
        Ok(())
    }

    async fn stage_delete(&self, id: &str) -> Result<()> {
        check_id(id)?;
        self.lock().stages.remove(id);
        Ok(())
    }

    async fn stage_list(&self) -> Result<Vec<(String, SystemTime)>> {
        Ok(self
            .lock()
            .stages
            .iter()
            .map(|(k, (_, t))| (k.clone(), *t))
            .collect())
    }

    async fn exclusive(&self, name: &str) -> Result<crate::Turn> {
        Ok(self.turns.take(name).await)
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_suite() {
        crate::suite::run(&super::MemBackend::new()).await;
    }
}
