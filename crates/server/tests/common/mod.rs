//! The integration harness: starts the real `berth` binary on an ephemeral
//! port with a fresh storage root and hands back a client for it.
#![allow(dead_code)]

pub mod gate;
pub mod layout;
pub mod shared;
pub mod spread;

use reqwest::{Client, Method, Response, StatusCode};
use sha2::Digest as _;
pub use shared::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// This crate's directory, as the running `cargo test` names it: a test
/// binary may have been built from a checkout at another path (a shared
/// target directory), so the compile-time value is only a fallback.
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A running Berth: one process, or, when the suite runs on the shared
/// store, three replicas of one configuration behind a round-robin
/// balancer (each request to the next replica), `base` being the
/// balancer's.
pub struct Server {
    pub base: String,
    /// This process's own URL (`base` unless behind the balancer).
    pub direct: String,
    /// The other replicas and the balancer in front of all three.
    others: Vec<Server>,
    balancer: Option<spread::Balancer>,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub client: Client,
    extra: String,
    /// An `Authorization` header sent with every request that has none.
    auth: std::sync::Mutex<Option<String>>,
    /// The open-file limit (soft and hard) the server runs under, if set.
    nofile: Option<u64>,
    /// In shared mode: the backends, this server's `storage` keys and the
    /// URL of its database.
    pub shared: Option<(Arc<SharedBackends>, String, String)>,
}

