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

/// Replica A completes the upload (its hash covers the first chunk) while
/// replica B appends a second chunk: A must not commit what B appended
/// under the first chunk's digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_appended_while_another_replica_completes_is_not_committed() {
    let store = Arc::new(Pausing::new(Arc::new(MemBackend::new())));
    let a = Registry::new(store.clone(), Options::default());
    let b = Registry::new(store.clone(), Options::default());
    let repo = RepoName::parse("race").unwrap();
    let id = a.start_upload(&repo).await.unwrap().id;
    a.append_upload(&repo, &id, Some((0, 3)), body(b"good"))
        .await
        .unwrap();
    let digest = Digest::of(Algorithm::Sha256, b"good");

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
    }
}
