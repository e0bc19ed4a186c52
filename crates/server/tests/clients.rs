//! Real clients against the real server: skopeo, podman, oras. These tools
//! must be installed (`.ci/run` installs them); a missing tool fails the
//! test rather than skipping it.

mod common;

use common::*;
use reqwest::StatusCode;
use std::process::Command;

fn skopeo(auth_file: &std::path::Path) -> Command {
    let mut c = Command::new("skopeo");
    c.env("REGISTRY_AUTH_FILE", auth_file);
    c
}

#[test]
fn skopeo_copies_images_in_and_out_unchanged() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let auth = work.path().join("auth.json");
    std::fs::write(&auth, "{}").unwrap();
    let host = s.host();

    // A multi-layer image.
    let src = work.path().join("single");
    let digest = layout::single(&src, "v1", 1);
    run(skopeo(&auth)
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{host}/skopeo/single:v1")));
    let raw = run(skopeo(&auth)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/skopeo/single:v1")));
    assert_eq!(sha256(raw.as_bytes()), digest);
    let dst = work.path().join("single-out");
    run(skopeo(&auth)
        .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/skopeo/single:v1"))
        .arg(format!("oci:{}:v1", dst.display())));
    let index = std::fs::read_to_string(dst.join("index.json")).unwrap();
    assert!(index.contains(&digest), "{index}");
    // Every blob came back byte for byte.
    for entry in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let name = entry.unwrap().file_name();
        let a = std::fs::read(src.join("blobs/sha256").join(&name)).unwrap();
        let b = std::fs::read(dst.join("blobs/sha256").join(&name)).unwrap();
        assert!(a == b, "blob {name:?} differs");
    }

    // A multi-platform index, all platforms.
    let src = work.path().join("multi");
    let digest = layout::multi(&src, "v2", 2);
    run(skopeo(&auth)
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:v2", src.display()))
        .arg(format!("docker://{host}/skopeo/multi:v2")));
    let raw = run(skopeo(&auth)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/skopeo/multi:v2")));
    assert_eq!(sha256(raw.as_bytes()), digest);
    let dst = work.path().join("multi-out");
    run(skopeo(&auth)
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{host}/skopeo/multi:v2"))
        .arg(format!("oci:{}:v2", dst.display())));
    assert!(std::fs::read_to_string(dst.join("index.json"))
        .unwrap()
        .contains(&digest));
    assert_eq!(
        std::fs::read_dir(dst.join("blobs/sha256")).unwrap().count(),
        std::fs::read_dir(src.join("blobs/sha256")).unwrap().count()
    );

    // A copy between repositories of the registry (skopeo mounts across them).
    run(skopeo(&auth)
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{host}/skopeo/multi:v2"))
        .arg(format!("docker://{host}/skopeo/copy:v2")));
    let tags = run(skopeo(&auth)
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{host}/skopeo/copy")));
    assert!(tags.contains("\"v2\""), "{tags}");

    // Delete by tag resolves to the digest: the manifest goes.
    run(skopeo(&auth)
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{host}/skopeo/copy:v2")));
    let out = skopeo(&auth)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/skopeo/copy:v2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn podman_builds_pushes_and_pulls() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from berth\n").unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    std::fs::write(work.path().join("auth.json"), "{}").unwrap();
    let podman = || {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(work.path().join("root"))
            .arg("--runroot")
            .arg(work.path().join("run"));
        c.args(["--storage-driver", "vfs"]);
        c.env("REGISTRY_AUTH_FILE", work.path().join("auth.json"));
        c
    };
    let image = format!("{}/podman/hello:v1", s.host());
    run(podman().args(["build", "-q", "-t", &image]).arg(&ctx));
    run(podman().args(["push", "--tls-verify=false", &image]));
    let id_before = run(podman().args(["image", "inspect", "--format", "{{.Id}}", &image]));
    run(podman().args(["rmi", "-f", &image]));
    run(podman().args(["pull", "--tls-verify=false", &image]));
    let id_after = run(podman().args(["image", "inspect", "--format", "{{.Id}}", &image]));
    assert_eq!(id_before, id_after);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(s.get("/v2/podman/hello/tags/list"));
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn oras_pushes_an_artifact_with_a_subject() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (manifest, subject) = rt.block_on(s.push_image("oras/app", "v1", 5, 1));
    let work = tempfile::tempdir().unwrap();
    let script = crate_dir().join("tests/clients/oras_artifact.py");
    let script = script.to_str().unwrap();
    // oras retries failures for minutes: bound it.
    let out = run(Command::new("timeout")
        .args(["120", "python3", script])
        .arg(s.host())
        .arg("oras/app")
        .arg(&subject)
        .arg(manifest.len().to_string())
        .arg(work.path()));
    let v: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["status"], 201);
    assert_eq!(v["name"], "berth-test");
    let r = rt.block_on(s.get(&format!("/v2/oras/app/referrers/{subject}")));
    let index = rt.block_on(r.json_body());
    let list = index["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{index}");
    assert_eq!(list[0]["annotations"]["org.example.kind"], "sbom");
    let artifact = rt.block_on(s.get("/v2/oras/app/manifests/sbom"));
    assert_eq!(
        header(&artifact, "docker-content-digest"),
        list[0]["digest"].as_str().unwrap()
    );
}
