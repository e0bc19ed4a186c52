//! The web interface through the real binary: the JSON twins and the HTML
//! pages, who sees what (the same policy as the API; a private repository
//! is invisible in lists, search, pages and compare, and answers exactly
//! like a missing one), pagination, filters, escaping of hostile labels and
//! annotations, and the security headers.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Public repositories for everyone, `secret/**` for the group `team`
/// (alice) only; admin may do anything.
fn start(external_url: Option<&str>) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ht = dir.path().join("htpasswd");
    write_htpasswd(
        &ht,
        &[
            ("admin", "admin-pw"),
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
        ],
    );
    let ext = external_url
        .map(|u| format!(r#","externalUrl":{u:?}"#))
        .unwrap_or_default();
    let cfg = format!(
        r#","http":{{"address":"127.0.0.1","port":"0"{ext},
        "auth":{{"htpasswd":{{"path":{:?}}}}},
        "accessControl":{{
          "groups":{{"admins":{{"users":["admin"]}},"team":{{"users":["alice"]}}}},
          "repositories":{{
            "**":{{"anonymousPolicy":["read"],"defaultPolicy":["read"]}},
            "secret/**":{{"policies":[{{"groups":["team"],"actions":["read","delete"]}}]}}
          }},
          "adminPolicy":{{"groups":["admins"],"actions":["read","create","update","delete"]}}
        }}}}"#,
        ht.display().to_string()
    );
    (Server::start_with(&cfg), dir)
}

async fn json(s: &Server, path: &str) -> (StatusCode, Value) {
    let r = s.get(path).await;
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")),
    )
}

async fn page(s: &Server, path: &str) -> (StatusCode, String) {
    let r = s.get(path).await;
    (r.status(), r.text().await.unwrap())
}

fn tag_names(v: &Value) -> Vec<&str> {
    v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect()
}

