//! The soak client (`berth-bench soak`, driven by `bench/soak.sh`): many
//! concurrent clients mixing pushes, pulls, tag lists and deletes for a
//! fixed time, each keeping an exact model of its own repository, then a
//! verification pass that reads back every acknowledged write.
//!
//! Each client owns `soak/cNNN` and works sequentially, so its model is
//! exact: a push acknowledged with 201 must be readable (manifest bytes and
//! every blob, by digest) until the client deletes it; a delete
//! acknowledged with 202 must stay deleted. A write whose outcome is
//! unknown (it failed) is dropped from the model and checked no further.
//! Some pushes share one layer, so many clients commit the same blob at
//! once.
//!
//! Failures are kept with the wall-clock span of their operation. The
//! script writes the span of the server's restart (SIGKILL to ready) to
//! `--restart-file`; a failure is *explained* when its operation overlaps
//! that span and it is a transport error, a 5xx, or (for a write) an
//! upload the restart forgot. Wrong content, a 404 on a read of
//! acknowledged data, or a tag missing from a list is never explained.

use reqwest::{Client, StatusCode};
use sha2::Digest as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Error = Box<dyn std::error::Error + Send + Sync>;

pub struct Args {
    pub base: String,
    pub clients: usize,
    pub seconds: u64,
    pub restart_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub report_secs: u64,
}

const OPS: [&str; 4] = ["push", "pull", "list", "delete"];
const PUSH: usize = 0;
const PULL: usize = 1;
const LIST: usize = 2;
const DELETE: usize = 3;
/// A client deletes once it holds this many images, so the store stays
/// bounded however long the run.
const LIVE_MAX: usize = 12;
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// xorshift64*: enough randomness for a load mix, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

#[derive(Clone)]
struct Image {
    tag: String,
    manifest: Vec<u8>,
    digest: String,
    /// (digest, size) of config and layer.
    blobs: Vec<(String, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// No answer: refused, reset, timed out.
    Transport,
    /// An answer with an unexpected status.
    Status(u16),
    /// An answer with the wrong content, or a listing missing a tag.
    Integrity,
}

struct Failure {
    op: usize,
    start_ms: u64,
    end_ms: u64,
    kind: Kind,
    what: String,
}

type OpResult<T> = Result<T, (Kind, String)>;

fn transport(step: &str, e: reqwest::Error) -> (Kind, String) {
    (Kind::Transport, format!("{step}: {e}"))
}

fn status(step: &str, got: StatusCode) -> (Kind, String) {
    (Kind::Status(got.as_u16()), format!("{step}: {got}"))
}

struct Stats {
    ops: [AtomicU64; 4],
    errors: AtomicU64,
    latencies: Mutex<[Vec<f32>; 4]>,
    failures: Mutex<Vec<Failure>>,
}

struct Soak {
    c: Client,
    base: String,
    shared_layer: Vec<u8>,
    stats: Stats,
}

impl Soak {
    async fn push_blob(&self, repo: &str, data: &[u8], chunked: bool) -> OpResult<String> {
        let digest = sha256(data);
        let r = self
            .c
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .map_err(|e| transport("POST upload", e))?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(status("POST upload", r.status()));
        }
        let mut loc = location(&self.base, &r)?;
        let mut rest = data;
        if chunked {
            let (first, tail) = data.split_at(data.len() / 2);
            let r = self
                .c
                .patch(&loc)
                .header("content-type", "application/octet-stream")
                .header(
                    "content-range",
                    format!("0-{}", first.len().saturating_sub(1)),
                )
                .body(first.to_vec())
                .send()
                .await
                .map_err(|e| transport("PATCH upload", e))?;
            if r.status() != StatusCode::ACCEPTED {
                return Err(status("PATCH upload", r.status()));
            }
            loc = location(&self.base, &r)?;
            rest = tail;
        }
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .c
            .put(format!("{loc}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(rest.to_vec())
            .send()
            .await
            .map_err(|e| transport("PUT upload", e))?;
        if r.status() != StatusCode::CREATED {
            return Err(status("PUT upload", r.status()));
        }
        Ok(digest)
    }

    async fn push(&self, repo: &str, tag: String, rng: &mut Rng) -> OpResult<Image> {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","soak":"{repo}:{tag}","r":{}}}"#,
            rng.next()
        )
        .into_bytes();
        let layer = if rng.below(10) == 0 {
            self.shared_layer.clone()
        } else {
            let n = 1024 + rng.below(15 * 1024) as usize;
            rng.bytes(n)
        };
        let chunked = rng.below(3) == 0;
        let cd = self.push_blob(repo, &config, false).await?;
        let ld = self.push_blob(repo, &layer, chunked).await?;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        )
        .into_bytes();
        let r = self
            .c
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header("content-type", MANIFEST_TYPE)
            .body(manifest.clone())
            .send()
            .await
            .map_err(|e| transport("PUT manifest", e))?;
        if r.status() != StatusCode::CREATED {
            return Err(status("PUT manifest", r.status()));
        }
        Ok(Image {
            tag,
            digest: sha256(&manifest),
            manifest,
            blobs: vec![(cd, config.len()), (ld, layer.len())],
        })
    }