/// The `Authorization` value for `user:password`.
pub fn basic(user_password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl Server {
    /// Starts Berth with a config whose `http`/`storage` basics are filled
    /// in; `extra` is spliced into the top-level object (",\"log\":{...}").
    pub fn start() -> Server {
        Server::start_with("")
    }

    pub fn start_with(extra: &str) -> Server {
        Server::start_full(extra, None, |_| {})
    }

    /// Like `start_with`, after `prepare` was given the (not yet created)
    /// storage root, e.g. to mount a small file system there.
    pub fn start_prepared(extra: &str, prepare: impl FnOnce(&Path)) -> Server {
        Server::start_full(extra, None, prepare)
    }

    /// Starts Berth under an open-file limit (`ulimit -n`), if given.
    pub fn start_limited(extra: &str, nofile: Option<u64>) -> Server {
        Server::start_full(extra, nofile, |_| {})
    }

    fn start_full(extra: &str, nofile: Option<u64>, prepare: impl FnOnce(&Path)) -> Server {
        if !shared_mode() {
            return Server::start_on(extra, nofile, prepare, None);
        }
        if !replicated_mode() {
            return Server::start_on(extra, nofile, prepare, Some(fresh_shared()));
        }
        // A test that names Berth's port (an OpenID provider must know the
        // callback URL) gets the balancer there; the replicas take any.
        let (extra, port) = match extra.split_once(r#""port":""#) {
            Some((before, rest)) => {
                let (port, after) = rest.split_once('"').expect("a quoted port");
                let port: u16 = port.parse().expect("a port number");
                (format!(r#"{before}"port":"0"{after}"#), port)
            }
            None => (extra.to_owned(), 0),
        };
        let mut first = Server::start_on(&extra, nofile, prepare, Some(fresh_shared()));
        first.others = vec![first.replica(), first.replica()];
        let balancer = spread::Balancer::start_on(port, &first.directs());
        first.base = balancer.url.clone();
        first.balancer = Some(balancer);
        first
    }

    /// Starts one Berth process, on the shared store when the suite runs
    /// on it but never behind the balancer: for what belongs to one
    /// process (its connections, its counters, its rate limits).
    pub fn start_one(extra: &str) -> Server {
        Server::start_one_limited(extra, None)
    }

    /// `start_one` under an open-file limit, if given.
    pub fn start_one_limited(extra: &str, nofile: Option<u64>) -> Server {
        Server::start_on(extra, nofile, |_| {}, shared_mode().then(fresh_shared))
    }

    /// How many processes serve this server's requests (3 behind the
    /// balancer, else 1).
    pub fn processes(&self) -> usize {
        1 + self.others.len()
    }

    /// How long something one replica noted in memory may take to reach
    /// the others (pull times and the web interface's rows: 30 s), or zero
    /// when one process serves every request.
    pub fn replica_lag(&self) -> Duration {
        if self.others.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_secs(45)
        }
    }

    /// The URLs of every process of this server.
    fn directs(&self) -> Vec<String> {
        std::iter::once(self)
            .chain(&self.others)
            .map(|s| s.direct.clone())
            .collect()
    }

    /// Starts Berth on a fresh place of the shared store (PostgreSQL and
    /// Garage), whatever the mode of the run.
    pub fn start_shared(extra: &str) -> Server {
        Server::start_on(extra, None, |_| {}, Some(fresh_shared()))
    }

    /// Starts Berth on a local filesystem store, whatever the mode of the
    /// run.
    pub fn start_local(extra: &str) -> Server {
        Server::start_on(extra, None, |_| {}, None)
    }

    /// The configuration file this server runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    /// Starts Berth on a fresh place of the given shared backends.
    pub fn start_shared_on(extra: &str, backends: Arc<SharedBackends>) -> Server {
        let (keys, url) = shared_storage_keys(&backends);
        Server::start_on(extra, None, |_| {}, Some((backends, keys, url)))
    }

    /// Starts another replica of this server: the same configuration on
    /// the same shared store, its own process and local directory.
    pub fn replica(&self) -> Server {
        let shared = self
            .shared
            .clone()
            .expect("replicas share the shared store");
        Server::start_on(&self.extra, self.nofile, |_| {}, Some(shared))
    }

    fn start_on(
        extra: &str,
        nofile: Option<u64>,
        prepare: impl FnOnce(&Path),
        shared: Option<(Arc<SharedBackends>, String, String)>,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(&dir.path().join("data"));
        let mut s = Server {
            base: String::new(),
            direct: String::new(),
            others: Vec::new(),
            balancer: None,
            dir,
            child: None,
            client: Client::builder()
                .pool_max_idle_per_host(4)
                .build()
                .expect("client"),
            extra: extra.to_owned(),
            auth: std::sync::Mutex::new(None),
            nofile,
            shared,
        };
        s.boot();
        s
    }

    /// The `storage` keys after `rootDirectory` that name this server's
    /// store (empty on the filesystem).
    pub fn storage_keys(&self) -> &str {
        self.shared.as_ref().map_or("", |(_, k, _)| k.as_str())
    }

    /// This server's store, opened by the test beside the server (the
    /// same files, or the same database and bucket prefix).
    pub async fn store(&self) -> Arc<dyn berth_storage::Backend> {
        match &self.shared {
            None => Arc::new(
                berth_storage::fs::FsBackend::open(self.root(), false).expect("open store"),
            ),
            Some((b, keys, url)) => {
                let prefix = keys
                    .split(r#""rootdirectory":""#)
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .expect("prefix");
                let pool = berth_storage::cluster::ClusterBackend::pool(url, 2).expect("pool");
                Arc::new(
                    berth_storage::cluster::ClusterBackend::connect(
                        pool,
                        b.garage.object_store(),
                        prefix,
                    )
                    .await
                    .expect("open shared store"),
                )
            }
        }
    }

    /// Makes a stored object look written `secs` ago (a file's mtime, or
    /// the row's `modified` column).
    pub fn backdate(&self, key: &str, secs: u64) {
        match &self.shared {
            None => {
                let path = self.root().join(key);
                let f = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                f.set_modified(std::time::SystemTime::now() - Duration::from_secs(secs))
                    .expect("set mtime");
            }
            Some((b, _, url)) => {
                let n = b.pg.execute_blocking(
                    url,
                    &format!(
                        "UPDATE objects SET modified = berth_now() - {} WHERE key = '{}'",
                        secs * 1_000_000,
                        key.replace('\'', "''")
                    ),
                );
                assert_eq!(n.trim(), "UPDATE 1", "{key}");
            }
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes the configuration file with `extra` spliced in (`@ROOT@` in
    /// it stands for the storage root, as a JSON string, `@SHARED@` for the
    /// shared store's keys).
    fn write_config(&self, extra: &str) -> PathBuf {
        // `@SHARED@` after `@ROOT@` keeps the shared store's keys in a
        // `storage` section a test writes itself.
        let extra = extra
            .replace(
                "@ROOT@",
                &format!("{:?}", self.root().display().to_string()),
            )
            .replace("@SHARED@", self.storage_keys());
        let config = self.dir.path().join("config.json");
        let text = format!(
            r#"{{"storage":{{"rootDirectory":{root:?}{shared}}},"http":{{"address":"127.0.0.1","port":"0"}},"log":{{"level":"info","output":{log:?},"audit":{audit:?}}}{extra}}}"#,
            root = self.root().display().to_string(),
            shared = self.storage_keys(),
            log = self.dir.path().join("berth.log").display().to_string(),
            audit = self.dir.path().join("audit.log").display().to_string(),
        );
        // Written aside and renamed, as an operator's tools do.
        let tmp = self.dir.path().join("config.json.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &config).expect("install config");
        config
    }

    /// Replaces the running server's configuration file (it reloads);
    /// every replica's.
    pub fn rewrite_config(&self, extra: &str) {
        self.write_config(extra);
        for o in &self.others {
            o.write_config(extra);
        }
    }

    /// Writes raw text as the configuration file (every replica's).
    pub fn write_raw_config(&self, text: &str) {
        std::fs::write(self.dir.path().join("config.json"), text).expect("write config");
        for o in &self.others {
            o.write_raw_config(text);
        }
    }

    /// Sends SIGHUP (reload the configuration now) to every replica.
    pub fn hangup(&self) {
        for s in std::iter::once(self).chain(&self.others) {
            unsafe {
                libc::kill(s.pid() as i32, libc::SIGHUP);
            }
        }
    }

    fn boot(&mut self) {
        let config = self.write_config(&self.extra.clone());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only `lim`.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read banner");
        let url = line
            .trim()
            .strip_prefix("berth listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        self.base = url.clone();
        self.direct = url;
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// host:port, for clients that take a registry host.
    pub fn host(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// The audit trail so far, one JSON value per line (every replica's,
    /// one after the other).
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        let mut lines: Vec<serde_json::Value> =
            std::fs::read_to_string(self.dir.path().join("audit.log"))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
                .collect();
        if !self.others.is_empty() {
            for o in &self.others {
                lines.extend(o.audit_lines());
            }
            // One trail again, in time order.
            // UTC RFC 3339 times, their fractions padded to compare as text.
            let at = |l: &serde_json::Value| {
                let t = l["time"].as_str().expect("audit time");
                let t = t.strip_suffix('Z').expect("UTC");
                let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
                format!("{secs}.{frac:0<9}")
            };
            lines.sort_by_key(at);
        }
        lines
    }

    /// The log so far (every replica's, one after the other).
    pub fn log(&self) -> String {
        let mut log =
            std::fs::read_to_string(self.dir.path().join("berth.log")).unwrap_or_default();
        for o in &self.others {
            log.push_str(&o.log());
        }
        log
    }

    /// Kills the server with SIGKILL (no chance to clean up), every
    /// replica.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for o in &mut self.others {
            o.kill();
        }
    }

    /// Sends SIGTERM and waits for a clean exit (every replica; the first
    /// one's status).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        for o in &mut self.others {
            let status = o.terminate();
            assert!(status.success(), "a replica: {status}");
        }
        c.wait().expect("wait")
    }

    /// Runs `berth gc [--dry-run]` on this server's storage, with `storage`
    /// keys spliced after `rootDirectory`; returns stdout (it must succeed).
    pub fn berth_gc(&self, storage: &str, dry_run: bool) -> String {
        let cfg = self.dir.path().join("gc.json");
        let text = format!(
            r#"{{"storage":{{"rootDirectory":{:?}{},{storage}}}}}"#,
            self.root().display().to_string(),
            self.storage_keys()
        );
        std::fs::write(&cfg, text).expect("write gc config");
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.arg("gc");
        if dry_run {
            c.arg("--dry-run");
        }
        let out = c.arg(&cfg).output().expect("run berth gc");
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Starts the server again on the same storage (new ports), every
    /// replica.
    pub fn restart(&mut self) {
        self.kill();
        self.boot();
        for o in &mut self.others {
            o.boot();
        }
        if let Some(b) = &self.balancer {
            b.retarget(&self.directs());
            self.base = b.url.clone();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends `Basic user:password` with every later request (None: anonymous).
    pub fn login(&self, user_password: Option<&str>) {
        *self.auth.lock().unwrap() = user_password.map(basic);
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        let mut r = self.client.request(method, self.url(path));
        let explicit = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        let auth = self.auth.lock().unwrap().clone();
        if let (false, Some(a)) = (explicit, auth) {
            r = r.header("authorization", a);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(body).send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, &[], Vec::new()).await
    }

    pub async fn head(&self, path: &str) -> Response {
        self.send(Method::HEAD, path, &[], Vec::new()).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path, &[], Vec::new()).await
    }

    /// Opens an upload session; returns its location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        location(&r)
    }

    /// Pushes a blob with POST then PUT; returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let loc = self.start_upload(repo).await;
        let r = self
            .send(
                Method::PUT,
                &with_query(&loc, &format!("digest={digest}")),
                &[("content-type", "application/octet-stream")],
                data.to_vec(),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap_or_default()
        );
        digest
    }

    /// The bytes of a blob, which must be there.
    pub async fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let r = expect_status(
            self.get(&format!("/v2/{repo}/blobs/{digest}")).await,
            StatusCode::OK,
        )
        .await;
        r.bytes().await.expect("body").to_vec()
    }

    /// Completes an upload with an empty final PUT carrying the digest.
    pub async fn finish_upload(&self, loc: &str, digest: &str) -> Response {
        self.send(
            Method::PUT,
            &with_query(loc, &format!("digest={digest}")),
            &[],
            Vec::new(),
        )
        .await
    }

    /// Pushes a manifest; returns the response.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            body.to_vec(),
        )
        .await
    }

    /// Pushes a small image (config + `layers` layers) and tags it; returns
    /// the manifest bytes and digest.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        seed: u64,
        layers: usize,
    ) -> (Vec<u8>, String) {
        let config =
            format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
        let layers: Vec<Vec<u8>> = (0..layers)
            .map(|i| bytes(seed * 100 + i as u64, 1000 + i * 10))
            .collect();
        self.push_image_of(repo, tag, &config, &layers).await
    }

    /// Pushes an image with this configuration and these layers and tags
    /// it; returns the manifest bytes and digest.
    pub async fn push_image_of(
        &self,
        repo: &str,
        tag: &str,
        config: &[u8],
        layers: &[Vec<u8>],
    ) -> (Vec<u8>, String) {
        let config_digest = self.push_blob(repo, config).await;
        let mut descs = Vec::new();
        for data in layers {
            let d = self.push_blob(repo, data).await;
            descs.push(format!(
                r#"{{"mediaType":"{OCI_LAYER}","digest":"{d}","size":{}}}"#,
                data.len()
            ));
        }
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config_digest}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            descs.join(",")
        )
        .into_bytes();
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap_or_default()
        );
        let digest = sha256(&manifest);
        (manifest, digest)
    }
}

