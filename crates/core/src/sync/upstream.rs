//! The client of an upstream registry: its URLs tried in order, retries,
//! Basic credentials, and docker's token flow (a 401 challenge answered by
//! a token fetched from the realm and reused until it expires).
//!
//! It knows the distribution API's paths and nothing of local storage.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("not found upstream")]
    NotFound,
    #[error("upstream refused the credentials ({0})")]
    Unauthorized(String),
    #[error("upstream {0}")]
    Failed(String),
}

/// Accept header for manifests: every kind Berth stores.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.artifact.manifest.v1+json";

/// One upstream registry.
pub struct Upstream {
    client: reqwest::Client,
    /// Base URLs (`scheme://host[:port]`), tried in order.
    urls: Vec<String>,
    /// `host[:port]` → (username, password), from `credentialsFile`.
    credentials: HashMap<String, (String, String)>,
    max_retries: u32,
    retry_delay: Duration,
    /// (base URL, scope) → token and when it stops being used.
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
    /// Fetches for clients' misses that may run at once.
    permits: Arc<tokio::sync::Semaphore>,
}

/// Fetches (with their bodies) one upstream serves at once for clients'
/// misses: anonymous readers cannot turn the registry into an amplifier
/// that spends its upstream allowance without bound.
pub const UPSTREAM_CONCURRENCY: usize = 16;
/// How long a miss waits for one of them before it is refused (429).
const PERMIT_WAIT: Duration = Duration::from_secs(30);

/// Largest token response and list page read.
const TOKEN_LIMIT: usize = 1024 * 1024;
/// The longest an upstream may take to answer a request's headers.
const HEADERS_WAIT: Duration = Duration::from_secs(60);
/// The longest any request but a blob's GET may take, body included
/// (tokens, manifests, HEADs, listings: a few MiB at most). A blob's body
/// is bounded by its rate instead (`blobs::STALL_BYTES`).
pub const SMALL_REQUEST_WAIT: Duration = Duration::from_secs(120);
const LIST_LIMIT: usize = 16 * 1024 * 1024;
/// Most tokens kept at once.
const TOKENS_MAX: usize = 10_000;

/// Tokens are used until this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
/// Longest a token is reused, whatever lifetime the token service claims
/// (`expires_in` is a number from outside: near `u64::MAX` it would
/// overflow an `Instant`).
const TOKEN_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Until when a token fetched at `now` is used, given the token service's
/// `expires_in` (seconds; the distribution spec's default is 60).
fn token_deadline(now: Instant, expires_in: Option<u64>) -> Instant {
    let lifetime = Duration::from_secs(expires_in.unwrap_or(60)).min(TOKEN_MAX_LIFETIME);
    now.checked_add(lifetime.saturating_sub(TOKEN_MARGIN))
        .unwrap_or(now)
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("urls", &self.urls)
            .finish()
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// Docker Hub serves its API elsewhere than its name.
fn api_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    match host_of(url) {
        "docker.io" | "index.docker.io" => "https://registry-1.docker.io".to_owned(),
        _ => url.to_owned(),
    }
}

