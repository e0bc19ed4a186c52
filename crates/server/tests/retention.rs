//! Retention (zot's `storage.retention`): each rule kind through `berth gc`,
//! `dryRun` removing nothing, untagged manifests and referrers, and online
//! retention that follows a live reload and never loses a fresh push.

mod common;

use common::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

const DAY: u64 = 24 * 3600;

fn tag_key(repo: &str, tag: &str) -> String {
    format!("repositories/{repo}/_tags/{tag}")
}

fn link_key(repo: &str, digest: &str) -> String {
    let hex = digest.trim_start_matches("sha256:");
    format!("repositories/{repo}/_manifests/sha256/{hex}")
}

/// Runs `berth gc` with the test's storage and `retention`; returns stdout.
fn run_gc(s: &Server, retention: &str, dry_run: bool) -> String {
    s.berth_gc(
        &format!(r#""gcDelay":"0s","retention":{retention}"#),
        dry_run,
    )
}

/// An artifact whose subject is `subject` (a manifest of `size` bytes).
async fn push_referrer(s: &Server, repo: &str, subject: &str, size: usize, note: &str) -> String {
    let empty = s.push_blob(repo, b"{}").await;
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.test.sbom","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{size}}},"annotations":{{"note":"{note}"}}}}"#
    );
    let digest = sha256(body.as_bytes());
    let r = s
        .put_manifest(repo, &digest, OCI_MANIFEST, body.as_bytes())
        .await;
    expect_status(r, StatusCode::CREATED).await;
    digest
}

/// Pushes an image, then removes its tag: an untagged manifest.
async fn push_untagged(s: &Server, repo: &str, seed: u64) -> (Vec<u8>, String) {
    let (body, digest) = s.push_image(repo, "scratch", seed, 1).await;
    expect_status(
        s.delete(&format!("/v2/{repo}/manifests/scratch")).await,
        StatusCode::ACCEPTED,
    )
    .await;
    (body, digest)
}

async fn status(s: &Server, path: &str) -> StatusCode {
    s.head(path).await.status()
}

const POLICIES: &str = r#"{
  "delay": "1h",
  "policies": [
    {
      "repositories": ["ci/**"],
      "deleteReferrers": true,
      "keepTags": [
        { "patterns": ["^v[0-9.]+$"], "mostRecentlyPushedCount": 1 },
        { "patterns": ["^dev-"], "pushedWithin": "720h" },
        { "patterns": ["^feat"], "pulledWithin": "168h" },
        { "patterns": ["^hot"], "mostRecentlyPulledCount": 1 }
      ]
    },
    { "repositories": ["prod/**"], "deleteUntagged": false }
  ]
}"#;