    /// GETs a manifest (by tag or digest) and checks its bytes.
    async fn read_manifest(&self, repo: &str, reference: &str, img: &Image) -> OpResult<()> {
        let r = self
            .c
            .get(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("accept", MANIFEST_TYPE)
            .send()
            .await
            .map_err(|e| transport("GET manifest", e))?;
        if r.status() != StatusCode::OK {
            return Err(status(
                &format!("GET manifest {repo}:{reference}"),
                r.status(),
            ));
        }
        let header = r
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = r.bytes().await.map_err(|e| transport("manifest body", e))?;
        if body[..] != img.manifest[..] || header.as_deref() != Some(img.digest.as_str()) {
            return Err((
                Kind::Integrity,
                format!("GET manifest {repo}:{reference}: wrong content or digest header"),
            ));
        }
        Ok(())
    }

    async fn read_blob(&self, repo: &str, digest: &str, size: usize) -> OpResult<()> {
        let r = self
            .c
            .get(format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .send()
            .await
            .map_err(|e| transport("GET blob", e))?;
        if r.status() != StatusCode::OK {
            return Err(status(&format!("GET blob {repo}@{digest}"), r.status()));
        }
        let body = r.bytes().await.map_err(|e| transport("blob body", e))?;
        if body.len() != size || sha256(&body) != digest {
            return Err((
                Kind::Integrity,
                format!("GET blob {repo}@{digest}: wrong content"),
            ));
        }
        Ok(())
    }

    async fn pull(&self, repo: &str, img: &Image, rng: &mut Rng) -> OpResult<()> {
        self.read_manifest(repo, &img.tag, img).await?;
        let (d, size) = &img.blobs[rng.below(img.blobs.len() as u64) as usize];
        self.read_blob(repo, d, *size).await
    }

    async fn list(&self, repo: &str, live: &[Image]) -> OpResult<()> {
        let r = self
            .c
            .get(format!("{}/v2/{repo}/tags/list", self.base))
            .send()
            .await
            .map_err(|e| transport("GET tags", e))?;
        if r.status() == StatusCode::NOT_FOUND && live.is_empty() {
            return Ok(());
        }
        if r.status() != StatusCode::OK {
            return Err(status("GET tags", r.status()));
        }
        let body = r.bytes().await.map_err(|e| transport("tags body", e))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| (Kind::Integrity, format!("GET tags {repo}: {e}")))?;
        let tags: Vec<&str> = v["tags"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        if let Some(missing) = live.iter().find(|i| !tags.contains(&i.tag.as_str())) {
            return Err((
                Kind::Integrity,
                format!("GET tags {repo}: acknowledged tag {} missing", missing.tag),
            ));
        }
        Ok(())
    }

    async fn delete(&self, repo: &str, img: &Image) -> OpResult<()> {
        let r = self
            .c
            .delete(format!("{}/v2/{repo}/manifests/{}", self.base, img.digest))
            .send()
            .await
            .map_err(|e| transport("DELETE manifest", e))?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(status("DELETE manifest", r.status()));
        }
        Ok(())
    }

    fn record(&self, op: usize, started: Instant, start_ms: u64, res: &OpResult<impl Sized>) {
        self.stats.ops[op].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.stats.latencies.lock() {
            l[op].push(started.elapsed().as_secs_f32() * 1000.0);
        }
        if let Err((kind, what)) = res {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut f) = self.stats.failures.lock() {
                f.push(Failure {
                    op,
                    start_ms,
                    end_ms: now_ms(),
                    kind: *kind,
                    what: what.clone(),
                });
            }
        }
    }
}

fn location(base: &str, r: &reqwest::Response) -> OpResult<String> {
    let loc = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or((Kind::Integrity, "upload answer without Location".to_owned()))?;
    Ok(if loc.starts_with("http") {
        loc.to_owned()
    } else {
        format!("{base}{loc}")
    })
}

/// What one client ends with: the images it must find, and the digests it
/// deleted for certain.
struct Model {
    repo: String,
    live: Vec<Image>,
    deleted: Vec<String>,
}

