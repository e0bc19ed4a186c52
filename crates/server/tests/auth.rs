//! Who may do what, end to end: htpasswd, API keys (with scopes, expiry and
//! revocation), zot's access-control semantics with immutable tags, the
//! catalog filter, and a real client pushing with a key.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use std::path::Path;
use std::time::{Duration, Instant};

const USERS: [(&str, &str); 4] = [
    ("admin", "admin-pw"),
    ("ci", "ci-pw"),
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
];

/// The seed deployment's policy, plus a private corner for alice.
fn seed_config(htpasswd: &Path) -> String {
    format!(
        r#","http":{{"address":"127.0.0.1","port":"0","realm":"berth-test",
        "auth":{{"htpasswd":{{"path":{:?}}},"apikey":true}},
        "accessControl":{{
          "groups":{{"admins":{{"users":["admin"]}},"artifact-workloads":{{"users":["ci"]}}}},
          "repositories":{{
            "**":{{"anonymousPolicy":["read"],"policies":[{{"groups":["artifact-workloads"],"actions":["read","create"]}}]}},
            "private/**":{{"policies":[{{"users":["alice"],"actions":["read","create","update","delete"]}}]}}
          }},
          "adminPolicy":{{"groups":["admins"],"actions":["read","create","update","delete"]}},
          "metrics":{{"users":[""]}}
        }}}},"extensions":{{"metrics":{{"enable":true,"prometheus":{{"path":"/metrics"}}}}}}"#,
        htpasswd.display().to_string()
    )
}

fn start() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    write_htpasswd(&path, &USERS);
    (Server::start_with(&seed_config(&path)), dir)
}

/// `start`, one process (on the shared store when the suite runs on it).
fn start_one() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    write_htpasswd(&path, &USERS);
    (Server::start_one(&seed_config(&path)), dir)
}

async fn mint(s: &Server, body: &str) -> serde_json::Value {
    let r = s
        .send(
            Method::POST,
            "/zot/auth/apikey",
            &[("content-type", "application/json")],
            body.as_bytes().to_vec(),
        )
        .await;
    expect_status(r, StatusCode::CREATED)
        .await
        .json_body()
        .await
}

async fn unauthorized(r: reqwest::Response) {
    denied(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await
}

async fn forbidden(r: reqwest::Response) {
    denied(r, StatusCode::FORBIDDEN, "DENIED").await
}

async fn denied(r: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status);
    assert_eq!(header(&r, "www-authenticate"), "Basic realm=\"berth-test\"");
    assert_eq!(error_code(r).await, code);
}