#[tokio::test]
async fn each_rule_kind_and_dry_run() {
    let mut s = Server::start();
    let old = 40 * DAY;
    // ci/app: what the first policy judges.
    let tags = [
        "v1.0.0", "v1.0.1", "dev-a", "dev-b", "feat-x", "feat-y", "hot-1", "hot-2", "misc",
    ];
    for (i, tag) in tags.iter().enumerate() {
        let (_, digest) = s.push_image("ci/app", tag, 10 + i as u64, 1).await;
        // Every image was pushed long ago; only the tags' times differ.
        s.backdate(&link_key("ci/app", &digest), old + 100);
    }
    for (tag, ago) in [
        ("v1.0.0", old + 10),
        ("v1.0.1", old),
        ("dev-a", old),
        ("feat-x", old),
        ("feat-y", old),
        ("hot-1", old),
        ("hot-2", old),
        ("misc", old),
    ] {
        s.backdate(&tag_key("ci/app", tag), ago);
    }
    // Pulls (noted by the server, written when it stops).
    for tag in ["feat-x", "hot-2"] {
        expect_status(
            s.get(&format!("/v2/ci/app/manifests/{tag}")).await,
            StatusCode::OK,
        )
        .await;
    }
    // Untagged: an old one with a referrer (both go: deleteReferrers), and a
    // young one (stays: younger than the delay).
    let (old_body, old_untagged) = push_untagged(&s, "ci/app", 50).await;
    let sbom = push_referrer(&s, "ci/app", &old_untagged, old_body.len(), "ci").await;
    let (_, young_untagged) = push_untagged(&s, "ci/app", 51).await;
    for d in [&old_untagged, &sbom] {
        s.backdate(&link_key("ci/app", d), 2 * 3600);
    }
    let dev_a_layer = sha256(&bytes(1200, 1000)); // seed 12 = dev-a

    // prod/app: untagged manifests stay (deleteUntagged false).
    let (_, prod_untagged) = push_untagged(&s, "prod/app", 60).await;
    s.backdate(&link_key("prod/app", &prod_untagged), 2 * 3600);

    // other/app: no policy: every tag stays; an untagged manifest goes,
    // unless an index or an artifact refers to it.
    s.push_image("other/app", "ancient", 70, 1).await;
    s.backdate(&tag_key("other/app", "ancient"), 400 * DAY);
    let (_, lonely) = push_untagged(&s, "other/app", 71).await;
    let (child_body, child) = push_untagged(&s, "other/app", 72).await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":{}}}]}}"#,
        child_body.len()
    );
    expect_status(
        s.put_manifest("other/app", "multi", OCI_INDEX, index.as_bytes())
            .await,
        StatusCode::CREATED,
    )
    .await;
    // An old untagged manifest that clients still pull by digest stays.
    let (_, pinned) = push_untagged(&s, "other/app", 74).await;
    expect_status(
        s.get(&format!("/v2/other/app/manifests/{pinned}")).await,
        StatusCode::OK,
    )
    .await;
    let (signed_body, signed) = push_untagged(&s, "other/app", 73).await;
    let sig = push_referrer(&s, "other/app", &signed, signed_body.len(), "sig").await;
    for d in [&lonely, &child, &signed, &sig, &pinned] {
        s.backdate(&link_key("other/app", d), 2 * 3600);
    }
    assert!(s.terminate().success());

    let removed_tags = ["v1.0.0", "dev-a", "feat-y", "hot-1", "misc"];
    let kept_tags = ["v1.0.1", "dev-b", "feat-x", "hot-2"];

    // The images of the 5 removed tags become untagged (and are old): with
    // the 3 untagged ones, 8 manifests go.
    // retention.dryRun and `berth gc --dry-run` both report and keep.
    let dry_policies = POLICIES.replacen('{', r#"{"dryRun":true,"#, 1);
    let store = s.store().await;
    for (retention, flag) in [(dry_policies.as_str(), false), (POLICIES, true)] {
        let out = run_gc(&s, retention, flag);
        assert!(
            out.contains("retention: would remove 5 tags and 8 untagged manifests"),
            "{out}"
        );
        for tag in removed_tags {
            assert!(out.contains(&format!("tag ci/app:{tag}\n")), "{tag}: {out}");
            assert!(
                store.stat(&tag_key("ci/app", tag)).await.unwrap().is_some(),
                "{tag} removed by a dry run"
            );
        }
        for d in [&old_untagged, &sbom] {
            assert!(out.contains(&format!("manifest ci/app@{d}")), "{out}");
        }
        assert!(
            out.contains(&format!("manifest other/app@{lonely}")),
            "{out}"
        );
    }

    let out = run_gc(&s, POLICIES, false);
    assert!(
        out.contains("retention: removed 5 tags and 8 untagged manifests"),
        "{out}"
    );
    s.restart();
    for tag in removed_tags {
        assert_eq!(
            status(&s, &format!("/v2/ci/app/manifests/{tag}")).await,
            StatusCode::NOT_FOUND,
            "{tag}"
        );
    }
    for tag in kept_tags {
        assert_eq!(
            status(&s, &format!("/v2/ci/app/manifests/{tag}")).await,
            StatusCode::OK,
            "{tag}"
        );
    }
    let (gone, kept) = (StatusCode::NOT_FOUND, StatusCode::OK);
    let expected = [
        ("ci/app", &old_untagged, gone),
        ("ci/app", &sbom, gone),
        ("other/app", &lonely, gone),
        ("ci/app", &young_untagged, kept),
        ("prod/app", &prod_untagged, kept),
        ("other/app", &child, kept),
        ("other/app", &signed, kept),
        ("other/app", &sig, kept),
        ("other/app", &pinned, kept),
    ];
    for (repo, d, want) in expected {
        let path = format!("/v2/{repo}/manifests/{d}");
        assert_eq!(status(&s, &path).await, want, "{path}");
    }
    for path in [
        "/v2/other/app/manifests/ancient",
        "/v2/other/app/manifests/multi",
    ] {
        assert_eq!(status(&s, path).await, kept, "{path}");
    }
    // The removed image's own layer went in the same pass.
    assert_eq!(
        status(&s, &format!("/v2/ci/app/blobs/{dev_a_layer}")).await,
        StatusCode::NOT_FOUND
    );
    // The referrers index no longer lists the removed artifact.
    let r = s.get(&format!("/v2/ci/app/referrers/{old_untagged}")).await;
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 0, "{v}");

    // A second pass finds nothing more.
    let out = run_gc(&s, POLICIES, false);
    assert!(
        out.contains("retention: removed 0 tags and 0 untagged manifests"),
        "{out}"
    );
}

