//! Pull times on their way to the store: retention reads the store and what
//! is noted in memory, so a time must be in one or the other at every
//! moment of a flush, and a flush cut short (shutdown, a store error) must
//! leave it for the next one.

use berth_core::{keys, Options, Registry};
use berth_oci::{Algorithm, Digest, RepoName};
use berth_storage::mem::MemBackend;
use berth_storage::pause::{Op, Pausing, When};
use std::sync::Arc;

#[tokio::test]
async fn a_pull_time_is_seen_throughout_a_flush_and_kept_when_it_is_cut_short() {
    let store = Arc::new(Pausing::new(Arc::new(MemBackend::new())));
    let reg = Registry::new(store.clone(), Options::default());
    let (a, b) = (RepoName::parse("a").unwrap(), RepoName::parse("b").unwrap());
    let (ma, mb) = (
        Digest::of(Algorithm::Sha256, b"a"),
        Digest::of(Algorithm::Sha256, b"b"),
    );
    reg.note_pull(&a, &ma);
    reg.note_pull(&b, &mb);

    // The flush stops before it writes a's times (whichever repository it
    // takes first).
    let key = keys::pulls(&a);
    let mut stop = store.pause("flush", Op::Put, When::Before, move |k: &str| k == key);
    let flushing = reg.clone();
    let flush = tokio::spawn(Pausing::act("flush", async move {
        flushing.flush_pulls().await
    }));
    stop.reached().await;
    assert!(
        reg.pull_times(&a).await.unwrap().contains_key(&ma),
        "a's pull time is neither in memory nor in the store while it is flushed"
    );

    // Cut short there, as shutdown aborts the worker.
    flush.abort();
    assert!(flush.await.unwrap_err().is_cancelled());
    drop(stop);
    assert!(reg.pull_times(&a).await.unwrap().contains_key(&ma));
    assert!(reg.pull_times(&b).await.unwrap().contains_key(&mb));

    // The next flush writes both: a registry with nothing in memory reads
    // them from the store.
    reg.flush_pulls().await.unwrap();
    let fresh = Registry::new(store.clone(), Options::default());
    assert!(fresh.pull_times(&a).await.unwrap().contains_key(&ma));
    assert!(fresh.pull_times(&b).await.unwrap().contains_key(&mb));
}
