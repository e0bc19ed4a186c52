//! Tags pushed with a manifest by digest (`PUT /v2/<name>/manifests/<digest>
//! ?tag=..`, distribution-spec main): every accepted tag in `OCI-Tag`, bad
//! or too many parameters refused before anything is written, and the same
//! access control as a push by tag (immutable tags, `latest` exempt).

mod common;

use common::*;
use reqwest::{Method, StatusCode};

async fn put_tagged(s: &Server, repo: &str, manifest: &[u8], query: &str) -> reqwest::Response {
    s.send(
        Method::PUT,
        &format!("/v2/{repo}/manifests/{}?{query}", sha256(manifest)),
        &[("content-type", OCI_MANIFEST)],
        manifest.to_vec(),
    )
    .await
}

async fn target(s: &Server, repo: &str, tag: &str) -> Option<String> {
    let r = s.head(&format!("/v2/{repo}/manifests/{tag}")).await;
    (r.status() == StatusCode::OK).then(|| header(&r, "docker-content-digest"))
}

#[tokio::test]
async fn a_push_by_digest_writes_its_tag_parameters() {
    let s = Server::start();
    let (m, digest) = s.push_image("tp/app", "seed", 1, 1).await;
    let r = put_tagged(&s, "tp/app", &m, "tag=1.2.3&tag=1.2&tag=1.2.3&tag=latest").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "oci-tag"), "1.2.3, 1.2, latest");
    for tag in ["1.2.3", "1.2", "latest"] {
        assert_eq!(target(&s, "tp/app", tag).await.as_deref(), Some(&*digest));
    }
    // The audit trail names the tags written (its writer is a thread of
    // its own: looked for until it shows, at most 10 s).
    let audited = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .any(|l| l["action"] == "push manifest" && l["tags"] == "1.2.3, 1.2, latest")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !audited(&s.audit_lines()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(audited(&s.audit_lines()), "{:?}", s.audit_lines());

    // A bad tag, or more than the registry takes: refused, nothing tagged.
    let (other, _) = s.push_image("tp/app", "seed-2", 2, 1).await;
    let r = put_tagged(&s, "tp/app", &other, "tag=fine&tag=-bad").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "TAG_INVALID");
    let many: Vec<String> = (0..33).map(|i| format!("tag=t{i}")).collect();
    let r = put_tagged(&s, "tp/app", &other, &many.join("&")).await;
    assert_eq!(r.status(), StatusCode::URI_TOO_LONG);
    assert_eq!(target(&s, "tp/app", "fine").await, None);
    assert_eq!(target(&s, "tp/app", "t0").await, None);
    // Up to 32 are taken.
    let r = put_tagged(&s, "tp/app", &other, &many[..32].join("&")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-tag").split(", ").count(), 32);

    // A push by tag ignores them (the spec defines them for digests).
    let r = s
        .send(
            Method::PUT,
            "/v2/tp/app/manifests/by-tag?tag=extra",
            &[("content-type", OCI_MANIFEST)],
            m.clone(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("oci-tag").is_none());
    assert_eq!(target(&s, "tp/app", "extra").await, None);
}

/// CI may create tags but not move them: the same holds for tags given as
/// parameters, `latest` exempt as in zot.
#[tokio::test]
async fn tag_parameters_keep_tags_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    write_htpasswd(&path, &[("admin", "admin-pw"), ("ci", "ci-pw")]);
    let s = Server::start_with(&format!(
        r#","http":{{"address":"127.0.0.1","port":"0","realm":"berth-test",
        "auth":{{"htpasswd":{{"path":{:?}}}}},
        "accessControl":{{
          "groups":{{"admins":{{"users":["admin"]}}}},
          "repositories":{{"**":{{"anonymousPolicy":["read"],
            "policies":[{{"users":["ci"],"actions":["read","create"]}}]}}}},
          "adminPolicy":{{"groups":["admins"],"actions":["read","create","update","delete"]}}
        }}}}"#,
        path.display().to_string()
    ));
    s.login(Some("ci:ci-pw"));
    let (first, first_digest) = s.push_image("ci/app", "seed-1", 1, 1).await;
    let (second, second_digest) = s.push_image("ci/app", "seed-2", 2, 1).await;
    let r = put_tagged(&s, "ci/app", &first, "tag=v1&tag=latest").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-tag"), "v1, latest");

    // Moving v1 needs `update`: refused whole, latest not moved either.
    let r = put_tagged(&s, "ci/app", &second, "tag=latest&tag=v1").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        target(&s, "ci/app", "v1").await.as_deref(),
        Some(&*first_digest)
    );
    assert_eq!(
        target(&s, "ci/app", "latest").await.as_deref(),
        Some(&*first_digest)
    );

    // New tags and `latest` move with `create` alone.
    let r = put_tagged(&s, "ci/app", &second, "tag=v2&tag=latest").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-tag"), "v2, latest");
    assert_eq!(
        target(&s, "ci/app", "latest").await.as_deref(),
        Some(&*second_digest)
    );

    // An admin may move them.
    s.login(Some("admin:admin-pw"));
    let r = put_tagged(&s, "ci/app", &second, "tag=v1").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        target(&s, "ci/app", "v1").await.as_deref(),
        Some(&*second_digest)
    );
}
