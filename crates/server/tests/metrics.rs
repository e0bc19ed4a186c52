//! A real Prometheus (Debian's, run by the test) scrapes Berth, and the
//! series are read back through Prometheus' query API.

mod common;

use common::*;
use reqwest::StatusCode;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let v: serde_json::Value = reqwest::get(url).await.ok()?.json_body().await;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn prometheus_scrapes_berth() {
    let s = Server::start_with(
        r#","extensions":{"metrics":{"enable":true,"prometheus":{"path":"/metrics"}}}"#,
    );
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