/// Whether a base URL is Docker Hub (one-segment names are `library/`).
pub fn is_docker_hub(url: &str) -> bool {
    matches!(
        host_of(url),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The parameters of a `WWW-Authenticate: Bearer ...` challenge.
fn parse_challenge(value: &str) -> Option<HashMap<String, String>> {
    let rest = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    let mut out = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (val, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.insert(key, val.to_owned());
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

impl Upstream {
    pub fn new(
        urls: &[String],
        credentials: HashMap<String, (String, String)>,
        tls_verify: bool,
        extra_roots: Vec<reqwest::Certificate>,
        max_retries: u32,
        retry_delay: Duration,
    ) -> Result<Upstream, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(!tls_verify);
        for root in extra_roots {
            builder = builder.add_root_certificate(root);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Upstream {
            client,
            urls: urls.iter().map(|u| api_base(u)).collect(),
            credentials,
            max_retries,
            retry_delay,
            tokens: Mutex::new(HashMap::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(UPSTREAM_CONCURRENCY)),
        })
    }

    /// A turn to fetch from this upstream, held until the fetch ends;
    /// `None` when none came free in time.
    pub async fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(PERMIT_WAIT, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The credentials for a base URL: by its host, and for Docker Hub
    /// under any of its names (operators write `docker.io`).
    fn basic_for(&self, base: &str) -> Option<&(String, String)> {
        let host = host_of(base);
        if is_docker_hub(base) {
            ["docker.io", "index.docker.io", "registry-1.docker.io", host]
                .iter()
                .find_map(|h| self.credentials.get(*h))
        } else {
            self.credentials.get(host)
        }
    }

    fn cached_token(&self, base: &str, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(&(base.to_owned(), scope.to_owned()))
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    /// Answers a Bearer challenge: fetches a token from its realm.
    async fn fetch_token(
        &self,
        base: &str,
        challenge: &HashMap<String, String>,
        default_scope: &str,
    ) -> Result<(String, String), UpstreamError> {
        let realm = challenge
            .get("realm")
            .ok_or_else(|| UpstreamError::Failed("challenge without realm".into()))?;
        let secure = realm.starts_with("https://");
        if !secure && !realm.starts_with("http://") {
            return Err(UpstreamError::Failed(format!(
                "token realm {realm:?} is not an http(s) URL"
            )));
        }
        // Credentials never go over plain HTTP for an HTTPS upstream.
        if !secure && base.starts_with("https://") {
            return Err(UpstreamError::Failed(format!(
                "token realm {realm:?} is plain HTTP for an HTTPS upstream"
            )));
        }
        let scope = challenge
            .get("scope")
            .cloned()
            .unwrap_or_else(|| default_scope.to_owned());
        let mut query = vec![("scope", scope.clone())];
        if let Some(service) = challenge.get("service") {
            query.push(("service", service.clone()));
        }
        let mut req = self
            .client
            .get(realm)
            .query(&query)
            .timeout(SMALL_REQUEST_WAIT);
        if let Some((user, pass)) = self.basic_for(base) {
            req = req.basic_auth(user, Some(pass));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| UpstreamError::Failed(format!("token request: {e}")))?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Unauthorized(format!(
                "token service answered {}",
                resp.status()
            )));
        }
        let v = read_json(resp, TOKEN_LIMIT).await?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::Failed("token response has no token".into()))?
            .to_owned();
        let until = token_deadline(Instant::now(), v.get("expires_in").and_then(|e| e.as_u64()));
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: expired tokens go, and a flood of scopes starts afresh.
        let now = Instant::now();
        tokens.retain(|_, (_, until)| *until > now);
        if tokens.len() >= TOKENS_MAX {
            tokens.clear();
        }
        tokens.insert((base.to_owned(), scope.clone()), (token.clone(), until));
        drop(tokens);
        Ok((token, scope))
    }

    /// One request to one base URL, answering an auth challenge once.
    async fn once(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{base}{path}");
        let mut token = self.cached_token(base, scope);
        let mut challenged = false;
        loop {
            let mut req = self.client.request(method.clone(), &url);
            if method != reqwest::Method::GET || !path.starts_with("blobs/") {
                req = req.timeout(SMALL_REQUEST_WAIT);
            }
            if let Some(a) = accept {
                req = req.header(reqwest::header::ACCEPT, a);
            }
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            } else if let Some((user, pass)) = self.basic_for(base) {
                req = req.basic_auth(user, Some(pass));
            }
            let resp = tokio::time::timeout(HEADERS_WAIT, req.send())
                .await
                .map_err(|_| {
                    UpstreamError::Failed(format!("{method} {url}: no answer in {HEADERS_WAIT:?}"))
                })?
                .map_err(|e| {
                    UpstreamError::Failed(format!("{method} {url}: {}", error_chain(&e)))
                })?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && token.is_some() && challenged {
                // Refused with a token the registry issued: Docker Hub's
                // answer for a repository that does not exist.
                return Err(UpstreamError::NotFound);
            }
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED || challenged {
                return Ok(resp);
            }
            challenged = true;
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            match challenge {
                Some(c) => token = Some(self.fetch_token(base, &c, scope).await?.0),
                // A Basic challenge: the credentials were sent (or there are none).
                None => return Ok(resp),
            }
        }
    }

    /// A request to the first URL that answers, with retries; 404 from
    /// every URL is `NotFound`.
    pub async fn request(
        &self,
        method: reqwest::Method,
        repo: &str,
        tail: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let path = format!("/v2/{repo}/{tail}");
        let scope = format!("repository:{repo}:pull");
        self.send(method, &path, accept, &scope).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut last = UpstreamError::Failed("no upstream URL configured".into());
        let mut not_found = false;
        for base in &self.urls {
            for attempt in 0..=self.max_retries {
                if attempt > 0 {
                    tokio::time::sleep(self.retry_delay).await;
                }
                match self.once(base, method.clone(), path, accept, scope).await {
                    Ok(resp) if resp.status().is_success() => return Ok(resp),
                    Ok(resp) if resp.status() == reqwest::StatusCode::NOT_FOUND => {
                        not_found = true;
                        break;
                    }
                    Ok(resp)
                        if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                            || resp.status() == reqwest::StatusCode::FORBIDDEN =>
                    {
                        last = UpstreamError::Unauthorized(format!(
                            "{base} answered {}",
                            resp.status()
                        ));
                        break;
                    }
                    Ok(resp) => {
                        last = UpstreamError::Failed(format!(
                            "{base}{path} answered {}",
                            resp.status()
                        ));
                        if resp.status().is_client_error() {
                            break;
                        }
                    }
                    Err(e @ UpstreamError::Unauthorized(_)) => {
                        last = e;
                        break;
                    }
                    Err(e) => last = e,
                }
            }
        }
        Err(if not_found {
            UpstreamError::NotFound
        } else {
            last
        })
    }

    /// The upstream catalog (all pages).
    pub async fn catalog(&self) -> Result<Vec<String>, UpstreamError> {
        self.pages("/v2/_catalog?n=1000", "registry:catalog:*", "repositories")
            .await
    }

    /// The tags of an upstream repository (all pages).
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, UpstreamError> {
        let scope = format!("repository:{repo}:pull");
        self.pages(&format!("/v2/{repo}/tags/list?n=1000"), &scope, "tags")
            .await
    }

    /// A paginated list: `field` of each page, following `Link` headers.
    async fn pages(
        &self,
        first: &str,
        scope: &str,
        field: &str,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut out = Vec::new();
        let mut path = first.to_owned();
        for _ in 0..10_000 {
            let resp = self.send(reqwest::Method::GET, &path, None, scope).await?;
            let next = next_link(&resp);
            let v = read_json(resp, LIST_LIMIT).await?;
            out.extend(
                v.get(field)
                    .and_then(|r| r.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned)),
            );
            match next {
                Some(n) => path = n,
                None => break,
            }
        }
        Ok(out)
    }
}

