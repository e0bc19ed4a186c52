//! A push by digest with tags: each written as its own `TagWrite` says, and
//! a refused one (the store's create-once write lost) stops the rest while
//! those before it stay, pointing at a manifest that is linked.

use berth_core::manifests::TagWrite;
use berth_core::{CoreError, Options, Registry};
use berth_oci::{Algorithm, Digest, Reference, RepoName, Tag};
use berth_storage::mem::MemBackend;
use bytes::Bytes;
use std::sync::Arc;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn image(reg: &Registry, repo: &RepoName, seed: &str) -> (Digest, Bytes) {
    let config = Bytes::from(format!(r#"{{"seed":"{seed}"}}"#));
    let d = Digest::of(Algorithm::Sha256, &config);
    let size = config.len();
    reg.upload_whole(repo, &d, Box::pin(futures_util::stream::iter([Ok(config)])))
        .await
        .unwrap();
    let m = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{size}}},"layers":[]}}"#
    ));
    (Digest::of(Algorithm::Sha256, &m), m)
}

fn tag(s: &str) -> Tag {
    Tag::parse(s).unwrap()
}

#[tokio::test]
async fn a_refused_tag_stops_the_rest_and_keeps_those_before() {
    let reg = Registry::new(Arc::new(MemBackend::new()), Options::default());
    let repo = RepoName::parse("app").unwrap();
    let (first, first_body) = image(&reg, &repo, "1").await;
    let (second, second_body) = image(&reg, &repo, "2").await;
    let pushed = reg
        .put_manifest_tagged(
            &repo,
            &first,
            Some(OCI_MANIFEST),
            first_body,
            &[
                (tag("v1"), TagWrite::CreateOnly),
                (tag("latest"), TagWrite::Overwrite),
            ],
        )
        .await
        .unwrap();
    assert_eq!(pushed.tags, [tag("v1"), tag("latest")]);

    let refused = reg
        .put_manifest_tagged(
            &repo,
            &second,
            Some(OCI_MANIFEST),
            second_body,
            &[
                (tag("latest"), TagWrite::Overwrite),
                (tag("v2"), TagWrite::CreateOnly),
                (tag("v1"), TagWrite::CreateOnly),
                (tag("v3"), TagWrite::CreateOnly),
            ],
        )
        .await;
    assert!(matches!(refused, Err(CoreError::TagExists(t)) if t == tag("v1")));
    for (t, want) in [
        ("latest", Some(&second)),
        ("v2", Some(&second)),
        ("v1", Some(&first)),
        ("v3", None),
    ] {
        let at = reg.tag_target(&repo, &tag(t)).await.unwrap();
        assert_eq!(at.as_ref(), want, "{t}");
    }
    // What the kept tags name is there to pull.
    reg.get_manifest(&repo, &Reference::Tag(tag("v2")))
        .await
        .unwrap();
}
