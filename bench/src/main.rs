//! `berth-bench`: the request side of `bench/run.sh`. Each subcommand drives
//! a registry through the plain distribution API (so Berth and its peer see
//! identical traffic) and prints one JSON line of measurements.

use clap::{Parser, Subcommand};
use reqwest::{Client, StatusCode};
use sha2::Digest as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod rawpush;
mod s3;
mod soak;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Push many small images (config + one layer + manifest) concurrently.
    PushSmall {
        #[arg(long)]
        base: String,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 2000)]
        images: usize,
        #[arg(long, default_value = "bench/small")]
        repo: String,
    },
    /// One image under many tags of one repository.
    SeedTags {
        #[arg(long)]
        base: String,
        #[arg(long)]
        repo: String,
        #[arg(long, default_value_t = 1000)]
        tags: usize,
    },
    /// One small image in each of many repositories.
    SeedRepos {
        #[arg(long)]
        base: String,
        #[arg(long, default_value_t = 1000)]
        repos: usize,
        /// Pushes in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// Sequential GETs of one URL: latency percentiles.
    Latency {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 300)]
        requests: usize,
    },
    /// Writes a large store straight to disk in Berth's layout (for the GC
    /// benchmark): `manifests` small images over 100 repositories, and
    /// unreferenced blobs up to `blobs` in all, aged past any grace delay.
    SeedStore {
        #[arg(long)]
        root: std::path::PathBuf,
        #[arg(long, default_value_t = 10_000)]
        manifests: usize,
        #[arg(long, default_value_t = 100_000)]
        blobs: usize,
    },
    /// The soak: concurrent clients mixing pushes, pulls, tag lists and
    /// deletes for a while, then every acknowledged write read back
    /// (bench/soak.sh). Exits 1 on any unexplained error.
    Soak {
        #[arg(long)]
        base: String,
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Lines of `KILL_MS READY_MS` (Unix milliseconds), one per restart.
        #[arg(long)]
        restart_file: Option<std::path::PathBuf>,
        /// The server's pid (rewritten on restart), for RSS and fds.
        #[arg(long)]
        pid_file: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 60)]
        report_secs: u64,
    },
    /// One blob pushed from a file over a plain socket, written with
    /// `sendfile(2)` or in small pieces, monolithic or chunked. Prints the
    /// seconds from the POST to the 201.
    PushFile(rawpush::Push),
    /// A plain S3 client's upload or download of a file (the baseline of
    /// bench/shared.sh). Prints the seconds it took.
    S3(s3::S3),
    /// Milliseconds until a URL answers 200.
    WaitReady {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// POST then PUT, the flow every registry supports.
async fn push_blob(c: &Client, base: &str, repo: &str, data: Vec<u8>) -> Result<String, Error> {
    let digest = sha256(&data);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    if r.status() != StatusCode::ACCEPTED {
        return Err(format!("POST upload: {}", r.status()).into());
    }
    let loc = r
        .headers()
        .get("location")
        .ok_or("no Location")?
        .to_str()?
        .to_owned();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}digest={digest}", resolve(base, &loc));
    let r = c
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await?;
    if r.status() != StatusCode::CREATED {
        return Err(format!("PUT upload: {}", r.status()).into());
    }
    Ok(digest)
}

async fn push_image(
    c: &Client,
    base: &str,
    repo: &str,
    tag: &str,
    seed: usize,
) -> Result<Vec<u8>, Error> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layer: Vec<u8> = (0..2048)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect();
    let (cl, ll) = (config.len(), layer.len());
    let cd = push_blob(c, base, repo, config).await?;
    let ld = push_blob(c, base, repo, layer).await?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cl}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{ll}}}]}}"#
    )
    .into_bytes();
    put_manifest(c, base, repo, tag, manifest.clone()).await?;
    Ok(manifest)
}

