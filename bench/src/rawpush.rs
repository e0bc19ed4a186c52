//! A blob push over a plain blocking socket, so the benchmark controls how
//! the body is written: with `sendfile(2)` straight from the page cache (the
//! fastest a client can send), or in small `write(2)` calls (a client that
//! writes 16 KiB at a time). Monolithic (POST, then one PUT with the digest)
//! or chunked (PATCHes with `Content-Range`, then an empty PUT).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Writer {
    /// `sendfile(2)` from the file to the socket.
    Sendfile,
    /// `write(2)` calls of `--piece` bytes each.
    Pieces,
}

#[derive(clap::Args)]
pub struct Push {
    /// `http://host:port`, no trailing slash.
    #[arg(long)]
    pub base: String,
    #[arg(long)]
    pub repo: String,
    #[arg(long)]
    pub file: std::path::PathBuf,
    #[arg(long)]
    pub digest: String,
    #[arg(long, value_enum, default_value = "sendfile")]
    pub writer: Writer,
    /// Bytes per write(2) with `--writer pieces`.
    #[arg(long, default_value_t = 16 * 1024)]
    pub piece: usize,
    /// Bytes per PATCH; 0 pushes in one PUT.
    #[arg(long, default_value_t = 0)]
    pub chunk: u64,
}

struct Response {
    status: u16,
    location: Option<String>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn host_port(base: &str) -> Result<&str, Error> {
    base.strip_prefix("http://")
        .map(|s| s.trim_end_matches('/'))
        .ok_or_else(|| "only http:// bases".into())
}

/// The path and query of a Location, absolute or not.
fn path_of(location: &str) -> String {
    match location.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/".into(), |i| rest[i..].to_owned()),
        None => location.to_owned(),
    }
}

fn with_digest(path: &str, digest: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}digest={digest}")
}

impl Push {
    /// Runs the push; returns the wall-clock seconds from the first request
    /// to the final 201.
    pub fn run(&self) -> Result<f64, Error> {
        let addr = host_port(&self.base)?.to_owned();
        let mut sock = TcpStream::connect(&addr)?;
        sock.set_nodelay(true)?;
        let file = File::open(&self.file)?;
        let size = file.metadata()?.len();
        let t0 = Instant::now();
        let r = request(
            &mut sock,
            &addr,
            "POST",
            &format!("/v2/{}/blobs/uploads/", self.repo),
            &[],
            None,
        )?;
        if r.status != 202 {
            return Err(format!("POST: {}", r.status).into());
        }
        let mut path = path_of(&r.location.ok_or("POST: no Location")?);
        if self.chunk == 0 {
            let body = Body {
                file: &file,
                offset: 0,
                len: size,
                writer: self.writer,
                piece: self.piece,
            };
            let r = request(
                &mut sock,
                &addr,
                "PUT",
                &with_digest(&path, &self.digest),
                &[("Content-Type", "application/octet-stream")],
                Some(body),
            )?;
            if r.status != 201 {
                return Err(format!("PUT: {}", r.status).into());
            }
            return Ok(t0.elapsed().as_secs_f64());
        }
        let mut offset = 0;
        while offset < size {
            let len = self.chunk.min(size - offset);
            let range = format!("{}-{}", offset, offset + len - 1);
            let body = Body {
                file: &file,
                offset,
                len,
                writer: self.writer,
                piece: self.piece,
            };
            let r = request(
                &mut sock,
                &addr,
                "PATCH",
                &path,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Range", &range),
                ],
                Some(body),
            )?;
            if r.status != 202 {
                return Err(format!("PATCH {range}: {}", r.status).into());
            }
            path = path_of(&r.location.ok_or("PATCH: no Location")?);
            offset += len;
        }
        let r = request(
            &mut sock,
            &addr,
            "PUT",
            &with_digest(&path, &self.digest),
            &[],
            None,
        )?;
        if r.status != 201 {
            return Err(format!("PUT: {}", r.status).into());
        }
        Ok(t0.elapsed().as_secs_f64())
    }
}

struct Body<'a> {
    file: &'a File,
    offset: u64,
    len: u64,
    writer: Writer,
    piece: usize,
}

impl Body<'_> {
    fn send(&self, sock: &mut TcpStream) -> io::Result<()> {
        match self.writer {
            Writer::Sendfile => {
                let mut off = self.offset as libc::off_t;
                let end = (self.offset + self.len) as libc::off_t;
                while off < end {
                    let want = ((end - off) as usize).min(1 << 30);
                    // SAFETY: both descriptors are open for the call's
                    // duration and `off` is a valid pointer.
                    let n = unsafe {
                        libc::sendfile(sock.as_raw_fd(), self.file.as_raw_fd(), &mut off, want)
                    };
                    if n < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return Err(e);
                    }
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok(())
            }
            Writer::Pieces => {
                let mut buf = vec![0u8; self.piece.max(1)];
                let mut off = self.offset;
                let end = self.offset + self.len;
                while off < end {
                    let n = ((end - off) as usize).min(buf.len());
                    self.file.read_exact_at(&mut buf[..n], off)?;
                    sock.write_all(&buf[..n])?;
                    off += n as u64;
                }
                Ok(())
            }
        }
    }
}

fn request(
    sock: &mut TcpStream,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Body<'_>>,
) -> Result<Response, Error> {
    let len = body.as_ref().map_or(0, |b| b.len);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes())?;
    if let Some(b) = &body {
        b.send(sock)?;
    }
    read_response(sock)
}

fn read_response(sock: &mut TcpStream) -> Result<Response, Error> {
    let mut buf = Vec::with_capacity(1024);
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte)? == 0 {
            return Err("connection closed before a response".into());
        }
        buf.push(byte[0]);
        if buf.len() > 64 * 1024 {
            return Err("response head too large".into());
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let (mut location, mut length) = (None, 0usize);
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("location") {
                location = Some(v.to_owned());
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().unwrap_or(0);
            }
        }
    }
    let mut rest = vec![0u8; length];
    sock.read_exact(&mut rest)?;
    Ok(Response { status, location })
}
