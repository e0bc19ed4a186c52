//! A refused write changes nothing, and a full disk is said plainly: a
//! chunk whose length disagrees with its Content-Range leaves the upload as
//! it was, and a store with no room answers 507 "storage is full" (logged
//! once, not per request) while keeping what was already there.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use std::path::{Path, PathBuf};

/// A chunked body (no Content-Length), so only the bytes tell the length.
fn streamed(data: &[u8]) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

async fn patch(s: &Server, loc: &str, range: &str, data: &[u8]) -> reqwest::Response {
    s.client
        .patch(s.url(loc))
        .header("content-type", "application/octet-stream")
        .header("content-range", range)
        .body(streamed(data))
        .send()
        .await
        .unwrap()
}

async fn upload_size(s: &Server, loc: &str) -> String {
    let r = s.get(loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    header(&r, "range")
}

#[tokio::test]
async fn a_refused_chunk_appends_nothing() {
    let s = Server::start();
    let r = s
        .send(Method::POST, "/v2/refuse/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    let first = bytes(1, 3000);
    let r = patch(&s, &loc, "0-2999", &first).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    // Longer, then shorter than the range it declares.
    for (range, len) in [("3000-3999", 1500), ("3000-3999", 500)] {
        let r = patch(&s, &loc, range, &bytes(2, len)).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{range} with {len}");
        assert_eq!(error_code(r).await, "SIZE_INVALID");
        assert_eq!(upload_size(&s, &loc).await, "0-2999");
    }
    // The upload goes on as if the refused chunks never came.
    let second = bytes(3, 1000);
    let r = patch(&s, &loc, "3000-3999", &second).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let whole = [first, second].concat();
    let digest = sha256(&whole);
    let r = s.finish_upload(&location(&r), &digest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.blob("refuse", &digest).await, whole);
}

/// A tmpfs mounted for one test, lazily unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root, as CI has");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_is_said_plainly_and_loses_nothing() {
    let mut mounted = None;
    let s = Server::start_prepared("", |root| {
        mounted = Some(Tmpfs::mount(root, "2m"));
    });
    let _mounted = mounted;
    let kept = bytes(5, 100_000);
    let kept_digest = s.push_blob("full", &kept).await;

    let big = bytes(6, 3 * 1024 * 1024);
    for _ in 0..2 {
        // Monolithic.
        let r = s
            .send(
                Method::POST,
                &format!("/v2/full/blobs/uploads/?digest={}", sha256(&big)),
                &[("content-type", "application/octet-stream")],
                big.clone(),
            )
            .await;
        assert_eq!(r.status().as_u16(), 507);
        let body: serde_json::Value = r.json_body().await;
        let detail = body["errors"][0]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("storage is full"), "{body}");
    }
    // Chunked: the refused chunk is undone, freeing its space.
    let r = s
        .send(Method::POST, "/v2/full/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    let r = patch(&s, &loc, &format!("0-{}", big.len() - 1), &big).await;
    assert_eq!(r.status().as_u16(), 507);
    assert_eq!(upload_size(&s, &loc).await, "0-0");

    // What was there is still served, and a push that fits still works.
    assert_eq!(s.blob("full", &kept_digest).await, kept);
    let small = bytes(7, 50_000);
    let d = s.push_blob("full", &small).await;
    assert_eq!(s.blob("full", &d).await, small);
    let log = s.log();
    assert_eq!(
        log.matches("storage is full").count(),
        1,
        "logged once, not per request:\n{log}"
    );
}
