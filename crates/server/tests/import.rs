//! `berth import zot`: a zot store (an OCI image layout per repository,
//! written here by a real layout writer, skopeo) brought into Berth's store,
//! verified, resumable, with bad content refused and nothing of it served.

mod common;

use common::*;
use reqwest::StatusCode;
use std::path::Path;
use std::process::Command;

/// skopeo copying one generated layout into the zot store.
fn skopeo_to_store(auth: &Path, from: &Path, tag: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    run(Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", auth)
        .args(["copy", "--all", "--preserve-digests"])
        .arg(format!("oci:{}:{tag}", from.display()))
        .arg(format!("oci:{}:{tag}", to.display())));
}

/// Runs `berth import zot` into a store named by `root` and the shared
/// store's `keys` (empty on the filesystem); returns (success, stdout).
fn import(zot: &Path, root: &Path, keys: &str) -> (bool, String) {
    let config = root.with_extension("json");
    std::fs::write(
        &config,
        format!(
            r#"{{"storage":{{"rootDirectory":{:?}{keys}}}}}"#,
            root.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["import", "zot"])
        .arg(zot)
        .arg(&config)
        .output()
        .expect("run berth import");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("import: [1/"),
        "progress is shown: {stderr}"
    );
    (out.status.success(), stdout)
}

/// Adds an SBOM-like artifact referring to `subject` to a layout, the way
/// zot keeps referrers: an untagged entry of `index.json` (put first, so
/// the import must order subjects before referrers itself).
fn add_referrer(layout: &Path, subject: &str) -> String {
    let write = |data: &[u8]| {
        let d = sha256(data);
        std::fs::write(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            data,
        )
        .unwrap();
        d
    };
    let subject_size = std::fs::metadata(
        layout
            .join("blobs/sha256")
            .join(subject.trim_start_matches("sha256:")),
    )
    .unwrap()
    .len();
    let empty = write(b"{}");
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#;
    let sbom_digest = write(sbom);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/spdx+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/spdx+json","digest":"{sbom_digest}","size":{}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{subject_size}}},"annotations":{{"org.example.kind":"sbom"}}}}"#,
        sbom.len()
    );
    let digest = write(manifest.as_bytes());
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entry = serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": manifest.len(),
        "artifactType": "application/spdx+json",
    });
    index["manifests"].as_array_mut().unwrap().insert(0, entry);
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    digest
}

