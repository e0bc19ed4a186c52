//! The background loops (upload expiry, garbage collection and retention,
//! scrub, the pull-time writer, mirroring, the configuration watch) run as
//! workers: each has a name, is restarted with a log line when it panics
//! (after a short pause, so a loop that always panics cannot spin), counts
//! its restarts in `berth_worker_restarts_total{worker}`, and is cancelled
//! by dropping its handle. Shutdown drains HTTP first, then drops the
//! workers.

use prometheus_client::metrics::counter::Counter;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A task that is aborted when its handle is dropped.
pub struct Worker(JoinHandle<()>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pause before a panicked worker runs again.
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Runs `make()` as the worker `name`, again after each panic, until it
/// returns or the handle is dropped.
pub fn spawn<F, Fut>(name: &'static str, restarts: Counter, pause: Duration, make: F) -> Worker
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Worker(tokio::spawn(async move {
        loop {
            // Dropping `run` (when this supervisor is aborted) aborts it.
            let mut run = Worker(tokio::spawn(make()));
            match (&mut run.0).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    restarts.inc();
                    tracing::error!(worker = name, "background worker panicked; restarting it");
                    tokio::time::sleep(pause).await;
                }
                Err(_) => return,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_panicking_worker_is_restarted_and_counted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
        let restarts = Counter::default();
        let r = runs.clone();
        let _w = spawn(
            "test",
            restarts.clone(),
            Duration::from_millis(1),
            move || {
                let (r, done_tx) = (r.clone(), done_tx.clone());
                async move {
                    if r.fetch_add(1, Ordering::SeqCst) < 2 {
                        panic!("a bug in a loop");
                    }
                    if let Some(tx) = done_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
            },
        );
        tokio::time::timeout(Duration::from_secs(10), done_rx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(restarts.get(), 2);
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_worker() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let w = spawn("ticker", Counter::default(), RESTART_PAUSE, move || {
            let t = t.clone();
            async move {
                loop {
                    t.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        while ticks.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(w);
        // Stopped: the count no longer moves (a running ticker moves it
        // every millisecond).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let before = ticks.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if ticks.load(Ordering::SeqCst) == before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the worker kept running"
            );
        }
    }
}