fn names(v: &Value) -> Vec<String> {
    v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Pushes an image with this configuration and these layers; returns its digest.
async fn push_with_config(
    s: &Server,
    repo: &str,
    tag: &str,
    config: &str,
    layers: &[&[u8]],
) -> String {
    let layers: Vec<Vec<u8>> = layers.iter().map(|l| l.to_vec()).collect();
    s.push_image_of(repo, tag, config.as_bytes(), &layers)
        .await
        .1
}

#[tokio::test]
async fn a_private_repository_is_invisible_to_those_who_may_not_read_it() {
    let (s, _d) = start(None);
    s.login(Some("admin:admin-pw"));
    s.push_image("public/app", "1", 1, 1).await;
    s.push_image("secret/db", "1", 2, 1).await;
    s.push_image("secret/db", "2", 3, 2).await;

    for who in [None, Some("bob:bob-pw")] {
        s.login(who);
        let (st, v) = json(&s, "/ui/api/repositories").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(names(&v), ["public/app"], "{who:?}");
        let (_, v) = json(&s, "/ui/api/repositories?q=secret").await;
        assert!(names(&v).is_empty(), "{who:?}: {v}");
        let (_, v) = json(&s, "/ui/api/repositories?sort=-name").await;
        assert_eq!(names(&v), ["public/app"]);
        let (_, html) = page(&s, "/?q=c").await;
        assert!(
            html.contains("public/app") && !html.contains("secret"),
            "{html}"
        );
        // Absent and unreadable answer alike, on every page and twin.
        for (hidden, absent) in [
            ("/ui/r/secret/db", "/ui/r/secret/nothing"),
            ("/ui/api/r/secret/db", "/ui/api/r/secret/nothing"),
            (
                "/ui/r/secret/db/-/image/1",
                "/ui/r/secret/nothing/-/image/1",
            ),
            (
                "/ui/api/r/secret/db/-/image/1",
                "/ui/api/r/secret/nothing/-/image/1",
            ),
            (
                "/ui/api/r/secret/db/-/compare?a=1&b=2",
                "/ui/api/r/secret/nothing/-/compare?a=1&b=2",
            ),
            (
                "/ui/r/secret/db/-/compare?a=1&b=2",
                "/ui/r/secret/nothing/-/compare?a=1&b=2",
            ),
            (
                "/ui/api/r/secret/db/-/compare",
                "/ui/api/r/secret/nothing/-/compare",
            ),
        ] {
            let (a, b) = (page(&s, hidden).await, page(&s, absent).await);
            assert_eq!(a.0, StatusCode::NOT_FOUND, "{hidden}");
            assert_eq!(a, b, "{hidden} and {absent} must look alike");
        }
        // Comparing a readable repository's tag with a private digest
        // reads only the readable repository.
        let (st, _) = page(&s, "/ui/api/r/public/app/-/compare?a=1&b=2").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (_, v) = json(&s, "/ui/api/r/public/app").await;
        assert_eq!(v["can_delete"], false);
    }

    // A member of the group sees it everywhere, and may delete there.
    s.login(Some("alice:alice-pw"));
    let (_, v) = json(&s, "/ui/api/repositories").await;
    assert_eq!(names(&v), ["public/app", "secret/db"]);
    let (_, v) = json(&s, "/ui/api/repositories?q=SECRET").await;
    assert_eq!(names(&v), ["secret/db"]);
    assert_eq!(v["repositories"][0]["tags"], 2);
    let (st, v) = json(&s, "/ui/api/r/secret/db").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["can_delete"], true);
    assert_eq!(v["tags"].as_array().unwrap().len(), 2);
    let (st, _) = json(&s, "/ui/api/r/secret/db/-/image/2").await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = json(&s, "/ui/api/r/secret/db/-/compare?a=1&b=2").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);

    // Wrong credentials are refused, never shown the anonymous view.
    s.login(Some("alice:wrong"));
    assert_eq!(
        s.get("/ui/api/repositories").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_repository_list_pages_sorts_and_bounds_what_clients_ask() {
    let (s, _d) = start(None);
    s.login(Some("admin:admin-pw"));
    let all: Vec<String> = (0..7).map(|i| format!("team{i}/svc")).collect();
    for (i, r) in all.iter().enumerate() {
        s.push_image(r, "v1", 10 + i as u64, 1).await;
    }
    s.login(None);
    let mut seen = Vec::new();
    let mut url = "/ui/api/repositories?n=3".to_owned();
    loop {
        let (_, v) = json(&s, &url).await;
        assert!(v["repositories"].as_array().unwrap().len() <= 3);
        seen.extend(names(&v));
        match v["next"].as_str() {
            Some(next) => url = format!("/ui/api/repositories?n=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, all);
    let (_, v) = json(&s, "/ui/api/repositories?n=3&sort=-name").await;
    assert_eq!(names(&v), ["team6/svc", "team5/svc", "team4/svc"]);
    let (_, v) = json(&s, "/ui/api/repositories?n=3&sort=-name&after=team4/svc").await;
    assert_eq!(names(&v), ["team3/svc", "team2/svc", "team1/svc"]);
    // Rows carry tag count, push time and size.
    let row = &v["repositories"][0];
    assert_eq!(row["tags"], 1);
    assert!(row["last_push"].as_str().unwrap().ends_with('Z'));
    assert!(row["size"].as_u64().unwrap() > 1000);
    // A push through this server refreshes the remembered row at once.
    s.login(Some("admin:admin-pw"));
    s.push_image("team3/svc", "v2", 99, 1).await;
    s.login(None);
    // (Another replica's remembered row learns of it within its 30 s.)
    let deadline = std::time::Instant::now() + s.replica_lag();
    loop {
        let (_, v) = json(&s, "/ui/api/repositories?q=team3").await;
        if v["repositories"][0]["tags"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // Bounds: page size and search length are capped.
    let (_, v) = json(&s, "/ui/api/repositories?n=1000000").await;
    assert_eq!(v["per_page"], 200);
    let long = "a".repeat(5000);
    let (st, v) = json(&s, &format!("/ui/api/repositories?q={long}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["query"].as_str().unwrap().len(), 128);
    // The HTML page links to the next page without script.
    let (_, html) = page(&s, "/?n=3").await;
    assert!(html.contains("rel=\"next\""), "{html}");
    assert!(html.contains("after=team2%2Fsvc"), "{html}");
}

#[tokio::test]
async fn the_repository_page_filters_tags_and_names_the_external_host() {
    let (s, _d) = start(Some("https://registry.example.test:8443/"));
    s.login(Some("admin:admin-pw"));
    for (i, t) in ["v1", "v2", "dev-1", "v10"].iter().enumerate() {
        s.push_image("public/web", t, 40 + i as u64, 1).await;
    }
    s.login(None);
    // A pull is noted and shown.
    assert_eq!(
        s.get("/v2/public/web/manifests/v2").await.status(),
        StatusCode::OK
    );
    // (Pull times reach other replicas with their 30 s merge.)
    let deadline = std::time::Instant::now() + s.replica_lag();
    let v = loop {
        let (_, v) = json(&s, "/ui/api/r/public/web").await;
        let pulled = v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tag"] == "v2" && t["last_pull"].is_string());
        if pulled || std::time::Instant::now() >= deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(v["total_tags"], 4);
    // The pull command names the most recently pushed tag, at the
    // external host.
    let tags = v["tags"].as_array().unwrap();
    let newest = tags
        .iter()
        .map(|t| t["pushed"].as_str().unwrap())
        .max()
        .unwrap();
    let pulled = v["pull_docker"].as_str().unwrap();
    let tag = pulled
        .strip_prefix("docker pull registry.example.test:8443/public/web:")
        .unwrap_or_else(|| panic!("{pulled}"));
    assert!(
        tags.iter()
            .any(|t| t["tag"] == tag && t["pushed"] == newest),
        "{v}"
    );
    assert_eq!(v["pull_podman"], pulled.replace("docker", "podman"));
    let v2 = tags.iter().find(|t| t["tag"] == "v2").unwrap();
    assert!(v2["last_pull"].is_string(), "{v2}");
    assert!(v2["pushed"].is_string());
    assert_eq!(v2["kind"], "image");
    assert!(v2["digest"].as_str().unwrap().starts_with("sha256:"));
    let v1 = tags.iter().find(|t| t["tag"] == "v1").unwrap();
    assert!(v1["last_pull"].is_null());

    let (_, v) = json(&s, "/ui/api/r/public/web?filter=v1").await;
    assert_eq!(tag_names(&v), ["v1", "v10"]);
    assert_eq!(v["matching_tags"], 2);
    let (_, v) = json(&s, "/ui/api/r/public/web?n=2&after=v1").await;
    assert_eq!(tag_names(&v), ["v10", "v2"]);
    assert!(v["next"].is_null());
    let (_, html) = page(&s, "/ui/r/public/web?filter=dev").await;
    assert!(html.contains("dev-1") && !html.contains(">v10<"), "{html}");
    assert!(html.contains("docker pull registry.example.test:8443/public/web:dev-1"));
    // Anonymous callers may not delete: no delete buttons.
    assert!(!html.contains("class=\"delete\""));
}

#[tokio::test]
async fn the_image_page_shows_config_history_and_referrers_escaped() {
    let (s, _d) = start(None);
    s.login(Some("admin:admin-pw"));
    let config = r#"{"architecture":"arm64","os":"linux","created":"2026-01-02T03:04:05Z",
      "config":{"Entrypoint":["/bin/app"],"Cmd":["--serve"],"WorkingDir":"/srv","User":"app",
        "ExposedPorts":{"8080/tcp":{}},"Env":["PATH=/bin","MODE=<b>prod</b>"],
        "Labels":{"org.opencontainers.image.title":"<script>alert(1)</script>"}},
      "history":[{"created_by":"ADD rootfs.tar /"},{"created_by":"ENV MODE=prod","empty_layer":true}],
      "rootfs":{"type":"layers","diff_ids":[]}}"#;
    let digest = push_with_config(&s, "public/tool", "1.0", config, &[b"layer-one"]).await;
    // A signature referring to it, with a hostile annotation.
    let empty = s.push_blob("public/tool", b"{}").await;
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":1}},"annotations":{{"note":"<img src=x onerror=alert(2)>"}}}}"#
    );
    let sig_digest = sha256(sig.as_bytes());
    let r = s
        .put_manifest("public/tool", &sig_digest, OCI_MANIFEST, sig.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    s.login(None);

    let (st, v) = json(&s, "/ui/api/r/public/tool/-/image/1.0").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["digest"], digest.as_str());
    let c = &v["config"];
    assert_eq!(c["architecture"], "arm64");
    assert_eq!(c["entrypoint"][0], "/bin/app");
    assert_eq!(c["cmd"][0], "--serve");
    assert_eq!(c["working_dir"], "/srv");
    assert_eq!(c["user"], "app");
    assert_eq!(c["exposed_ports"][0], "8080/tcp");
    assert_eq!(
        c["labels"]["org.opencontainers.image.title"],
        "<script>alert(1)</script>"
    );
    assert_eq!(v["history"].as_array().unwrap().len(), 2);
    assert_eq!(v["layers"][0]["size"], 9);
    let g = &v["referrers"][0];
    assert_eq!(g["label"], "cosign signature");
    assert_eq!(g["items"][0]["digest"], sig_digest.as_str());
    assert_eq!(
        g["items"][0]["annotations"]["note"],
        "<img src=x onerror=alert(2)>"
    );
    assert!(v["manifest_json"]
        .as_str()
        .unwrap()
        .contains("\n  \"config\""));

    let r = s.get("/ui/r/public/tool/-/image/1.0").await;
    assert_eq!(r.status(), StatusCode::OK);
    let csp = header(&r, "content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script>alert"), "label not escaped");
    assert!(!html.contains("<img src=x"), "annotation not escaped");
    assert!(!html.contains("<b>prod"), "env not escaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("cosign signature"));
    assert!(html.contains("ADD rootfs.tar /"));
    // No inline script or style anywhere: only same-origin files.
    assert!(!html.contains("<style") && !html.contains("style=\""));
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains("<script src=\"/ui/app.js\""));
    // The digest reference works too, and a bad reference is just absent.
    assert_eq!(
        s.get(&format!("/ui/r/public/tool/-/image/{digest}"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        s.get("/ui/r/public/tool/-/image/no:such").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("/ui/r/public/tool/-/image/9.9").await.status(),
        StatusCode::NOT_FOUND
    );
    // Looking is not pulling.
    let (_, v) = json(&s, "/ui/api/r/public/tool").await;
    let t = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == "1.0")
        .unwrap()
        .clone();
    assert!(t["last_pull"].is_null(), "{t}");
    // Assets carry their types.
    let r = s.get("/ui/style.css").await;
    assert!(header(&r, "content-type").starts_with("text/css"));
    let r = s.get("/ui/app.js").await;
    assert!(header(&r, "content-type").starts_with("text/javascript"));
}

#[tokio::test]
async fn compare_shows_shared_added_and_removed_layers_and_config_changes() {
    let (s, _d) = start(None);
    s.login(Some("admin:admin-pw"));
    let base: &[u8] = b"base-layer-bytes";
    let old = push_with_config(
        &s,
        "public/svc",
        "1",
        r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1","B=2"],"User":"root"}}"#,
        &[base, b"old-app"],
    )
    .await;
    push_with_config(
        &s,
        "public/svc",
        "2",
        r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1","B=3"],"User":"app","Labels":{"x":"y"}}}"#,
        &[base, b"new-app-bigger"],
    )
    .await;
    s.login(None);
    let (st, v) = json(&s, &format!("/ui/api/r/public/svc/-/compare?a={old}&b=2")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let changes: Vec<(&str, u64)> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["change"].as_str().unwrap(), l["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(changes, [("shared", 16), ("removed", 7), ("added", 14)]);
    assert_eq!(v["shared_bytes"], 16);
    assert_eq!(v["added_bytes"], 14);
    assert_eq!(v["removed_bytes"], 7);
    let fields: Vec<&str> = v["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["user", "env B", "label x"]);
    assert!(v["size_delta"].as_i64().unwrap() > 0);
    let (st, html) = page(&s, "/ui/r/public/svc/-/compare?a=1&b=2").await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("Size change") && html.contains("removed") && html.contains("env B"));
    // Without references: the form, with the tags to choose from.
    let (st, v) = json(&s, "/ui/api/r/public/svc/-/compare").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["tags"], serde_json::json!(["1", "2"]));
    // A reference that is not there is "not found".
    let (st, _) = page(&s, "/ui/api/r/public/svc/-/compare?a=1&b=9").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_index_shows_its_platforms() {
    let (s, _d) = start(None);
    s.login(Some("admin:admin-pw"));
    let (m1, d1) = s.push_image("public/multi", "amd64", 60, 1).await;
    let (m2, d2) = s.push_image("public/multi", "arm64", 61, 2).await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d1}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{d2}","size":{},"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
        m1.len(),
        m2.len()
    );
    let r = s
        .put_manifest("public/multi", "latest", OCI_INDEX, index.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    s.login(None);
    let (_, v) = json(&s, "/ui/api/r/public/multi?filter=latest").await;
    assert_eq!(v["tags"][0]["kind"], "index");
    assert_eq!(
        v["tags"][0]["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"])
    );
    let (_, v) = json(&s, "/ui/api/r/public/multi/-/image/latest").await;
    assert_eq!(v["kind"], "index");
    assert_eq!(v["platforms"][1]["platform"], "linux/arm64/v8");
    // Compare picks the platform asked for in an index.
    let (st, v) = json(
        &s,
        "/ui/api/r/public/multi/-/compare?a=latest&b=arm64&platform=linux/arm64/v8",
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["size_delta"], 0);
    assert_eq!(v["a"]["platform"], "linux/arm64/v8");
}

#[tokio::test]
async fn the_account_page_says_who_you_are() {
    let (s, _d) = start(None);
    let (_, v) = json(&s, "/ui/api/account").await;
    assert!(v["user"].is_null());
    s.login(Some("alice:alice-pw"));
    let (_, v) = json(&s, "/ui/api/account").await;
    assert_eq!(v["user"], "alice");
    assert_eq!(v["groups"], serde_json::json!(["team"]));
    let (st, html) = page(&s, "/ui/account").await;
    assert_eq!(st, StatusCode::OK);
    assert!(html.contains("alice"));
    // Writes through the UI paths are not routes: only GET.
    let r = s
        .send(Method::POST, "/ui/api/repositories", &[], Vec::new())
        .await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}
