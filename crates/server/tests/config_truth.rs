//! Configuration keys that take effect as zot documents them: `http.ratelimit`
//! (answered before authentication), and an htpasswd file whose unusable
//! lines and disappearance are reported rather than ignored.

mod common;

use common::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// Sends `n` requests at once; returns each status with its OCI error code
/// (empty when the body is not an OCI error) and `Retry-After`.
async fn burst(
    s: &Server,
    n: usize,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
) -> Vec<(StatusCode, String, Option<String>)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let mut r = s.client.request(method.clone(), s.url(path));
        if let Some(a) = auth {
            r = r.header("authorization", basic(a));
        }
        set.spawn(async move {
            let r = r.send().await.expect("request");
            let status = r.status();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = r.text().await.unwrap_or_default();
            let code = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (status, code, retry)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

fn htpasswd_file(dir: &std::path::Path, extra_lines: &str) -> String {
    let path = dir.join("htpasswd");
    std::fs::write(
        &path,
        format!(
            "alice:{}\n{extra_lines}",
            bcrypt::hash("alice-pw", 5).unwrap()
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// A flood of wrong passwords is answered 429 TOOMANYREQUESTS (the OCI
/// error body) rather than 401: the limit is applied before anyone's
/// credentials are looked at.
#[tokio::test]
async fn ratelimit_answers_before_authentication() {
    let files = tempfile::tempdir().unwrap();
    let htpasswd = htpasswd_file(files.path(), "");
    let s = Server::start_one(&format!(
        r#","http":{{"address":"127.0.0.1","port":"0","ratelimit":{{"rate":1}},"auth":{{"htpasswd":{{"path":{htpasswd:?}}}}}}}"#
    ));
    let got = burst(&s, 30, reqwest::Method::GET, "/v2/", Some("mallory:guess")).await;
    let limited: Vec<_> = got
        .iter()
        .filter(|(st, _, _)| *st == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(!limited.is_empty(), "no request was limited: {got:?}");
    for (_, code, retry) in &limited {
        assert_eq!(code, "TOOMANYREQUESTS");
        assert_eq!(retry.as_deref(), Some("1"));
    }
    // The ones let through were authenticated, and refused.
    assert!(
        got.iter()
            .all(|(st, _, _)| *st == StatusCode::TOO_MANY_REQUESTS
                || *st == StatusCode::UNAUTHORIZED),
        "{got:?}"
    );
    // Another path has a bucket of its own (zot keys by address and path).
    let r = s.get("/v2/_catalog").await;
    assert_ne!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// A per-method rate limits that method only.
#[tokio::test]
async fn ratelimit_per_method() {
    let s = Server::start_one(
        r#","http":{"address":"127.0.0.1","port":"0","ratelimit":{"methods":[{"method":"DELETE","rate":1}]}}"#,
    );
    let gets = burst(&s, 30, reqwest::Method::GET, "/v2/", None).await;
    assert!(
        gets.iter().all(|(st, _, _)| *st == StatusCode::OK),
        "{gets:?}"
    );
    let path = format!("/v2/a/manifests/sha256:{}", "0".repeat(64));
    let dels = burst(&s, 30, reqwest::Method::DELETE, &path, None).await;
    let limited = dels
        .iter()
        .filter(|(st, code, _)| *st == StatusCode::TOO_MANY_REQUESTS && code == "TOOMANYREQUESTS")
        .count();
    assert!(limited > 0, "{dels:?}");
    assert!(limited < dels.len(), "the first DELETE passes: {dels:?}");
    // GETs still pass while DELETEs are limited.
    assert_eq!(s.get("/v2/").await.status(), StatusCode::OK);
}

/// Lines that cannot log in are reported with their line number (never
/// their hash); a deleted file is logged as an error, and the entries
/// loaded last stay in force.
#[tokio::test]
async fn htpasswd_problems_are_reported() {
    let files = tempfile::tempdir().unwrap();
    let htpasswd = htpasswd_file(
        files.path(),
        "bob:plain-text-secret\ncarol:$apr1$saltsalt$hashhashhash\n",
    );
    let s = Server::start_with(&format!(
        r#","http":{{"address":"127.0.0.1","port":"0","auth":{{"htpasswd":{{"path":{htpasswd:?}}}}}}}"#
    ));
    let log = s.log();
    for line in [2, 3] {
        assert!(
            log.lines()
                .any(|l| l.contains("htpasswd line cannot be used")
                    && l.contains(&format!("\"line\":{line}"))
                    && l.contains(&htpasswd)),
            "line {line} not reported: {log}"
        );
    }
    assert!(!log.contains("plain-text-secret") && !log.contains("hashhashhash"));

    s.login(Some("alice:alice-pw"));
    assert_eq!(s.get("/v2/").await.status(), StatusCode::OK);
    std::fs::remove_file(&htpasswd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Each request looks at the file (at most once a second).
        assert_eq!(s.get("/v2/").await.status(), StatusCode::OK);
        let log = s.log();
        if log
            .lines()
            .any(|l| l.contains("\"ERROR\"") && l.contains("htpasswd file cannot be read"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deleted htpasswd file not reported: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
