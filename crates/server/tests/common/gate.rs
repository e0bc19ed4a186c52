//! A proxy in front of an upstream registry, in the test process: counts
//! the requests that reach the upstream, can demand docker's token flow
//! (a 401 challenge and a token service of its own), slow blob bodies down,
//! corrupt chosen responses, send them without a length, never answer, or
//! play dead.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct GateState {
    url: String,
    upstream: String,
    /// "METHOD /path" → how many reached the upstream.
    counts: Mutex<HashMap<String, usize>>,
    /// Paths whose response bodies get one byte changed.
    corrupt: Mutex<HashSet<String>>,
    /// Paths answered with a redirect to themselves.
    loops: Mutex<HashSet<String>>,
    /// Paths whose responses go without a Content-Length (chunked).
    no_length: Mutex<HashSet<String>>,
    /// Blob requests are never answered.
    hang: AtomicBool,
    /// Pause between 64 KiB pieces of blob bodies.
    throttle: Mutex<Option<Duration>>,
    /// Demand a token from `/token`, issued for these Basic credentials.
    bearer: Option<(String, String)>,
    tokens_issued: AtomicUsize,
    down: AtomicBool,
    client: reqwest::Client,
    /// Requests (with their bodies) being answered now, and the most ever.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts a request as in flight until its response body is dropped.
struct InFlight(Arc<GateState>);

