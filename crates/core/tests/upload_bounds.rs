//! Upload sessions a client can open are bounded: at most
//! `MAX_OPEN_UPLOADS` open at once per process (429 past it, until one
//! ends), and one that never received a byte goes after
//! `EMPTY_UPLOAD_TTL` whatever the configured TTL.

use berth_core::sessions::{EMPTY_UPLOAD_TTL, MAX_OPEN_UPLOADS};
use berth_core::{keys, CoreError, Options, Registry};
use berth_oci::RepoName;
use berth_storage::mem::MemBackend;
use berth_storage::Backend;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[tokio::test]
async fn open_uploads_are_bounded() {
    let reg = Registry::new(Arc::new(MemBackend::new()), Options::default());
    let repo = RepoName::parse("many").unwrap();
    let mut first = None;
    for _ in 0..MAX_OPEN_UPLOADS {
        let id = reg.start_upload(&repo).await.unwrap().id;
        first.get_or_insert(id);
    }
    assert!(matches!(
        reg.start_upload(&repo).await,
        Err(CoreError::TooManyUploads)
    ));
    reg.cancel_upload(&repo, &first.unwrap()).await.unwrap();
    reg.start_upload(&repo).await.unwrap();
}

#[tokio::test]
async fn an_upload_never_written_goes_early() {
    let store = Arc::new(MemBackend::new());
    let reg = Registry::new(
        store.clone(),
        Options {
            upload_ttl: Duration::from_secs(24 * 3600),
            ..Options::default()
        },
    );
    let repo = RepoName::parse("idle").unwrap();
    let old_empty = reg.start_upload(&repo).await.unwrap().id;
    let new_empty = reg.start_upload(&repo).await.unwrap().id;
    // Opened longer ago than EMPTY_UPLOAD_TTL (the record says when).
    let then = SystemTime::now() - EMPTY_UPLOAD_TTL - Duration::from_secs(60);
    let secs = then
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    store
        .put(
            &keys::upload(&old_empty),
            Bytes::from(format!(r#"{{"repo":"idle","started":{secs}}}"#)),
            berth_storage::Durability::Lazy,
        )
        .await
        .unwrap();
    assert_eq!(reg.expire_uploads().await.unwrap(), 1);
    assert!(matches!(
        reg.upload_status(&repo, &old_empty).await,
        Err(CoreError::UploadUnknown)
    ));
    assert_eq!(reg.upload_status(&repo, &new_empty).await.unwrap().size, 0);
}
