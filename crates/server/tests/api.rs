//! The distribution-spec API against the real server: every endpoint and
//! its error paths.

mod common;

use common::*;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn base_endpoint_and_unknown_paths() {
    let s = Server::start();
    let r = s.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(s.get("/v2").await.status(), StatusCode::OK);
    let r = s.get("/v2/a/nothing-here").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.get("/elsewhere").await.status(), StatusCode::NOT_FOUND);
    for probe in ["/livez", "/readyz", "/startupz"] {
        assert_eq!(s.get(probe).await.status(), StatusCode::OK, "{probe}");
    }
    // A method the endpoint does not define.
    let r = s
        .send(Method::POST, "/v2/a/manifests/latest", &[], b"{}".to_vec())
        .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(header(&r, "allow").contains("PUT"));
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = s
        .send(Method::PATCH, "/v2/a/tags/list", &[], Vec::new())
        .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn bad_names_never_reach_storage() {
    let s = Server::start();
    for path in [
        "/v2/a/../../etc/blobs/uploads/",
        "/v2/UPPER/blobs/uploads/",
        "/v2/a%2F..%2F..%2Fetc/blobs/uploads/",
        "/v2/a//b/blobs/uploads/",
        "/v2/-a/blobs/uploads/",
        "/v2/a__-b/blobs/uploads/",
    ] {
        let r = s.send(Method::POST, path, &[], Vec::new()).await;
        assert!(
            r.status() == StatusCode::BAD_REQUEST || r.status() == StatusCode::NOT_FOUND,
            "{path}: {}",
            r.status()
        );
        if r.status() == StatusCode::BAD_REQUEST {
            assert_eq!(error_code(r).await, "NAME_INVALID", "{path}");
        }
    }
    let long = format!("/v2/{}/tags/list", "a".repeat(256));
    let r = s.get(&long).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    // Nothing was created outside the repositories tree but the start-up
    // recovery's collection lease (on the shared store, nothing is created
    // on the local disk at all).
    if shared_mode() {
        return;
    }
    let top: Vec<_> = std::fs::read_dir(s.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        top.iter()
            .all(|n| [".uploads", "uploads", "repositories", "gc-leases"].contains(&n.as_str())),
        "{top:?}"
    );
    assert!(!s.root().join("repositories").exists());
}

