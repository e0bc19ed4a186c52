//! A real PostgreSQL server for tests: `initdb` in a temporary directory and
//! `postgres` on a free loopback port, as the unprivileged `postgres` user
//! when the tests run as root (initdb refuses root). Found under
//! `/usr/lib/postgresql/*/bin` or on the PATH; missing, the test fails
//! (CI installs it), it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running PostgreSQL; stopped (immediate shutdown) when dropped.
pub struct Postgres {
    child: Child,
    bin: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
    databases: AtomicUsize,
}

fn bindir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").exists())
            .expect("PostgreSQL is not installed (initdb not found): scripts/install-test-deps.sh installs it")
    })
}

/// The uid and gid to run PostgreSQL as: `postgres` when we are root.
fn identity() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions; getpwnam returns a pointer to
    // static storage that is read at once, before any other call.
    unsafe {
        if libc::getuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "no postgres user (install the postgresql package)"
        );
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn command(bin: &Path, who: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin);
    if let Some((uid, gid)) = who {
        c.uid(uid).gid(gid);
    }
    c
}

/// A port nothing listens on now (bound and let go).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// Starts a fresh server (about a second).
    pub fn start() -> Postgres {
        Postgres::start_with(|_, _| Vec::new())
    }

    /// Starts a server that accepts TCP connections only over TLS, with a
    /// certificate for 127.0.0.1 signed by a CA of its own (made with
    /// `openssl`); returns it and the CA's PEM file.
    pub fn start_tls() -> (Postgres, std::path::PathBuf) {
        let mut ca = None;
        let pg = Postgres::start_with(|dir, data| {
            make_certs(dir, false);
            // The server's key: its user's alone.
            let key = dir.join("server.key");
            if let Some((uid, gid)) = identity() {
                std::os::unix::fs::chown(&key, Some(uid), Some(gid)).unwrap();
            }
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::set_permissions(
                dir.join("server.crt"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            // TCP only with TLS; the socket (createdb, psql) as before.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            ca = Some(dir.join("ca.crt"));
            vec![
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", dir.join("server.crt").display()),
                format!("ssl_key_file={}", key.display()),
            ]
        });
        (pg, ca.expect("CA made"))
    }

    /// Starts a fresh server; `settings` (given the server's directory and
    /// its data directory, after initdb) adds `-c` settings.
    fn start_with(settings: impl FnOnce(&Path, &Path) -> Vec<String>) -> Postgres {
        let bin = bindir();
        let who = identity();
        // Not under /root: the postgres user must reach it.
        let dir = tempfile::Builder::new()
            .prefix("berth-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"), who)
            .args([
                "-A",
                "trust",
                "-U",
                "berth",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let extra: Vec<String> = settings(dir.path(), &data)
            .into_iter()
            .flat_map(|s| ["-c".to_owned(), s])
            .collect();
        for _ in 0..5 {
            let port = free_port();
            let mut child = command(&bin.join("postgres"), who)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ])
                .args(&extra)
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.path().join("postgres.log")).unwrap(),
                ))
                .spawn()
                .expect("start postgres");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Postgres {
                        child,
                        bin,
                        port,
                        _dir: dir,
                        databases: AtomicUsize::new(0),
                    };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "postgres did not start: {}",
            std::fs::read_to_string(dir.path().join("postgres.log")).unwrap_or_default()
        );
    }

    /// The URL of the server's default database.
    pub fn url(&self) -> String {
        format!("postgres://berth@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates an empty database without a runtime (`createdb`); returns
    /// its URL.
    pub fn database_blocking(&self) -> String {
        let name = format!("t{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(self.bin.join("createdb"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "berth",
                    &name,
                ])
                .output()
                .expect("run createdb");
            if out.status.success() {
                return format!("postgres://berth@127.0.0.1:{}/{name}", self.port);
            }
            // Accepting TCP before it accepts logins.
            assert!(
                Instant::now() < deadline,
                "createdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one SQL statement with `psql` against a database of this
    /// server; returns what psql printed.
    pub fn execute_blocking(&self, url: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", sql, url])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates an empty database; returns its URL.
    pub async fn database(&self) -> String {
        let name = format!("t{}", self.databases.fetch_add(1, Ordering::Relaxed));
        let deadline = Instant::now() + Duration::from_secs(30);
        let (client, conn) = loop {
            match tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await {
                Ok(c) => break c,
                // Accepting TCP before it accepts logins.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("cannot connect to postgres: {e}"),
            }
        };
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        format!("postgres://berth@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the server's children with it.
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child's, not yet waited for.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT);
        }
        let _ = self.child.wait();
    }
}

/// Makes, in `dir` with `openssl`: a CA (`ca.crt`, `ca.key`), a server
/// certificate for 127.0.0.1 (`server.crt`, `server.key`) and, with
/// `client`, a client certificate (`client.crt`, `client.key`).
pub fn make_certs(dir: &Path, client: bool) {
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=berth-test-ca");
    sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1");
    sh("printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext");
    if client {
        sh("openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client");
        sh("printf 'extendedKeyUsage=clientAuth\\n' > client.ext && openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 -extfile client.ext");
    }
}