/// Counts from the summary line.
fn summary(stdout: &str) -> String {
    stdout
        .lines()
        .filter(|l| l.starts_with("import: ") || l.starts_with("verified: "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_zot_store_written_by_skopeo_is_imported_verified_and_resumable() {
    let work = tempfile::tempdir().unwrap();
    let auth = work.path().join("auth.json");
    std::fs::write(&auth, "{}").unwrap();
    let zot = work.path().join("zot");
    let gen = |name: &str| work.path().join("gen").join(name);

    // The store as first seen: one repository, one tag.
    let v1 = layout::single(&gen("v1"), "v1", 1);
    skopeo_to_store(&auth, &gen("v1"), "v1", &zot.join("team/app"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let json = |s: &Server, path: &str| {
        rt.block_on(async {
            serde_json::from_slice::<serde_json::Value>(&s.get(path).await.bytes().await.unwrap())
                .unwrap()
        })
    };
    // A first import, into a store not being served.
    let mut s = Server::start();
    s.kill();
    let (ok, out) = import(&zot, &s.root(), s.storage_keys());
    assert!(ok, "{out}");
    let first = summary(&out);
    assert!(
        first.contains("import: 1 repositories; imported 1 tags, 1 manifests, 4 blobs (")
            && first.contains("0 already here")
            && first.contains("verified: 1 tags, 1 manifests, 4 blobs read back"),
        "{out}"
    );
    s.restart();
    assert_eq!(
        json(&s, "/v2/team/app/tags/list")["tags"],
        serde_json::json!(["v1"])
    );
    s.kill();

    // The store grows: a multi-platform index under a second tag, a
    // nested repository, a referrer, junk zot keeps beside repositories,
    // and a repository with a layer that no longer matches its digest.
    let v2 = layout::multi(&gen("v2"), "v2", 5);
    skopeo_to_store(&auth, &gen("v2"), "v2", &zot.join("team/app"));
    let t1 = layout::single(&gen("t1"), "t1", 9);
    skopeo_to_store(&auth, &gen("t1"), "t1", &zot.join("team/app/tools"));
    let sbom = add_referrer(&zot.join("team/app"), &v1);
    let b1 = layout::single(&gen("b1"), "v1", 13);
    skopeo_to_store(&auth, &gen("b1"), "v1", &zot.join("broken"));
    let b1_manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            zot.join("broken/blobs/sha256")
                .join(b1.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let bad_layer = b1_manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad_path = zot
        .join("broken/blobs/sha256")
        .join(bad_layer.trim_start_matches("sha256:"));
    let good_bytes = std::fs::read(&bad_path).unwrap();
    let mut rotten = good_bytes.clone();
    rotten[1000] ^= 0xff;
    std::fs::write(&bad_path, &rotten).unwrap();
    for junk in ["_trivy/db", ".sync/x"] {
        let d = zot.join(junk);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(
            d.join("index.json"),
            r#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
    }
    std::fs::create_dir_all(zot.join("team/app/.uploads")).unwrap();
    std::fs::write(zot.join("team/app/.uploads/abc"), b"partial").unwrap();

    // Imported again: what is there is skipped, the rest comes in, the
    // rotten layer is refused and its manifest with it.
    let (ok, out) = import(&zot, &s.root(), s.storage_keys());
    assert!(!ok, "a problem makes the import fail: {out}");
    assert!(
        out.contains("problem: broken@") && out.contains("digest"),
        "{out}"
    );
    assert!(
        out.contains("imported 2 tags, 5 manifests") && out.contains("2 already here"),
        "{out}"
    );
    assert!(
        out.contains("verified: 3 tags, 6 manifests"),
        "every tag and manifest of the store was read back: {out}"
    );
    s.restart();
    // Nothing of the refused manifest is served.
    let r = rt.block_on(s.get("/v2/broken/manifests/v1"));
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = rt.block_on(s.head(&format!("/v2/broken/blobs/{bad_layer}")));
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = rt.block_on(s.get(&format!("/v2/broken/manifests/{b1}")));
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    s.kill();

    // Repaired at the source, a third run finishes the job.
    std::fs::write(&bad_path, &good_bytes).unwrap();
    let (ok, out) = import(&zot, &s.root(), s.storage_keys());
    assert!(ok, "{out}");
    assert!(out.contains("imported 1 tags, 1 manifests"), "{out}");
    assert!(out.contains("verified: 4 tags, 7 manifests"), "{out}");
    s.restart();

    // What clients see: every tag at its digest, the referrer through the
    // referrers API, the junk nowhere, and every image pulls whole.
    let catalog = json(&s, "/v2/_catalog");
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["broken", "team/app", "team/app/tools"])
    );
    let host = s.host();
    for (repo, tag, digest) in [
        ("team/app", "v1", &v1),
        ("team/app", "v2", &v2),
        ("team/app/tools", "t1", &t1),
        ("broken", "v1", &b1),
    ] {
        let raw = run(Command::new("skopeo")
            .env("REGISTRY_AUTH_FILE", &auth)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{host}/{repo}:{tag}")));
        assert_eq!(&sha256(raw.as_bytes()), digest, "{repo}:{tag}");
        let out = work.path().join("out").join(repo).join(tag);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        run(Command::new("skopeo")
            .env("REGISTRY_AUTH_FILE", &auth)
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
            ])
            .arg(format!("docker://{host}/{repo}:{tag}"))
            .arg(format!("oci:{}:{tag}", out.display())));
    }
    let referrers = json(&s, &format!("/v2/team/app/referrers/{v1}"));
    assert_eq!(referrers["manifests"][0]["digest"], serde_json::json!(sbom));
    assert_eq!(
        referrers["manifests"][0]["artifactType"],
        serde_json::json!("application/spdx+json")
    );
    assert_eq!(
        referrers["manifests"][0]["annotations"]["org.example.kind"],
        serde_json::json!("sbom")
    );
    // The zot store was only read.
    assert!(zot.join("team/app/.uploads/abc").exists());
    assert!(!zot.join(".uploads").exists());
}
