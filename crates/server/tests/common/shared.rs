//! The store replicas share, for the suite's shared-store runs: one
//! PostgreSQL and one Garage per test process, a database and an object
//! prefix per server.

use std::sync::Arc;

/// The store replicas share, when the suite runs on it
/// (`BERTH_TEST_STORE=shared`): one PostgreSQL and one Garage per test
/// process, while any server uses them; each server gets a database and an
/// object prefix of its own.
pub struct SharedBackends {
    pub pg: berth_storage::pg_harness::Postgres,
    pub garage: berth_storage::garage_harness::Garage,
    prefixes: std::sync::atomic::AtomicUsize,
    /// Appended to every database URL handed out (`?sslmode=...`).
    url_options: String,
}

impl SharedBackends {
    /// Backends of the test's own (a Garage cluster, say).
    pub fn new(
        pg: berth_storage::pg_harness::Postgres,
        garage: berth_storage::garage_harness::Garage,
    ) -> Arc<SharedBackends> {
        SharedBackends::with_url_options(pg, garage, "")
    }

    /// Backends whose database URLs all carry `options` (a query string).
    pub fn with_url_options(
        pg: berth_storage::pg_harness::Postgres,
        garage: berth_storage::garage_harness::Garage,
        options: &str,
    ) -> Arc<SharedBackends> {
        Arc::new(SharedBackends {
            pg,
            garage,
            prefixes: std::sync::atomic::AtomicUsize::new(0),
            url_options: options.to_owned(),
        })
    }
}

static SHARED: std::sync::Mutex<std::sync::Weak<SharedBackends>> =
    std::sync::Mutex::new(std::sync::Weak::new());

/// Whether this run puts every server on the shared store.
pub fn shared_mode() -> bool {
    std::env::var("BERTH_TEST_STORE").as_deref() == Ok("shared")
}

/// Whether, on the shared store, every server is three replicas behind a
/// round-robin balancer (`BERTH_TEST_REPLICAS=3`).
pub fn replicated_mode() -> bool {
    std::env::var("BERTH_TEST_REPLICAS").as_deref() == Ok("3")
}

fn shared_backends() -> Arc<SharedBackends> {
    let mut g = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(b) = g.upgrade() {
        return b;
    }
    let b = Arc::new(SharedBackends {
        pg: berth_storage::pg_harness::Postgres::start(),
        garage: berth_storage::garage_harness::Garage::start(),
        prefixes: std::sync::atomic::AtomicUsize::new(0),
        url_options: String::new(),
    });
    *g = Arc::downgrade(&b);
    b
}

/// A fresh place of the shared store: its backends, `storage` keys and
/// database URL.
pub(crate) fn fresh_shared() -> (Arc<SharedBackends>, String, String) {
    let b = shared_backends();
    let (keys, url) = shared_storage_keys(&b);
    (b, keys, url)
}

/// The `storage` keys (after `rootDirectory`) that put a server on a fresh
/// place of the shared store: an empty database and an unused prefix.
/// Also returns the database's URL.
pub fn shared_storage_keys(b: &SharedBackends) -> (String, String) {
    use berth_storage::garage_harness::{BUCKET, KEY_ID, REGION, SECRET};
    let n = b
        .prefixes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let url = b.pg.database_blocking() + &b.url_options;
    let keys = format!(
        r#","storageDriver":{{"name":"s3","bucket":"{BUCKET}","region":"{REGION}","regionendpoint":"{}","forcepathstyle":true,"secure":false,"accesskey":"{KEY_ID}","secretkey":"{SECRET}","rootdirectory":"{}"}},"cacheDriver":{{"name":"postgres","url":"{url}"}}"#,
        b.garage.endpoint,
        shared_prefix(n)
    );
    (keys, url)
}

/// The object prefix of the `n`th server of this process.
fn shared_prefix(n: usize) -> String {
    format!("s{}-{n}", std::process::id())
}