async fn client(s: Arc<Soak>, id: usize, until: Instant) -> Model {
    let repo = format!("soak/c{id:03}");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) << 20) ^ now_ms());
    let mut live: Vec<Image> = Vec::new();
    let mut deleted = Vec::new();
    let mut next_tag = 0u64;
    while Instant::now() < until {
        let roll = rng.below(100);
        let op = if live.is_empty() {
            PUSH
        } else if live.len() >= LIVE_MAX && roll < 40 {
            DELETE
        } else {
            match roll {
                0..30 => PUSH,
                30..75 => PULL,
                75..90 => LIST,
                _ => DELETE,
            }
        };
        let (started, start_ms) = (Instant::now(), now_ms());
        match op {
            PUSH => {
                let tag = format!("t{next_tag}");
                next_tag += 1;
                let res = s.push(&repo, tag, &mut rng).await;
                s.record(op, started, start_ms, &res);
                if let Ok(img) = res {
                    live.push(img);
                }
            }
            PULL => {
                let img = live[rng.below(live.len() as u64) as usize].clone();
                let res = s.pull(&repo, &img, &mut rng).await;
                s.record(op, started, start_ms, &res);
            }
            LIST => {
                let res = s.list(&repo, &live).await;
                s.record(op, started, start_ms, &res);
            }
            _ => {
                let img = live.swap_remove(rng.below(live.len() as u64) as usize);
                let res = s.delete(&repo, &img).await;
                s.record(op, started, start_ms, &res);
                // A failed delete may or may not have happened: unknown,
                // so no longer checked either way.
                if res.is_ok() {
                    deleted.push(img.digest);
                }
            }
        }
    }
    Model {
        repo,
        live,
        deleted,
    }
}

/// Reads back a client's model; returns (images, blobs, deletions) checked
/// and the failures.
async fn verify(s: Arc<Soak>, m: Model) -> (usize, usize, usize, Vec<String>) {
    let mut bad = Vec::new();
    let mut blobs = 0;
    for img in &m.live {
        for reference in [&img.tag, &img.digest] {
            if let Err((_, e)) = s.read_manifest(&m.repo, reference, img).await {
                bad.push(e);
            }
        }
        for (d, size) in &img.blobs {
            blobs += 1;
            if let Err((_, e)) = s.read_blob(&m.repo, d, *size).await {
                bad.push(e);
            }
        }
    }
    if let Err((_, e)) = s.list(&m.repo, &m.live).await {
        bad.push(e);
    }
    for d in &m.deleted {
        match s
            .c
            .get(format!("{}/v2/{}/manifests/{d}", s.base, m.repo))
            .header("accept", MANIFEST_TYPE)
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {}
            Ok(r) => bad.push(format!(
                "deleted manifest {}@{d} answers {}",
                m.repo,
                r.status()
            )),
            Err(e) => bad.push(format!("GET deleted manifest: {e}")),
        }
    }
    (m.live.len(), blobs, m.deleted.len(), bad)
}

/// `(kill_ms, ready_ms)` spans written by the script, one per line.
fn restart_windows(path: Option<&PathBuf>) -> Vec<(u64, u64)> {
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|n| n.parse::<u64>().ok());
            Some((it.next()??, it.next()??))
        })
        .collect()
}

fn explained(f: &Failure, windows: &[(u64, u64)]) -> bool {
    let overlaps = windows
        .iter()
        .any(|&(kill, ready)| f.start_ms <= ready && f.end_ms >= kill);
    let write = f.op == PUSH || f.op == DELETE;
    overlaps
        && match f.kind {
            Kind::Transport => true,
            Kind::Status(s) => s >= 500 || (write && s == 404),
            Kind::Integrity => false,
        }
}

