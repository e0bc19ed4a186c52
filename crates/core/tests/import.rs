//! Importing image layouts: what is refused, what is left alone, and what
//! a second run does. The layouts are written into an in-memory store (the
//! import reads through the `Backend` trait); `tests/import.rs` of the
//! server imports a store written by skopeo.

use berth_core::manifests::TagWrite;
use berth_core::{Options, Registry};
use berth_oci::{Algorithm, Digest, Reference, RepoName, Tag};
use berth_storage::mem::MemBackend;
use berth_storage::{Backend, Durability};
use bytes::Bytes;
use std::sync::Arc;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct Layout<'a> {
    store: &'a MemBackend,
    repo: &'a str,
    entries: Vec<String>,
}

impl<'a> Layout<'a> {
    async fn new(store: &'a MemBackend, repo: &'a str, version: &str) -> Layout<'a> {
        let marker = format!(r#"{{"imageLayoutVersion":"{version}"}}"#);
        store
            .put(
                &format!("{repo}/oci-layout"),
                marker.into(),
                Durability::Lazy,
            )
            .await
            .unwrap();
        Layout {
            store,
            repo,
            entries: Vec::new(),
        }
    }

    async fn blob(&self, data: &[u8]) -> Digest {
        let d = Digest::of(Algorithm::Sha256, data);
        let key = format!("{}/blobs/sha256/{}", self.repo, d.hex());
        self.store
            .put(&key, Bytes::copy_from_slice(data), Durability::Lazy)
            .await
            .unwrap();
        d
    }

    /// An image of one layer; returns its manifest's digest and bytes.
    async fn image(&mut self, seed: &str, tag: Option<&str>) -> (Digest, String) {
        let config = format!(r#"{{"seed":"{seed}"}}"#);
        let c = self.blob(config.as_bytes()).await;
        let layer = format!("layer of {seed}");
        let l = self.blob(layer.as_bytes()).await;
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let d = self.blob(m.as_bytes()).await;
        self.entry(&d, m.len(), tag);
        (d, m)
    }

    fn entry(&mut self, d: &Digest, size: usize, tag: Option<&str>) {
        let annotations = tag.map_or(String::new(), |t| {
            format!(r#","annotations":{{"org.opencontainers.image.ref.name":"{t}"}}"#)
        });
        self.entries.push(format!(
            r#"{{"mediaType":"{MANIFEST}","digest":"{d}","size":{size}{annotations}}}"#
        ));
    }

    async fn finish(&self) {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            self.entries.join(",")
        );
        self.store
            .put(
                &format!("{}/index.json", self.repo),
                index.into(),
                Durability::Lazy,
            )
            .await
            .unwrap();
    }
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

#[tokio::test]
async fn conflicts_missing_content_and_foreign_layouts_are_reported_and_the_rest_imported() {
    let source = MemBackend::new();
    let dest = Registry::new(Arc::new(MemBackend::new()), Options::default());

    // A repository whose tag already points elsewhere in the destination.
    let mut a = Layout::new(&source, "a", "1.0.0").await;
    let (a1, _) = a.image("a1", Some("v1")).await;
    let (a2, _) = a.image("a2", Some("v2")).await;
    a.finish().await;
    let mut other = Layout::new(&source, "other", "1.0.0").await;
    let (o1, o1_body) = other.image("o1", None).await;
    other.finish().await;
    // Put `o1` in `a` first and tag it v1 there.
    let (c, l) = (
        Digest::of(Algorithm::Sha256, br#"{"seed":"o1"}"#),
        Digest::of(Algorithm::Sha256, b"layer of o1"),
    );
    for (d, data) in [(&c, &br#"{"seed":"o1"}"#[..]), (&l, &b"layer of o1"[..])] {
        let body: berth_core::ByteStream = Box::pin(futures_util::stream::iter([Ok(
            Bytes::copy_from_slice(data),
        )]));
        dest.upload_whole(&repo("a"), d, body).await.unwrap();
    }
    dest.put_manifest(
        &repo("a"),
        &Reference::Tag(Tag::parse("v1").unwrap()),
        Some(MANIFEST),
        o1_body.into(),
        TagWrite::Overwrite,
    )
    .await
    .unwrap();

    // A repository whose manifest names a layer it does not hold.
    let mut b = Layout::new(&source, "b", "1.0.0").await;
    let (b1, _) = b.image("b1", Some("v1")).await;
    b.finish().await;
    source
        .delete(
            &format!(
                "b/blobs/sha256/{}",
                Digest::of(Algorithm::Sha256, b"layer of b1").hex()
            ),
            Durability::Lazy,
        )
        .await
        .unwrap();

    // A layout of a version this import does not know, and one whose
    // index names a manifest that is not what its digest says.
    let mut future = Layout::new(&source, "future", "2.0.0").await;
    future.image("f1", Some("v1")).await;
    future.finish().await;
    let mut lying = Layout::new(&source, "lying", "1.0.0").await;
    let (_, body) = lying.image("l1", Some("v1")).await;
    let wrong = Digest::of(Algorithm::Sha256, b"something else");
    lying
        .store
        .put(
            &format!("lying/blobs/sha256/{}", wrong.hex()),
            body.clone().into(),
            Durability::Lazy,
        )
        .await
        .unwrap();
    lying.entry(&wrong, body.len(), Some("v2"));
    lying.finish().await;

    let report = dest.import_layouts(&source, |_| {}).await.unwrap();
    let problems = report.problems.join("\n");
    assert!(
        problems.contains(&format!(
            "a:v1: already points at {o1} here, not {a1} (left alone)"
        )),
        "{problems}"
    );
    assert!(
        problems.contains(&format!("b@{b1}: blob sha256:")) && problems.contains("missing"),
        "{problems}"
    );
    assert!(
        problems.contains("future: oci-layout: version \"2.0.0\""),
        "{problems}"
    );
    assert!(
        problems.contains("lying@") && problems.contains("does not match its digest"),
        "{problems}"
    );
    assert_eq!(report.problems.len(), 4, "{problems}");

    // The tag that was there stays; everything else of `a`, `other` and
    // the good half of `lying` came in.
    let v1 = Tag::parse("v1").unwrap();
    let v2 = Tag::parse("v2").unwrap();
    assert_eq!(
        dest.tag_target(&repo("a"), &v1).await.unwrap(),
        Some(o1.clone())
    );
    assert_eq!(
        dest.tag_target(&repo("a"), &v2).await.unwrap(),
        Some(a2.clone())
    );
    assert!(dest
        .resolve_manifest(&repo("a"), &Reference::Digest(a1.clone()))
        .await
        .is_ok());
    assert!(dest
        .resolve_manifest(&repo("other"), &Reference::Digest(o1.clone()))
        .await
        .is_ok());
    assert!(dest.tag_target(&repo("b"), &v1).await.unwrap().is_none());
    assert!(dest
        .tag_target(&repo("future"), &v1)
        .await
        .unwrap()
        .is_none());
    assert!(dest
        .tag_target(&repo("lying"), &v1)
        .await
        .unwrap()
        .is_some());
    assert!(dest
        .tag_target(&repo("lying"), &v2)
        .await
        .unwrap()
        .is_none());

    // A second run imports nothing new and finds the same problems.
    let again = dest.import_layouts(&source, |_| {}).await.unwrap();
    assert_eq!((again.tags, again.manifests, again.blobs), (0, 0, 0));
    assert_eq!(again.problems, report.problems);
    assert_eq!(again.verified_manifests, report.verified_manifests);
}
