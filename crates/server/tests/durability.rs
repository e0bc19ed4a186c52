//! Durability that a crash test cannot show: the directory entries a push
//! creates must reach the disk before the push is acknowledged. strace
//! watches the running server's fsyncs while a blob is pushed into a new,
//! nested repository: the parent of every directory the push created is
//! fsynced (else a power loss could lose the whole new repository even
//! though the link file inside it was fsynced).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn new_directories_are_fsynced_with_their_parents() {
    let s = Server::start();
    let root = s.root().canonicalize().unwrap();
    let trace = s.dir.path().join("fsync.trace");
    let pid = s.pid();
    let mut strace = Command::new("strace")
        .args(["-f", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .args(["-p", &pid.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace is part of the machine image");
    // strace says "Process N attached with M threads" once it holds them all.
    let lines = BufReader::new(strace.stderr.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if l.contains("attached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("strace did not attach");

    let data = bytes(77, 5000);
    let digest = s.push_blob("fresh/deep/repo", &data).await;
    unsafe {
        libc::kill(strace.id() as i32, libc::SIGINT);
    }
    strace.wait().unwrap();

    let text = std::fs::read_to_string(&trace).unwrap();
    let synced = |dir: &std::path::Path| text.contains(&format!("<{}>", dir.display()));
    let hex = digest.trim_start_matches("sha256:");
    for dir in [
        root.join("repositories"),
        root.join("repositories/fresh"),
        root.join("repositories/fresh/deep"),
        root.join("repositories/fresh/deep/repo"),
        root.join("repositories/fresh/deep/repo/_layers"),
        root.join("repositories/fresh/deep/repo/_layers/sha256"),
        root.join("blobs/sha256"),
        root.join(format!("blobs/sha256/{}", &hex[..2])),
    ] {
        assert!(synced(&dir), "no fsync of {}:\n{text}", dir.display());
    }
}
