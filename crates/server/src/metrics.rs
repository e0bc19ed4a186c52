//! Prometheus metrics (`extensions.metrics`), with zot's metric names where
//! zot has one so existing dashboards keep working. Labels are bounded:
//! method and status code only (never a name taken from a request).

use crate::app::App;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepoLabels {
    repo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

/// The metrics of one process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    repo_latency: Family<RepoLabels, Histogram>,
    downloads: Family<RepoLabels, Counter>,
    uploads: Family<RepoLabels, Counter>,
    auth_failures: Counter,
    gc_runs: Counter,
    gc_bytes: Counter,
    gc_seconds: Histogram,
    repo_bytes: Family<RepoLabels, Gauge>,
    /// Body bytes received and sent (counted as they stream).
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    uploads_live: Gauge,
    sync_hits: Counter,
    sync_misses: Counter,
    sync_errors: Counter,
    sync_mirrored: Counter,
    sync_negative_hits: Counter,
    sync_throttled: Counter,
    worker_restarts: Family<WorkerLabels, Counter>,
}

/// A body that adds the bytes passing through to a counter.
pub struct Counted {
    inner: axum::body::Body,
    counter: Counter,
}

impl Counted {
    pub fn new(inner: axum::body::Body, counter: Counter) -> Counted {
        Counted { inner, counter }
    }
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Raises a counter to a total kept elsewhere (counters only go up).
fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

fn method_label(m: &http::Method) -> String {
    match *m {
        http::Method::GET
        | http::Method::HEAD
        | http::Method::POST
        | http::Method::PUT
        | http::Method::PATCH
        | http::Method::DELETE => m.as_str().to_owned(),
        _ => "OTHER".to_owned(),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "zot_http_requests",
            "Requests served, by method and status code",
            requests.clone(),
        );
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ])
        });
        registry.register(
            "zot_http_method_latency_seconds",
            "Request latency by method",
            latency.clone(),
        );
        let repo_latency = Family::<RepoLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0, 60.0])
        });
        registry.register(
            "zot_http_repo_latency_seconds",
            "Latency of successful requests by repository",
            repo_latency.clone(),
        );
        let downloads = Family::<RepoLabels, Counter>::default();
        registry.register(
            "zot_repo_downloads",
            "Manifests served, by repository",
            downloads.clone(),
        );
        let uploads = Family::<RepoLabels, Counter>::default();
        registry.register(
            "zot_repo_uploads",
            "Manifests pushed, by repository",
            uploads.clone(),
        );
        let gc_runs = Counter::default();
        registry.register(
            "berth_gc_runs",
            "Garbage collection passes",
            gc_runs.clone(),
        );
        let gc_bytes = Counter::default();
        registry.register(
            "berth_gc_reclaimed_bytes",
            "Bytes of content garbage collection removed",
            gc_bytes.clone(),
        );
        let gc_seconds = Histogram::new([0.01, 0.1, 1.0, 10.0, 60.0, 600.0]);
        registry.register(
            "berth_gc_duration_seconds",
            "Duration of garbage collection passes",
            gc_seconds.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "berth_auth_failures",
            "Requests refused for bad or missing credentials",
            auth_failures.clone(),
        );
        let worker_restarts = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "berth_worker_restarts",
            "Times a background worker panicked and was restarted",
            worker_restarts.clone(),
        );
        let repo_bytes = Family::<RepoLabels, Gauge>::default();
        registry.register(
            "zot_repo_storage_bytes",
            "Bytes of content each repository links (at the last GC pass)",
            repo_bytes.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "berth_http_request_body_bytes",
            "Request body bytes received",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "berth_http_response_body_bytes",
            "Response body bytes sent",
            bytes_out.clone(),
        );
        let uploads_live = Gauge::default();
        registry.register(
            "berth_uploads_in_progress",
            "Blob upload sessions being served",
            uploads_live.clone(),
        );
        let sync_hits = Counter::default();
        registry.register(
            "berth_sync_hits",
            "Pull-through requests answered from the cache",
            sync_hits.clone(),
        );
        let sync_misses = Counter::default();
        registry.register(
            "berth_sync_misses",
            "Pull-through requests that fetched from upstream",
            sync_misses.clone(),
        );
        let sync_errors = Counter::default();
        registry.register(
            "berth_sync_upstream_errors",
            "Upstream requests that failed or brought bad data",
            sync_errors.clone(),
        );
        let sync_mirrored = Counter::default();
        registry.register(
            "berth_sync_mirrored_images",
            "Images copied by mirroring",
            sync_mirrored.clone(),
        );
        let sync_negative_hits = Counter::default();
        registry.register(
            "berth_sync_negative_hits",
            "Pull-through misses answered from the memory of what upstream lacked",
            sync_negative_hits.clone(),
        );
        let sync_throttled = Counter::default();
        registry.register(
            "berth_sync_throttled",
            "Pull-through misses refused because every upstream fetch was in use",
            sync_throttled.clone(),
        );
        let info = Info::new(vec![
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            (
                "commit".to_owned(),
                option_env!("BERTH_COMMIT").unwrap_or("unknown").to_owned(),
            ),
            ("binary_type".to_owned(), "berth".to_owned()),
        ]);
        registry.register("zot", "Build information", info);
        Metrics {
            registry,
            requests,
            latency,
            repo_latency,
            downloads,
            uploads,
            auth_failures,
            gc_runs,
            gc_bytes,
            gc_seconds,
            repo_bytes,
            worker_restarts,
            bytes_in,
            bytes_out,
            uploads_live,
            sync_hits,
            sync_misses,
            sync_errors,
            sync_mirrored,
            sync_negative_hits,
            sync_throttled,
        }
    }

    /// Records one finished request.
    pub fn observe(&self, method: &http::Method, status: u16, seconds: f64) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                code: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(seconds);
        if status == 401 {
            self.auth_failures.inc();
        }
    }

    /// Records a successful registry request on an existing repository. Only
    /// successes carry a repository label, so names from bad requests can
    /// never grow the label set.
    pub fn observe_repo(&self, repo: String, seconds: f64, download: bool, upload: bool) {
        let labels = RepoLabels { repo };
        self.repo_latency.get_or_create(&labels).observe(seconds);
        if download {
            self.downloads.get_or_create(&labels).inc();
        }
        if upload {
            self.uploads.get_or_create(&labels).inc();
        }
    }

    /// Records a garbage collection pass, and the storage of each
    /// repository it measured (repositories that went lose their series).
    pub fn observe_gc(&self, r: &berth_core::gc::GcReport, seconds: f64) {
        self.gc_runs.inc();
        self.gc_bytes.inc_by(r.bytes_reclaimed);
        self.gc_seconds.observe(seconds);
        self.repo_bytes.clear();
        for (repo, bytes) in &r.repo_bytes {
            self.repo_bytes
                .get_or_create(&RepoLabels { repo: repo.clone() })
                .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
        }
    }

    /// The restart counter of a background worker (shown from the start,
    /// at 0).
    pub fn worker_restarts(&self, worker: &str) -> Counter {
        self.worker_restarts
            .get_or_create(&WorkerLabels {
                worker: worker.to_owned(),
            })
            .clone()
    }

    /// The text exposition, with the figures kept by the registry core
    /// brought up to date first.
    pub fn render(&self, registry: &berth_core::Registry) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        self.uploads_live
            .set(i64::try_from(registry.uploads_in_progress()).unwrap_or(i64::MAX));
        let s = registry.sync_stats();
        catch_up(&self.sync_hits, s.hits.load(Relaxed));
        catch_up(&self.sync_misses, s.misses.load(Relaxed));
        catch_up(&self.sync_errors, s.upstream_errors.load(Relaxed));
        catch_up(&self.sync_mirrored, s.mirrored.load(Relaxed));
        catch_up(&self.sync_negative_hits, s.negative_hits.load(Relaxed));
        catch_up(&self.sync_throttled, s.throttled.load(Relaxed));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `GET <prometheus.path>`, allowed by `accessControl.metrics`.
pub async fn serve(State(app): State<App>, req: Request) -> Response {
    let auth = crate::app::in_force(req.extensions(), &app);
    let who = match auth.identify(req.method(), req.headers()).await {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    if !auth.policy.metrics_allowed(&who) {
        let e = if who.is_anonymous() {
            auth.unauthorized("authentication required")
        } else {
            crate::error::ApiError::with_detail(
                berth_oci::ErrorCode::Denied,
                "metrics are not readable by this user",
            )
        };
        return e.into_response();
    }
    let mut r = (http::StatusCode::OK, app.metrics.render(&app.registry)).into_response();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    r
}
