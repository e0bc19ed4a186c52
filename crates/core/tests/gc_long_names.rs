//! Collection of a repository whose name is long: its hidden objects'
//! names would pass a file name's 255 bytes on the filesystem, so they are
//! named by hash with their keys beside them. Before, the rename failed,
//! was taken for "already gone", and such a repository was never
//! collected.

use berth_core::gc::GcOptions;
use berth_core::{CoreError, Options, Registry};
use berth_oci::{Algorithm, Digest, RepoName};
use berth_storage::fs::FsBackend;
use berth_storage::pause::{Op, Pausing, When};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

fn options() -> GcOptions {
    GcOptions {
        retention: None,
        delay: Duration::ZERO,
        dry_run: false,
        pace: 1.0,
    }
}

async fn orphan(reg: &Registry, repo: &RepoName, text: &str) -> Digest {
    let data = Bytes::from(text.repeat(40));
    let d = Digest::of(Algorithm::Sha256, &data);
    reg.upload_whole(repo, &d, Box::pin(futures_util::stream::iter([Ok(data)])))
        .await
        .unwrap();
    d
}

#[tokio::test]
async fn a_long_named_repository_is_collected_and_an_interrupted_pass_undone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Pausing::new(Arc::new(
        FsBackend::open(dir.path(), true).unwrap(),
    )));
    let reg = Registry::new(store.clone(), Options::default());
    let long = RepoName::parse(&format!("team/{}", "r".repeat(170))).unwrap();
    let short = RepoName::parse("short").unwrap();

    // A pass stopped after it hid the long name's link, then cut short.
    let kept = orphan(&reg, &long, "kept ").await;
    let mut stop = store.pause("gc", Op::Rename, When::After, |k: &str| {
        k.starts_with("repositories/team/")
    });
    let collector = reg.clone();
    let pass = tokio::spawn(Pausing::act("gc", async move {
        collector.gc(options(), |_| {}).await
    }));
    stop.reached().await;
    pass.abort();
    let _ = pass.await;
    drop(stop);
    assert!(matches!(
        reg.blob_size(&long, &kept).await,
        Err(CoreError::BlobUnknown)
    ));
    // As at shutdown: what the cut pass hid goes back.
    reg.end_collection().await.unwrap();
    assert!(reg.blob_size(&long, &kept).await.is_ok(), "not put back");

    // A whole pass collects both repositories' orphans.
    let gone = orphan(&reg, &short, "gone ").await;
    let report = reg.gc(options(), |_| {}).await.unwrap();
    for (repo, d) in [(&long, &kept), (&short, &gone)] {
        assert!(
            report
                .links_removed
                .iter()
                .any(|(r, x)| r == repo.as_str() && x == d),
            "{repo}: {:?}",
            report.links_removed
        );
        assert!(matches!(
            reg.blob_size(repo, d).await,
            Err(CoreError::BlobUnknown)
        ));
    }
    // Nothing of the pass is left behind.
    assert!(
        !dir.path().join("gc-trash").exists()
            || std::fs::read_dir(dir.path().join("gc-trash"))
                .unwrap()
                .count()
                == 0
    );
}