/// The configuration of the online test: GC every 200 ms, `keep` as the
/// keepTags patterns of `live/**`.
fn online(keep: &str) -> String {
    format!(
        r#","storage":{{"rootDirectory":@ROOT@@SHARED@,"gcDelay":"1h","gcInterval":"200ms","retention":{{"policies":[{{"repositories":["live/**"],"keepTags":[{{"patterns":[{keep}]}},{{"patterns":["^ci-"],"mostRecentlyPushedCount":3}}]}}]}}}}"#
    )
}

async fn wait_until_gone(s: &Server, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(s, path).await != StatusCode::NOT_FOUND {
        assert!(Instant::now() < deadline, "{path} was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn online_retention_follows_reloads_and_never_loses_a_fresh_push() {
    let s = Server::start_with(&online(r#""^a$","^b$""#));
    s.push_image("live/app", "a", 1, 1).await;
    s.push_image("live/app", "b", 2, 1).await;
    s.push_image("live/app", "stray", 3, 1).await;
    wait_until_gone(&s, "/v2/live/app/manifests/stray").await;
    // Berth's own removals are in the audit trail.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.audit_lines().iter().any(|l| {
        l["action"] == "retention: delete tag"
            && l["repository"] == "live/app"
            && l["reference"] == "stray"
            && l["auth"] == "system"
    }) {
        assert!(Instant::now() < deadline, "{:?}", s.audit_lines());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // CI pushes continuously under mostRecentlyPushedCount 3: every push
    // is acknowledged, and the tag just pushed is there right after.
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(4) || i < 10 {
        let tag = format!("ci-{i}");
        let (body, digest) = s.push_image("live/app", &tag, 100 + i, 1).await;
        let r = s.get(&format!("/v2/live/app/manifests/{tag}")).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "{tag} vanished right after its push"
        );
        assert_eq!(header(&r, "docker-content-digest"), digest);
        assert_eq!(r.bytes().await.unwrap().to_vec(), body);
        i += 1;
    }
    wait_until_gone(&s, "/v2/live/app/manifests/ci-0").await;
    let last = format!("/v2/live/app/manifests/ci-{}", i - 1);
    assert_eq!(status(&s, &last).await, StatusCode::OK);

    // A reload changes the policy: "b" no longer kept.
    s.rewrite_config(&online(r#""^a$""#));
    wait_until_gone(&s, "/v2/live/app/manifests/b").await;
    assert_eq!(status(&s, "/v2/live/app/manifests/a").await, StatusCode::OK);

    // An invalid policy (a pattern that is no regular expression) is
    // refused; the running one still holds.
    s.rewrite_config(&online(r#""^a$","(""#));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.log().contains("configuration reload refused") {
        assert!(Instant::now() < deadline, "{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.push_image("live/app", "c", 4, 1).await;
    wait_until_gone(&s, "/v2/live/app/manifests/c").await;
    assert_eq!(status(&s, "/v2/live/app/manifests/a").await, StatusCode::OK);
}
