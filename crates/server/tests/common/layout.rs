//! Builds OCI image layouts on disk (the `oci:` transport of skopeo) from
//! generated content, so client tests need no downloaded images.

use super::{bytes, sha256, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use std::path::Path;

/// Writes a blob into the layout; returns its descriptor JSON.
fn blob(dir: &Path, media_type: &str, data: &[u8], extra: &str) -> (String, String) {
    let digest = sha256(data);
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, data).expect("write blob");
    let desc = format!(
        r#"{{"mediaType":"{media_type}","digest":"{digest}","size":{}{extra}}}"#,
        data.len()
    );
    (digest, desc)
}

/// An image with `layer_sizes.len()` layers; returns (manifest digest, descriptor).
fn image(dir: &Path, seed: u64, arch: &str, layer_sizes: &[usize]) -> (String, String) {
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{}},"seed":{seed}}}"#
    );
    let (_, config_desc) = blob(dir, OCI_CONFIG, config.as_bytes(), "");
    let layers: Vec<String> = layer_sizes
        .iter()
        .enumerate()
        .map(|(i, n)| blob(dir, OCI_LAYER, &bytes(seed * 31 + i as u64, *n), "").1)
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{config_desc},"layers":[{}]}}"#,
        layers.join(",")
    );
    let platform = format!(r#","platform":{{"architecture":"{arch}","os":"linux"}}"#);
    blob(dir, OCI_MANIFEST, manifest.as_bytes(), &platform)
}

fn finish(dir: &Path, tag: &str, top_desc: &str) {
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let named = top_desc.trim_end_matches('}').to_owned()
        + &format!(r#","annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}"#);
    let index = format!(r#"{{"schemaVersion":2,"manifests":[{named}]}}"#);
    std::fs::write(dir.join("index.json"), index).expect("index.json");
}

/// A single-platform image with several layers. Returns the manifest digest.
pub fn single(dir: &Path, tag: &str, seed: u64) -> String {
    let (digest, desc) = image(dir, seed, "amd64", &[1_500_000, 200_000, 10]);
    // The top-level entry carries no platform.
    let desc = desc.replace(r#","platform":{"architecture":"amd64","os":"linux"}"#, "");
    finish(dir, tag, &desc);
    digest
}

/// A two-platform index. Returns the index digest.
pub fn multi(dir: &Path, tag: &str, seed: u64) -> String {
    let (_, amd) = image(dir, seed, "amd64", &[300_000, 1000]);
    let (_, arm) = image(dir, seed + 1, "arm64", &[250_000, 2000]);
    let index =
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{amd},{arm}]}}"#);
    let (digest, desc) = blob(dir, OCI_INDEX, index.as_bytes(), "");
    finish(dir, tag, &desc);
    digest
}