#[tokio::test]
async fn range_reads() {
    let s = Server::start();
    let data = bytes(5, 2048);
    let d = s.push_blob("ranges", &data).await;
    let path = format!("/v2/ranges/blobs/{d}");
    for (range, start, end) in [
        ("bytes=500-1499", 500, 1500),
        ("bytes=500-", 500, 2048),
        ("bytes=-500", 1548, 2048),
        ("bytes=2000-5000", 2000, 2048),
    ] {
        let r = s
            .send(Method::GET, &path, &[("range", range)], Vec::new())
            .await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {start}-{}/2048", end - 1)
        );
        assert_eq!(header(&r, "content-length"), (end - start).to_string());
        assert_eq!(
            r.bytes().await.unwrap().to_vec(),
            &data[start..end],
            "{range}"
        );
    }
    // Past the end, or ending before it starts (RFC 9110 lets a server
    // reject that; the conformance suite asks for it): 416 with the size,
    // and no upload error code in the body.
    for range in ["bytes=5000-10000", "bytes=2048-", "bytes=500-0"] {
        let r = s
            .send(Method::GET, &path, &[("range", range)], Vec::new())
            .await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&r, "content-range"), "bytes */2048");
        let body = r.text().await.unwrap();
        assert!(!body.contains("UPLOAD"), "{range}: {body}");
    }
    // A malformed one is ignored: the whole blob.
    let r = s
        .send(Method::GET, &path, &[("range", "bytes=a-b")], Vec::new())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), 2048);
    let r = s
        .get(&format!("/v2/ranges/blobs/{}", sha256(b"absent")))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = s.get("/v2/ranges/blobs/sha256:short").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn manifests_by_tag_and_digest() {
    let s = Server::start();
    let (manifest, digest) = s.push_image("app/web", "v1", 1, 2).await;
    for reference in ["v1", digest.as_str()] {
        let r = s.get(&format!("/v2/app/web/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), digest);
        assert_eq!(header(&r, "content-length"), manifest.len().to_string());
        assert_eq!(r.bytes().await.unwrap().to_vec(), manifest);
        let r = s.head(&format!("/v2/app/web/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), manifest.len().to_string());
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
    }
    // The PUT's Location serves the manifest.
    let r = s
        .put_manifest("app/web", "v2", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/app/web/manifests/{digest}"));
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(
        s.get(&location(&r)).await.bytes().await.unwrap().to_vec(),
        manifest
    );

    // Unknown references; a tag outside the grammar names nothing either
    // (404 as distribution and zot answer; the v1.1.1 conformance suite
    // asks for it).
    for reference in ["nope", &sha256(b"nope"), "-not-a-tag", ".x"] {
        let r = s.get(&format!("/v2/app/web/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
        let r = s.head(&format!("/v2/app/web/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    // A write to such a tag is refused as a bad tag.
    let r = s
        .put_manifest("app/web", "-not-a-tag", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "TAG_INVALID");
    // A manifest is per repository.
    assert_eq!(
        s.get(&format!("/v2/app/other/manifests/{digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn manifest_validation() {
    let s = Server::start();
    let cfg = s.push_blob("val", b"{}").await;
    let missing = sha256(b"never pushed");
    let image = |layer: &str, layer_type: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"{layer_type}","digest":"{layer}","size":12}}]}}"#
        )
        .into_bytes()
    };
    let r = s
        .put_manifest("val", "t", OCI_MANIFEST, &image(&missing, OCI_LAYER))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        s.get("/v2/val/manifests/t").await.status(),
        StatusCode::NOT_FOUND
    );
    // Non-distributable layers need not be pushed.
    let foreign = image(
        &missing,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    );
    assert_eq!(
        s.put_manifest("val", "nd", OCI_MANIFEST, &foreign)
            .await
            .status(),
        StatusCode::CREATED
    );

    let ambiguous = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{cfg}","size":2}},"layers":[],"manifests":[]}}"#
    )
    .into_bytes();
    for (body, ct) in [
        (b"not json".to_vec(), OCI_MANIFEST),
        (
            br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#.to_vec(),
            OCI_MANIFEST,
        ),
        (
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                .to_vec(),
            OCI_MANIFEST,
        ),
        (image(&cfg, OCI_LAYER), OCI_INDEX),
        // Both an index's and an image's fields (CVE-2021-41190): refused
        // whichever type the header names, and with no type at all.
        (ambiguous.clone(), OCI_MANIFEST),
        (ambiguous.clone(), OCI_INDEX),
        (ambiguous, ""),
    ] {
        let r = s.put_manifest("val", "bad", ct, &body).await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    }
    // Body that does not match the digest it is pushed under.
    let body = image(
        &cfg,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    );
    let r = s
        .put_manifest("val", &sha256(b"other"), OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = s
        .put_manifest("val", "sha256:baddigeststring", OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // By sha512 digest.
    let r = s
        .put_manifest("val", &sha512(&body), OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), sha512(&body));
    assert_eq!(
        s.get(&format!("/v2/val/manifests/{}", sha512(&body)))
            .await
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        body
    );

    // Size: ~3.9 MB is fine, over 4 MiB is 413.
    let big_annotation = "x".repeat(3_900_000);
    let big = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{cfg}","size":2}},"layers":[],"annotations":{{"a":"{big_annotation}"}}}}"#
    );
    assert_eq!(
        s.put_manifest("val", "big", OCI_MANIFEST, big.as_bytes())
            .await
            .status(),
        StatusCode::CREATED
    );
    let huge = big.replace(&big_annotation, &"y".repeat(4 * 1024 * 1024));
    let r = s
        .put_manifest("val", "huge", OCI_MANIFEST, huge.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
}

#[tokio::test]
async fn indexes_and_docker_formats() {
    let s = Server::start();
    let (m1, d1) = s.push_image("multi", "amd64", 10, 1).await;
    let (m2, d2) = s.push_image("multi", "arm64", 11, 1).await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d1}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{d2}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        m1.len(),
        m2.len()
    );
    let r = s
        .put_manifest("multi", "latest", OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.get("/v2/multi/manifests/latest").await;
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    // An index whose child is missing.
    let orphan = index.replace(&d2, &sha256(b"missing child"));
    let r = s
        .put_manifest("multi", "broken", OCI_INDEX, orphan.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // The empty index.
    let empty = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
    assert_eq!(
        s.put_manifest("multi", "empty", OCI_INDEX, empty.as_bytes())
            .await
            .status(),
        StatusCode::CREATED
    );

    // Docker schema 2 manifest and manifest list.
    let docker_manifest = "application/vnd.docker.distribution.manifest.v2+json";
    let docker_list = "application/vnd.docker.distribution.manifest.list.v2+json";
    let cfg = s.push_blob("docker", b"{\"os\":\"linux\"}").await;
    let layer = s.push_blob("docker", &bytes(12, 500)).await;
    let dm = format!(
        r#"{{"schemaVersion":2,"mediaType":"{docker_manifest}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":15,"digest":"{cfg}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":500,"digest":"{layer}"}}]}}"#
    );
    let r = s
        .put_manifest("docker", "v1", docker_manifest, dm.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let dd = sha256(dm.as_bytes());
    let dl = format!(
        r#"{{"schemaVersion":2,"mediaType":"{docker_list}","manifests":[{{"mediaType":"{docker_manifest}","size":{},"digest":"{dd}","platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        dm.len()
    );
    assert_eq!(
        s.put_manifest("docker", "list", docker_list, dl.as_bytes())
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = s.get("/v2/docker/manifests/list").await;
    assert_eq!(header(&r, "content-type"), docker_list);
    assert_eq!(r.bytes().await.unwrap().to_vec(), dl.as_bytes());
}

#[tokio::test]
async fn tags_list_and_pagination() {
    let s = Server::start();
    let r = s.get("/v2/never/pushed/tags/list").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    let (m, _) = s.push_image("tagged", "t0", 20, 1).await;
    for t in ["b", "a", "TEST0", "c", "t1", "_x"] {
        assert_eq!(
            s.put_manifest("tagged", t, OCI_MANIFEST, &m).await.status(),
            StatusCode::CREATED
        );
    }
    let all = ["TEST0", "_x", "a", "b", "c", "t0", "t1"];
    let r = s.get("/v2/tagged/tags/list").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("link").is_none());
    let v = r.json_body().await;
    assert_eq!(v["name"], "tagged");
    assert_eq!(v["tags"], serde_json::json!(all));

    let r = s.get("/v2/tagged/tags/list?n=3").await;
    assert_eq!(
        header(&r, "link"),
        "</v2/tagged/tags/list?n=3&last=a>; rel=\"next\""
    );
    assert_eq!(
        r.json_body().await["tags"],
        serde_json::json!(["TEST0", "_x", "a"])
    );
    let r = s.get("/v2/tagged/tags/list?n=3&last=a").await;
    assert_eq!(
        r.json_body().await["tags"],
        serde_json::json!(["b", "c", "t0"])
    );
    let r = s.get("/v2/tagged/tags/list?last=c").await;
    assert_eq!(r.json_body().await["tags"], serde_json::json!(["t0", "t1"]));
    let r = s.get("/v2/tagged/tags/list?n=10&last=c").await;
    assert!(r.headers().get("link").is_none());
    let r = s.get("/v2/tagged/tags/list?n=0").await;
    assert!(r.headers().get("link").is_none());
    assert_eq!(r.json_body().await["tags"], serde_json::json!([]));
    let r = s.get("/v2/tagged/tags/list?n=many").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn catalog_lists_nested_repositories() {
    let s = Server::start();
    assert_eq!(
        s.get("/v2/_catalog").await.json_body().await["repositories"],
        serde_json::json!([])
    );
    for repo in ["b", "a/b/c", "a", "a-c", "z/y"] {
        s.push_blob(repo, repo.as_bytes()).await;
    }
    let all = ["a", "a-c", "a/b/c", "b", "z/y"];
    assert_eq!(
        s.get("/v2/_catalog").await.json_body().await["repositories"],
        serde_json::json!(all)
    );
    let r = s.get("/v2/_catalog?n=2").await;
    assert_eq!(
        header(&r, "link"),
        "</v2/_catalog?n=2&last=a-c>; rel=\"next\""
    );
    assert_eq!(
        r.json_body().await["repositories"],
        serde_json::json!(["a", "a-c"])
    );
    let r = s.get("/v2/_catalog?n=2&last=a-c").await;
    assert_eq!(
        r.json_body().await["repositories"],
        serde_json::json!(["a/b/c", "b"])
    );
}

#[tokio::test]
async fn referrers_index() {
    let s = Server::start();
    let (subject_body, subject) = s.push_image("refs", "base", 30, 1).await;
    let empty = s.push_blob("refs", b"{}").await;
    let artifact = |artifact_type: &str, subject: &str, note: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact_type}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"annotations":{{"note":"{note}"}}}}"#,
            subject_body.len()
        )
        .into_bytes()
    };
    let sig = artifact("application/vnd.example.sig", &subject, "one");
    let sbom = artifact("application/vnd.example.sbom", &subject, "two");
    for body in [&sig, &sbom] {
        let r = s
            .put_manifest("refs", &sha256(body), OCI_MANIFEST, body)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), subject);
    }
    // A referrer of a subject that is not (yet) there is accepted.
    let ghost = sha256(b"ghost");
    let orphan = artifact("application/vnd.example.sig", &ghost, "three");
    let r = s
        .put_manifest("refs", &sha256(&orphan), OCI_MANIFEST, &orphan)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject"), ghost);

    let r = s.get(&format!("/v2/refs/referrers/{subject}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let v = r.json_body().await;
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let sig_entry = list
        .iter()
        .find(|d| d["digest"] == sha256(&sig))
        .expect("sig listed");
    assert_eq!(sig_entry["artifactType"], "application/vnd.example.sig");
    assert_eq!(sig_entry["size"], sig.len());
    assert_eq!(sig_entry["mediaType"], OCI_MANIFEST);
    assert_eq!(sig_entry["annotations"], serde_json::json!({"note": "one"}));

    let r = s
        .get(&format!(
            "/v2/refs/referrers/{subject}?artifactType=application%2Fvnd.example.sbom"
        ))
        .await;
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v = r.json_body().await;
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sha256(&sbom));

    assert_eq!(
        s.get(&format!("/v2/refs/referrers/{ghost}"))
            .await
            .json_body()
            .await["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Unknown repository or subject: an empty index.
    let r = s
        .get(&format!("/v2/nothing/here/referrers/{subject}"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json_body().await["manifests"], serde_json::json!([]));
    let r = s.get("/v2/refs/referrers/sha256:bad").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Deleting a referrer removes it from the index.
    assert_eq!(
        s.delete(&format!("/v2/refs/manifests/{}", sha256(&sig)))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let v = s
        .get(&format!("/v2/refs/referrers/{subject}"))
        .await
        .json_body()
        .await;
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn referrers_come_by_the_page_with_a_link_to_the_next() {
    let s = Server::start();
    let (subject_body, subject) = s.push_image("pages", "base", 31, 1).await;
    let empty = s.push_blob("pages", b"{}").await;
    let mut pushed = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 { "sig" } else { "sbom" };
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.{kind}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"annotations":{{"i":"{i}"}}}}"#,
            subject_body.len()
        )
        .into_bytes();
        let r = s
            .put_manifest("pages", &sha256(&body), OCI_MANIFEST, &body)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        pushed.push((kind, sha256(&body)));
    }
    // Follows the Link headers from `first`; every page's size and the
    // digests seen, in order.
    let walk = |first: String| {
        let s = &s;
        async move {
            let (mut sizes, mut seen) = (Vec::new(), Vec::new());
            let mut next = Some(first);
            while let Some(url) = next.take() {
                let r = s.get(&url).await;
                assert_eq!(r.status(), StatusCode::OK, "{url}");
                next = r.headers().get("link").map(|l| {
                    let l = l.to_str().unwrap();
                    assert!(l.ends_with(r#">; rel="next""#), "{l}");
                    l[1..l.find('>').unwrap()].to_owned()
                });
                let v = r.json_body().await;
                let list = v["manifests"].as_array().unwrap();
                sizes.push(list.len());
                seen.extend(
                    list.iter()
                        .map(|d| d["digest"].as_str().unwrap().to_owned()),
                );
            }
            (sizes, seen)
        }
    };
    let mut all: Vec<String> = pushed.iter().map(|(_, d)| d.clone()).collect();
    all.sort();
    let (sizes, seen) = walk(format!("/v2/pages/referrers/{subject}?n=3")).await;
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, all, "every referrer once, in entry order");
    // Without `n`, one page holds them all and no Link is sent.
    let (sizes, _) = walk(format!("/v2/pages/referrers/{subject}")).await;
    assert_eq!(sizes, [7]);
    // The filter is carried from page to page.
    let mut sigs: Vec<String> = pushed
        .iter()
        .filter(|(k, _)| *k == "sig")
        .map(|(_, d)| d.clone())
        .collect();
    sigs.sort();
    let (sizes, seen) = walk(format!(
        "/v2/pages/referrers/{subject}?n=2&artifactType=application%2Fvnd.example.sig"
    ))
    .await;
    assert_eq!(sizes.iter().sum::<usize>(), 4);
    assert!(sizes.iter().all(|&n| n <= 2), "{sizes:?}");
    assert_eq!(seen, sigs);
    let r = s.get(&format!("/v2/pages/referrers/{subject}?n=x")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn deletes() {
    let s = Server::start();
    let (m, digest) = s.push_image("del", "t1", 40, 1).await;
    s.put_manifest("del", "t2", OCI_MANIFEST, &m).await;
    s.put_manifest("del", "t3", OCI_MANIFEST, &m).await;
    // A tag delete removes only the tag.
    assert_eq!(
        s.delete("/v2/del/manifests/t1").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        s.head("/v2/del/manifests/t1").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.head(&format!("/v2/del/manifests/{digest}"))
            .await
            .status(),
        StatusCode::OK
    );
    let r = s.delete("/v2/del/manifests/t1").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    // A digest delete removes every tag on it.
    assert_eq!(
        s.delete(&format!("/v2/del/manifests/{digest}"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        s.head(&format!("/v2/del/manifests/{digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.head("/v2/del/manifests/t2").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/v2/del/tags/list").await.json_body().await["tags"],
        serde_json::json!([])
    );
    assert_eq!(
        s.delete(&format!("/v2/del/manifests/{digest}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Blobs are per repository.
    let data = bytes(41, 512);
    let d = s.push_blob("one", &data).await;
    let r = s
        .send(
            Method::POST,
            &format!("/v2/two/blobs/uploads/?mount={d}&from=one"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        s.delete(&format!("/v2/two/blobs/{d}")).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        s.head(&format!("/v2/two/blobs/{d}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.head(&format!("/v2/one/blobs/{d}")).await.status(),
        StatusCode::OK
    );
    let r = s.delete(&format!("/v2/two/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm() {
    let mut s = Server::start();
    s.push_image("bye", "v1", 70, 1).await;
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(s.log().contains("shutting down"));
}
