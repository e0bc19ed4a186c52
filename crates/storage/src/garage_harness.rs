//! A real S3 server for tests: Garage (a distributed object store), one
//! node on loopback ports, with a bucket and a key. The binary comes from
//! `BERTH_GARAGE`, `~/.cache/berth/tools/bin/garage` (where
//! `scripts/install-test-deps.sh` builds it) or the PATH; missing, the test
//! fails, it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The key every test server grants on its bucket.
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const BUCKET: &str = "berth";
pub const REGION: &str = "garage";

/// A running Garage; killed when dropped.
pub struct Garage {
    child: Child,
    bin: PathBuf,
    config: PathBuf,
    /// `http://127.0.0.1:PORT`, the S3 API.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    if let Some(b) = std::env::var_os("BERTH_GARAGE") {
        return b.into();
    }
    if let Some(home) = std::env::var_os("HOME") {
        let b = Path::new(&home).join(".cache/berth/tools/bin/garage");
        if b.exists() {
            return b;
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("garage"))
        .find(|b| b.exists())
        .expect("Garage is not installed: scripts/install-test-deps.sh builds it")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Garage {
    /// Starts a one-node Garage with bucket [`BUCKET`] writable by
    /// [`KEY_ID`] (about a second).
    pub fn start() -> Garage {
        let bin = binary();
        let dir = tempfile::tempdir().unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("garage.log")).unwrap(),
            ))
            .spawn()
            .expect("start garage");
        let g = Garage {
            child,
            bin,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            _dir: dir,
        };
        let node = g.node_id();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["bucket", "create", BUCKET]);
        g.cli(&["key", "import", "--yes", "-n", "berth", KEY_ID, SECRET]);
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_ID,
        ]);
        g
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run garage");
        assert!(
            out.status.success(),
            "garage {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The node's id, once the server answers.
    fn node_id(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .arg("status")
                .output()
                .expect("run garage status");
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(id) = text
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .find(|w| w.len() == 16 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "garage did not start: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An `object_store` client for the bucket.
    pub fn object_store(&self) -> Arc<dyn object_store::ObjectStore> {
        use object_store::aws::AmazonS3Builder;
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_region(REGION)
                .with_bucket_name(BUCKET)
                .with_access_key_id(KEY_ID)
                .with_secret_access_key(SECRET)
                .with_virtual_hosted_style_request(false)
                .build()
                .unwrap(),
        )
    }
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    // SAFETY: getrandom writes at most one byte into our buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, 0) };
    assert_eq!(n, 1);
    b[0]
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
