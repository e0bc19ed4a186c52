//! A real Prometheus (Debian's, run by the test) scrapes Berth, and the
//! series are read back through Prometheus' query API.

mod common;

use common::*;
use reqwest::StatusCode;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the first series answering `query`, once there is one.
async fn query(base: &str, q: &str) -> Option<f64> {
    let url = format!(
        "{base}/api/v1/query?query={}",
        form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
    );
    let r = reqwest::get(url).await.ok()?;
    // Prometheus answers 503 until its storage is ready.
    if r.status() != StatusCode::OK {
        return None;
    }
    let v: serde_json::Value = r.json_body().await;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn prometheus_scrapes_berth() {
    // A pull-through upstream, for the sync counters.
    let up = Server::start();
    up.push_image("up/app", "v1", 9, 1).await;
    // One process: Prometheus scrapes each replica on its own.
    let s = Server::start_one(&format!(
        r#","storage":{{"rootDirectory":@ROOT@@SHARED@,"gcInterval":"1s"}},"extensions":{{"metrics":{{"enable":true,"prometheus":{{"path":"/metrics"}}}},
        "sync":{{"registries":[{{"urls":["{}"],"onDemand":true,"content":[{{"prefix":"up/**"}}]}}]}}}}"#,
        up.base
    ));
    for _ in 0..2 {
        assert_eq!(
            s.get("/v2/up/app/manifests/v1").await.status(),
            StatusCode::OK
        );
    }
    let (_, digest) = s.push_image("metrics/app", "v1", 1, 1).await;
    for _ in 0..3 {
        assert_eq!(
            s.get("/v2/metrics/app/manifests/v1").await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        s.get("/v2/metrics/nothing/manifests/v1").await.status(),
        StatusCode::NOT_FOUND
    );
    let _ = digest;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: berth\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{}']\n",
            s.host()
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (run scripts/install-test-deps.sh)");
    let _prometheus = Prometheus(child);
    let base = format!("http://127.0.0.1:{port}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let downloads = loop {
        if let Some(v) = query(&base, r#"zot_repo_downloads_total{repo="metrics/app"}"#).await {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the downloads"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(downloads >= 3.0, "{downloads}");
    assert!(
        query(&base, r#"zot_repo_uploads_total{repo="metrics/app"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        query(&base, r#"zot_http_requests_total{method="PUT",code="201"}"#)
            .await
            .unwrap_or(0.0)
            >= 3.0
    );
    assert!(query(&base, r#"up{job="berth"}"#).await == Some(1.0));
    for (series, least) in [
        ("berth_sync_misses_total", 1.0),
        ("berth_sync_hits_total", 1.0),
        ("berth_sync_upstream_errors_total", 0.0),
        ("berth_http_response_body_bytes_total", 1000.0),
        ("berth_http_request_body_bytes_total", 1000.0),
        ("berth_uploads_in_progress", 0.0),
        ("berth_gc_runs_total", 1.0),
        (r#"zot_repo_storage_bytes{repo="metrics/app"}"#, 1000.0),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match query(&base, series).await {
                Some(v) if v >= least => break,
                other => assert!(Instant::now() < deadline, "{series}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Names from failed requests never become labels.
    assert_eq!(
        query(
            &base,
            r#"count(zot_repo_downloads_total{repo="metrics/nothing"})"#
        )
        .await,
        None
    );
}
