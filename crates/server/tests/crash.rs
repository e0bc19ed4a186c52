//! Crash safety: clients that vanish mid-upload and a server killed with
//! SIGKILL leave no visible partial object, and everything acknowledged is
//! served intact after a restart.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A push the server acknowledged: repository, digest, content.
type Acked = (String, String, Vec<u8>);

/// Every file under `blobs/` must hash to its own name: nothing half-written
/// is ever at a content address.
/// Every blob at its address holds the content of that address (read
/// through the server's store, whichever kind it is).
async fn assert_blob_store_consistent(s: &Server) {
    let store = s.store().await;
    for shard in store.list("blobs/sha256").await.unwrap() {
        let dir = format!("blobs/sha256/{}", shard.name);
        for f in store.list(&dir).await.unwrap() {
            if f.name.starts_with('.') {
                continue; // a temporary file, never served
            }
            let data = store
                .get(&format!("{dir}/{}", f.name))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                sha256(&data),
                format!("sha256:{}", f.name),
                "corrupt blob at its address"
            );
        }
    }
}

/// Sends a PATCH that promises `promised` bytes but delivers `sent`, then
/// drops the connection.
fn truncated_patch(host: &str, path: &str, data: &[u8], promised: usize) {
    let mut conn = TcpStream::connect(host).unwrap();
    write!(conn, "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {promised}\r\n\r\n").unwrap();
    conn.write_all(data).unwrap();
    conn.flush().unwrap();
    drop(conn);
}

#[tokio::test]
async fn client_disconnect_mid_upload() {
    let s = Server::start();
    let data = bytes(1, 1_000_000);
    let digest = sha256(&data);
    let r = s
        .send(Method::POST, "/v2/crash/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    let host = s.host();
    let path = loc.clone();
    let part = data[..300_000].to_vec();
    tokio::task::spawn_blocking(move || truncated_patch(&host, &path, &part, 1_000_000))
        .await
        .unwrap();

    // Once the aborted request has settled, the status tells what was kept
    // and the session is still usable.
    let status = || async {
        let r = s.get(&loc).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        header(&r, "range")
            .trim_start_matches("0-")
            .parse::<usize>()
            .unwrap()
            + 1
    };
    let mut kept = status().await;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = status().await;
        if now == kept && now > 1 {
            break;
        }
        kept = now;
    }
    assert!(kept > 1 && kept <= 300_000, "{kept}");
    assert_eq!(
        s.head(&format!("/v2/crash/blobs/{digest}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_blob_store_consistent(&s).await;

    let r = s
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", &format!("{kept}-999999"))],
            data[kept..].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.finish_upload(&loc, &digest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.blob("crash", &digest).await, data);
}

#[tokio::test]
async fn sigkill_mid_upload_keeps_acknowledged_and_hides_partial() {
    let mut s = Server::start();
    let (manifest, manifest_digest) = s.push_image("kill/app", "v1", 2, 3).await;
    // Large enough that part of it reaches the store before the kill on
    // either kind of store (the shared one writes 8 MiB parts).
    let data = bytes(3, 12_000_000);
    let digest = sha256(&data);
    let r = s
        .send(Method::POST, "/v2/kill/app/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);

    // Stream part of a large body, then kill the server under it.
    let host = s.host();
    let mut conn = TcpStream::connect(&host).unwrap();
    write!(
        conn,
        "PUT {loc}?digest={digest} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .unwrap();
    conn.write_all(&data[..9_000_000]).unwrap();
    conn.flush().unwrap();
    // Wait until the server has staged some of it.
    let store = s.store().await;
    let id = loc.rsplit('/').next().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stage_size(&id).await.unwrap().unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing was staged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.kill();
    drop(conn);
    s.restart();

    assert_eq!(
        s.head(&format!("/v2/kill/app/blobs/{digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_blob_store_consistent(&s).await;
    let r = s.get("/v2/kill/app/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest"), manifest_digest);
    assert_eq!(r.bytes().await.unwrap().to_vec(), manifest);
    // The interrupted upload resumes where the disk says it stopped.
    let r = s.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let kept: usize = header(&r, "range")
        .trim_start_matches("0-")
        .parse::<usize>()
        .unwrap()
        + 1;
    assert!(kept <= 9_000_000);
    let r = s
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", &format!("{kept}-{}", data.len() - 1))],
            data[kept..].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.finish_upload(&loc, &digest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = s
        .get(&format!("/v2/kill/app/blobs/{digest}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&got), digest);
}

#[tokio::test]
async fn sigkill_during_concurrent_pushes_loses_nothing_acknowledged() {
    let mut s = Server::start();
    let acknowledged: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let base = s.base.clone();
    let mut tasks = Vec::new();
    for worker in 0..6u64 {
        let acked = acknowledged.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..1000u64 {
                let data = bytes(worker * 1000 + i, 20_000 + (i as usize % 7) * 150_000);
                let digest = sha256(&data);
                let repo = format!("burst/w{worker}");
                let url = format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}");
                match client.post(url).body(data.clone()).send().await {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        acked.lock().unwrap().push((repo, digest, data));
                    }
                    _ => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.kill();
    for t in tasks {
        t.await.unwrap();
    }
    s.restart();
    let acked = acknowledged.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no push completed before the kill");
    for (repo, digest, data) in &acked {
        let r = s.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK, "acknowledged {digest} lost");
        assert!(
            r.bytes().await.unwrap().as_ref() == data.as_slice(),
            "acknowledged {digest} corrupt"
        );
    }
    assert_blob_store_consistent(&s).await;
}
