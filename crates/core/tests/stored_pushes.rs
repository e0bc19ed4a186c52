//! Pushes of content the store already holds: the body is hashed and
//! dropped, never staged, and the content is pinned meanwhile, so a
//! collection that removes it during the push cannot make the push lose it.

use berth_core::{keys, CoreError, Options, Registry};
use berth_oci::{Algorithm, Digest, RepoName};
use berth_storage::fs::FsBackend;
use berth_storage::Backend;
use bytes::Bytes;
use futures_util::TryStreamExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn data(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

/// A body in 64 KiB pieces that runs `between` before each piece.
fn body_with(bytes: Bytes, between: impl FnMut(usize) + Send + 'static) -> berth_core::ByteStream {
    let pieces: Vec<Bytes> = (0..bytes.len())
        .step_by(65_536)
        .map(|i| bytes.slice(i..(i + 65_536).min(bytes.len())))
        .collect();
    let mut between = between;
    Box::pin(futures_util::stream::iter(
        pieces.into_iter().enumerate().map(move |(i, p)| {
            between(i);
            Ok(p)
        }),
    ))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

async fn world() -> (tempfile::TempDir, Arc<FsBackend>, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsBackend::open(dir.path(), true).unwrap());
    let reg = Registry::new(store.clone(), Options::default());
    (dir, store, reg)
}

async fn read(reg: &Registry, d: &Digest, len: u64) -> Vec<u8> {
    let chunks: Vec<Bytes> = reg
        .read_blob(d, 0, len)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

#[tokio::test]
async fn a_push_of_stored_content_stages_none_of_its_bytes() {
    let (dir, _store, reg) = world().await;
    let a = RepoName::parse("first").unwrap();
    let b = RepoName::parse("second").unwrap();
    let bytes = data(1, 3 * 1024 * 1024 + 5);
    let d = Digest::of(Algorithm::Sha256, &bytes);
    reg.upload_whole(&a, &d, body_with(bytes.clone(), |_| {}))
        .await
        .unwrap();
    let blob = dir.path().join(keys::blob(&d));
    let ino = std::fs::metadata(&blob).unwrap().ino();

    // While the body arrives, the only staged file is the pin: a second
    // name of the stored content, not a copy.
    let uploads = dir.path().join(".uploads");
    let checks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = checks.clone();
    let watch = move |_| {
        for f in files_under(&uploads) {
            let m = std::fs::metadata(&f).unwrap();
            if m.len() > 1024 {
                assert_eq!(m.ino(), ino, "{} is a copy", f.display());
            }
        }
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let up = reg.start_upload(&b).await.unwrap();
    reg.finish_upload(&b, &up.id, &d, None, Some(body_with(bytes.clone(), watch)))
        .await
        .unwrap();
    assert!(checks.load(std::sync::atomic::Ordering::Relaxed) > 40);
    assert_eq!(read(&reg, &d, bytes.len() as u64).await, bytes);
    assert_eq!(reg.blob_size(&b, &d).await.unwrap(), bytes.len() as u64);
    // Nothing is left staged, and a wrong body is refused as ever.
    assert!(files_under(&dir.path().join(".uploads")).is_empty());
    let wrong = data(2, bytes.len());
    let up = reg.start_upload(&b).await.unwrap();
    let r = reg
        .finish_upload(&b, &up.id, &d, None, Some(body_with(wrong, |_| {})))
        .await;
    assert!(matches!(r, Err(CoreError::DigestMismatch { .. })), "{r:?}");
    assert!(files_under(&dir.path().join(".uploads")).is_empty());
    assert_eq!(read(&reg, &d, bytes.len() as u64).await, bytes);

    // A last chunk whose Content-Range disagrees is refused, leaves no pin
    // behind, and the session goes on.
    let up = reg.start_upload(&b).await.unwrap();
    let whole = body_with(bytes.clone(), |_| {});
    let r = reg
        .finish_upload(&b, &up.id, &d, Some((0, 10)), Some(whole))
        .await;
    assert!(matches!(r, Err(CoreError::SizeInvalid(_))), "{r:?}");
    assert!(files_under(&dir.path().join(".uploads")).is_empty());
    let end = bytes.len() as u64 - 1;
    let whole = body_with(bytes.clone(), |_| {});
    reg.finish_upload(&b, &up.id, &d, Some((0, end)), Some(whole))
        .await
        .unwrap();
    assert!(files_under(&dir.path().join(".uploads")).is_empty());

    // The same after a first chunk whose hashing went on past its 202 (on
    // a lane): the last chunk, refused once, then sent right.
    let up = reg.start_upload(&b).await.unwrap();
    let cut = 1024 * 1024 + 3;
    let first = body_with(bytes.slice(..cut), |_| {});
    reg.append_upload(&b, &up.id, None, first).await.unwrap();
    let rest = || body_with(bytes.slice(cut..), |_| {});
    let r = reg
        .finish_upload(
            &b,
            &up.id,
            &d,
            Some((cut as u64, cut as u64 + 10)),
            Some(rest()),
        )
        .await;
    assert!(matches!(r, Err(CoreError::SizeInvalid(_))), "{r:?}");
    reg.finish_upload(&b, &up.id, &d, Some((cut as u64, end)), Some(rest()))
        .await
        .unwrap();
    assert!(files_under(&dir.path().join(".uploads")).is_empty());
    assert_eq!(read(&reg, &d, bytes.len() as u64).await, bytes);
}

#[tokio::test]
async fn content_removed_during_a_push_of_it_is_put_back() {
    for monolithic in [true, false] {
        let (_dir, store, reg) = world().await;
        let a = RepoName::parse("first").unwrap();
        let b = RepoName::parse("second").unwrap();
        let bytes = data(3, 2 * 1024 * 1024);
        let d = Digest::of(Algorithm::Sha256, &bytes);
        reg.upload_whole(&a, &d, body_with(bytes.clone(), |_| {}))
            .await
            .unwrap();
        // Midway through the body, the content goes (what a collection
        // pass does to content it found unreferenced).
        let (s2, key) = (store.clone(), keys::blob(&d));
        let remove = move |i| {
            if i == 10 {
                let (s2, key) = (s2.clone(), key.clone());
                std::thread::spawn(move || {
                    tokio::runtime::Runtime::new().unwrap().block_on(async {
                        assert!(s2
                            .delete(&key, berth_storage::Durability::Durable)
                            .await
                            .unwrap());
                    })
                })
                .join()
                .unwrap();
            }
        };
        let pushed = if monolithic {
            reg.upload_whole(&b, &d, body_with(bytes.clone(), remove))
                .await
        } else {
            let up = reg.start_upload(&b).await.unwrap();
            reg.finish_upload(&b, &up.id, &d, None, Some(body_with(bytes.clone(), remove)))
                .await
        };
        pushed.unwrap();
        assert_eq!(
            read(&reg, &d, bytes.len() as u64).await,
            bytes,
            "monolithic: {monolithic}"
        );
    }
}

#[tokio::test]
async fn a_pin_whose_bytes_went_bad_is_not_put_back() {
    let (dir, store, reg) = world().await;
    let a = RepoName::parse("first").unwrap();
    let b = RepoName::parse("second").unwrap();
    let bytes = data(5, 2 * 1024 * 1024);
    let d = Digest::of(Algorithm::Sha256, &bytes);
    reg.upload_whole(&a, &d, body_with(bytes.clone(), |_| {}))
        .await
        .unwrap();
    // Midway through the push, the stored copy rots and is taken away (what
    // scrub does with content that no longer matches its digest).
    let path = dir.path().join(keys::blob(&d));
    let rot = move |i| {
        if i == 10 {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(b"rot", 1000).unwrap();
            std::fs::remove_file(&path).unwrap();
        }
    };
    let r = reg
        .upload_whole(&b, &d, body_with(bytes.clone(), rot))
        .await;
    assert!(matches!(r, Err(CoreError::UploadInvalid(_))), "{r:?}");
    assert_eq!(store.stat(&keys::blob(&d)).await.unwrap(), None);
    // Pushed again, the content is staged from the body and served whole.
    reg.upload_whole(&b, &d, body_with(bytes.clone(), |_| {}))
        .await
        .unwrap();
    assert_eq!(read(&reg, &d, bytes.len() as u64).await, bytes);
    assert!(files_under(&dir.path().join(".uploads")).is_empty());
}

/// Uploads that stop sending midway, past the size where hashing moves
/// off the receiving task, hold no blocking thread: with a pool of two,
/// four of them stalled still leave the store usable.
#[test]
fn stalled_large_uploads_hold_no_blocking_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_dir, store, reg) = world().await;
        let repo = RepoName::parse("stalled").unwrap();
        let mut senders = Vec::new();
        for i in 0..4u8 {
            let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(64);
            for piece in data(i, 3 * 1024 * 1024).chunks(65_536) {
                tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
            }
            senders.push(tx);
            let body = Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
                rx.recv().await.map(|item| (item, rx))
            }));
            let (reg, repo) = (reg.clone(), repo.clone());
            let d = Digest::of(Algorithm::Sha256, b"never");
            tokio::spawn(async move { reg.upload_whole(&repo, &d, body).await });
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let answered = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            store.stat("nothing/here"),
        )
        .await;
        assert!(
            matches!(answered, Ok(Ok(None))),
            "the store did not answer: {answered:?}"
        );
        drop(senders);
    });
}
