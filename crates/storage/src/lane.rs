//! Lanes: work done in order, off the async runtime, with no thread held
//! while there is none.
//!
//! A push hashes and writes each batch of its body on blocking threads, so
//! that receiving, hashing and writing overlap. Handing each batch to a new
//! blocking call and waiting for the previous one left the hasher and the
//! disk idle between batches (a wake-up on each side). A lane instead keeps
//! one blocking call draining its queue for as long as jobs are waiting:
//! the next batch starts the moment the last one ends. When the queue runs
//! dry the call returns, so a client that stalls holds no thread; the next
//! job starts another call. At most `depth` jobs are queued or running:
//! [`Lane::push`] waits for room, which is what bounds a push's memory.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

type Work<S, J> = dyn Fn(&mut S, J) + Send + Sync;

struct Inner<S, J> {
    /// The lane's state, here while no call is draining (the draining call
    /// holds it); `None` for good once a job panicked.
    state: Option<S>,
    jobs: VecDeque<J>,
    /// A blocking call is draining the queue.
    draining: bool,
    /// A job is running (taken off `jobs`, not finished).
    running: bool,
    /// A job panicked: the state is gone, later jobs are dropped.
    broken: bool,
}

impl<S, J> Inner<S, J> {
    fn in_flight(&self) -> usize {
        self.jobs.len() + usize::from(self.running)
    }
}

struct Shared<S, J> {
    inner: Mutex<Inner<S, J>>,
    /// Rung when a job ends or the drain stops: the owner may go on.
    ring: Notify,
    work: Box<Work<S, J>>,
}

impl<S, J> Shared<S, J> {
    fn lock(&self) -> MutexGuard<'_, Inner<S, J>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An ordered queue of jobs on a state `S`, each done by the lane's work
/// function on a blocking thread (see the module's documentation). Owned
/// by one task at a time.
pub struct Lane<S, J> {
    shared: Arc<Shared<S, J>>,
    depth: usize,
}

impl<S, J> Lane<S, J>
where
    S: Send + 'static,
    J: Send + 'static,
{
    /// A lane over `state` running at most `depth` (at least 1) jobs ahead.
    pub fn new(
        state: S,
        depth: usize,
        work: impl Fn(&mut S, J) + Send + Sync + 'static,
    ) -> Lane<S, J> {
        Lane {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    state: Some(state),
                    jobs: VecDeque::new(),
                    draining: false,
                    running: false,
                    broken: false,
                }),
                ring: Notify::new(),
                work: Box::new(work),
            }),
            depth: depth.max(1),
        }
    }

    /// Queues a job, first waiting while `depth` jobs are queued or
    /// running. A lane broken by a panic drops the job.
    pub async fn push(&self, job: J) {
        loop {
            {
                let mut g = self.shared.lock();
                if g.broken {
                    return;
                }
                if g.in_flight() < self.depth {
                    g.jobs.push_back(job);
                    if !g.draining {
                        g.draining = true;
                        let shared = self.shared.clone();
                        drop(g);
                        tokio::task::spawn_blocking(move || drain(&shared));
                    }
                    return;
                }
            }
            self.shared.ring.notified().await;
        }
    }

    /// Waits until every queued job ran; gives back the state. `None` if a
    /// job panicked.
    pub async fn finish(self) -> Option<S> {
        loop {
            {
                let mut g = self.shared.lock();
                if g.broken {
                    return None;
                }
                if !g.draining {
                    return g.state.take();
                }
            }
            self.shared.ring.notified().await;
        }
    }
}

/// The blocking call: runs jobs until the queue is empty.
fn drain<S, J>(shared: &Shared<S, J>) {
    let mut g = shared.lock();
    let Some(mut state) = g.state.take() else {
        return stop(shared, g, None);
    };
    while let Some(job) = g.jobs.pop_front() {
        g.running = true;
        drop(g);
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| (shared.work)(&mut state, job)));
        g = shared.lock();
        g.running = false;
        if ran.is_err() {
            return stop(shared, g, None);
        }
        shared.ring.notify_one();
    }
    // Stopped under the lock that saw the queue empty: a job pushed after
    // that finds no drain, and starts one.
    preempted();
    stop(shared, g, Some(state))
}

/// Ends a drain, under the lock that decided it: gives the state back, or
/// (without one: a job panicked) marks the lane broken and drops what is
/// queued.
fn stop<S, J>(shared: &Shared<S, J>, mut g: MutexGuard<'_, Inner<S, J>>, state: Option<S>) {
    g.draining = false;
    match state {
        Some(s) => g.state = Some(s),
        None => {
            g.broken = true;
            g.jobs.clear();
        }
    }
    drop(g);
    shared.ring.notify_one();
}

/// Where a drain's thread may lose its core between finding its queue
/// empty and stopping; tests make it lose it there, so that a drain that
/// let go of the lock in between would miss the job pushed meanwhile.
fn preempted() {
    #[cfg(test)]
    std::thread::sleep(std::time::Duration::from_micros(50));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_in_order_with_at_most_depth_in_flight() {
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let lane = Lane::new(Vec::new(), 2, |seen: &mut Vec<u32>, n: u32| {
            std::thread::sleep(Duration::from_millis(1));
            seen.push(n);
        });
        for n in 0..50 {
            lane.push(n).await;
            let g = lane.shared.lock();
            peak.fetch_max(g.in_flight(), std::sync::atomic::Ordering::Relaxed);
        }
        let seen = lane.finish().await.unwrap();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert_eq!(peak.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_lane_holds_no_thread_and_starts_again() {
        let lane = Lane::new(0u64, 4, |sum: &mut u64, n: u64| *sum += n);
        lane.push(1).await;
        // The drain ends once the queue is empty.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lane.shared.lock().draining {
            assert!(std::time::Instant::now() < deadline, "drain never ended");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lane.push(2).await;
        assert_eq!(lane.finish().await.unwrap(), 3);
    }

    /// A job pushed just as a drain finds the queue empty must still run:
    /// the drain may not stop after the job was queued behind its back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_pushed_as_a_drain_ends_is_not_lost() {
        let lane = Lane::new(0u64, 1, |sum: &mut u64, n: u64| *sum += n);
        let pushes = async {
            for n in 1..=20_000u64 {
                lane.push(n).await;
            }
            lane.finish().await
        };
        let sum = tokio::time::timeout(Duration::from_secs(30), pushes)
            .await
            .expect("a queued job was left with no drain to run it");
        assert_eq!(sum, Some(20_000 * 20_001 / 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_breaks_the_lane_without_hanging_it() {
        let lane = Lane::new(0u32, 2, |_: &mut u32, n: u32| {
            assert!(n != 3, "job 3 fails");
        });
        for n in 0..10 {
            lane.push(n).await;
        }
        assert!(lane.finish().await.is_none());
    }
}
