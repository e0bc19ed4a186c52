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

/// A running Garage (one node or a cluster); killed when dropped.
pub struct Garage {
    nodes: std::sync::Mutex<Vec<Option<Child>>>,
    bin: PathBuf,
    /// Each node's configuration; the first node's is used by the CLI.
    configs: Vec<PathBuf>,
    config: PathBuf,
    /// `http://127.0.0.1:PORT`, the S3 API of the first node.
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

use crate::pg_harness::free_port;

impl Garage {
    /// Starts a one-node Garage with bucket [`BUCKET`] writable by
    /// [`KEY_ID`] (about a second).
    pub fn start() -> Garage {
        Garage::cluster(1)
    }

    /// Starts `n` nodes that keep every object on each of them
    /// (replication factor `n`, writes acknowledged by a quorum), with the
    /// bucket and key of [`Garage::start`]. The S3 API used is the first
    /// node's.
    pub fn cluster(n: usize) -> Garage {
        let bin = binary();
        let dir = tempfile::tempdir().unwrap();
        let secret: String = (0..32).map(|_| format!("{:02x}", rand_byte())).collect();
        let mut configs = Vec::new();
        let mut endpoint = String::new();
        let mut rpcs = Vec::new();
        for i in 0..n {
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let node = dir.path().join(format!("node{i}"));
            let config = node.join("garage.toml");
            std::fs::create_dir_all(&node).unwrap();
            std::fs::write(
                &config,
                format!(
                    r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = {n}
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
                    meta = node.join("meta").display(),
                    data = node.join("data").display(),
                ),
            )
            .unwrap();
            if i == 0 {
                endpoint = format!("http://127.0.0.1:{s3}");
            }
            rpcs.push(rpc);
            configs.push(config);
        }
        let nodes = configs
            .iter()
            .map(|config| {
                Some(
                    Command::new(&bin)
                        .arg("-c")
                        .arg(config)
                        .arg("server")
                        .env("RUST_LOG", "warn")
                        .stdout(Stdio::null())
                        .stderr(Stdio::from(
                            std::fs::File::create(config.with_extension("log")).unwrap(),
                        ))
                        .spawn()
                        .expect("start garage"),
                )
            })
            .collect();
        let g = Garage {
            nodes: std::sync::Mutex::new(nodes),
            bin,
            config: configs[0].clone(),
            configs,
            endpoint,
            _dir: dir,
        };
        // The first node learns of the others, then every node gets a role.
        for i in 1..n {
            let id = g.node_id_of(i);
            g.cli(&["node", "connect", &id]);
        }
        let ids = g.wait_for_nodes(n);
        for id in &ids {
            g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", id]);
        }
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["bucket", "create", BUCKET]);
        g.cli(&["key", "import", "--yes", "-n", "berth", KEY_ID, SECRET]);
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_ID,
        ]);
        g
    }

    /// Kills node `i` (SIGKILL), as a machine that fails.
    pub fn kill_node(&self, i: usize) {
        let taken = self.nodes.lock().unwrap_or_else(|p| p.into_inner())[i].take();
        if let Some(mut c) = taken {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `<id>@<address>` of node `i`, once it answers.
    fn node_id_of(&self, i: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.configs[i])
                .args(["node", "id", "-q"])
                .output()
                .expect("run garage node id");
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(id) = text.lines().map(str::trim).find(|l| l.contains('@')) {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "garage node {i} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a CLI command, again for up to 20 s while it fails (a cluster
    /// that just met may not have spread its layout yet).
    fn cli(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()
                .expect("run garage");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ids of the nodes the first one sees as healthy, once it sees `n`.
    fn wait_for_nodes(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .arg("status")
                .output()
                .expect("run garage status");
            let text = String::from_utf8_lossy(&out.stdout);
            let ids: Vec<String> = text
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|w| w.len() == 16 && w.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_owned)
                .collect();
            if ids.len() >= n {
                return ids;
            }
            assert!(
                Instant::now() < deadline,
                "garage nodes did not meet: {text}"
            );
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
        for i in 0..self.configs.len() {
            self.kill_node(i);
        }
    }
}
