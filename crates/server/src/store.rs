//! Opens the store a configuration names: `rootDirectory` on the local
//! filesystem (the embedded default), or the store replicas share (S3 for
//! content, PostgreSQL for state; see `config::shared`).

use crate::config::shared::SharedStore;
use crate::config::Settings;
use berth_storage::cluster::object_store::aws::AmazonS3Builder;
use berth_storage::cluster::object_store::ClientOptions;
use berth_storage::cluster::ClusterBackend;
use berth_storage::fs::FsBackend;
use berth_storage::Backend;
use std::sync::Arc;
use std::time::Duration;

/// How long start-up waits for PostgreSQL (and the schema migration).
const CONNECT: Duration = Duration::from_secs(30);

/// The store of `settings`, ready to use.
pub async fn open(settings: &Settings) -> Result<Arc<dyn Backend>, String> {
    match &settings.shared {
        None => FsBackend::open(&settings.root_directory, settings.commit)
            .map(|s| Arc::new(s) as Arc<dyn Backend>)
            .map_err(|e| {
                format!(
                    "storage.rootDirectory {}: {e}",
                    settings.root_directory.display()
                )
            }),
        Some(shared) => open_shared(shared).await,
    }
}

async fn open_shared(s: &SharedStore) -> Result<Arc<dyn Backend>, String> {
    // A request's whole life is bounded, but loosely: a chunk (8 MiB)
    // streams to a slow client within it down to ~14 KB/s (the client's own
    // write timeout cuts slower ones first).
    let mut options = ClientOptions::new()
        .with_allow_invalid_certificates(s.s3.skip_verify)
        .with_timeout(Duration::from_secs(600))
        .with_connect_timeout(Duration::from_secs(10));
    let plain =
        s.s3.endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
    options = options.with_allow_http(plain || !s.s3.secure);
    // The standard AWS environment variables first; the configuration's
    // keys override them.
    let mut b = AmazonS3Builder::from_env()
        .with_client_options(options)
        .with_bucket_name(&s.s3.bucket)
        .with_virtual_hosted_style_request(!s.s3.force_path_style);
    if let Some(r) = &s.s3.region {
        b = b.with_region(r);
    } else if std::env::var_os("AWS_REGION").is_none() {
        b = b.with_region("us-east-1");
    }
    if let Some(e) = &s.s3.endpoint {
        b = b.with_endpoint(e);
    }
    // Over TLS the payload needs no signature of its own (TLS keeps it
    // intact, and every blob is hashed against its digest anyway); over
    // plain HTTP, the signature is what protects it.
    if s.s3.secure && !plain {
        b = b.with_unsigned_payload(true);
    }
    if let (Some(key), Some(secret)) = (&s.s3.access_key, &s.s3.secret_key) {
        b = b.with_access_key_id(key).with_secret_access_key(&secret.0);
    }
    let objects = b
        .build()
        .map_err(|e| format!("storage.storageDriver: {e}"))?;
    let pool = ClusterBackend::pool(&s.postgres.0, s.max_connections)
        .map_err(|e| format!("storage.cacheDriver: {e}"))?;
    let store = tokio::time::timeout(
        CONNECT,
        ClusterBackend::connect(pool, Arc::new(objects), &s.s3.root),
    )
    .await
    .map_err(|_| format!("storage.cacheDriver: PostgreSQL did not answer within {CONNECT:?}"))?
    .map_err(|e| format!("storage.cacheDriver: {e}"))?;
    Ok(Arc::new(store))
}
