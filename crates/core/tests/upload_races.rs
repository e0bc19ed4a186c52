//! Requests of one upload racing each other on two replicas that share a
//! store. Honest clients send one request at a time; a hostile one may send
//! them to different replicas at once. Whatever it does, a blob is stored
//! under a digest only if the stored bytes are the ones that were hashed.

use berth_core::{keys, CoreError, Options, Registry};
use berth_oci::{Algorithm, Digest, RepoName};
use berth_storage::mem::MemBackend;
use berth_storage::pause::{Op, Pausing, When, ANY};
use berth_storage::Backend;
use bytes::Bytes;
use std::sync::Arc;

fn body(data: &'static [u8]) -> berth_core::ByteStream {
    Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(data))]))
}

/// Two replicas over one store; an upload opened on A holding "good".
async fn first_chunk_on_a() -> (Arc<Pausing>, Registry, Registry, RepoName, String, Digest) {
    let store = Arc::new(Pausing::new(Arc::new(MemBackend::new())));
    let a = Registry::new(store.clone(), Options::default());
    let b = Registry::new(store.clone(), Options::default());
    let repo = RepoName::parse("race").unwrap();
    let id = a.start_upload(&repo).await.unwrap().id;
    a.append_upload(&repo, &id, Some((0, 3)), body(b"good"))
        .await
        .unwrap();
    let digest = Digest::of(Algorithm::Sha256, b"good");
    (store, a, b, repo, id, digest)
}

/// Replica A completes the upload (its hash covers the first chunk) while
/// replica B appends a second chunk: A must not commit what B appended
/// under the first chunk's digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_appended_while_another_replica_completes_is_not_committed() {
    let (store, a, b, repo, id, digest) = first_chunk_on_a().await;

    let key = keys::blob(&digest);
    let mut stop = store.pause(ANY, Op::StageCommit, When::Before, move |k: &str| k == key);
    let completing = {
        let (a, repo, id, digest) = (a.clone(), repo.clone(), id.clone(), digest.clone());
        tokio::spawn(async move { a.finish_upload(&repo, &id, &digest, None, None).await })
    };
    stop.reached().await;
    let appended = b
        .append_upload(&repo, &id, Some((4, 7)), body(b"evil"))
        .await;
    assert_eq!(appended.unwrap().size, 8);
    stop.release();

    let completed = completing.await.unwrap();
    assert!(
        matches!(completed, Err(CoreError::UploadInvalid(_))),
        "completed over a stage another replica changed: {completed:?}"
    );
    if let Some(stored) = store.get(&keys::blob(&digest)).await.unwrap() {
        assert_eq!(
            stored, "good",
            "bytes stored under a digest they do not have"
        );
    } else {
        // Nor a link with nothing behind it, which a manifest would accept.
        let link = keys::layer_link(&repo, &digest);
        assert_eq!(store.stat(&link).await.unwrap(), None);
    }
}

/// A chunk on replica B meets the bytes replica A appended at the same
/// offset while B's body was still arriving: B's chunk is refused, and A's
/// bytes stay (B used to cut the upload back to where its chunk began,
/// taking A's acknowledged chunk with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_refused_for_another_replicas_bytes_leaves_them() {
    use berth_storage::cluster::ClusterBackend;
    let pg = berth_storage::pg_harness::Postgres::start();
    let pool = ClusterBackend::pool(&pg.database().await, 4).unwrap();
    let objects = Arc::new(berth_storage::cluster::object_store::memory::InMemory::new());
    let store: Arc<dyn Backend> =
        Arc::new(ClusterBackend::connect(pool, objects, "").await.unwrap());
    let options = || Options {
        shared_store: true,
        ..Options::default()
    };
    let (a, b) = (
        Registry::new(store.clone(), options()),
        Registry::new(store.clone(), options()),
    );
    let repo = RepoName::parse("race").unwrap();
    let id = a.start_upload(&repo).await.unwrap().id;
    a.append_upload(&repo, &id, Some((0, 3)), body(b"head"))
        .await
        .unwrap();

    // B's chunk starts arriving at 4 and is held open; B reads its body
    // only once its writer is open at 4.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    let (reading, read) = tokio::sync::oneshot::channel::<()>();
    let slow: berth_core::ByteStream = Box::pin(futures_util::stream::unfold(
        (rx, Some(reading)),
        |(mut rx, reading)| async move {
            if let Some(r) = reading {
                let _ = r.send(());
            }
            rx.recv().await.map(|piece| (piece, (rx, None)))
        },
    ));
    let on_b = {
        let (b, repo, id) = (b.clone(), repo.clone(), id.clone());
        tokio::spawn(async move { b.append_upload(&repo, &id, Some((4, 7)), slow).await })
    };
    read.await.unwrap();
    tx.send(Ok(Bytes::from_static(b"lo"))).await.unwrap();
    // Meanwhile A appends at 4, and is told so.
    let appended = a
        .append_upload(&repo, &id, Some((4, 7)), body(b"tail"))
        .await;
    assert_eq!(appended.unwrap().size, 8);
    tx.send(Ok(Bytes::from_static(b"st"))).await.unwrap();
    drop(tx);
    let refused = on_b.await.unwrap();
    assert!(
        matches!(refused, Err(CoreError::ChunkOutOfOrder { size: 8 })),
        "{refused:?}"
    );
    assert_eq!(a.upload_status(&repo, &id).await.unwrap().size, 8);
    let digest = Digest::of(Algorithm::Sha256, b"headtail");
    a.finish_upload(&repo, &id, &digest, None, None)
        .await
        .unwrap();
    assert_eq!(
        store.get(&keys::blob(&digest)).await.unwrap().unwrap(),
        "headtail"
    );
}

/// Replica B cancels the upload while replica C sends a chunk at offset 0
/// of the same length with other bytes: A, which hashed the first chunk,
/// must not then commit C's bytes under the first chunk's digest. The
/// record goes before the stage, so no replica can start the stage anew
/// while the session still looks open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_started_anew_during_a_cancel_is_not_committed() {
    let (store, a, b, repo, id, digest) = first_chunk_on_a().await;
    let c = Registry::new(store.clone(), Options::default());

    // B's cancel stops just before it removes the session's record.
    let record = keys::upload(&id);
    let mut stop = store.pause(ANY, Op::Delete, When::Before, move |k: &str| k == record);
    let cancelling = {
        let (b, repo, id) = (b.clone(), repo.clone(), id.clone());
        tokio::spawn(async move { b.cancel_upload(&repo, &id).await })
    };
    stop.reached().await;
    let _ = c
        .append_upload(&repo, &id, Some((0, 3)), body(b"evil"))
        .await;
    stop.release();
    cancelling.await.unwrap().unwrap();

    let completed = a.finish_upload(&repo, &id, &digest, None, None).await;
    assert!(completed.is_err(), "a cancelled upload completed");
    if let Some(stored) = store.get(&keys::blob(&digest)).await.unwrap() {
        assert_eq!(
            stored, "good",
            "bytes stored under a digest they do not have"
        );
    }
}