/// Writes an htpasswd file (bcrypt, cost 4) for these users.
/// Runs a command that must succeed; returns its stdout. A missing tool
/// fails the test (CI installs every tool), it is never skipped.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let lines: Vec<String> = users
        .iter()
        .map(|(u, p)| format!("{u}:{}", bcrypt::hash(p, 4).unwrap()))
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port, for the few programs that must be told their port
/// before they start (Prometheus, distribution, an OpenID provider that
/// registers Berth's exact callback URL); Berth itself binds port 0.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// Asserts the status, showing the body when it differs.
pub async fn expect_status(r: Response, status: StatusCode) -> Response {
    if r.status() != status {
        let got = r.status();
        panic!(
            "expected {status}, got {got}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    r
}

pub fn location(r: &Response) -> String {
    header(r, "location")
}

pub fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name} in {:?}", r.headers()))
        .to_str()
        .expect("ascii header")
        .to_owned()
}

pub fn with_query(url: &str, q: &str) -> String {
    if url.contains('?') {
        format!("{url}&{q}")
    } else {
        format!("{url}?{q}")
    }
}

/// The OCI error code of an error response.
pub async fn error_code(r: Response) -> String {
    let v: serde_json::Value = r.json_body().await;
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub trait JsonBody {
    fn json_body(self) -> impl std::future::Future<Output = serde_json::Value>;
}

impl JsonBody for Response {
    async fn json_body(self) -> serde_json::Value {
        let text = self.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

/// Waits until `path` exists or the timeout passes.
pub fn wait_for(path: &Path, timeout: Duration) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
