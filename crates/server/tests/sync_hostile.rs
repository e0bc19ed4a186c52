//! Pull-through against an upstream that misbehaves (behind the test's
//! proxy): a manifest miss does not hide a blob, a failing upstream is not
//! a missing blob, a body of unknown length is not handed over whole before
//! its digest is checked, and a reader asking for many digests while the
//! upstream hangs is refused instead of leaving a fetch per digest behind.

mod common;

use common::gate::Gate;
use common::*;
use reqwest::StatusCode;
use std::time::Duration;

fn on_demand(url: &str) -> String {
    format!(
        r#","extensions":{{"sync":{{"enable":true,"registries":[{{"urls":["{url}"],"onDemand":true,"maxRetries":0}}]}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_miss_does_not_hide_a_blob_and_failures_are_not_misses() {
    let up = Server::start();
    let layer = up.push_blob("app", &bytes(7, 3000)).await;
    let gate = Gate::start(&up.base).await;
    let d = Server::start_one(&on_demand(&gate.url));

    // The layer's digest asked for as a manifest: upstream says 404, and
    // that is remembered for manifests only.
    let r = d.get(&format!("/v2/app/manifests/{layer}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = d.get(&format!("/v2/app/blobs/{layer}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);

    // An upstream that fails is no proof a blob is missing: HEAD says 502
    // as GET does, not 404.
    let other = up.push_blob("app", &bytes(8, 3000)).await;
    gate.set_down(true);
    let r = d.head(&format!("/v2/app/blobs/{other}")).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let r = d.get(&format!("/v2/app/blobs/{other}")).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    gate.set_down(false);
    let r = d.head(&format!("/v2/app/blobs/{other}")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// Without a Content-Length the end of the body is unknown: nothing that
/// failed its digest reaches the client whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_body_of_unknown_length_is_never_served_whole() {
    let up = Server::start();
    let data = bytes(9, 3 * 1024 * 1024 + 17);
    let layer = up.push_blob("app", &data).await;
    let gate = Gate::start(&up.base).await;
    let d = Server::start_one(&on_demand(&gate.url));
    let path = format!("/v2/app/blobs/{layer}");
    gate.no_length(&path);
    gate.corrupt(&path, true);
    // Read piece by piece: what arrived before the download broke off
    // counts, not only whether it ended well.
    let mut received = 0;
    if let Ok(mut r) = d.client.get(d.url(&path)).send().await {
        if r.status() == StatusCode::OK {
            while let Ok(Some(piece)) = r.chunk().await {
                received += piece.len();
            }
        } else {
            assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        }
    }
    assert!(
        received < data.len(),
        "all {received} bytes of a corrupt blob reached the client"
    );
    // Once the upstream sends it right (still without a length), it comes
    // through and is kept.
    gate.corrupt(&path, false);
    let r = d.get(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
}

/// While the upstream never answers, a reader asking for hundreds of
/// digests gets 429 past the bound instead of a waiting fetch each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_waiting_on_a_hung_upstream_are_bounded() {
    let up = Server::start();
    let gate = Gate::start(&up.base).await;
    let d = Server::start_one(&on_demand(&gate.url));
    gate.hang_blobs(true);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let d = &d;
    let asks = (0..320u64).map(|i| {
        let client = client.clone();
        async move {
            let digest = sha256(format!("nobody has {i}").as_bytes());
            match client
                .get(d.url(&format!("/v2/app/blobs/{digest}")))
                .send()
                .await
            {
                Ok(r) => Some(r.status()),
                Err(_) => None,
            }
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    let refused = answers
        .iter()
        .filter(|a| **a == Some(StatusCode::TOO_MANY_REQUESTS))
        .count();
    // 256 fetches at most: the rest are refused at once.
    assert!(refused >= 320 - 256, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.is_none() || *a == Some(StatusCode::TOO_MANY_REQUESTS)),
        "{answers:?}"
    );
}
