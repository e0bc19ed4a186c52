//! The stage writer of the shared store: parts gathered in memory, each
//! written as one object and recorded in order.

use super::*;

/// Appends to a stage: gathers [`PART`] bytes, writes them as one object
/// while the next part gathers, and records each in order.
pub(super) struct ClusterStageWriter {
    pub(super) store: ClusterBackend,
    pub(super) id: String,
    /// The stage's size once everything handed to `flushing` is recorded.
    pub(super) offset: u64,
    pub(super) buf: BytesMut,
    pub(super) flushing: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl ClusterStageWriter {
    async fn wait(&mut self) -> Result<()> {
        if let Some(task) = self.flushing.take() {
            task.await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        }
        Ok(())
    }

    /// Hands `data` to a task that writes and records it, after the one
    /// before it finished.
    async fn flush(&mut self, data: Bytes) -> Result<()> {
        self.wait().await?;
        let (store, id, start) = (self.store.clone(), self.id.clone(), self.offset);
        let len = data.len() as u64;
        self.offset += len;
        self.flushing = Some(tokio::spawn(async move {
            let object = store.write_object(data).await?;
            let recorded = store.append_chunk(&id, start, len, &object).await;
            if let Err(StorageError::Offset { .. } | StorageError::NotFound) = recorded {
                // Refused before anything was committed.
                store.discard(vec![object]).await;
            }
            recorded
        }));
        Ok(())
    }
}

#[async_trait::async_trait]
impl StageWriter for ClusterStageWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let part = self.store.inner.part;
        if self.buf.is_empty() && data.len() == part {
            return self.flush(data).await;
        }
        self.buf.extend_from_slice(&data);
        while self.buf.len() >= part {
            let piece = self.buf.split_to(part).freeze();
            self.flush(piece).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf).freeze();
            self.flush(rest).await?;
        }
        self.wait().await?;
        Ok(self.offset)
    }
}

impl Drop for ClusterStageWriter {
    fn drop(&mut self) {
        // A flush under way finishes on its own (what it recorded stays, as
        // on a file system); nothing else is held.
        let _ = self.flushing.take();
    }
}
