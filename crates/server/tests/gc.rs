//! Garbage collection: offline (`berth gc`) and online while clients push;
//! nothing referenced disappears, unreferenced content goes only after the
//! grace delay, and an interrupted pass is undone at start-up.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use std::time::{Duration, Instant};

fn run_gc(s: &Server, delay: &str, dry_run: bool) -> String {
    s.berth_gc(&format!(r#""gcDelay":"{delay}""#), dry_run)
}

#[tokio::test]
async fn berth_gc_removes_only_what_nothing_references_after_the_delay() {
    let s = Server::start();
    let (manifest, _) = s.push_image("keep/app", "v1", 1, 2).await;
    let layer = bytes(100, 1000); // the first layer of that image
    let layer_digest = sha256(&layer);
    let orphan = bytes(9, 5000);
    let orphan_digest = s.push_blob("keep/app", &orphan).await;
    let r = s
        .send(
            Method::POST,
            &format!("/v2/other/blobs/uploads/?mount={layer_digest}&from=keep/app"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Within the delay nothing goes.
    let out = run_gc(&s, "1h", false);
    assert!(out.contains("removed 0 links and 0 blobs"), "{out}");
    // A dry run lists and keeps.
    let out = run_gc(&s, "0s", true);
    assert!(out.contains("would remove 2 links and 1 blobs"), "{out}");
    assert!(
        out.contains(&orphan_digest) && out.contains(&format!("link other {layer_digest}")),
        "{out}"
    );
    assert_eq!(s.blob("keep/app", &orphan_digest).await, orphan);

    let out = run_gc(&s, "0s", false);
    assert!(
        out.contains("removed 2 links and 1 blobs (5000 bytes)"),
        "{out}"
    );
    assert_eq!(
        s.head(&format!("/v2/keep/app/blobs/{orphan_digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.head(&format!("/v2/other/blobs/{layer_digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    // What the image references stays, byte for byte.
    assert_eq!(s.blob("keep/app", &layer_digest).await, layer);
    assert_eq!(
        s.get("/v2/keep/app/manifests/v1")
            .await
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        manifest
    );
    let out = run_gc(&s, "0s", false);
    assert!(out.contains("removed 0 links and 0 blobs"), "{out}");
}

#[tokio::test]
async fn online_gc_never_breaks_a_push() {
    let s = Server::start_with(
        r#","storage":{"rootDirectory":@ROOT@@SHARED@,"gc":true,"gcDelay":"3s","gcInterval":"150ms"}"#,
    );

    let orphan = bytes(77, 4000);
    let orphan_digest = s.push_blob("busy/app", &orphan).await;
    let mut pushed = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(6) || i < 10 {
        pushed.push((
            format!("t{i}"),
            s.push_image("busy/app", &format!("t{i}"), 1000 + i, 2)
                .await,
        ));
        i += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while s
        .head(&format!("/v2/busy/app/blobs/{orphan_digest}"))
        .await
        .status()
        != StatusCode::NOT_FOUND
    {
        assert!(Instant::now() < deadline, "the orphan was never collected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (tag, (manifest, digest)) in &pushed {
        let r = s.get(&format!("/v2/busy/app/manifests/{tag}")).await;
        assert_eq!(header(&r, "docker-content-digest"), *digest);
        assert_eq!(r.bytes().await.unwrap().to_vec(), *manifest);
        let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        for layer in v["layers"].as_array().unwrap().iter().chain([&v["config"]]) {
            let d = layer["digest"].as_str().unwrap();
            assert_eq!(sha256(&s.blob("busy/app", d).await), d);
        }
    }
    assert!(s.log().contains("garbage collected"), "{}", s.log());
}

#[tokio::test]
async fn an_interrupted_pass_is_undone_at_start_up() {
    let mut s = Server::start();
    let data = bytes(5, 3000);
    let digest = s.push_blob("crash/app", &data).await;
    // What a pass that died between hiding and re-checking leaves behind.
    let hex = digest.trim_start_matches("sha256:");
    let key = format!("blobs/sha256/{}/{hex}", &hex[..2]);
    let store = s.store().await;
    let hidden = format!("gc-trash/deadbeef/{}", key.replace('/', "~"));
    store
        .rename(&key, &hidden, berth_storage::Durability::Durable)
        .await
        .unwrap();
    assert_eq!(
        s.head(&format!("/v2/crash/app/blobs/{digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    s.restart();
    assert_eq!(s.blob("crash/app", &digest).await, data);
    assert!(store.list("gc-trash/deadbeef").await.unwrap().is_empty());
}