/// RSS (KiB) and open descriptors of the process named in the pid file.
fn process_usage(pid_file: Option<&PathBuf>) -> Option<(u64, usize)> {
    let pid = std::fs::read_to_string(pid_file?).ok()?;
    let pid = pid.trim();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

fn percentile(v: &mut [f32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    f64::from(v[((v.len() as f64 - 1.0) * p).round() as usize])
}

pub async fn run(a: Args) -> Result<bool, Error> {
    let c = Client::builder()
        .pool_max_idle_per_host(a.clients + 16)
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let mut seed = Rng(0x5eed);
    let s = Arc::new(Soak {
        c,
        base: a.base.trim_end_matches('/').to_owned(),
        shared_layer: seed.bytes(32 * 1024),
        stats: Stats {
            ops: Default::default(),
            errors: AtomicU64::new(0),
            latencies: Mutex::new(Default::default()),
            failures: Mutex::new(Vec::new()),
        },
    });
    let started = Instant::now();
    let until = started + Duration::from_secs(a.seconds);
    let tasks: Vec<_> = (0..a.clients)
        .map(|id| tokio::spawn(client(s.clone(), id, until)))
        .collect();

    // One line per period: operations, errors, and the server's RSS and fds.
    let (mut max_rss, mut max_fds) = (0u64, 0usize);
    let period = Duration::from_secs(a.report_secs.max(1));
    let mut last = [0u64; 4];
    let mut next_report = started + period;
    while Instant::now() < until {
        tokio::time::sleep_until((next_report.min(until)).into()).await;
        if Instant::now() < next_report {
            continue;
        }
        next_report += period;
        let ops: Vec<u64> = s
            .stats
            .ops
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .collect();
        let usage = process_usage(a.pid_file.as_ref());
        if let Some((rss, fds)) = usage {
            max_rss = max_rss.max(rss);
            max_fds = max_fds.max(fds);
        }
        let window: u64 = ops.iter().zip(last).map(|(n, l)| n - l).sum();
        last.copy_from_slice(&ops);
        println!(
            "{}",
            serde_json::json!({
                "t_s": started.elapsed().as_secs(),
                "ops_per_s": window as f64 / period.as_secs_f64(),
                "push": ops[PUSH], "pull": ops[PULL], "list": ops[LIST], "delete": ops[DELETE],
                "errors": s.stats.errors.load(Ordering::Relaxed),
                "server_rss_kib": usage.map(|u| u.0), "server_fds": usage.map(|u| u.1),
            })
        );
    }
    let mut models = Vec::new();
    for t in tasks {
        models.push(t.await?);
    }
    let run_secs = started.elapsed().as_secs_f64();

    let checks: Vec<_> = models
        .into_iter()
        .map(|m| tokio::spawn(verify(s.clone(), m)))
        .collect();
    let (mut images, mut blobs, mut deletions, mut verify_failures) = (0, 0, 0, Vec::new());
    for c in checks {
        let (i, b, d, bad) = c.await?;
        images += i;
        blobs += b;
        deletions += d;
        verify_failures.extend(bad);
    }
    if let Some((rss, fds)) = process_usage(a.pid_file.as_ref()) {
        max_rss = max_rss.max(rss);
        max_fds = max_fds.max(fds);
    }

    let windows = restart_windows(a.restart_file.as_ref());
    let failures = std::mem::take(&mut *s.stats.failures.lock().map_err(|_| "poisoned")?);
    let (ok_failures, unexplained): (Vec<_>, Vec<_>) =
        failures.iter().partition(|f| explained(f, &windows));
    let ops: Vec<u64> = s
        .stats
        .ops
        .iter()
        .map(|o| o.load(Ordering::Relaxed))
        .collect();
    let total: u64 = ops.iter().sum();
    let mut lat = std::mem::take(&mut *s.stats.latencies.lock().map_err(|_| "poisoned")?);
    let latency: serde_json::Map<String, serde_json::Value> = OPS
        .iter()
        .zip(lat.iter_mut())
        .map(|(name, v)| {
            (
                (*name).to_owned(),
                serde_json::json!({"p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99)}),
            )
        })
        .collect();
    let show = |fs: &[&Failure]| -> Vec<String> {
        fs.iter()
            .take(20)
            .map(|f| format!("{} [{:?}] {}", OPS[f.op], f.kind, f.what))
            .collect()
    };
    let ok = unexplained.is_empty() && verify_failures.is_empty();
    println!(
        "{}",
        serde_json::json!({
            "summary": {
                "ok": ok,
                "clients": a.clients,
                "seconds": run_secs,
                "operations": total,
                "ops_per_s": total as f64 / run_secs,
                "push": ops[PUSH], "pull": ops[PULL], "list": ops[LIST], "delete": ops[DELETE],
                "latency": latency,
                "restarts": windows.len(),
                "restart_windows_ms": windows.iter().map(|(k, r)| r - k).collect::<Vec<_>>(),
                "errors": failures.len(),
                "errors_explained_by_restart": ok_failures.len(),
                "errors_unexplained": unexplained.len(),
                "unexplained_sample": show(&unexplained),
                "explained_sample": show(&ok_failures[..ok_failures.len().min(5)]),
                "verified_images": images,
                "verified_blobs": blobs,
                "verified_deletions": deletions,
                "verification_failures": verify_failures.len(),
                "verification_sample": verify_failures.iter().take(20).collect::<Vec<_>>(),
                "server_max_rss_kib": max_rss,
                "server_max_fds": max_fds,
            }
        })
    );
    Ok(ok)
}