async fn put_manifest(
    c: &Client,
    base: &str,
    repo: &str,
    tag: &str,
    body: Vec<u8>,
) -> Result<(), Error> {
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await?;
    if r.status() != StatusCode::CREATED {
        return Err(format!("PUT manifest: {}", r.status()).into());
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // AUTH_HEADER, when set, is sent as `Authorization` with every request.
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(v) = std::env::var("AUTH_HEADER") {
        headers.insert(reqwest::header::AUTHORIZATION, v.parse()?);
    }
    let c = Client::builder()
        .pool_max_idle_per_host(64)
        .default_headers(headers)
        .build()?;
    match Cli::parse().cmd {
        Cmd::PushSmall {
            base,
            concurrency,
            images,
            repo,
        } => {
            let next = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (c, base, repo, next) = (c.clone(), base.clone(), repo.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= images {
                            return Ok::<_, Error>(lat);
                        }
                        let t = Instant::now();
                        push_image(&c, &base, &repo, &format!("t{i}"), i).await?;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }));
            }
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await??);
            }
            let secs = started.elapsed().as_secs_f64();
            lat.sort_by(f64::total_cmp);
            println!(
                "{}",
                serde_json::json!({"images": images, "seconds": secs, "images_per_sec": images as f64 / secs,
                    "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99)})
            );
        }
        Cmd::SeedTags { base, repo, tags } => {
            let manifest = push_image(&c, &base, &repo, "t0", 0).await?;
            for i in 1..tags {
                put_manifest(&c, &base, &repo, &format!("t{i}"), manifest.clone()).await?;
            }
            println!("{}", serde_json::json!({"tags": tags}));
        }
        Cmd::SeedRepos {
            base,
            repos,
            concurrency,
        } => {
            let next = Arc::new(AtomicUsize::new(0));
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..concurrency.max(1) {
                let (c, base, next) = (c.clone(), base.clone(), next.clone());
                workers.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= repos {
                            return Ok::<_, Error>(());
                        }
                        push_image(&c, &base, &format!("seed/r{i:05}"), "latest", i).await?;
                    }
                });
            }
            while let Some(done) = workers.join_next().await {
                done??;
            }
            println!("{}", serde_json::json!({"repos": repos}));
        }
        Cmd::Latency { url, requests } => {
            let mut lat = Vec::with_capacity(requests);
            let started = Instant::now();
            for _ in 0..requests {
                let t = Instant::now();
                let r = c.get(&url).send().await?;
                if !r.status().is_success() {
                    return Err(format!("GET {url}: {}", r.status()).into());
                }
                r.bytes().await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let secs = started.elapsed().as_secs_f64();
            lat.sort_by(f64::total_cmp);
            println!(
                "{}",
                serde_json::json!({"requests": requests, "rps": requests as f64 / secs,
                    "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99)})
            );
        }
        Cmd::SeedStore {
            root,
            manifests,
            blobs,
        } => {
            let old = std::time::SystemTime::now() - Duration::from_secs(7 * 24 * 3600);
            let put = |key: &str, data: &[u8], age: bool| -> std::io::Result<()> {
                let path = root.join(key);
                std::fs::create_dir_all(path.parent().unwrap())?;
                std::fs::write(&path, data)?;
                if age {
                    std::fs::File::options()
                        .write(true)
                        .open(&path)?
                        .set_modified(old)?;
                }
                Ok(())
            };
            let blob_key = |d: &str| format!("blobs/sha256/{}/{}", &d[7..9], &d[7..]);
            let link = |repo: &str, kind: &str, d: &str| {
                format!("repositories/{repo}/{kind}/sha256/{}", &d[7..])
            };
            let mut written = 0usize;
            for i in 0..manifests {
                let repo = format!("seed/r{:03}", i % 100);
                let config =
                    format!(r#"{{"architecture":"amd64","os":"linux","seed":{i}}}"#).into_bytes();
                let layer = format!("layer-{i}").into_bytes();
                let (cd, ld) = (sha256(&config), sha256(&layer));
                let manifest = format!(
                    r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":{}}}]}}"#,
                    config.len(),
                    layer.len()
                )
                .into_bytes();
                let md = sha256(&manifest);
                for (d, data) in [(&cd, &config), (&ld, &layer), (&md, &manifest)] {
                    put(&blob_key(d), data, true)?;
                }
                put(&link(&repo, "_layers", &cd), b"", true)?;
                put(&link(&repo, "_layers", &ld), b"", true)?;
                put(
                    &link(&repo, "_manifests", &md),
                    b"application/vnd.oci.image.manifest.v1+json",
                    true,
                )?;
                put(
                    &format!("repositories/{repo}/_tags/t{i}"),
                    md.as_bytes(),
                    true,
                )?;
                written += 3;
            }
            let mut orphans = 0usize;
            while written < blobs {
                let data = format!("orphan-{orphans}").into_bytes();
                put(&blob_key(&sha256(&data)), &data, true)?;
                written += 1;
                orphans += 1;
            }
            println!(
                "{}",
                serde_json::json!({"manifests": manifests, "blobs": written, "orphans": orphans})
            );
        }
        Cmd::Soak {
            base,
            clients,
            seconds,
            restart_file,
            pid_file,
            report_secs,
        } => {
            let ok = soak::run(soak::Args {
                base,
                clients,
                seconds,
                restart_file,
                pid_file,
                report_secs,
            })
            .await?;
            if !ok {
                std::process::exit(1);
            }
        }
        Cmd::S3(op) => {
            let secs = op.run().await?;
            println!("{}", serde_json::json!({ "seconds": secs }));
        }
        Cmd::PushFile(push) => {
            let secs = tokio::task::spawn_blocking(move || push.run()).await??;
            println!("{}", serde_json::json!({ "seconds": secs }));
        }
        Cmd::WaitReady { url, timeout_secs } => {
            let started = Instant::now();
            let deadline = started + Duration::from_secs(timeout_secs);
            loop {
                if let Ok(r) = c.get(&url).send().await {
                    if r.status() == StatusCode::OK {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("{url} not ready after {timeout_secs}s").into());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            println!(
                "{}",
                serde_json::json!({"ready_ms": started.elapsed().as_secs_f64() * 1000.0})
            );
        }
    }
    Ok(())
}
