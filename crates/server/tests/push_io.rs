//! What a push costs the disk, read from the kernel's own count of the
//! server's writes (`/proc/PID/io`: bytes sent to storage, less those
//! dropped before they were): new content is written once; content the
//! store already holds is not written again, whether pushed whole with its
//! digest or in chunks whose digest is known only at the end.

mod common;

use common::*;
use reqwest::{Method, StatusCode};

/// Net bytes the process has caused to be written to storage.
fn disk_bytes(pid: u32) -> i64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    let field = |name: &str| -> i64 {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/io"))
    };
    field("write_bytes:") - field("cancelled_write_bytes:")
}

/// POST, PATCHes of `chunk` bytes with Content-Range, empty PUT.
async fn push_chunked(s: &Server, repo: &str, data: &[u8], chunk: usize) -> String {
    let digest = sha256(data);
    let mut loc = s.start_upload(repo).await;
    for (i, piece) in data.chunks(chunk).enumerate() {
        let start = i * chunk;
        let range = format!("{}-{}", start, start + piece.len() - 1);
        let r = s
            .send(
                Method::PATCH,
                &loc,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                ],
                piece.to_vec(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "PATCH {range}");
        loc = location(&r);
    }
    expect_status(s.finish_upload(&loc, &digest).await, StatusCode::CREATED).await;
    digest
}

const MIB: i64 = 1024 * 1024;

#[tokio::test]
async fn stored_content_is_not_written_again() {
    let s = Server::start();
    let pid = s.pid();
    let len = 8 * MIB as usize;

    // New content costs its size, monolithic or chunked.
    let first = bytes(41, len);
    let before = disk_bytes(pid);
    let digest = s.push_blob("io/first", &first).await;
    let written = disk_bytes(pid) - before;
    assert!(written >= 8 * MIB, "a new 8 MiB blob wrote {written} bytes");
    let other = bytes(42, len);
    let before = disk_bytes(pid);
    push_chunked(&s, "io/other", &other, 3 * MIB as usize).await;
    let written = disk_bytes(pid) - before;
    assert!(
        written >= 8 * MIB,
        "a new chunked 8 MiB blob wrote {written} bytes"
    );

    // The same content again, to other repositories: whole with its digest,
    // then in chunks. Only bookkeeping reaches the disk (links, records).
    let before = disk_bytes(pid);
    assert_eq!(s.push_blob("io/again", &first).await, digest);
    assert_eq!(
        push_chunked(&s, "io/chunks", &first, 3 * MIB as usize).await,
        digest
    );
    assert_eq!(push_chunked(&s, "io/whole", &first, len).await, digest);
    let written = disk_bytes(pid) - before;
    assert!(
        written < MIB,
        "three pushes of stored content wrote {written} bytes"
    );
    for repo in ["io/first", "io/again", "io/chunks", "io/whole"] {
        assert!(s.blob(repo, &digest).await == first, "{repo}");
    }
}
