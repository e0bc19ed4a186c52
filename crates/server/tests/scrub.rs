//! Scrub finds content corrupted on disk, quarantines it, and no pull ever
//! gets the bad bytes; pushing the content again repairs it.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use std::process::Command;

fn blob_path(s: &Server, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    s.root().join("blobs/sha256").join(&hex[..2]).join(hex)
}

fn corrupt(path: &std::path::Path) {
    let mut data = std::fs::read(path).unwrap();
    data[0] ^= 0xff;
    std::fs::write(path, data).unwrap();
}

fn scrub(s: &Server) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("scrub")
        .arg(s.dir.path().join("config.json"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn scrub_quarantines_corrupt_content_and_a_push_repairs_it() {
    let s = Server::start();
    let layer = bytes(7, 300_000);
    let layer_digest = s.push_blob("scrub/app", &layer).await;
    let (manifest, manifest_digest) = s.push_image("scrub/app", "v1", 8, 1).await;
    let (code, out) = scrub(&s);
    assert_eq!(code, 0, "{out}");

    corrupt(&blob_path(&s, &layer_digest));
    corrupt(&blob_path(&s, &manifest_digest));
    // A manifest is verified on every read: an error, not bad bytes.
    let r = s.get("/v2/scrub/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!r
        .bytes()
        .await
        .unwrap()
        .windows(10)
        .any(|w| manifest.windows(10).next() == Some(w)));

    let (code, out) = scrub(&s);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&layer_digest) && out.contains(&manifest_digest),
        "{out}"
    );
    assert!(s
        .root()
        .join("quarantine/sha256")
        .join(layer_digest.trim_start_matches("sha256:"))
        .exists());
    let r = s.get(&format!("/v2/scrub/app/blobs/{layer_digest}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");

    // Pushing the same content again repairs both.
    s.push_blob("scrub/app", &layer).await;
    assert_eq!(s.blob("scrub/app", &layer_digest).await, layer);
    let r = s
        .send(
            Method::PUT,
            "/v2/scrub/app/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            manifest.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.get("/v2/scrub/app/manifests/v1").await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), manifest);
    let (code, out) = scrub(&s);
    assert_eq!(code, 0, "{out}");
}