impl InFlight {
    fn start(st: &Arc<GateState>) -> InFlight {
        let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(st.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Gate {
    pub url: String,
    state: Arc<GateState>,
}

const TOKEN: &str = "gate-token-1";

impl Gate {
    /// A counting proxy to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Gate {
        Gate::start_inner(upstream, None).await
    }

    /// The same, demanding a bearer token obtained with `user:password`.
    pub async fn with_tokens(upstream: &str, user: &str, password: &str) -> Gate {
        Gate::start_inner(upstream, Some((user.to_owned(), password.to_owned()))).await
    }

    async fn start_inner(upstream: &str, bearer: Option<(String, String)>) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(GateState {
            url: url.clone(),
            upstream: upstream.trim_end_matches('/').to_owned(),
            bearer,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            ..GateState::default()
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Gate { url, state }
    }

    /// host:port, as a registry name for clients and credentials files.
    pub fn host(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        let counts = self.state.counts.lock().unwrap();
        counts
            .get(&format!("{method} {path}"))
            .copied()
            .unwrap_or(0)
    }

    /// Requests of any kind whose path contains `part`.
    pub fn count_containing(&self, part: &str) -> usize {
        let counts = self.state.counts.lock().unwrap();
        counts
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn tokens_issued(&self) -> usize {
        self.state.tokens_issued.load(Ordering::SeqCst)
    }

    pub fn corrupt(&self, path: &str, on: bool) {
        let mut c = self.state.corrupt.lock().unwrap();
        if on {
            c.insert(path.to_owned());
        } else {
            c.remove(path);
        }
    }

    /// Answers `path` with a redirect to itself (a redirect loop).
    pub fn redirect_loop(&self, path: &str) {
        self.state.loops.lock().unwrap().insert(path.to_owned());
    }

    /// Sends `path`'s responses without their length.
    pub fn no_length(&self, path: &str) {
        self.state.no_length.lock().unwrap().insert(path.to_owned());
    }

    /// Never answers blob requests (until set off).
    pub fn hang_blobs(&self, on: bool) {
        self.state.hang.store(on, Ordering::SeqCst);
    }

    pub fn throttle(&self, pause: Option<Duration>) {
        *self.state.throttle.lock().unwrap() = pause;
    }

    /// The most requests the upstream was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Answers 503 to everything (an upstream that is down).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

fn status(code: u16, body: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_owned()));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
    r
}

async fn handle(State(st): State<Arc<GateState>>, req: Request) -> Response {
    // Owned copies: the request (whose body is not Sync) is not held
    // across an await.
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or(path.clone(), |p| p.as_str().to_owned());
    let (authorization, accept) = {
        let h = req.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        (get("authorization"), get("accept"))
    };
    drop(req);
    if path == "/token" {
        let Some((user, password)) = &st.bearer else {
            return status(404, "");
        };
        let expected = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{password}")
            )
        );
        if authorization.as_deref() != Some(expected.as_str()) {
            return status(401, "bad credentials");
        }
        st.tokens_issued.fetch_add(1, Ordering::SeqCst);
        return status(200, &format!(r#"{{"token":"{TOKEN}","expires_in":300}}"#));
    }
    if st.down.load(Ordering::SeqCst) {
        return status(503, "down");
    }
    if st.bearer.is_some() && authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let repo = path
            .strip_prefix("/v2/")
            .and_then(|p| {
                ["/manifests/", "/blobs/", "/tags/"]
                    .iter()
                    .find_map(|m| p.split_once(m).map(|(r, _)| r.to_owned()))
            })
            .unwrap_or_default();
        let mut r = status(401, "token required");
        r.headers_mut().insert(
            "www-authenticate",
            format!(
                r#"Bearer realm="{}/token",service="gate",scope="repository:{repo}:pull""#,
                st.url
            )
            .parse()
            .unwrap(),
        );
        return r;
    }
    *st.counts
        .lock()
        .unwrap()
        .entry(format!("{method} {path}"))
        .or_default() += 1;
    if st.hang.load(Ordering::SeqCst) && path.contains("/blobs/") {
        std::future::pending::<()>().await;
    }
    if st.loops.lock().unwrap().contains(&path) {
        let mut r = status(307, "");
        r.headers_mut()
            .insert("location", format!("{}{path}", st.url).parse().unwrap());
        return r;
    }

    let flight = InFlight::start(&st);
    let mut fwd = st
        .client
        .request(method, format!("{}{path_and_query}", st.upstream));
    if let Some(a) = accept {
        fwd = fwd.header("accept", a);
    }
    if st.bearer.is_none() {
        if let Some(a) = &authorization {
            fwd = fwd.header("authorization", a);
        }
    }
    let resp = match fwd.send().await {
        Ok(r) => r,
        Err(_) => return status(502, "upstream unreachable"),
    };
    let mut out = Response::new(Body::empty());
    *out.status_mut() = resp.status();
    for name in [
        "content-type",
        "content-length",
        "docker-content-digest",
        "www-authenticate",
        "location",
        "link",
    ] {
        if let Some(v) = resp.headers().get(name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    if st.no_length.lock().unwrap().contains(&path) {
        out.headers_mut().remove("content-length");
    }
    let corrupt = st.corrupt.lock().unwrap().contains(&path);
    let throttle = *st.throttle.lock().unwrap();
    *out.body_mut() = if corrupt {
        let mut bytes = resp.bytes().await.unwrap_or_default().to_vec();
        if let Some(b) = bytes.first_mut() {
            *b ^= 0x20;
        }
        // A stream: sent chunked when its length is not given.
        Body::from_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
            bytes::Bytes::from(bytes),
        )]))
    } else if let (Some(pause), true) = (throttle, path.contains("/blobs/")) {
        let pieces = resp.bytes_stream().flat_map(|chunk| {
            let pieces: Vec<Result<bytes::Bytes, reqwest::Error>> = match chunk {
                Ok(b) => (0..b.len())
                    .step_by(64 * 1024)
                    .map(|i| Ok(b.slice(i..(i + 64 * 1024).min(b.len()))))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(pieces)
        });
        Body::from_stream(pieces.then(move |p| async move {
            tokio::time::sleep(pause).await;
            p
        }))
    } else {
        Body::from_stream(resp.bytes_stream())
    };
    // In flight until the body is sent (or dropped).
    let body = std::mem::replace(out.body_mut(), Body::empty());
    *out.body_mut() = Body::from_stream(body.into_data_stream().map(move |c| {
        let _held = &flight;
        c
    }));
    out
}
