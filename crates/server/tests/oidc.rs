//! Browser login through a real OpenID provider (npm oidc-provider, run by
//! Node), driven by hand-followed redirects and by a real Chromium.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn fixtures() -> PathBuf {
    crate_dir().join("tests/idp")
}

struct Idp {
    issuer: String,
    child: Child,
}

impl Idp {
    fn start(redirect_uri: &str) -> Idp {
        let mut child = Command::new("node")
            .arg("idp.mjs")
            .current_dir(fixtures())
            .env("IDP_REDIRECT_URI", redirect_uri)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node (run scripts/install-test-deps.sh)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("idp said {line:?}: {e}"));
        Idp {
            issuer: v["issuer"].as_str().unwrap().to_owned(),
            child,
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Berth on `port`, logging in through `idp`, with the seed policy.
/// Berth with the seed policy. With a session keys file the client
/// credentials are written inline; without, they come from zot's
/// `credentialsFile`, so both forms are exercised.
fn berth(port: u16, idp: &Idp, keys_file: Option<&std::path::Path>) -> Server {
    let keys = keys_file
        .map(|p| format!(r#","sessionKeysFile":{:?}"#, p.display().to_string()))
        .unwrap_or_default();
    // The credentials file is read at start: it goes once Berth is up.
    let mut written = None;
    let credentials = if keys_file.is_some() {
        r#""clientid":"berth","clientsecret":"berth-test-secret""#.to_owned()
    } else {
        let path = std::env::temp_dir().join(format!("berth-oidc-credentials-{port}.json"));
        std::fs::write(
            &path,
            r#"{"clientid":"berth","clientsecret":"berth-test-secret"}"#,
        )
        .unwrap();
        let field = format!(r#""credentialsFile":{:?}"#, path.display().to_string());
        written = Some(path);
        field
    };
    let server = Server::start_with(&format!(
        r#","http":{{"address":"127.0.0.1","port":"{port}","realm":"berth-test","externalUrl":"http://127.0.0.1:{port}",
        "auth":{{"apikey":true{keys},"openid":{{"providers":{{"oidc":{{"name":"Example SSO","issuer":{issuer:?},
          {credentials},"scopes":["openid","profile","email","groups"],
          "claimMapping":{{"username":"preferred_username","groups":"groups"}}}}}}}}}},
        "accessControl":{{"repositories":{{"**":{{"anonymousPolicy":["read"],
            "policies":[{{"groups":["artifact-workloads"],"actions":["read","create"]}}]}}}},
          "adminPolicy":{{"groups":["admins"],"actions":["read","create","update","delete"]}}}}}}"#,
        issuer = idp.issuer
    ));
    if let Some(path) = written {
        std::fs::remove_file(path).unwrap();
    }
    server
}

/// A cookie jar and manual redirects: what a browser does, step by step.
struct Agent {
    client: reqwest::Client,
    jar: HashMap<String, String>,
}

impl Agent {
    fn new() -> Agent {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Agent {
            client,
            jar: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Mints an API key with this browser session (a JSON body); returns it.
    async fn mint_key(&self, base: &str, body: &str) -> String {
        let r = self
            .client
            .post(format!("{base}/zot/auth/apikey"))
            .header("cookie", self.cookie_header())
            .header("x-berth-request", "1")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        expect_status(r, StatusCode::CREATED)
            .await
            .json_body()
            .await["apiKey"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn send(
        &mut self,
        method: Method,
        url: &str,
        form: Option<&[(&str, &str)]>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut r = self
            .client
            .request(method, url)
            .header("cookie", self.cookie_header());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        if let Some(form) = form {
            let body: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            r = r
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let resp = r.send().await.unwrap();
        for v in resp.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || text.to_ascii_lowercase().contains("max-age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        resp
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        self.send(Method::GET, url, None, &[]).await
    }

    /// Follows redirects from `url`; returns the last response and its URL.
    async fn follow(&mut self, url: &str) -> (reqwest::Response, String) {
        let mut url = url.to_owned();
        for _ in 0..10 {
            let r = self.send(Method::GET, &url, None, &[]).await;
            if !r.status().is_redirection() {
                return (r, url);
            }
            url = absolute(&url, &location(&r));
        }
        panic!("redirect loop at {url}");
    }

    /// The whole login: Berth, the provider's form, back to Berth.
    async fn login(
        &mut self,
        berth: &str,
        callback_ui: &str,
        user: &str,
        password: &str,
    ) -> reqwest::Response {
        let start = format!("{berth}/zot/auth/login?provider=oidc&callback_ui={callback_ui}");
        let (form_page, form_url) = self.follow(&start).await;
        assert_eq!(
            form_page.status(),
            StatusCode::OK,
            "{}",
            form_page.text().await.unwrap()
        );
        let action = absolute(
            &form_url,
            &format!(
                "{}/login",
                form_url.split('?').next().unwrap().trim_end_matches('/')
            ),
        );
        let mut r = self
            .send(
                Method::POST,
                &action,
                Some(&[("login", user), ("password", password)]),
                &[],
            )
            .await;
        let mut url = action;
        // Provider hops, then Berth's callback, which answers with its redirect.
        for _ in 0..10 {
            assert!(
                r.status().is_redirection(),
                "{}: {}",
                r.status(),
                r.text().await.unwrap()
            );
            let next = absolute(&url, &location(&r));
            if next.starts_with(&format!("{berth}/zot/auth/callback/")) {
                return self.send(Method::GET, &next, None, &[]).await;
            }
            url = next;
            r = self.send(Method::GET, &url, None, &[]).await;
        }
        panic!("never came back to Berth");
    }
}

fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_owned();
    }
    let origin: String = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    format!("{origin}{loc}")
}

#[tokio::test]
async fn login_sessions_keys_and_logout() {
    let port = free_port();
    let idp = Idp::start(&format!("http://127.0.0.1:{port}/zot/auth/callback/oidc"));
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_file = keys_dir.path().join("session-keys.json");
    std::fs::write(&keys_file, r#"{"hashKey":"0123456789abcdef0123456789abcdef0123456789abcdef","encryptKey":"0123456789abcdef0123456789abcdef"}"#).unwrap();
    let mut s = berth(port, &idp, Some(&keys_file));
    let base = s.base.clone();

    let page = reqwest::get(format!("{base}/")).await.unwrap();
    let csp = header(&page, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("Log in with Example SSO"));

    let mut a = Agent::new();
    let r = a.login(&base, "/", "alice", "alice-pw").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), "/");
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("berth_session="))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(
        !a.jar["berth_session"].contains("alice"),
        "the cookie value is encrypted"
    );

    let home = a
        .get(&format!("{base}/ui/account"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        home.contains("Signed in as <b>alice</b>") && home.contains("artifact-workloads"),
        "{home}"
    );

    // A cookie alone does not authorize a state change (CSRF).
    let r = a
        .send(
            Method::POST,
            &format!("{base}/zot/auth/apikey"),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let key = a.mint_key(&base, r#"{"label":"from-the-browser"}"#).await;

    // The key acts with alice's groups from the provider: create, not update.
    s.login(Some(&format!("alice:{key}")));
    let (manifest, _) = s.push_image("team/app", "1.0", 4, 1).await;
    let r = s
        .put_manifest("team/app", "1.0", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    s.login(None);

    // Sessions survive a restart when the keys come from sessionKeysFile.
    s.restart();
    a.client = Agent::new().client; // the old connections died with the process
    let home = a.get(&format!("{base}/")).await.text().await.unwrap();
    assert!(home.contains("Signed in as <b>alice</b>"), "{home}");

    // A tampered cookie is no session, and no error.
    let mut forged = Agent::new();
    let mut value = a.jar["berth_session"].clone();
    value.replace_range(10..12, if &value[10..12] == "AA" { "BB" } else { "AA" });
    forged.jar.insert("berth_session".into(), value);
    let r = forged.get(&format!("{base}/zot/auth/apikey")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Logout is a state change: a cookie alone (a page of another origin
    // posting a form) does not end the session.
    let r = a
        .send(Method::POST, &format!("{base}/zot/auth/logout"), None, &[])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let home = a.get(&format!("{base}/")).await.text().await.unwrap();
    assert!(home.contains("Signed in as <b>alice</b>"), "{home}");

    // Logout ends the session on the server: the old cookie is dead too.
    let old = a.jar["berth_session"].clone();
    let r = a
        .send(
            Method::POST,
            &format!("{base}/zot/auth/logout"),
            None,
            &[("x-berth-request", "1")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut replay = Agent::new();
    replay.jar.insert("berth_session".into(), old);
    let home = replay.get(&format!("{base}/")).await.text().await.unwrap();
    assert!(home.contains("Log in with"), "{home}");
    drop(idp);
}

/// With zot's default mapping the user name is the email, and only one the
/// provider verified counts: mallory, whose unverified address is alice's,
/// does not log in as alice.
#[tokio::test]
async fn only_a_verified_email_names_a_user() {
    let port = free_port();
    let idp = Idp::start(&format!("http://127.0.0.1:{port}/zot/auth/callback/oidc"));
    let s = Server::start_with(&format!(
        r#","http":{{"address":"127.0.0.1","port":"{port}","realm":"berth-test","externalUrl":"http://127.0.0.1:{port}",
        "auth":{{"apikey":true,"openid":{{"providers":{{"oidc":{{"name":"Example SSO","issuer":{issuer:?},
          "clientid":"berth","clientsecret":"berth-test-secret","scopes":["openid","email","groups"]}}}}}}}},
        "accessControl":{{"repositories":{{"**":{{"anonymousPolicy":["read"]}}}}}}}}"#,
        issuer = idp.issuer
    ));
    let base = s.base.clone();
    let mut a = Agent::new();
    a.login(&base, "/", "alice", "alice-pw").await;
    let home = a.get(&format!("{base}/")).await.text().await.unwrap();
    assert!(
        home.contains("Signed in as <b>alice@example.test</b>"),
        "{home}"
    );

    let mut m = Agent::new();
    m.login(&base, "/", "mallory", "mallory-pw").await;
    let home = m.get(&format!("{base}/")).await.text().await.unwrap();
    assert!(!home.contains("Signed in as"), "{home}");
    assert!(home.contains("Log in with"), "{home}");
    drop(idp);
}

/// A reload applies a new sessionKeysFile at once: an operator rotating a
/// leaked key ends every session sealed with the old one.
#[tokio::test]
async fn a_reload_applies_new_session_keys() {
    let port = free_port();
    let idp = Idp::start(&format!("http://127.0.0.1:{port}/zot/auth/callback/oidc"));
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_file = keys_dir.path().join("session-keys.json");
    let keys = |k: &str| {
        format!(
            r#"{{"hashKey":"{}","encryptKey":"0123456789abcdef0123456789abcdef"}}"#,
            k.repeat(48)
        )
    };
    std::fs::write(&keys_file, keys("a")).unwrap();
    let s = berth(port, &idp, Some(&keys_file));
    let base = s.base.clone();
    let mut a = Agent::new();
    let r = a.login(&base, "/", "alice", "alice-pw").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let signed_in = |page: &str| page.contains("Signed in as <b>alice</b>");
    assert!(signed_in(
        &a.get(&format!("{base}/")).await.text().await.unwrap()
    ));

    std::fs::write(&keys_file, keys("b")).unwrap();
    s.hangup();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let home = a.get(&format!("{base}/")).await.text().await.unwrap();
        if !signed_in(&home) {
            assert!(home.contains("Log in with"), "{home}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old session key is still in force after the reload"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A provider taken out of the configuration takes its sessions along.
    let mut a = Agent::new();
    a.login(&base, "/", "alice", "alice-pw").await;
    assert!(signed_in(
        &a.get(&format!("{base}/")).await.text().await.unwrap()
    ));
    s.rewrite_config(&format!(
        r#","http":{{"address":"127.0.0.1","port":"{port}","realm":"berth-test","externalUrl":"http://127.0.0.1:{port}",
        "auth":{{"apikey":true,"sessionKeysFile":{keys:?},"openid":{{"providers":{{"another":{{"issuer":{issuer:?},
          "clientid":"berth","clientsecret":"berth-test-secret"}}}}}}}},
        "accessControl":{{"repositories":{{"**":{{"anonymousPolicy":["read"]}}}}}}}}"#,
        keys = keys_file.display().to_string(),
        issuer = idp.issuer
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while signed_in(&a.get(&format!("{base}/")).await.text().await.unwrap()) {
        assert!(
            std::time::Instant::now() < deadline,
            "a session of a provider no longer configured is still in force"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(idp);
}

#[tokio::test]
async fn login_refuses_forgery_and_open_redirects() {
    let port = free_port();
    let idp = Idp::start(&format!("http://127.0.0.1:{port}/zot/auth/callback/oidc"));
    let s = berth(port, &idp, None);
    let base = s.base.clone();

    // callback_ui pointing elsewhere lands on "/".
    let mut a = Agent::new();
    let r = a
        .login(&base, "https://evil.test/steal", "root", "root-pw")
        .await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(location(&r), "/");
    let r = Agent::new()
        .login(&base, "/ui/app.js", "root", "root-pw")
        .await;
    assert_eq!(location(&r), "/ui/app.js");

    // A callback with someone else's state, or none, is refused.
    let mut b = Agent::new();
    let r = b.get(&format!("{base}/zot/auth/login?provider=oidc")).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let r = b
        .get(&format!("{base}/zot/auth/callback/oidc?code=x&state=wrong"))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = Agent::new()
        .get(&format!("{base}/zot/auth/callback/oidc?code=x&state=y"))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = Agent::new()
        .get(&format!("{base}/zot/auth/login?provider=nope"))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A user in no group may log in and mint a key, but not push.
    let mut d = Agent::new();
    let r = d.login(&base, "/", "carol", "carol-pw").await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let key = d.mint_key(&base, "{}").await;
    let r = s
        .send(
            Method::POST,
            "/v2/team/app/blobs/uploads/",
            &[("authorization", &basic(&format!("carol:{key}")))],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A wrong password at the provider never reaches Berth.
    let mut c = Agent::new();
    let (_, form_url) = c
        .follow(&format!("{base}/zot/auth/login?provider=oidc"))
        .await;
    let r = c
        .send(
            Method::POST,
            &format!("{}/login", form_url.split('?').next().unwrap()),
            Some(&[("login", "root"), ("password", "nope")]),
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    drop(idp);
}

#[test]
fn a_person_logs_in_with_a_browser_and_mints_a_key() {
    let port = free_port();
    let idp = Idp::start(&format!("http://127.0.0.1:{port}/zot/auth/callback/oidc"));
    let s = berth(port, &idp, None);
    let shots = tempfile::tempdir().unwrap();
    let shot = shots.path().join("berth-keys.png");
    let out = Command::new("timeout")
        .args(["120", "node", "browser.mjs"])
        .arg(&s.base)
        .args(["root", "root-pw", "laptop"])
        .arg(&shot)
        .current_dir(fixtures())
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim().lines().last().unwrap()).unwrap();
    assert!(v["who"].as_str().unwrap().contains("root"), "{v}");
    assert!(v["key"].as_str().unwrap().starts_with("zak_"), "{v}");
    assert!(v["rows"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["after_logout"], true);
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    if let Ok(dir) = std::env::var("BERTH_SCREENSHOTS") {
        let _ = std::fs::copy(&shot, PathBuf::from(dir).join("berth-keys.png"));
    }
    // The key minted in the browser is an admin's: it may overwrite.
    let rt = tokio::runtime::Runtime::new().unwrap();
    s.login(Some(&format!("root:{}", v["key"].as_str().unwrap())));
    let (manifest, _) = rt.block_on(s.push_image("admin/app", "1", 5, 1));
    assert_eq!(
        rt.block_on(s.put_manifest("admin/app", "1", OCI_MANIFEST, &manifest))
            .status(),
        StatusCode::CREATED
    );
    drop(idp);
}

/// Berth for the web interface tests: the seed policy, a `private/**`
/// corner that the group `artifact-workloads` (alice) may read and delete
/// in, and an htpasswd admin who pushes the content.
fn berth_ui(port: u16, idp: &Idp, htpasswd: &std::path::Path) -> Server {
    Server::start_with(&format!(
        r#","http":{{"address":"127.0.0.1","port":"{port}","realm":"berth-test","externalUrl":"http://127.0.0.1:{port}",
        "auth":{{"apikey":true,"htpasswd":{{"path":{ht:?}}},"openid":{{"providers":{{"oidc":{{"name":"Example SSO","issuer":{issuer:?},
          "clientid":"berth","clientsecret":"berth-test-secret","scopes":["openid","profile","email","groups"],
          "claimMapping":{{"username":"preferred_username","groups":"groups"}}}}}}}}}},
        "accessControl":{{"groups":{{"admins":{{"users":["admin"]}}}},
          "repositories":{{"**":{{"anonymousPolicy":["read"],"defaultPolicy":["read"]}},
            "private/**":{{"policies":[{{"groups":["artifact-workloads"],"actions":["read","delete"]}}]}}}},
          "adminPolicy":{{"groups":["admins"],"actions":["read","create","update","delete"]}}}}}}"#,
        ht = htpasswd.display().to_string(),
        issuer = idp.issuer
    ))
}

/// The web interface in a real Chromium, with axe-core on every page and
/// screenshots of every page in both themes (under the target directory's
/// `tmp/ui-screenshots`, or `BERTH_SCREENSHOTS`).
#[test]
fn a_person_browses_searches_compares_and_deletes_in_the_web_interface() {
    let port = free_port();
    let idp = Idp::start(&format!("http://127.0.0.1:{port}/zot/auth/callback/oidc"));
    let dir = tempfile::tempdir().unwrap();
    let ht = dir.path().join("htpasswd");
    write_htpasswd(&ht, &[("admin", "admin-pw")]);
    let s = berth_ui(port, &idp, &ht);
    let rt = tokio::runtime::Runtime::new().unwrap();
    s.login(Some("admin:admin-pw"));
    rt.block_on(async {
        let base = bytes(7, 30_000);
        let config = |v: &str, user: &str| {
            format!(
                r#"{{"architecture":"amd64","os":"linux","created":"2026-11-0{v}T10:00:00Z",
                "config":{{"Entrypoint":["/usr/bin/web"],"Cmd":["--port","8080"],"User":"{user}","WorkingDir":"/srv",
                  "ExposedPorts":{{"8080/tcp":{{}}}},"Env":["PATH=/usr/bin","VERSION=1.{v}"],
                  "Labels":{{"org.opencontainers.image.source":"https://example.test/web","hostile":"<script>alert(1)</script>"}}}},
                "history":[{{"created_by":"ADD base.tar /"}},{{"created_by":"COPY web /usr/bin/web"}},{{"created_by":"ENTRYPOINT [\"/usr/bin/web\"]","empty_layer":true}}]}}"#
            )
            .into_bytes()
        };
        s.push_image_of("public/web", "1.0", &config("1", "root"), &[base.clone(), bytes(8, 12_000)])
            .await;
        s.push_image_of("public/web", "1.1", &config("2", "web"), &[base.clone(), bytes(9, 15_000)])
            .await;
        s.push_image("public/tools", "latest", 3, 2).await;
        s.push_image("private/secret", "old", 4, 1).await;
        s.push_image("private/secret", "keep", 5, 1).await;
    });
    s.login(None);
    let shots = std::env::var("BERTH_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("timeout")
        .args(["240", "node", "ui.mjs"])
        .arg(&s.base)
        .args(["alice", "alice-pw"])
        .arg(&shots)
        .current_dir(fixtures())
        .output()
        .expect("node");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim().lines().last().unwrap()).unwrap();
    assert!(v["error"].is_null(), "{v:#}");
    assert!(v["script_errors"].is_null(), "{v:#}");
    assert_eq!(v["violations"], serde_json::json!([]), "axe: {v:#}");
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap_or_else(|| panic!("{k}: {v:#}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(list("anonymous_repos"), ["public/tools", "public/web"]);
    assert_eq!(list("search_web"), ["public/web"]);
    assert!(
        v["search_url"]
            .as_str()
            .unwrap()
            .ends_with("/?q=web&sort=name"),
        "{v}"
    );
    assert!(v["search_none"]
        .as_str()
        .unwrap()
        .starts_with("No repositories"));
    assert_eq!(list("filtered_tags"), ["1.1"]);
    assert_eq!(v["copied"], v["pull_docker"]);
    assert_eq!(
        v["pull_docker"],
        format!("docker pull 127.0.0.1:{port}/public/web:1.1")
    );
    assert_eq!(list("compare_changes"), ["shared", "removed", "added"]);
    assert!(
        v["compare_delta"].as_str().unwrap().contains("+3.0 kB"),
        "{v}"
    );
    assert_eq!(v["image_has_history"], true);
    assert_eq!(v["private_anonymous_status"], 404);
    assert_eq!(v["first_tab"], "Skip to content");
    assert_eq!(v["after_skip"], "main");
    assert_eq!(list("nojs_search"), ["public/web"]);
    assert_eq!(v["nojs_image"], true);
    assert_eq!(v["nojs_copy_hidden"], true);
    assert!(v["who"].as_str().unwrap().contains("alice"));
    assert_eq!(
        list("member_repos"),
        ["private/secret", "public/tools", "public/web"]
    );
    assert!(v["confirm_text"].as_str().unwrap().contains("old"));
    assert_eq!(list("tags_after_cancel"), ["keep", "old"]);
    assert_eq!(list("tags_after_delete"), ["keep"]);
    assert_eq!(v["manifest_delete_error"], "", "{v}");
    assert!(
        ["/", "/ui/r/private/secret"].contains(&v["after_manifest_delete"].as_str().unwrap()),
        "{v}"
    );
    assert!(v["key"].as_str().unwrap().starts_with("zak_"));
    assert_eq!(v["keys_after_revoke"], 0);
    assert_eq!(list("after_logout_repos"), ["public/tools", "public/web"]);
    // Every page in both themes.
    let taken = v["shots"].as_array().unwrap();
    assert_eq!(taken.len(), 18, "{v}");
    for f in taken {
        assert!(std::fs::metadata(f.as_str().unwrap()).unwrap().len() > 1000);
    }
    // The deletes went through the API: the tags are gone for everyone.
    s.login(Some("admin:admin-pw"));
    for tag in ["old", "keep"] {
        let r = rt.block_on(s.get(&format!("/v2/private/secret/manifests/{tag}")));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    drop(idp);
}
