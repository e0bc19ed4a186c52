//! The registry over the in-memory backend: behaviour that needs no HTTP.

use berth_core::{CoreError, Options, Registry};
use berth_oci::{Algorithm, Digest, RepoName};
use berth_storage::mem::MemBackend;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

fn body(data: &'static [u8]) -> berth_core::ByteStream {
    Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(data))]))
}

fn body_of(data: &[u8]) -> berth_core::ByteStream {
    Box::pin(futures_util::stream::iter([Ok(Bytes::copy_from_slice(
        data,
    ))]))
}

fn registry(ttl: Duration) -> Registry {
    Registry::new(
        Arc::new(MemBackend::new()),
        Options {
            upload_ttl: ttl,
            ..Options::default()
        },
    )
}

#[tokio::test]
async fn abandoned_uploads_expire_and_live_ones_stay() {
    let reg = registry(Duration::ZERO);
    let repo = RepoName::parse("exp").unwrap();
    let written = reg.start_upload(&repo).await.unwrap();
    reg.append_upload(&repo, &written.id, None, body(b"abc"))
        .await
        .unwrap();
    let empty = reg.start_upload(&repo).await.unwrap();
    assert_eq!(reg.expire_uploads().await.unwrap(), 2);
    for id in [&written.id, &empty.id] {
        assert!(matches!(
            reg.upload_status(&repo, id).await,
            Err(CoreError::UploadUnknown)
        ));
    }

    let reg = registry(Duration::from_secs(3600));
    let fresh = reg.start_upload(&repo).await.unwrap();
    assert_eq!(reg.expire_uploads().await.unwrap(), 0);
    assert_eq!(reg.upload_status(&repo, &fresh.id).await.unwrap().size, 0);
}

#[tokio::test]
async fn sha512_and_resumed_sessions_are_rehashed() {
    let reg = registry(Duration::from_secs(3600));
    let repo = RepoName::parse("h").unwrap();
    let s = reg.start_upload(&repo).await.unwrap();
    reg.append_upload(&repo, &s.id, Some((0, 2)), body(b"abc"))
        .await
        .unwrap();
    let d512 = Digest::of(Algorithm::Sha512, b"abcdef");
    reg.finish_upload(&repo, &s.id, &d512, Some((3, 5)), Some(body(b"def")))
        .await
        .unwrap();
    assert_eq!(reg.blob_size(&repo, &d512).await.unwrap(), 6);
    // A chunk whose length disagrees with its range is refused and changes
    // nothing: the upload and its running hash are as before it.
    let s = reg.start_upload(&repo).await.unwrap();
    reg.append_upload(&repo, &s.id, Some((0, 2)), body(b"abc"))
        .await
        .unwrap();
    for (range, data) in [((3, 9), &b"def"[..]), ((3, 4), &b"defgh"[..])] {
        let e = reg
            .append_upload(&repo, &s.id, Some(range), body_of(data))
            .await
            .unwrap_err();
        assert!(matches!(e, CoreError::SizeInvalid(_)), "{e:?}");
        assert_eq!(reg.upload_status(&repo, &s.id).await.unwrap().size, 3);
    }
    let d = Digest::of(Algorithm::Sha256, b"abcdef");
    reg.finish_upload(&repo, &s.id, &d, Some((3, 5)), Some(body(b"def")))
        .await
        .unwrap();
    assert_eq!(reg.blob_size(&repo, &d).await.unwrap(), 6);
}

#[tokio::test]
async fn catalog_index_sees_writes_before_and_after_loading() {
    let reg = registry(Duration::from_secs(3600));
    let a = RepoName::parse("a").unwrap();
    let d = Digest::of(Algorithm::Sha256, b"x");
    reg.upload_whole(&a, &d, body(b"x")).await.unwrap();
    assert_eq!(
        reg.catalog(None, None, |_| true).await.unwrap().items,
        vec!["a"]
    );
    let b = RepoName::parse("b/c").unwrap();
    reg.upload_whole(&b, &d, body(b"x")).await.unwrap();
    assert_eq!(
        reg.catalog(None, None, |_| true).await.unwrap().items,
        vec!["a", "b/c"]
    );
}

#[tokio::test]
async fn catalog_filter_keeps_pagination_right() {
    let reg = registry(Duration::from_secs(3600));
    let d = Digest::of(Algorithm::Sha256, b"x");
    for name in ["a", "b", "c", "d", "e"] {
        reg.upload_whole(&RepoName::parse(name).unwrap(), &d, body(b"x"))
            .await
            .unwrap();
    }
    let page = reg.catalog(Some(2), None, |n| n != "b").await.unwrap();
    assert_eq!(page.items, vec!["a", "c"]);
    assert!(page.more);
    let page = reg.catalog(Some(2), Some("c"), |n| n != "e").await.unwrap();
    assert_eq!(page.items, vec!["d"]);
    assert!(!page.more);
}

#[tokio::test]
async fn an_emptied_repository_leaves_the_catalog() {
    let reg = registry(Duration::from_secs(3600));
    let d = Digest::of(Algorithm::Sha256, b"x");
    let (gone, kept) = (
        RepoName::parse("gone").unwrap(),
        RepoName::parse("kept").unwrap(),
    );
    for repo in [&gone, &kept] {
        reg.upload_whole(repo, &d, body(b"x")).await.unwrap();
    }
    assert_eq!(
        reg.catalog(None, None, |_| true).await.unwrap().items,
        vec!["gone", "kept"]
    );
    reg.delete_blob(&gone, &d).await.unwrap();
    assert_eq!(
        reg.catalog(None, None, |_| true).await.unwrap().items,
        vec!["kept"]
    );
    assert!(matches!(
        reg.list_tags(&gone, None, None).await,
        Err(CoreError::NameUnknown)
    ));
    // Pushed to again, it is back.
    reg.upload_whole(&gone, &d, body(b"x")).await.unwrap();
    assert_eq!(
        reg.catalog(None, None, |_| true).await.unwrap().items,
        vec!["gone", "kept"]
    );
}
