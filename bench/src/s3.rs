//! The baseline of the shared-store benchmark: a plain S3 client (the
//! `object_store` crate, nothing of Berth) writing a file to the same S3
//! server as one multipart upload, and reading it back, streamed.

use berth_storage::cluster::object_store::aws::AmazonS3Builder;
use berth_storage::cluster::object_store::path::Path;
use berth_storage::cluster::object_store::{ObjectStoreExt, WriteMultipart};
use std::io::Read;
use std::time::Instant;

#[derive(clap::Args)]
pub struct S3 {
    /// `put` (upload the file) or `get` (download it, discarding).
    pub op: String,
    #[arg(long)]
    pub endpoint: String,
    #[arg(long)]
    pub bucket: String,
    #[arg(long, default_value = "garage")]
    pub region: String,
    #[arg(long)]
    pub key_id: String,
    #[arg(long)]
    pub secret: String,
    /// The file to upload (put).
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// The object's name.
    #[arg(long, default_value = "bench/object")]
    pub name: String,
}

impl S3 {
    /// Seconds the transfer took.
    pub async fn run(self) -> Result<f64, crate::Error> {
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region(&self.region)
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_virtual_hosted_style_request(false)
            .build()?;
        let path = Path::from(self.name.as_str());
        let started = Instant::now();
        match self.op.as_str() {
            "put" => {
                let file = self.file.ok_or("--file is required")?;
                let upload = store.put_multipart(&path).await?;
                // 8 MiB parts, up to 4 in flight: what a tuned client does.
                let mut w = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
                let mut f = std::fs::File::open(file)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    w.wait_for_capacity(4).await?;
                    w.write(&buf[..n]);
                }
                w.finish().await?;
            }
            "get" => {
                use futures_util::StreamExt;
                let mut s = store.get(&path).await?.into_stream();
                while let Some(chunk) = s.next().await {
                    chunk?;
                }
            }
            other => return Err(format!("unknown op {other:?}").into()),
        }
        Ok(started.elapsed().as_secs_f64())
    }
}
