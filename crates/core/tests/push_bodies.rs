//! The push pipeline keeps every byte whatever the body's shape: pieces of
//! any size, bodies on either side of the size where hashing moves off the
//! receiving task, chunks that end mid-block, on the filesystem (direct
//! writes of gathered block-aligned batches) and in memory (batches by
//! reference).

use berth_core::{Options, Registry};
use berth_oci::{Algorithm, Digest, RepoName};
use berth_storage::fs::FsBackend;
use berth_storage::mem::MemBackend;
use berth_storage::Backend;
use bytes::Bytes;
use futures_util::TryStreamExt;
use std::sync::Arc;

const MIB: usize = 1024 * 1024;

fn data(seed: u32, len: usize) -> Bytes {
    (0..len as u32)
        .map(|i| (i ^ seed).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect::<Vec<u8>>()
        .into()
}

/// `bytes` in pieces whose sizes cycle through `sizes`.
fn pieces(bytes: Bytes, sizes: &[usize]) -> berth_core::ByteStream {
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < bytes.len() {
        let end = (at + sizes[i % sizes.len()]).min(bytes.len());
        out.push(Ok(bytes.slice(at..end)));
        at = end;
        i += 1;
    }
    Box::pin(futures_util::stream::iter(out))
}

async fn read_back(reg: &Registry, digest: &Digest, len: usize) -> Vec<u8> {
    let stream = reg.read_blob(digest, 0, len as u64).await.unwrap();
    let parts: Vec<Bytes> = stream.try_collect().await.unwrap();
    parts.concat()
}

async fn check(store: Arc<dyn Backend>) {
    let reg = Registry::new(store, Options::default());
    let repo = RepoName::parse("shapes").unwrap();
    let sizes: &[&[usize]] = &[&[MIB], &[65_536], &[1, 4095, 70_001], &[3 * MIB + 7]];
    let lens = [0, 1, MIB, MIB + 1, 2 * MIB + 4096, 5 * MIB + 333];
    let mut seed = 0;
    for len in lens {
        for shape in sizes {
            seed += 1;
            let bytes = data(seed, len);
            let digest = Digest::of(Algorithm::Sha256, &bytes);
            reg.upload_whole(&repo, &digest, pieces(bytes.clone(), shape))
                .await
                .unwrap_or_else(|e| panic!("{len} bytes in {shape:?}: {e}"));
            assert_eq!(
                read_back(&reg, &digest, len).await,
                bytes,
                "{len} {shape:?}"
            );
        }
    }
    // Chunked, with chunks that end mid-block, each in odd pieces.
    let len = 6 * MIB + 1234;
    let bytes = data(99, len);
    let digest = Digest::of(Algorithm::Sha256, &bytes);
    let s = reg.start_upload(&repo).await.unwrap();
    let cuts = [0, 5, 1_500_001, 1_500_002, 4 * MIB + 17, len - 3, len];
    for w in cuts.windows(2) {
        let chunk = bytes.slice(w[0]..w[1]);
        let range = Some((w[0] as u64, w[1] as u64 - 1));
        if w[1] == len {
            reg.finish_upload(&repo, &s.id, &digest, range, Some(pieces(chunk, &[40_000])))
                .await
                .unwrap();
        } else {
            let st = reg
                .append_upload(&repo, &s.id, range, pieces(chunk, &[40_000, 333_333]))
                .await
                .unwrap();
            assert_eq!(st.size, w[1] as u64);
        }
    }
    assert_eq!(read_back(&reg, &digest, len).await, bytes);
    refused_and_broken_chunks(&reg, &repo).await;
    // A wrong digest is refused and nothing is committed.
    let bytes = data(7, 3 * MIB);
    let wrong = Digest::of(Algorithm::Sha256, b"something else");
    assert!(reg
        .upload_whole(&repo, &wrong, pieces(bytes, &[100_000]))
        .await
        .is_err());
    assert!(reg.blob_size(&repo, &wrong).await.is_err());
}

/// A chunk is answered while its last batches may still be hashing, and
/// the next chunk is hashed after them. A chunk refused for its length or
/// cut off by the client must leave no trace in that running hash.
async fn refused_and_broken_chunks(reg: &Registry, repo: &RepoName) {
    let len = 4 * MIB + 77;
    let first = 2 * MIB + 5;
    // Content-Range promises more than the body holds: refused, cut back,
    // and the rest sent again.
    let (bytes, digest) = blob(42, len);
    let id = first_chunk(reg, repo, &bytes, first).await;
    let short = bytes.slice(first..first + 700_000);
    let range = Some((first as u64, (first + 800_000) as u64 - 1));
    assert!(reg
        .append_upload(repo, &id, range, pieces(short, &[65_536]))
        .await
        .is_err());
    assert_eq!(
        reg.upload_status(repo, &id).await.unwrap().size,
        first as u64
    );
    finish_from(reg, repo, &id, &bytes, &digest, first).await;
    // A body that breaks off: what arrived stays staged, and the client
    // resumes from there.
    let (bytes, digest) = blob(43, len);
    let id = first_chunk(reg, repo, &bytes, first).await;
    let mut parts: Vec<std::io::Result<Bytes>> = (0..5)
        .map(|i| Ok(bytes.slice(first + i * 100_000..first + (i + 1) * 100_000)))
        .collect();
    parts.push(Err(std::io::Error::other("client went away")));
    let broken: berth_core::ByteStream = Box::pin(futures_util::stream::iter(parts));
    assert!(reg.append_upload(repo, &id, None, broken).await.is_err());
    let at = reg.upload_status(repo, &id).await.unwrap().size as usize;
    assert!(at >= first && at <= first + 500_000, "{at}");
    finish_from(reg, repo, &id, &bytes, &digest, at).await;
}

fn blob(seed: u32, len: usize) -> (Bytes, Digest) {
    let bytes = data(seed, len);
    let digest = Digest::of(Algorithm::Sha256, &bytes);
    (bytes, digest)
}

/// Opens an upload and sends its first `n` bytes (hashed on a lane).
async fn first_chunk(reg: &Registry, repo: &RepoName, bytes: &Bytes, n: usize) -> String {
    let s = reg.start_upload(repo).await.unwrap();
    let body = pieces(bytes.slice(..n), &[65_536]);
    let st = reg.append_upload(repo, &s.id, None, body).await.unwrap();
    assert_eq!(st.size, n as u64);
    s.id
}

/// Sends the rest of `bytes` from `at` and checks what was committed.
async fn finish_from(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    bytes: &Bytes,
    digest: &Digest,
    at: usize,
) {
    let range = Some((at as u64, bytes.len() as u64 - 1));
    let rest = pieces(bytes.slice(at..), &[333_333]);
    reg.finish_upload(repo, id, digest, range, Some(rest))
        .await
        .unwrap();
    assert_eq!(read_back(reg, digest, bytes.len()).await, *bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_shape_lands_whole_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    check(Arc::new(FsBackend::open(dir.path(), true).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_shape_lands_whole_in_memory() {
    check(Arc::new(MemBackend::new())).await;
}
