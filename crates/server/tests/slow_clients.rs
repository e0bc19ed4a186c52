//! Slow, silent and greedy clients: connections that send nothing, bodies
//! that stop, downloads nobody reads, and a flood of sockets against a low
//! descriptor limit. Deadlines bound every wait; no timing is asserted.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Short windows so that the tests see the cuts soon.
const TIGHT: &str =
    r#","http":{"address":"127.0.0.1","port":"0","readTimeout":"1s","writeTimeout":"1s"}"#;
/// The longest any test waits for the server to act.
const DEADLINE: Duration = Duration::from_secs(60);

/// Starts a server with `http` replaced by `http_json` (the harness's
/// `http` comes first in the object; a later key of the same name wins in
/// the loader, which reads the object into a map).
fn server(http_json: &str) -> Server {
    Server::start_one(http_json)
}

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(s.host()).expect("connect");
    c.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    c
}

/// Reads until the server closes the connection (EOF or reset); fails if it
/// is still open at the deadline. Returns what was read.
fn read_until_closed(c: &mut TcpStream) -> Vec<u8> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        assert!(
            started.elapsed() < DEADLINE,
            "the server kept the connection open"
        );
        match c.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("the server kept the connection open past the deadline")
            }
            Err(_) => return got, // reset: closed too
        }
    }
}

/// How many of the server's descriptors are files below `dir`.
fn files_open_under(pid: u32, dir: &std::path::Path) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// Waits (up to the deadline) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_socket_that_never_sends_a_byte_is_closed() {
    let s = server(TIGHT);
    let mut c = connect(&s);
    let got = read_until_closed(&mut c);
    assert!(got.is_empty(), "nothing was asked, nothing is answered");
    // The server still serves.
    expect_status(s.get("/v2/").await, StatusCode::OK).await;
}

#[tokio::test]
async fn a_connection_that_stops_midway_through_its_second_request_head_is_closed() {
    let s = server(TIGHT);
    let mut c = connect(&s);
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let first = read_response(&mut c);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHo").expect("send");
    let rest = read_until_closed(&mut c);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

/// Reads one response with a `Content-Length` body.
fn read_response(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let n = c.read(&mut buf).expect("response");
        assert!(n > 0, "closed before the response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut() {
    let s = server(TIGHT);
    let mut c = connect(&s);
    c.set_write_timeout(Some(DEADLINE)).expect("write timeout");
    let head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut cut = false;
    for b in head.iter().cycle().take(10_000) {
        assert!(
            started.elapsed() < DEADLINE,
            "the trickled head was never cut"
        );
        if c.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        // A closed connection shows up as readable EOF.
        c.set_nonblocking(true).expect("nonblocking");
        let mut probe = [0u8; 1024];
        let r = c.read(&mut probe);
        c.set_nonblocking(false).expect("blocking");
        match r {
            Ok(_) => {
                cut = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut);
}

#[tokio::test]
async fn a_stalled_upload_is_cut_and_keeps_what_was_acknowledged() {
    let s = server(TIGHT);
    let data = bytes(7, 300_000);
    let digest = sha256(&data);
    let r = s
        .send(Method::POST, "/v2/slow/blobs/uploads/", &[], Vec::new())
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    // A first chunk, acknowledged.
    let first = 100_000;
    let r = s
        .send(
            Method::PATCH,
            &loc,
            &[
                ("content-type", "application/octet-stream"),
                ("content-range", &format!("0-{}", first - 1)),
            ],
            data[..first].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A second chunk that stops after a few bytes.
    let mut c = connect(&s);
    let rest = data.len() - first;
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Range: {first}-{}\r\nContent-Length: {rest}\r\n\r\n",
        data.len() - 1
    );
    c.write_all(head.as_bytes()).expect("head");
    c.write_all(&data[first..first + 1000]).expect("some body");
    let got = read_until_closed(&mut c);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("readTimeout"), "a clear error: {text}");
    // The upload resumes from what the server holds.
    let r = expect_status(s.get(&loc).await, StatusCode::NO_CONTENT).await;
    let range = header(&r, "range");
    let end: usize = range
        .strip_prefix("0-")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("range {range:?}"));
    assert!(end + 1 >= first, "the acknowledged chunk is kept: {range}");
    let r = s
        .send(
            Method::PUT,
            &with_query(&loc, &format!("digest={digest}")),
            &[("content-type", "application/octet-stream")],
            data[end + 1..].to_vec(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.blob("slow", &digest).await, data);
}

#[tokio::test]
async fn an_upload_longer_than_the_read_timeout_that_keeps_moving_succeeds() {
    let s = server(TIGHT);
    let chunks: Vec<Vec<u8>> = (0..8).map(|i| bytes(100 + i, 128 * 1024)).collect();
    let data = chunks.concat();
    let digest = sha256(&data);
    let r = s
        .send(Method::POST, "/v2/steady/blobs/uploads/", &[], Vec::new())
        .await;
    let loc = location(&r);
    // Eight chunks 300 ms apart: longer than the 1 s readTimeout in all,
    // never idle for a whole window.
    let body = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
        let c = it.next()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some((Ok::<_, std::io::Error>(c), it))
    });
    let r = s
        .client
        .put(s.url(&with_query(&loc, &format!("digest={digest}"))))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.blob("steady", &digest).await, data);
}

#[tokio::test]
async fn a_download_nobody_reads_is_cut_and_releases_its_descriptors() {
    let s = server(TIGHT);
    let data = bytes(9, 48 << 20);
    let digest = s.push_blob("big", &data).await;
    let (pid, root) = (s.pid(), s.root());
    let mut c = connect(&s);
    c.write_all(format!("GET /v2/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("request");
    // The blob's file is open while the download runs...
    wait_until("the download to start", || files_open_under(pid, &root) > 0);
    // ...and closed once the server gave up on a client that reads nothing.
    wait_until("the server to let go", || files_open_under(pid, &root) == 0);
    let got = read_until_closed(&mut c);
    assert!(got.len() < data.len(), "the download was cut");
}

#[tokio::test]
async fn a_server_at_a_low_descriptor_limit_keeps_answering_under_a_flood_of_silent_sockets() {
    // 128 descriptors, default timeouts: only the cap and eviction help.
    let s = Server::start_one_limited("", Some(128));
    let digest = s.push_blob("flood", b"hello").await;
    let silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(s.host()).expect("connect"))
        .collect();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(DEADLINE)
        .build()
        .expect("client");
    for _ in 0..20 {
        let r = fresh
            .get(s.url(&format!("/v2/flood/blobs/{digest}")))
            .send()
            .await
            .expect("a normal client is served");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.expect("body").as_ref(), b"hello");
    }
    assert!(
        !s.log().contains("Too many open files"),
        "the server never ran out of descriptors: {}",
        s.log()
            .lines()
            .filter(|l| l.contains("Too many"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(silent);
}
