//! Pull-through cache and mirroring (zot's `extensions.sync`) against real
//! upstreams: a second Berth and CNCF distribution with htpasswd, behind a
//! proxy in the test that counts what reaches them, speaks docker's token
//! flow, slows or corrupts responses, or plays dead.

mod common;

use common::gate::Gate;
use common::*;
use reqwest::StatusCode;
use std::path::Path;
use std::time::{Duration, Instant};

/// `extensions.sync` with one on-demand registry at `url`.
fn sync_config(url: &str, credentials: Option<&Path>, registry: &str) -> String {
    let creds = credentials.map_or(String::new(), |p| {
        format!(r#""credentialsFile":{:?},"#, p.display().to_string())
    });
    format!(
        r#","extensions":{{"sync":{{"enable":true,{creds}"registries":[{{"urls":["{url}"],"onDemand":true,"maxRetries":1,"retryDelay":"100ms"{registry}}}]}}}}"#
    )
}

fn write_credentials(dir: &Path, host: &str, user: &str, password: &str) -> std::path::PathBuf {
    let path = dir.join("sync-credentials.json");
    std::fs::write(
        &path,
        format!(r#"{{"{host}":{{"username":"{user}","password":"{password}"}}}}"#),
    )
    .unwrap();
    path
}

async fn skopeo(args: &[String]) -> String {
    let auth = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(auth.path(), "{}").unwrap();
    let out = tokio::process::Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", auth.path())
        .args(args)
        .output()
        .await
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Copies an OCI layout's tag into a registry (all platforms).
async fn push_layout(dir: &Path, tag: &str, dest: &str, creds: Option<&str>) {
    let mut a = args(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ]);
    if let Some(c) = creds {
        a.push(format!("--dest-creds={c}"));
    }
    a.push(format!("oci:{}:{tag}", dir.display()));
    a.push(format!("docker://{dest}"));
    skopeo(&a).await;
}

/// Pulls through Berth into a fresh layout; returns the layout's index.json.
async fn pull_layout(src: &str, out: &Path, tag: &str) -> String {
    skopeo(&[
        "copy".into(),
        "--all".into(),
        "--preserve-digests".into(),
        "--src-tls-verify=false".into(),
        format!("docker://{src}"),
        format!("oci:{}:{tag}", out.display()),
    ])
    .await;
    std::fs::read_to_string(out.join("index.json")).unwrap()
}

/// Every blob of `a` is in `b`, byte for byte.
fn same_blobs(a: &Path, b: &Path) {
    let mut n = 0;
    for entry in std::fs::read_dir(a.join("blobs/sha256")).unwrap() {
        let name = entry.unwrap().file_name();
        let x = std::fs::read(a.join("blobs/sha256").join(&name)).unwrap();
        let y = std::fs::read(b.join("blobs/sha256").join(&name))
            .unwrap_or_else(|_| panic!("{name:?} missing"));
        assert!(x == y, "blob {name:?} differs");
        n += 1;
    }
    assert!(n > 0);
}

/// Whether content is stored (read through the server's store).
async fn is_stored(s: &Server, digest: &str) -> bool {
    let hex = digest.trim_start_matches("sha256:");
    let key = format!("blobs/sha256/{}/{hex}", &hex[..2]);
    s.store().await.stat(&key).await.unwrap().is_some()
}

/// Waits for fetched content to be committed (it is served once verified,
/// and made durable right after).
async fn wait_stored(s: &Server, digest: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_stored(s, digest).await {
        assert!(Instant::now() < deadline, "{digest} was never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The blob digests (config and layers) of an image manifest.
fn blobs_of(manifest: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&v["config"]])
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .collect()
}

async fn get_manifest(s: &Server, path: &str) -> reqwest::Response {
    s.send(
        reqwest::Method::GET,
        path,
        &[("accept", &format!("{OCI_MANIFEST}, {OCI_INDEX}"))],
        Vec::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_pulls_come_through_and_survive_the_upstream() {
    let mut up = Server::start();
    let work = tempfile::tempdir().unwrap();
    let single = work.path().join("single");
    let single_digest = layout::single(&single, "v1", 1);
    push_layout(&single, "v1", &format!("{}/team/app:v1", up.host()), None).await;
    let multi = work.path().join("multi");
    let multi_digest = layout::multi(&multi, "v2", 2);
    push_layout(&multi, "v2", &format!("{}/team/multi:v2", up.host()), None).await;

    let gate = Gate::start(&up.base).await;
    let d = Server::start_with(&sync_config(
        &gate.url,
        None,
        r#","content":[{"prefix":"team/**"}],"manifestCheckInterval":"1s""#,
    ));
    let out = work.path().join("out1");
    let index = pull_layout(&format!("{}/team/app:v1", d.host()), &out, "v1").await;
    assert!(index.contains(&single_digest), "{index}");
    same_blobs(&single, &out);
    let out = work.path().join("out2");
    let index = pull_layout(&format!("{}/team/multi:v2", d.host()), &out, "v2").await;
    assert!(index.contains(&multi_digest), "{index}");
    same_blobs(&multi, &out);
    // Each blob came from upstream once.
    let manifest = std::fs::read(
        single
            .join("blobs/sha256")
            .join(single_digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    for b in blobs_of(&manifest) {
        assert_eq!(
            gate.count("GET", &format!("/v2/team/app/blobs/{b}")),
            1,
            "{b}"
        );
    }

    // The upstream goes away; after the check interval, the cached copies
    // are still served (the failed check is logged).
    up.kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (repo, tag, src, n) in [("app", "v1", &single, 3), ("multi", "v2", &multi, 4)] {
        let out = work.path().join(format!("again{n}"));
        pull_layout(&format!("{}/team/{repo}:{tag}", d.host()), &out, tag).await;
        same_blobs(src, &out);
    }
    assert!(
        d.log().contains("serving the cached manifest"),
        "{}",
        d.log()
    );
    // A digest that is here never asks upstream.
    let before = gate.count_containing("/manifests/");
    let r = get_manifest(&d, &format!("/v2/team/app/manifests/{single_digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(gate.count_containing("/manifests/"), before);
}

/// CNCF distribution with htpasswd, started by hand on a free port.
struct Distribution {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_distribution(user: &str, password: &str) -> Distribution {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap()),
    )
    .unwrap();
    // distribution takes no port 0: pick a free one.
    let port = free_port();
    let cfg = dir.path().join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog: {{ level: error, accesslog: {{ disabled: true }} }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\nauth: {{ htpasswd: {{ realm: test, path: {} }} }}\n",
            dir.path().join("data").display(),
            htpasswd.display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry (Debian's CNCF distribution) runs");
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{url}/v2/")).send().await.is_err() {
        assert!(Instant::now() < deadline, "distribution did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Distribution {
        child,
        url,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_pulls_make_one_upstream_request_per_blob() {
    let dist = start_distribution("puller", "pull-pw").await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("img");
    let digest = layout::single(&src, "v1", 7);
    let dist_host = dist.url.trim_start_matches("http://");
    push_layout(
        &src,
        "v1",
        &format!("{dist_host}/lib/app:v1"),
        Some("puller:pull-pw"),
    )
    .await;
    let manifest = std::fs::read(
        src.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    let blobs = blobs_of(&manifest);

    let gate = Gate::start(&dist.url).await;
    // Slow blobs down, so that clients arrive while they are arriving.
    gate.throttle(Some(Duration::from_millis(40)));
    let creds = write_credentials(work.path(), &gate.host(), "puller", "pull-pw");
    let d = Server::start_with(&sync_config(&gate.url, Some(&creds), ""));

    // The first client gets bytes before the blob is whole on Berth's disk.
    let big = &blobs[0];
    let mut r = d.get(&format!("/v2/lib/app/blobs/{big}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let first = r.chunk().await.unwrap().expect("a first piece");
    assert!(!first.is_empty());
    assert!(
        !is_stored(&d, big).await,
        "the blob was whole before the client got its first bytes"
    );

    // 19 more clients pull the whole image meanwhile.
    let d = std::sync::Arc::new(d);
    let mut tasks = Vec::new();
    for _ in 0..19 {
        let (d, blobs) = (d.clone(), blobs.clone());
        tasks.push(tokio::spawn(async move {
            let r = get_manifest(&d, "/v2/lib/app/manifests/v1").await;
            assert_eq!(r.status(), StatusCode::OK);
            let body = r.bytes().await.unwrap();
            for b in &blobs {
                let data = d.blob("lib/app", b).await;
                assert_eq!(sha256(&data), *b);
            }
            sha256(&body)
        }));
    }
    let mut rest = first.to_vec();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(sha256(&rest), *big);
    for t in tasks {
        assert_eq!(t.await.unwrap(), digest);
    }
    // A manifest: one fetch per replica at most; a blob: one among all.
    assert!((1..=d.processes()).contains(&gate.count("GET", "/v2/lib/app/manifests/v1")));
    for b in &blobs {
        assert_eq!(
            gate.count("GET", &format!("/v2/lib/app/blobs/{b}")),
            1,
            "{b}"
        );
        wait_stored(&d, b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_token_flow_and_tag_revalidation() {
    let up = Server::start();
    let (_, first) = up.push_image("app", "v1", 1, 2).await;
    let gate = Gate::with_tokens(&up.base, "robot", "robot-pw").await;
    let work = tempfile::tempdir().unwrap();
    let creds = write_credentials(work.path(), &gate.host(), "robot", "robot-pw");
    // The token cache and the revalidation clock are each process's own.
    let d = Server::start_one(&sync_config(
        &gate.url,
        Some(&creds),
        r#","manifestCheckInterval":"10s""#,
    ));
    let r = get_manifest(&d, "/v2/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), first);
    for b in blobs_of(&r.bytes().await.unwrap()) {
        assert_eq!(sha256(&d.blob("app", &b).await), b);
    }
    // One token, reused for every request.
    assert_eq!(gate.tokens_issued(), 1);

    // The tag moves upstream: not seen before the interval, seen after.
    let (_, second) = up.push_image("app", "v1", 2, 2).await;
    let r = get_manifest(&d, "/v2/app/manifests/v1").await;
    assert_eq!(header(&r, "docker-content-digest"), first);
    assert_eq!(gate.count("HEAD", "/v2/app/manifests/v1"), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get_manifest(&d, "/v2/app/manifests/v1").await;
        if header(&r, "docker-content-digest") == second {
            break;
        }
        assert!(Instant::now() < deadline, "the moved tag was never seen");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(gate.count("HEAD", "/v2/app/manifests/v1") >= 1);

    // Wrong credentials: the token service refuses, the client gets 502.
    let bad = write_credentials(work.path(), &gate.host(), "robot", "wrong");
    let d2 = Server::start_with(&sync_config(&gate.url, Some(&bad), ""));
    let r = get_manifest(&d2, "/v2/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_rules_map_and_filter() {
    let up = Server::start();
    for (repo, tag) in [
        ("team/app", "v1"),
        ("library/alpine", "1.2"),
        ("library/alpine", "1.3-rc"),
        ("library/alpine", "latest"),
        ("sem/x", "1.0.0"),
        ("sem/x", "latest"),
        ("other/x", "v1"),
    ] {
        up.push_image(repo, tag, tag.len() as u64 + repo.len() as u64, 1)
            .await;
    }
    let gate = Gate::start(&up.base).await;
    let d = Server::start_with(&sync_config(
        &gate.url,
        None,
        r#","content":[
            {"prefix":"team/**","destination":"/mirror"},
            {"prefix":"library/*","destination":"hub","stripPrefix":true,
             "tags":{"regex":"^1\\.","excludeRegex":"-rc"}},
            {"prefix":"sem/*","tags":{"semver":true}}]"#,
    ));
    for (local, upstream, want) in [
        (
            "mirror/team/app:v1",
            "team/app/manifests/v1",
            StatusCode::OK,
        ),
        (
            "hub/alpine:1.2",
            "library/alpine/manifests/1.2",
            StatusCode::OK,
        ),
        ("sem/x:1.0.0", "sem/x/manifests/1.0.0", StatusCode::OK),
        ("team/app:v1", "", StatusCode::NOT_FOUND),
        (
            "hub/alpine:1.3-rc",
            "library/alpine/manifests/1.3-rc",
            StatusCode::NOT_FOUND,
        ),
        (
            "hub/alpine:latest",
            "library/alpine/manifests/latest",
            StatusCode::NOT_FOUND,
        ),
        (
            "sem/x:latest",
            "sem/x/manifests/latest",
            StatusCode::NOT_FOUND,
        ),
        ("other/x:v1", "other/x/manifests/v1", StatusCode::NOT_FOUND),
    ] {
        let (repo, tag) = local.split_once(':').unwrap();
        let r = get_manifest(&d, &format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status(), want, "{local}");
        if !upstream.is_empty() {
            let fetched = usize::from(want == StatusCode::OK);
            assert_eq!(
                gate.count("GET", &format!("/v2/{upstream}")),
                fetched,
                "{local}"
            );
        }
    }
    // A name no rule maps is never asked of upstream.
    assert_eq!(gate.count_containing("/v2/team/app/manifests"), 1);
    assert_eq!(gate.count_containing("/v2/other/"), 0);
    // Blobs come under the mapped name too.
    let r = get_manifest(&d, "/v2/hub/alpine/manifests/1.2").await;
    for b in blobs_of(&r.bytes().await.unwrap()) {
        assert_eq!(sha256(&d.blob("hub/alpine", &b).await), b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upstream_data_is_refused_and_not_stored() {
    let up = Server::start();
    let (manifest, _) = up.push_image("app", "v1", 5, 2).await;
    let gate = Gate::start(&up.base).await;
    let d = Server::start_with(&sync_config(&gate.url, None, ""));

    // A manifest that does not match its digest.
    gate.corrupt("/v2/app/manifests/v1", true);
    let r = get_manifest(&d, "/v2/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    // A short fixed message: no upstream URL, no error chain.
    let text = r.text().await.unwrap();
    assert!(
        text.contains("the upstream registry failed or sent bad data")
            && !text.contains("127.0.0.1")
            && !text.contains("sha256:"),
        "{text}"
    );
    assert!(d
        .store()
        .await
        .stat("repositories/app/_tags/v1")
        .await
        .unwrap()
        .is_none());
    gate.corrupt("/v2/app/manifests/v1", false);
    let r = get_manifest(&d, "/v2/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), manifest);

    // A blob that does not match its digest: the client's download fails,
    // and nothing is stored.
    let layer = blobs_of(&manifest)[0].clone();
    let path = format!("/v2/app/blobs/{layer}");
    gate.corrupt(&path, true);
    // Its length is announced; the last byte is held back until the
    // digest is checked, so the download breaks off short.
    let failed = match d.client.get(d.url(&path)).send().await {
        // Cut off before the headers (the check failed that early).
        Err(_) => true,
        Ok(r) if r.status() == StatusCode::OK => r.bytes().await.is_err(),
        Ok(r) => r.status() == StatusCode::BAD_GATEWAY,
    };
    assert!(failed, "a corrupt blob was served whole");
    assert!(!is_stored(&d, &layer).await);
    let r = d.head(&path).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "HEAD asks upstream without storing"
    );
    assert_eq!(header(&r, "content-length"), "1000", "upstream's size");
    assert!(!is_stored(&d, &layer).await);
    gate.corrupt(&path, false);
    assert_eq!(sha256(&d.blob("app", &layer).await), layer);

    // A redirect loop is cut short: the client gets an error, nothing stored.
    let config = blobs_of(&manifest).pop().unwrap();
    let path = format!("/v2/app/blobs/{config}");
    gate.redirect_loop(&path);
    let r = d.get(&path).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("redirect"),
        "{text}"
    );
    assert!(!is_stored(&d, &config).await);
    assert!(
        gate.count("GET", &path) <= 12,
        "{}",
        gate.count("GET", &path)
    );
    wait_stored(&d, &layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_copies_matching_tags_and_follows_reloads() {
    let up = Server::start();
    for (repo, tag) in [
        ("mir/a", "v1"),
        ("mir/a", "v2"),
        ("mir/a", "skip"),
        ("mir/b", "v1"),
        ("elsewhere/c", "v1"),
    ] {
        up.push_image(repo, tag, 40 + tag.len() as u64 + repo.len() as u64, 1)
            .await;
    }
    let registry = |regex: &str| {
        format!(
            r#","extensions":{{"sync":{{"registries":[{{"urls":["{}"],"onDemand":false,"pollInterval":"1s",
            "content":[{{"prefix":"mir/**","destination":"copy","tags":{{"regex":"{regex}"}}}}]}}]}}}}"#,
            up.base
        )
    };
    // An index of two images, whose own tags the filter leaves out.
    let mut children = Vec::new();
    for (tag, seed) in [("child-1", 91), ("child-2", 92)] {
        let (body, digest) = up.push_image("mir/a", tag, seed, 1).await;
        children.push(format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{}}}"#,
            body.len()
        ));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        children.join(",")
    );
    expect_status(
        up.put_manifest("mir/a", "v3", OCI_INDEX, index.as_bytes())
            .await,
        StatusCode::CREATED,
    )
    .await;
    let d = Server::start_with(&registry("^v"));
    let deadline = Instant::now() + Duration::from_secs(30);
    for path in [
        "/v2/copy/mir/a/manifests/v1",
        "/v2/copy/mir/a/manifests/v2",
        "/v2/copy/mir/a/manifests/v3",
        "/v2/copy/mir/b/manifests/v1",
    ] {
        while d.head(path).await.status() != StatusCode::OK {
            assert!(Instant::now() < deadline, "{path} never mirrored");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Whole images: their blobs are here (this registry is not on demand).
    let r = get_manifest(&d, "/v2/copy/mir/a/manifests/v1").await;
    for b in blobs_of(&r.bytes().await.unwrap()) {
        assert_eq!(sha256(&d.blob("copy/mir/a", &b).await), b);
    }
    // The index came whole: its children and their blobs.
    let v: serde_json::Value = serde_json::from_slice(
        &get_manifest(&d, "/v2/copy/mir/a/manifests/v3")
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    for child in v["manifests"].as_array().unwrap() {
        let digest = child["digest"].as_str().unwrap();
        let r = get_manifest(&d, &format!("/v2/copy/mir/a/manifests/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        for b in blobs_of(&r.bytes().await.unwrap()) {
            assert_eq!(sha256(&d.blob("copy/mir/a", &b).await), b);
        }
    }
    for path in [
        "/v2/copy/mir/a/manifests/skip",
        "/v2/copy/mir/a/manifests/child-1",
    ] {
        assert_eq!(d.head(path).await.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        d.head("/v2/copy/elsewhere/c/manifests/v1").await.status(),
        StatusCode::NOT_FOUND
    );

    // A reload widens the tag filter; the next pass copies the new match.
    d.rewrite_config(&registry("^(v|skip)"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.head("/v2/copy/mir/a/manifests/skip").await.status() != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "the reloaded rule was never applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetching_needs_read_on_the_local_name() {
    let up = Server::start();
    up.push_image("private/app", "v1", 3, 1).await;
    let gate = Gate::start(&up.base).await;
    let work = tempfile::tempdir().unwrap();
    let htpasswd = work.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("reader:{}\n", bcrypt::hash("reader-pw", 4).unwrap()),
    )
    .unwrap();
    let d = Server::start_with(&format!(
        r#","http":{{"address":"127.0.0.1","port":"0","realm":"t","auth":{{"htpasswd":{{"path":{:?}}}}},
        "accessControl":{{"repositories":{{"**":{{"anonymousPolicy":[],"policies":[{{"users":["reader"],"actions":["read"]}}]}}}}}}}}{}"#,
        htpasswd.display().to_string(),
        sync_config(&gate.url, None, "")
    ));
    // Anonymous: refused before anything is asked of upstream.
    let r = get_manifest(&d, "/v2/private/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(gate.count_containing("/v2/private/"), 0);
    // A reader triggers the fetch; Berth's own (here: no) credentials go up.
    d.login(Some("reader:reader-pw"));
    let r = get_manifest(&d, "/v2/private/app/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(gate.count("GET", "/v2/private/app/manifests/v1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_through_berth() {
    let mut up = Server::start();
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello through berth\n").unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    std::fs::write(work.path().join("auth.json"), "{}").unwrap();
    let podman = |args: &[&str]| {
        let mut c = tokio::process::Command::new("podman");
        c.arg("--root")
            .arg(work.path().join("root"))
            .arg("--runroot")
            .arg(work.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .env("REGISTRY_AUTH_FILE", work.path().join("auth.json"))
            .args(args);
        let shown = format!("{args:?}");
        async move {
            let out = c.output().await.expect("podman runs");
            assert!(
                out.status.success(),
                "podman {shown}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
    };
    let pushed = format!("{}/pt/hello:v1", up.host());
    podman(&["build", "-q", "-t", &pushed, ctx.to_str().unwrap()]).await;
    podman(&["push", "--tls-verify=false", &pushed]).await;
    let id = podman(&["image", "inspect", "--format", "{{.Id}}", &pushed]).await;
    podman(&["rmi", "-f", &pushed]).await;

    let d = Server::start_with(&sync_config(&up.base, None, ""));
    let pulled = format!("{}/pt/hello:v1", d.host());
    podman(&["pull", "--tls-verify=false", &pulled]).await;
    let id_through = podman(&["image", "inspect", "--format", "{{.Id}}", &pulled]).await;
    assert_eq!(id, id_through);
    // Again with the upstream gone, from a clean podman store.
    up.kill();
    podman(&["rmi", "-f", &pulled]).await;
    podman(&["pull", "--tls-verify=false", &pulled]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_killed_midway_leaves_nothing_and_is_redone() {
    let up = Server::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("img");
    let digest = layout::single(&src, "v1", 11);
    push_layout(&src, "v1", &format!("{}/crash/app:v1", up.host()), None).await;
    let manifest = std::fs::read(
        src.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    let big = blobs_of(&manifest)[0].clone();
    let gate = Gate::start(&up.base).await;
    gate.throttle(Some(Duration::from_millis(40)));
    let mut d = Server::start_with(&sync_config(&gate.url, None, ""));

    // SIGKILL while the blob is arriving.
    let mut r = d.get(&format!("/v2/crash/app/blobs/{big}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.chunk().await.unwrap().is_some());
    d.kill();
    assert!(!is_stored(&d, &big).await, "a partial blob is stored");

    // After a restart nothing of it is visible, and a pull fetches it anew.
    gate.throttle(None);
    d.restart();
    assert_eq!(sha256(&d.blob("crash/app", &big).await), big);
    wait_stored(&d, &big).await;
    assert_eq!(gate.count("GET", &format!("/v2/crash/app/blobs/{big}")), 2);
}

/// What upstream lacks is remembered for a while (repeated misses cost it
/// nothing), and fetches for clients' misses run a bounded number at a
/// time per upstream; both are counted in metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_are_remembered_and_upstream_fetches_are_bounded() {
    let up = Server::start();
    let gate = Gate::start(&up.base).await;
    // The remembered misses, the bound on fetches and the metrics are each
    // process's own.
    let d = Server::start_one(&format!(
        r#","extensions":{{"metrics":{{"enable":true,"prometheus":{{"path":"/metrics"}}}},"sync":{{"enable":true,"registries":[{{"urls":["{}"],"onDemand":true,"maxRetries":1,"retryDelay":"100ms"}}]}}}}"#,
        gate.url
    ));
    let missing = sha256(b"nobody has this");
    for _ in 0..5 {
        assert_eq!(
            d.get("/v2/app/manifests/nope").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            d.get(&format!("/v2/app/blobs/{missing}")).await.status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(gate.count("GET", "/v2/app/manifests/nope"), 1);
    assert_eq!(gate.count("GET", &format!("/v2/app/blobs/{missing}")), 1);

    // Many cold pulls of slow blobs at once: at most 16 reach upstream
    // together, and every client still gets its blob.
    let mut blobs = Vec::new();
    for i in 0..40 {
        let data = bytes(900 + i, 256 * 1024);
        let digest = up.push_blob("app", &data).await;
        blobs.push((digest, data));
    }
    gate.throttle(Some(Duration::from_millis(20)));
    let d = &d;
    let pulls = blobs.iter().map(|(digest, _)| async move {
        d.get(&format!("/v2/app/blobs/{digest}"))
            .await
            .bytes()
            .await
            .unwrap()
    });
    let got = futures_util::future::join_all(pulls).await;
    for ((digest, data), got) in blobs.iter().zip(got) {
        assert!(got.as_ref() == data.as_slice(), "{digest}");
    }
    assert!(
        gate.max_in_flight() <= 16,
        "{} upstream fetches at once",
        gate.max_in_flight()
    );
    let metrics = d.get("/metrics").await.text().await.unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(value("berth_sync_negative_hits_total ") >= 8.0, "{metrics}");
    assert!(value("berth_sync_throttled_total ") >= 0.0, "{metrics}");
}