#[tokio::test]
async fn anonymous_reads_ci_creates_admin_does_everything() {
    let (s, _dir) = start();
    s.login(Some("admin:admin-pw"));
    let (manifest, _) = s.push_image("app/web", "v1", 1, 1).await;

    s.login(None);
    unauthorized(s.get("/v2/").await).await;
    assert_eq!(
        s.get("/v2/app/web/manifests/v1").await.status(),
        StatusCode::OK
    );
    unauthorized(
        s.put_manifest("app/web", "v9", OCI_MANIFEST, &manifest)
            .await,
    )
    .await;
    unauthorized(
        s.send(Method::POST, "/v2/app/web/blobs/uploads/", &[], Vec::new())
            .await,
    )
    .await;

    // An authenticated user does not inherit the anonymous policy (zot).
    s.login(Some("bob:bob-pw"));
    assert_eq!(s.get("/v2/").await.status(), StatusCode::OK);
    forbidden(s.get("/v2/app/web/manifests/v1").await).await;

    // CI mints a key with its password, then pushes with the key.
    s.login(Some("ci:ci-pw"));
    let key = mint(&s, r#"{"label":"pipeline"}"#).await;
    let secret = key["apiKey"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("zak_"));
    assert_eq!(key["label"], "pipeline");
    s.login(Some(&format!("ci:{secret}")));
    s.push_image("app/web", "v2", 2, 1).await;
    assert_eq!(
        s.get("/v2/app/web/manifests/v1").await.status(),
        StatusCode::OK
    );
    // Tags are immutable for CI: no overwrite, no delete.
    forbidden(
        s.put_manifest("app/web", "v1", OCI_MANIFEST, &manifest)
            .await,
    )
    .await;
    forbidden(s.delete("/v2/app/web/manifests/v1").await).await;
    forbidden(
        s.delete(&format!("/v2/app/web/manifests/{}", sha256(&manifest)))
            .await,
    )
    .await;
    // Pushing the same content under a new tag is fine.
    assert_eq!(
        s.put_manifest("app/web", "v3", OCI_MANIFEST, &manifest)
            .await
            .status(),
        StatusCode::CREATED
    );
    // A key cannot manage keys.
    assert_eq!(
        s.get("/zot/auth/apikey").await.status(),
        StatusCode::FORBIDDEN
    );
    // The key with another user's name is nothing.
    s.login(Some(&format!("admin:{secret}")));
    unauthorized(s.get("/v2/").await).await;

    // The admin may overwrite and delete.
    s.login(Some("admin:admin-pw"));
    assert_eq!(
        s.put_manifest("app/web", "v2", OCI_MANIFEST, &manifest)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        s.delete("/v2/app/web/manifests/v3").await.status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn api_keys_list_scopes_expiry_and_revocation() {
    let (s, dir) = start();
    s.login(Some("ci:ci-pw"));
    let scoped = mint(
        &s,
        r#"{"label":"scoped","scopes":["repository:ci/**:read,create"]}"#,
    )
    .await;
    let soon = time_in(2);
    let expiring = mint(
        &s,
        &format!(r#"{{"label":"short","expirationDate":"{soon}"}}"#),
    )
    .await;
    let revoked = mint(&s, r#"{"label":"revoked"}"#).await;

    let list = expect_status(s.get("/zot/auth/apikey").await, StatusCode::OK)
        .await
        .json_body()
        .await;
    let keys = list["apiKeys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for k in keys {
        assert!(k.get("apiKey").is_none() && k.get("hash").is_none(), "{k}");
    }
    // Others see none of them.
    s.login(Some("alice:alice-pw"));
    let list = s.get("/zot/auth/apikey").await.json_body().await;
    assert_eq!(list["apiKeys"], serde_json::json!([]));

    // Scopes are enforced.
    s.login(Some(&format!("ci:{}", scoped["apiKey"].as_str().unwrap())));
    s.push_image("ci/app", "v1", 3, 1).await;
    forbidden(
        s.send(
            Method::POST,
            "/v2/app/other/blobs/uploads/",
            &[],
            Vec::new(),
        )
        .await,
    )
    .await;

    // Revoked keys stop at once.
    s.login(Some(&format!("ci:{}", revoked["apiKey"].as_str().unwrap())));
    assert_eq!(s.get("/v2/").await.status(), StatusCode::OK);
    s.login(Some("ci:ci-pw"));
    let id = revoked["uuid"].as_str().unwrap();
    assert_eq!(
        s.delete(&format!("/zot/auth/apikey?id={id}"))
            .await
            .status(),
        StatusCode::OK
    );
    s.login(Some(&format!("ci:{}", revoked["apiKey"].as_str().unwrap())));
    unauthorized(s.get("/v2/").await).await;

    // Expired keys stop when their date passes.
    s.login(Some(&format!(
        "ci:{}",
        expiring["apiKey"].as_str().unwrap()
    )));
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get("/v2/").await.status() == StatusCode::OK {
        assert!(Instant::now() < deadline, "expired key still accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unauthorized(s.get("/v2/").await).await;

    // Bad requests.
    s.login(Some("ci:ci-pw"));
    for body in [
        r#"{"expirationDate":"2001-01-01T00:00:00Z"}"#,
        r#"{"expirationDate":"soon"}"#,
        r#"{"scopes":["x:fly"]}"#,
        "not json",
    ] {
        let r = s
            .send(
                Method::POST,
                "/zot/auth/apikey",
                &[],
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(
        s.delete("/zot/auth/apikey").await.status(),
        StatusCode::BAD_REQUEST
    );
    s.login(None);
    assert_eq!(
        s.get("/zot/auth/apikey").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A key minted with a password dies with its user.
    s.login(Some("ci:ci-pw"));
    let doomed = mint(&s, r#"{"label":"doomed"}"#).await["apiKey"]
        .as_str()
        .unwrap()
        .to_owned();
    s.login(Some(&format!("ci:{doomed}")));
    assert_eq!(s.get("/v2/").await.status(), StatusCode::OK);
    write_htpasswd(&dir.path().join("htpasswd"), &USERS[..1]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.get("/v2/").await.status() == StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "a removed user's key still works"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An RFC 3339 time `secs` from now.
fn time_in(secs: u64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs(secs);
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!(
                "@{}",
                t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
            ),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn bad_credentials_are_refused_never_downgraded() {
    let (s, dir) = start();
    for auth in [
        basic("admin:wrong"),
        basic("nobody:x"),
        "Basic !!!".into(),
        "Bearer token".into(),
        "Digest x".into(),
        basic("ci:zak_0000"),
    ] {
        let r = s
            .send(Method::GET, "/v2/", &[("authorization", &auth)], Vec::new())
            .await;
        unauthorized(r).await;
    }
    let twice = s
        .client
        .get(s.url("/v2/"))
        .header("authorization", basic("admin:admin-pw"))
        .header("authorization", basic("admin:admin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::UNAUTHORIZED);
    let huge = format!("Basic {}", "A".repeat(10_000));
    let r = s
        .send(Method::GET, "/v2/", &[("authorization", &huge)], Vec::new())
        .await;
    assert!(
        r.status() == StatusCode::UNAUTHORIZED
            || r.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    // A user added to the file is picked up without a restart.
    let mut users = USERS.to_vec();
    users.push(("dave", "dave-pw"));
    write_htpasswd(&dir.path().join("htpasswd"), &users);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s
            .send(
                Method::GET,
                "/v2/",
                &[("authorization", &basic("dave:dave-pw"))],
                Vec::new(),
            )
            .await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "htpasswd change not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!s.log().contains("admin-pw"), "a password reached the log");
}

#[tokio::test]
async fn catalog_lists_only_what_the_caller_may_read() {
    let (s, _dir) = start();
    s.login(Some("admin:admin-pw"));
    s.push_image("app/web", "v1", 1, 1).await;
    s.login(Some("alice:alice-pw"));
    s.push_image("private/x", "v1", 2, 1).await;
    let names = |v: serde_json::Value| v["repositories"].clone();
    s.login(None);
    assert_eq!(
        names(s.get("/v2/_catalog").await.json_body().await),
        serde_json::json!(["app/web"])
    );
    unauthorized(s.get("/v2/private/x/manifests/v1").await).await;
    s.login(Some("alice:alice-pw"));
    assert_eq!(
        names(s.get("/v2/_catalog").await.json_body().await),
        serde_json::json!(["private/x"])
    );
    s.login(Some("admin:admin-pw"));
    assert_eq!(
        names(s.get("/v2/_catalog").await.json_body().await),
        serde_json::json!(["app/web", "private/x"])
    );
    // A mount from a repository the caller cannot read uploads instead.
    s.login(Some("ci:ci-pw"));
    let layer = bytes(2 * 100, 1000);
    let r = s
        .send(
            Method::POST,
            &format!(
                "/v2/app/ci/blobs/uploads/?mount={}&from=private/x",
                sha256(&layer)
            ),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[test]
fn skopeo_pushes_with_an_api_key_and_cannot_overwrite() {
    let (s, _dir) = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    s.login(Some("ci:ci-pw"));
    let key = rt.block_on(mint(&s, r#"{"label":"skopeo"}"#))["apiKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let work = tempfile::tempdir().unwrap();
    let auth_file = work.path().join("auth.json");
    std::fs::write(&auth_file, "{}").unwrap();
    let src = work.path().join("img");
    layout::single(&src, "v1", 7);
    let copy = |tag: &str, creds: Option<&str>| {
        let mut c = std::process::Command::new("skopeo");
        c.env("REGISTRY_AUTH_FILE", &auth_file)
            .args(["copy", "--dest-tls-verify=false"]);
        if let Some(creds) = creds {
            c.args(["--dest-creds", creds]);
        }
        c.arg(format!("oci:{}:v1", src.display()))
            .arg(format!("docker://{}/team/app:{tag}", s.host()));
        c.output().unwrap()
    };
    let creds = format!("ci:{key}");
    let out = copy("1.0.0", Some(&creds));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = copy("1.0.0", Some(&creds));
    assert!(
        !out.status.success(),
        "overwriting a tag with a CI key must fail"
    );
    let out = copy("1.0.1", None);
    assert!(!out.status.success(), "an anonymous push must fail");
    // Anyone can pull.
    let out = std::process::Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/team/app:1.0.0", s.host()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn policy_explain_names_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let ht = dir.path().join("htpasswd");
    write_htpasswd(&ht, &USERS[..1]);
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"storage":{{"rootDirectory":"/tmp/unused"}}{}}}"#,
            seed_config(&ht)
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["policy", "explain"])
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = run(&["--user", "ci", "--action", "update", "--repo", "app/web"]);
    assert!(out.starts_with("DENY"), "{out}");
    let out = run(&["--user", "ci", "--action", "create", "--repo", "app/web"]);
    assert!(
        out.starts_with("ALLOW") && out.contains("policies[0]"),
        "{out}"
    );
    assert!(out.contains("except the tag \"latest\""), "{out}");
    let out = run(&[
        "--user",
        "admin",
        "--action",
        "delete",
        "--repo",
        "private/x",
    ]);
    assert!(out.contains("adminPolicy"), "{out}");
    let out = run(&["--action", "read", "--repo", "app/web"]);
    assert!(out.contains("anonymousPolicy"), "{out}");
}

/// With `read`+`create` and no `update`, a new tag is created once: of
/// racing pushes of different manifests exactly one wins, the others are
/// denied as a push to an existing tag is, and the tag names the winner.
#[tokio::test]
async fn immutable_tag_race_has_one_winner() {
    let (s, _dir) = start();
    s.login(Some("ci:ci-pw"));
    let mut manifests = Vec::new();
    for i in 0..8 {
        manifests.push(
            s.push_image("race/app", &format!("seed-{i}"), 10 + i, 1)
                .await,
        );
    }
    for trial in 0..10 {
        let tag = format!("release-{trial}");
        let puts = manifests
            .iter()
            .map(|(m, _)| s.put_manifest("race/app", &tag, OCI_MANIFEST, m));
        let answers = futures_util::future::join_all(puts).await;
        let mut winners = Vec::new();
        for (i, r) in answers.into_iter().enumerate() {
            if r.status() == StatusCode::CREATED {
                winners.push(i);
            } else {
                forbidden(r).await;
            }
        }
        assert_eq!(winners.len(), 1, "trial {trial}: winners {winners:?}");
        let r = s.get(&format!("/v2/race/app/manifests/{tag}")).await;
        assert_eq!(
            header(&r, "docker-content-digest"),
            manifests[winners[0]].1,
            "trial {trial}"
        );
    }
}

/// zot exempts `latest` from the update check: CI may move it with
/// `create` alone, while other tags stay immutable.
#[tokio::test]
async fn latest_moves_with_create() {
    let (s, _dir) = start();
    s.login(Some("ci:ci-pw"));
    s.push_image("app/cli", "latest", 1, 1).await;
    let (_, second) = s.push_image("app/cli", "latest", 2, 1).await;
    let r = s.get("/v2/app/cli/manifests/latest").await;
    assert_eq!(header(&r, "docker-content-digest"), second);
    let (first, _) = s.push_image("app/cli", "v1", 3, 1).await;
    let (other, _) = s.push_image("app/cli", "v2", 4, 1).await;
    forbidden(s.put_manifest("app/cli", "v1", OCI_MANIFEST, &other).await).await;
    assert_eq!(
        header(
            &s.get("/v2/app/cli/manifests/v1").await,
            "docker-content-digest"
        ),
        sha256(&first)
    );
}

#[tokio::test]
async fn metrics_follow_access_control() {
    // Counters are each process's own.
    let (s, dir) = start_one();
    // The seed's `users: [""]`: anyone may scrape.
    s.get("/v2/").await;
    let r = s.get("/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("zot_http_requests_total{method=\"GET\",code=\"401\"}"),
        "{text}"
    );
    assert!(text.contains("zot_info{"), "{text}");
    drop(s);

    // Only named users otherwise.
    let config = seed_config(&dir.path().join("htpasswd")).replace(
        r#""metrics":{"users":[""]}"#,
        r#""metrics":{"users":["admin"]}"#,
    );
    let s = Server::start_with(&config);
    unauthorized(s.get("/metrics").await).await;
    s.login(Some("bob:bob-pw"));
    assert_eq!(s.get("/metrics").await.status(), StatusCode::FORBIDDEN);
    s.login(Some("admin:admin-pw"));
    assert_eq!(s.get("/metrics").await.status(), StatusCode::OK);
}

/// Polls until `check` holds (a bounded wait, not a timing assertion).
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn live_reload_applies_valid_policies_and_keeps_the_old_on_invalid() {
    let (s, dir) = start();
    let ht = dir.path().join("htpasswd");
    s.login(Some("admin:admin-pw"));
    s.push_image("app/web", "v1", 1, 1).await;
    s.login(None);
    assert_eq!(
        s.get("/v2/app/web/manifests/v1").await.status(),
        StatusCode::OK
    );

    // No more anonymous reads: the next requests obey.
    let closed = seed_config(&ht).replace(r#""anonymousPolicy":["read"],"#, "");
    s.rewrite_config(&closed);
    // (Every replica: consecutive requests go to each in turn.)
    eventually("anonymous reads refused", || async {
        for _ in 0..s.processes() {
            if s.get("/v2/app/web/manifests/v1").await.status() != StatusCode::UNAUTHORIZED {
                return false;
            }
        }
        true
    })
    .await;

    // An invalid file is refused, and the policy in force stays.
    s.write_raw_config(r#"{"storage":{"rootDirectory":"/x"},"http":{"port":"0","accessControl":{"repositories":{"**":{"anonymousPolicy":["fly"]}}}}}"#);
    eventually("reload refused", || async {
        s.log().matches("configuration reload refused").count() >= s.processes()
    })
    .await;
    assert_eq!(
        s.get("/v2/app/web/manifests/v1").await.status(),
        StatusCode::UNAUTHORIZED
    );
    s.login(Some("admin:admin-pw"));
    assert_eq!(
        s.get("/v2/app/web/manifests/v1").await.status(),
        StatusCode::OK
    );
    s.login(None);

    // SIGHUP reloads at once.
    s.rewrite_config(&seed_config(&ht));
    s.hangup();
    eventually("anonymous reads back", || async {
        for _ in 0..s.processes() {
            if s.get("/v2/app/web/manifests/v1").await.status() != StatusCode::OK {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test]
async fn the_audit_trail_has_every_mutation_and_no_secret() {
    let (s, _dir) = start();
    s.login(Some("ci:ci-pw"));
    let key = mint(&s, r#"{"label":"audited"}"#).await;
    let secret = key["apiKey"].as_str().unwrap().to_owned();
    s.login(Some(&format!("ci:{secret}")));
    let (manifest, digest) = s.push_image("audit/app", "v1", 9, 1).await; // 2 uploads + manifest
    assert_eq!(
        s.put_manifest("audit/app", "v1", OCI_MANIFEST, &manifest)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    s.login(Some("admin:admin-pw"));
    assert_eq!(
        s.delete("/v2/audit/app/manifests/v1").await.status(),
        StatusCode::ACCEPTED
    );
    s.login(Some("ci:ci-pw"));
    assert_eq!(
        s.delete(&format!(
            "/zot/auth/apikey?id={}",
            key["uuid"].as_str().unwrap()
        ))
        .await
        .status(),
        StatusCode::OK
    );
    s.login(None);
    assert_eq!(
        s.get("/v2/audit/app/tags/list").await.status(),
        StatusCode::OK
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = s.audit_lines();
        if lines.iter().any(|l| l["action"] == "revoke api key") || Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let actions: Vec<String> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "create api key",
            "start upload",
            "push blob",
            "start upload",
            "push blob",
            "push manifest",
            "push manifest",
            "delete tag",
            "revoke api key"
        ],
        "{lines:#?}"
    );
    let pushed = &lines[5];
    assert_eq!(pushed["user"], "ci");
    assert_eq!(pushed["auth"], "apikey");
    assert_eq!(pushed["client"], "127.0.0.1");
    assert_eq!(pushed["repository"], "audit/app");
    assert_eq!(pushed["reference"], "v1");
    assert_eq!(pushed["digest"], digest);
    assert_eq!(pushed["status"], 201);
    assert_eq!(lines[6]["status"], 403, "refusals are audited too");
    // ... under the identity the request proved.
    assert_eq!(lines[6]["user"], "ci", "{:?}", lines[6]);
    assert_eq!(lines[6]["auth"], "apikey", "{:?}", lines[6]);
    assert_eq!(lines[7]["user"], "admin");
    let text = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap();
    for secret in [secret.as_str(), &secret[4..], "ci-pw", "admin-pw"] {
        assert!(!text.contains(secret), "a secret reached the audit log");
    }
}
