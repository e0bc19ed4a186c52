//! Blob uploads against the real server: every way to push, mount, resume
//! and cancel, and their error paths.

mod common;

use common::*;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn monolithic_uploads() {
    let s = Server::start();
    let data = bytes(1, 70_000);
    let digest = sha256(&data);

    // POST then PUT.
    let r = s
        .send(Method::POST, "/v2/mono/blobs/uploads/", &[], Vec::new())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    assert!(loc.starts_with("/v2/mono/blobs/uploads/"), "{loc}");
    assert_eq!(header(&r, "range"), "0-0");
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    let r = s
        .send(
            Method::PUT,
            &with_query(&loc, &format!("digest={digest}")),
            &[],
            data.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/mono/blobs/{digest}"));
    assert_eq!(header(&r, "docker-content-digest"), digest);

    let r = s.get(&format!("/v2/mono/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "70000");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);
    let r = s.head(&format!("/v2/mono/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "70000");
    assert!(r.bytes().await.unwrap().is_empty());

    // POST with the digest: one request.
    let other = bytes(2, 1234);
    let d2 = sha256(&other);
    let r = s
        .send(
            Method::POST,
            &format!("/v2/mono/blobs/uploads/?digest={d2}"),
            &[],
            other.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/mono/blobs/{d2}"));
    assert_eq!(s.blob("mono", &d2).await, other);

    // The same with a wrong digest stores nothing.
    let wrong = sha256(b"something else");
    let r = s
        .send(
            Method::POST,
            &format!("/v2/mono/blobs/uploads/?digest={wrong}"),
            &[],
            other.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(
        s.head(&format!("/v2/mono/blobs/{wrong}")).await.status(),
        StatusCode::NOT_FOUND
    );

    // sha512 works the same way.
    let d512 = sha512(&other);
    let r = s
        .send(Method::POST, "/v2/mono/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    let r = s
        .send(
            Method::PUT,
            &with_query(&loc, &format!("digest={d512}")),
            &[],
            other.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.get(&format!("/v2/mono/blobs/{d512}")).await;
    assert_eq!(header(&r, "docker-content-digest"), d512);
    assert_eq!(r.bytes().await.unwrap().to_vec(), other);

    // The empty blob.
    let empty = sha256(b"");
    s.push_blob("mono", b"").await;
    let r = s.get(&format!("/v2/mono/blobs/{empty}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "0");
}

#[tokio::test]
async fn put_with_wrong_digest_is_refused_and_session_dropped() {
    let s = Server::start();
    let r = s
        .send(Method::POST, "/v2/w/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    let wrong = sha256(b"not the content");
    let r = s
        .send(
            Method::PUT,
            &with_query(&loc, &format!("digest={wrong}")),
            &[],
            b"content".to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(
        s.head(&format!("/v2/w/blobs/{wrong}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.head(&format!("/v2/w/blobs/{}", sha256(b"content")))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let r = s.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");

    // Missing or malformed digest parameter.
    let r = s
        .send(Method::POST, "/v2/w/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    let r = s.send(Method::PUT, &loc, &[], b"x".to_vec()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = s
        .send(
            Method::PUT,
            &with_query(&loc, "digest=sha256:nothex"),
            &[],
            b"x".to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn chunked_upload_with_out_of_order_chunks() {
    let s = Server::start();
    let data = bytes(3, 30);
    let digest = sha256(&data);
    let r = s
        .send(
            Method::POST,
            "/v2/chunky/blobs/uploads/",
            &[("content-length", "0")],
            Vec::new(),
        )
        .await;
    let loc = location(&r);
    let patch = |range: &'static str, body: &[u8]| {
        let body = body.to_vec();
        let loc = loc.clone();
        let s = &s;
        async move {
            s.send(
                Method::PATCH,
                &loc,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", range),
                ],
                body,
            )
            .await
        }
    };
    // A first chunk that does not start at 0.
    let r = patch("10-19", &data[10..20]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), "0-0");
    let r = patch("0-9", &data[..10]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-9");
    let loc2 = location(&r);
    // The same chunk again, and one that skips ahead.
    let r = patch("0-9", &data[..10]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), "0-9");
    let r = patch("20-29", &data[20..]).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // Content-Length that disagrees with Content-Range.
    let r = s
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "10-19")],
            data[10..15].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    // Status, on the first Location (still valid).
    let r = s.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-9");
    assert!(!location(&r).is_empty());
    let r = s
        .send(
            Method::PATCH,
            &loc2,
            &[("content-range", "10-19")],
            data[10..20].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-19");
    // A last chunk in the PUT that is out of order is 416 too.
    let put = with_query(&loc, &format!("digest={digest}"));
    let r = s
        .send(
            Method::PUT,
            &put,
            &[("content-range", "25-29")],
            data[25..].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = s
        .send(
            Method::PUT,
            &put,
            &[("content-range", "20-29")],
            data[20..].to_vec(),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    assert_eq!(s.blob("chunky", &digest).await, data);
    // The session is gone once completed.
    assert_eq!(s.get(&loc).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn streamed_patch_without_content_range_or_length() {
    let s = Server::start();
    let data = bytes(4, 3 * 1024 * 1024 + 17);
    let digest = sha256(&data);
    let r = s
        .send(Method::POST, "/v2/stream/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    // A chunked-encoded body (no Content-Length), as Go clients send it.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        data.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = s
        .client
        .patch(s.url(&loc))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
    let loc = location(&r);
    let r = s
        .send(
            Method::PUT,
            &with_query(&loc, &format!("digest={digest}")),
            &[("content-length", "0")],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = s
        .get(&format!("/v2/stream/blobs/{digest}"))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(got.as_ref() == data.as_slice());
}

#[tokio::test]
async fn cancel_and_unknown_uploads() {
    let s = Server::start();
    let r = s
        .send(Method::POST, "/v2/c/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    // An upload is bound to its repository.
    let id = loc.rsplit('/').next().unwrap().to_owned();
    let r = s.get(&format!("/v2/other/blobs/uploads/{id}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(s.delete(&loc).await.status(), StatusCode::NO_CONTENT);
    let r = s.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    for path in [
        "/v2/c/blobs/uploads/00000000-0000-0000-0000-000000000000",
        "/v2/c/blobs/uploads/not.an.id",
    ] {
        let r = s.send(Method::PATCH, path, &[], b"x".to_vec()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    }
    assert_eq!(s.delete(&loc).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cross_repository_mounts() {
    let s = Server::start();
    let data = bytes(50, 512);
    let d = s.push_blob("src/repo", &data).await;
    let r = s
        .send(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/dst/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(
        s.get(&location(&r)).await.bytes().await.unwrap().to_vec(),
        data
    );

    // From a repository that does not have it: a fresh session instead.
    let other = bytes(51, 300);
    let od = sha256(&other);
    let r = s
        .send(
            Method::POST,
            &format!("/v2/dst2/blobs/uploads/?mount={od}&from=src/repo"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    assert!(loc.starts_with("/v2/dst2/blobs/uploads/"));
    let r = s
        .send(
            Method::PUT,
            &with_query(&loc, &format!("digest={od}")),
            &[],
            other.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Without `from`: mounted when the registry has it, else a session.
    let r = s
        .send(
            Method::POST,
            &format!("/v2/dst3/blobs/uploads/?mount={d}"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s
        .send(
            Method::POST,
            &format!("/v2/dst3/blobs/uploads/?mount={}", sha256(b"nowhere")),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Bad parameters.
    let r = s
        .send(
            Method::POST,
            "/v2/dst3/blobs/uploads/?mount=sha256:zz&from=src/repo",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = s
        .send(
            Method::POST,
            &format!("/v2/dst3/blobs/uploads/?mount={d}&from=../x"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "NAME_INVALID");
}

#[tokio::test]
async fn uploads_survive_a_restart() {
    let mut s = Server::start();
    let data = bytes(60, 100_000);
    let digest = sha256(&data);
    let r = s
        .send(Method::POST, "/v2/resume/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    let r = s
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "0-59999")],
            data[..60_000].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (m, md) = s.push_image("resume", "kept", 61, 2).await;
    s.restart();
    let r = s.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-59999");
    let r = s
        .send(
            Method::PATCH,
            &loc,
            &[("content-range", "60000-99999")],
            data[60_000..].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.finish_upload(&loc, &digest).await;
    expect_status(r, StatusCode::CREATED).await;
    assert_eq!(s.blob("resume", &digest).await, data);
    let r = s.get("/v2/resume/manifests/kept").await;
    assert_eq!(header(&r, "docker-content-digest"), md);
    assert_eq!(r.bytes().await.unwrap().to_vec(), m);
}

/// `?digest-algorithm=` on the POST (end-4c): one Berth computes opens the
/// upload and the blob completes under it; any other is refused at once,
/// before the client sends the blob.
#[tokio::test]
async fn the_digest_algorithm_is_chosen_when_the_upload_opens() {
    let s = Server::start();
    let post = |query: &'static str| {
        let s = &s;
        async move {
            s.send(
                Method::POST,
                &format!("/v2/algo/blobs/uploads/?{query}"),
                &[("content-length", "0")],
                Vec::new(),
            )
            .await
        }
    };
    for refused in ["digest-algorithm=md5", "digest-algorithm=SHA512"] {
        let r = post(refused).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{refused}");
        assert_eq!(error_code(r).await, "UNSUPPORTED", "{refused}");
    }
    let data = bytes(12, 5000);
    let digest = sha512(&data);
    let r = post("digest-algorithm=sha512").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    let r = s
        .send(
            Method::PATCH,
            &loc,
            &[("content-type", "application/octet-stream")],
            data.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.finish_upload(&location(&r), &digest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.blob("algo", &digest).await, data);
}
