//! A request on an upload that another request holds (a chunk trickling
//! in) waits a bounded time, then is refused as busy: it never holds its
//! connection for as long as the other request lasts.

use berth_core::{CoreError, Options, Registry, UPLOAD_SESSION_WAIT as SESSION_WAIT};
use berth_oci::RepoName;
use berth_storage::mem::MemBackend;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn a_request_on_a_held_upload_is_refused_after_a_bounded_wait() {
    let reg = Registry::new(Arc::new(MemBackend::new()), Options::default());
    let repo = RepoName::parse("app").unwrap();
    let id = reg.start_upload(&repo).await.unwrap().id;
    // A chunk whose body sends a little and then nothing more.
    let trickle = futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))])
        .chain(futures_util::stream::pending());
    let holder = {
        let (reg, repo, id) = (reg.clone(), repo.clone(), id.clone());
        tokio::spawn(async move { reg.append_upload(&repo, &id, None, Box::pin(trickle)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::time::timeout(SESSION_WAIT * 3, reg.upload_status(&repo, &id))
        .await
        .expect("the wait for a held upload is not bounded");
    assert!(matches!(status, Err(CoreError::UploadBusy)), "{status:?}");
    holder.abort();
}
