//! A load balancer in the test process: each request goes to the next of
//! several replicas in turn (round robin, per request, not per
//! connection), bodies streamed both ways.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::TryStreamExt;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Spread {
    upstreams: std::sync::RwLock<Vec<String>>,
    next: AtomicUsize,
    client: reqwest::Client,
    /// Requests sent to each replica.
    counts: Vec<AtomicUsize>,
    /// Every request's method and path, in order.
    seen: std::sync::Mutex<Vec<String>>,
}

/// A running round-robin proxy.
pub struct RoundRobin {
    pub url: String,
    state: Arc<Spread>,
}

impl RoundRobin {
    /// Spreads requests over `upstreams` (`http://host:port`).
    pub async fn start(upstreams: &[String]) -> RoundRobin {
        let state = Spread::new(upstreams);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, state.app()).into_future());
        RoundRobin { url, state }
    }

    pub fn host(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// How many requests each replica got.
    pub fn counts(&self) -> Vec<usize> {
        self.state
            .counts
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    /// How many requests had this method and path.
    pub fn seen(&self, method: &str, path: &str) -> usize {
        let want = format!("{method} {path}");
        let seen = self.state.seen.lock().unwrap();
        seen.iter().filter(|s| **s == want).count()
    }
}

impl Spread {
    fn new(upstreams: &[String]) -> Arc<Spread> {
        Arc::new(Spread {
            upstreams: std::sync::RwLock::new(upstreams.to_vec()),
            next: AtomicUsize::new(0),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            counts: upstreams.iter().map(|_| AtomicUsize::new(0)).collect(),
            seen: Default::default(),
        })
    }

    fn app(self: &Arc<Spread>) -> axum::Router {
        axum::Router::new()
            .fallback(forward)
            .with_state(self.clone())
    }
}

/// A round-robin balancer on a thread and runtime of its own, for
/// harnesses that run outside any runtime; stops when dropped.
pub struct Balancer {
    pub url: String,
    state: Arc<Spread>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Balancer {
    /// On loopback port `port` (0: any).
    pub fn start_on(port: u16, upstreams: &[String]) -> Balancer {
        let state = Spread::new(upstreams);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = state.app();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Balancer {
            url,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Points the balancer at new replicas (after they restarted).
    pub fn retarget(&self, upstreams: &[String]) {
        let mut ups = self.state.upstreams.write().unwrap();
        assert_eq!(ups.len(), upstreams.len(), "as many replicas as before");
        *ups = upstreams.to_vec();
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open connections are not waited for: a client may hold one.
        drop(self.thread.take());
    }
}

async fn forward(State(st): State<Arc<Spread>>, req: Request) -> Response {
    let (i, target) = {
        let ups = st.upstreams.read().unwrap();
        let i = st.next.fetch_add(1, Ordering::SeqCst) % ups.len();
        (i, ups[i].clone())
    };
    st.counts[i].fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    st.seen
        .lock()
        .unwrap()
        .push(format!("{} {}", parts.method, parts.uri.path()));
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = st
        .client
        .request(parts.method.clone(), format!("{target}{path}"));
    for (name, value) in &parts.headers {
        // The Host too, as a proxy in front of a registry passes it.
        out = out.header(name, value);
    }
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Body::from(format!("replica {i}: {e}")))
                .unwrap()
        }
    };
    let mut b = Response::builder().status(resp.status().as_u16());
    for (name, value) in resp.headers() {
        b = b.header(name.as_str(), value.as_bytes());
    }
    b.body(Body::from_stream(
        resp.bytes_stream().map_err(std::io::Error::other),
    ))
    .unwrap()
}
