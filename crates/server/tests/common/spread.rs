//! A load balancer in the test process: each request goes to the next of
//! several replicas in turn (round robin, per request, not per
//! connection), bodies streamed both ways.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::TryStreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Spread {
    upstreams: Vec<String>,
    next: AtomicUsize,
    client: reqwest::Client,
    /// Requests sent to each replica.
    counts: Vec<AtomicUsize>,
}

/// A running round-robin proxy.
pub struct RoundRobin {
    pub url: String,
    state: Arc<Spread>,
}

impl RoundRobin {
    /// Spreads requests over `upstreams` (`http://host:port`).
    pub async fn start(upstreams: &[String]) -> RoundRobin {
        let state = Arc::new(Spread {
            upstreams: upstreams.to_vec(),
            next: AtomicUsize::new(0),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            counts: upstreams.iter().map(|_| AtomicUsize::new(0)).collect(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
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
}

async fn forward(State(st): State<Arc<Spread>>, req: Request) -> Response {
    let i = st.next.fetch_add(1, Ordering::SeqCst) % st.upstreams.len();
    st.counts[i].fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = st
        .client
        .request(parts.method.clone(), format!("{}{path}", st.upstreams[i]));
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            out = out.header(name, value);
        }
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