/// A JSON answer of at most `limit` bytes.
async fn read_json(
    resp: reqwest::Response,
    limit: usize,
) -> Result<serde_json::Value, UpstreamError> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::Failed(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(UpstreamError::Failed(format!(
                "answer larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|_| UpstreamError::Failed("answer is not JSON".into()))
}

/// The `Content-Length` an upstream announced (for HEAD, where the
/// response has no body to size).
pub fn announced_length(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The path of a `Link: <...>; rel="next"` header.
fn next_link(resp: &reqwest::Response) -> Option<String> {
    let v = resp.headers().get(reqwest::header::LINK)?.to_str().ok()?;
    let start = v.find('<')? + 1;
    let end = v[start..].find('>')? + start;
    let target = &v[start..end];
    let path = match target.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => target,
    };
    path.starts_with("/v2/").then(|| path.to_owned())
}

/// An error with its sources, for logs (reqwest's top line says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(c["realm"], "https://auth.docker.io/token");
        assert_eq!(c["service"], "registry.docker.io");
        assert_eq!(c["scope"], "repository:library/alpine:pull");
        assert!(parse_challenge(r#"Basic realm="x""#).is_none());
        assert!(parse_challenge("Bearer realm=\"unterminated").is_none());
    }

    #[test]
    fn docker_hub_credentials_are_found_under_any_of_its_names() {
        let creds: HashMap<String, (String, String)> =
            [("docker.io".to_owned(), ("u".to_owned(), "p".to_owned()))].into();
        let u = Upstream::new(
            &["https://docker.io".to_owned()],
            creds.clone(),
            true,
            Vec::new(),
            0,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(u.urls(), ["https://registry-1.docker.io"]);
        assert!(u.basic_for("https://registry-1.docker.io").is_some());
        let other = Upstream::new(
            &["https://ghcr.io".to_owned()],
            creds,
            true,
            Vec::new(),
            0,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(other.basic_for("https://ghcr.io").is_none());
    }

    #[test]
    fn token_lifetimes_saturate() {
        let now = Instant::now();
        for huge in [u64::MAX, u64::MAX / 2, 1 << 40] {
            let until = token_deadline(now, Some(huge));
            assert!(until > now);
            assert!(until <= now + TOKEN_MAX_LIFETIME);
        }
        assert_eq!(token_deadline(now, Some(0)), now);
        assert_eq!(token_deadline(now, None), now + Duration::from_secs(50));
    }

    /// A token service whose `expires_in` is `u64::MAX` (before the fix,
    /// `Instant + Duration` overflowed and the request panicked).
    #[tokio::test]
    async fn huge_token_lifetime_from_upstream_does_not_panic() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).to_ascii_lowercase();
                let (status, extra, body) = if text.starts_with("get /token") {
                    (
                        "200 OK",
                        String::new(),
                        format!(r#"{{"token":"t0k","expires_in":{}}}"#, u64::MAX),
                    )
                } else if text.contains("authorization: bearer t0k") {
                    ("200 OK", String::new(), r#"{"name":"r","tags":[]}"#.into())
                } else {
                    (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\"\r\n"),
                        String::new(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            }
        });
        let u = Upstream::new(
            &[format!("http://{addr}")],
            HashMap::new(),
            true,
            Vec::new(),
            0,
            Duration::from_secs(1),
        )
        .unwrap();
        for _ in 0..2 {
            let tags = tokio::time::timeout(Duration::from_secs(30), u.tags("r"))
                .await
                .expect("deadline");
            assert_eq!(tags.unwrap(), Vec::<String>::new());
        }
        server.abort();
    }

    #[test]
    fn docker_hub_is_recognised() {
        assert_eq!(
            api_base("https://docker.io"),
            "https://registry-1.docker.io"
        );
        assert_eq!(api_base("http://127.0.0.1:5000/"), "http://127.0.0.1:5000");
        assert!(is_docker_hub("https://index.docker.io"));
        assert!(!is_docker_hub("https://ghcr.io"));
        assert_eq!(host_of("http://127.0.0.1:5000/x"), "127.0.0.1:5000");
    }
}
