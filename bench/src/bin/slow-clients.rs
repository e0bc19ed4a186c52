//! `slow-clients`: the attack side of `bench/slow-clients.sh`. Opens silent
//! sockets, uploads that send a byte every few seconds and downloads that
//! read a little every few seconds, all against one loopback registry, for a
//! bounded time; then prints one JSON line saying how many the server cut.

use clap::Parser;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout, Instant};

#[derive(Parser)]
struct Args {
    /// host:port of the registry (loopback only).
    #[arg(long)]
    addr: String,
    /// Sockets that connect and never send a byte.
    #[arg(long, default_value_t = 1000)]
    silent: usize,
    /// Uploads that send one byte every `--gap-secs`.
    #[arg(long, default_value_t = 300)]
    uploads: usize,
    /// Downloads of `--blob` that read 1 KiB every `--gap-secs`.
    #[arg(long, default_value_t = 300)]
    downloads: usize,
    /// Path of a large blob to download (`/v2/<repo>/blobs/<digest>`).
    #[arg(long)]
    blob: String,
    /// The blob's size in bytes.
    #[arg(long)]
    blob_size: usize,
    /// Repository to upload to.
    #[arg(long, default_value = "slow/uploads")]
    repo: String,
    #[arg(long, default_value_t = 2)]
    gap_secs: u64,
    /// How long the attack lasts.
    #[arg(long, default_value_t = 40)]
    secs: u64,
}

#[derive(Default)]
struct Counts {
    connected: AtomicUsize,
    connect_failed: AtomicUsize,
    cut: AtomicUsize,
}

impl Counts {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "connect_failed": self.connect_failed.load(Ordering::Relaxed),
            "cut_by_server": self.cut.load(Ordering::Relaxed),
        })
    }
}

fn is_loopback(addr: &str) -> bool {
    addr.starts_with("127.") || addr.starts_with("localhost:") || addr.starts_with("[::1]")
}

async fn connect(addr: &str, counts: &Counts, small_window: bool) -> Option<TcpStream> {
    let target = tokio::net::lookup_host(addr).await.ok()?.next()?;
    let socket = TcpSocket::new_v4().ok()?;
    if small_window {
        // A small receive buffer, so the server's writes stall early.
        let _ = socket.set_recv_buffer_size(4096);
    }
    match timeout(Duration::from_secs(30), socket.connect(target)).await {
        Ok(Ok(s)) => {
            counts.connected.fetch_add(1, Ordering::Relaxed);
            Some(s)
        }
        _ => {
            counts.connect_failed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Holds a socket open without sending; true if the server closed it.
async fn silent(addr: String, counts: Arc<Counts>, until: Instant) {
    let Some(mut s) = connect(&addr, &counts, false).await else {
        return;
    };
    let mut buf = [0u8; 64];
    if let Ok(r) = tokio::time::timeout_at(until, s.read(&mut buf)).await {
        // EOF or reset: the server gave up on us.
        if matches!(r, Ok(0) | Err(_)) {
            counts.cut.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads a response head from `s`; returns it as text.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// Starts an upload, then sends its body one byte per gap.
async fn slow_upload(a: Arc<Args>, counts: Arc<Counts>, until: Instant) {
    let Some(mut s) = connect(&a.addr, &counts, false).await else {
        return;
    };
    let post = format!(
        "POST /v2/{}/blobs/uploads/ HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n",
        a.repo
    );
    if s.write_all(post.as_bytes()).await.is_err() {
        return;
    }
    let Some(head) = read_head(&mut s).await else {
        return;
    };
    let Some(location) = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_owned())
    }) else {
        return;
    };
    let patch = format!(
        "PATCH {location} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n"
    );
    if s.write_all(patch.as_bytes()).await.is_err() {
        counts.cut.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut buf = [0u8; 1024];
    while Instant::now() < until {
        if s.write_all(b"x").await.is_err() {
            counts.cut.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Any answer before the body is done means the server cut it.
        let wait = Instant::now() + Duration::from_secs(a.gap_secs);
        if let Ok(r) = tokio::time::timeout_at(wait.min(until), s.read(&mut buf)).await {
            let _ = r;
            counts.cut.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// Downloads a blob, reading 1 KiB per gap. At the end, drains what is
/// buffered: an end before the whole body means the server cut it.
async fn slow_download(a: Arc<Args>, counts: Arc<Counts>, until: Instant) {
    let Some(mut s) = connect(&a.addr, &counts, true).await else {
        return;
    };
    let get = format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", a.blob);
    if s.write_all(get.as_bytes()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    let mut total = 0usize;
    while Instant::now() < until {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                counts.cut.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Ok(n)) => total += n,
            Err(_) => break,
        }
        sleep(Duration::from_secs(a.gap_secs)).await;
    }
    // Drain fast, a bounded time: the server's buffered bytes, then EOF if
    // it gave up on us, or (if it did not) the rest of the blob.
    let mut big = vec![0u8; 256 * 1024];
    let drain_until = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(drain_until, s.read(&mut big)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                if total < a.blob_size {
                    counts.cut.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Ok(Ok(n)) => total += n,
            Err(_) => return,
        }
    }
}

#[tokio::main]
async fn main() {
    let a = Arc::new(Args::parse());
    if !is_loopback(&a.addr) {
        eprintln!("slow-clients only attacks loopback addresses");
        std::process::exit(2);
    }
    let until = Instant::now() + Duration::from_secs(a.secs);
    let (si, up, down) = (
        Arc::new(Counts::default()),
        Arc::new(Counts::default()),
        Arc::new(Counts::default()),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.silent {
        tasks.spawn(silent(a.addr.clone(), si.clone(), until));
    }
    for _ in 0..a.uploads {
        tasks.spawn(slow_upload(a.clone(), up.clone(), until));
    }
    for _ in 0..a.downloads {
        tasks.spawn(slow_download(a.clone(), down.clone(), until));
    }
    // Every task ends by `until` (plus connect and read deadlines).
    while tasks.join_next().await.is_some() {}
    println!(
        "{}",
        serde_json::json!({
            "secs": a.secs,
            "silent": si.json(),
            "slow_uploads": up.json(),
            "slow_downloads": down.json(),
        })
    );
}
