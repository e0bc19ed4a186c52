//! The `berth` command line and listener options: verify, version, TLS,
//! client certificates, and the fail-closed answer to configured auth.

mod common;

use common::*;
use std::process::Command;

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

fn examples() -> std::path::PathBuf {
    crate_dir().join("../../examples")
}

#[test]
fn version_and_verify() {
    let out = berth().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    // The seed deployment's configuration names files that are not on this
    // machine: verify refuses it as serve would, naming the key.
    let out = berth()
        .arg("verify")
        .arg(examples().join("config-seed.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("log.audit") && err.contains("/var/log/berth/audit.log"),
        "{err}"
    );

    // With those files in place it is valid; what is not active yet is
    // listed, not silently ignored, and nothing in force is.
    let here = tempfile::tempdir().unwrap();
    let seed = seed_with_files(here.path());
    let out = berth().arg("verify").arg(&seed).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for active in [
        "http.auth",
        "http.accessControl",
        "storage.retention",
        "active in this build: extensions.sync",
    ] {
        assert!(!text.contains(active), "{active} reported inactive: {text}");
    }

    let dir = tempfile::tempdir().unwrap();
    for (body, key) in [
        (
            r#"{"storage":{"rootDirectory":"/x"},"http":{"port":"5000","tls":{"cert":"a","key":"b","extra":1}}}"#,
            "http.tls.extra",
        ),
        (
            r#"{"storage":{"rootDirectory":"/x"},"http":{"port":"99999"}}"#,
            "http.port",
        ),
        (
            r#"{"storage":{"rootDirectory":"/x","gcDelay":"3d"}}"#,
            "storage.gcdelay",
        ),
        (
            r#"{"storage":{"rootDirectory":"/x"},"extensions":{"sync":{"registries":[{"urls":["https://a"],"bogus":true}]}}}"#,
            "extensions.sync.registries[0].bogus",
        ),
        (
            r#"{"storage":{"rootDirectory":"/x"},"extensions":{"sync":{"registries":[{"urls":["https://a"],"onDemand":true,"content":[{"prefix":"x","tags":{"regex":"("}}]}]}}}"#,
            "extensions.sync.registries[0].content[0].tags",
        ),
        (
            r#"{"storage":{"rootDirectory":"/x"},"extensions":{"sync":{"registries":[{"urls":["ftp://a"],"onDemand":true}]}}}"#,
            "extensions.sync.registries[0].urls",
        ),
        (
            r#"{"storage":{"rootDirectory":"/x"},"extensions":{"sync":{"registries":[{"urls":["https://u:secret@a"],"onDemand":true}]}}}"#,
            "credentialsfile, not in the url",
        ),
        (
            r#"{"storage":{"rootDirectory":"/x","retention":{"policies":[{"repositories":["**"],"keepTags":[{"patterns":["[unclosed"]}]}]}}}"#,
            "storage.retention.policies[0].keeptags[0]",
        ),
        (r#"{"storage":{"rootDirectory":"/x"}"#, "syntax"),
    ] {
        let path = dir.path().join("bad.json");
        std::fs::write(&path, body).unwrap();
        let out = berth().arg("verify").arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(
            err.to_lowercase().contains(key),
            "{body}: expected {key} in {err}"
        );
    }
    let out = berth()
        .args(["verify", "/nonexistent/config.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The seed example with its files (htpasswd, sync credentials, audit
/// log, storage) moved under `dir` and present.
fn seed_with_files(dir: &std::path::Path) -> std::path::PathBuf {
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples().join("config-seed.json")).unwrap(),
    )
    .unwrap();
    let at = |f: &str| dir.join(f).display().to_string();
    std::fs::write(
        dir.join("htpasswd"),
        format!("alice:{}\n", bcrypt::hash("pw", 4).unwrap()),
    )
    .unwrap();
    std::fs::write(dir.join("creds.json"), "{}").unwrap();
    v["storage"]["rootDirectory"] = at("data").into();
    v["http"]["auth"]["htpasswd"]["path"] = at("htpasswd").into();
    v["log"]["audit"] = at("audit.log").into();
    v["extensions"]["sync"]["credentialsFile"] = at("creds.json").into();
    let path = dir.join("seed.json");
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

/// Runs `berth serve` on a configuration that must be refused before it
/// listens; returns its exit code and stderr.
fn serve_refuses(config: &std::path::Path) -> (Option<i32>, String) {
    let mut child = berth()
        .arg("serve")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "serve did not refuse {}: {}",
                config.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every configuration `serve` refuses, `verify` refuses too, and both
/// name the same key (and the path at fault).
#[test]
fn verify_and_serve_refuse_the_same_configs() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).display().to_string();
    let file = d("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    std::fs::write(
        d("htpasswd"),
        format!("alice:{}\n", bcrypt::hash("pw", 4).unwrap()),
    )
    .unwrap();
    let root = d("data");
    let base = |storage: &str, http: &str, rest: &str| {
        format!(
            r#"{{"storage":{{"rootDirectory":{storage:?}}},"http":{{"address":"127.0.0.1","port":"0"{http}}}{rest}}}"#
        )
    };
    let cases: Vec<(String, &str, String)> = vec![
        (
            base(
                &root,
                &format!(r#","auth":{{"htpasswd":{{"path":{:?}}}}}"#, d("missing")),
                "",
            ),
            "http.auth.htpasswd.path",
            d("missing"),
        ),
        (
            base(&root, r#","auth":{"htpasswd":{"path":""}}"#, ""),
            "http.auth.htpasswd.path",
            "required".into(),
        ),
        (
            base(&root, r#","auth":{"htpasswd":{}}"#, ""),
            "http.auth.htpasswd.path",
            "required".into(),
        ),
        (
            base(
                &root,
                &format!(
                    r#","tls":{{"cert":{:?},"key":{:?}}}"#,
                    d("no.crt"),
                    d("no.key")
                ),
                "",
            ),
            "http.tls.cert",
            d("no.crt"),
        ),
        (base(&file, "", ""), "storage.rootDirectory", file.clone()),
        (
            base(
                &root,
                "",
                &format!(r#","log":{{"output":{:?}}}"#, format!("{file}/berth.log")),
            ),
            "log.output",
            format!("{file}/berth.log"),
        ),
        (
            base(
                &root,
                "",
                &format!(r#","log":{{"audit":{:?}}}"#, format!("{file}/audit.log")),
            ),
            "log.audit",
            format!("{file}/audit.log"),
        ),
        (
            base(
                &root,
                r#","accessControl":{"repositories":{"**":{"defaultPolicy":["Read"]}}}"#,
                "",
            ),
            r#"http.accesscontrol.repositories["**"].defaultpolicy"#,
            "\"Read\"".into(),
        ),
        (
            base(&root, r#","ratelimit":{"rate":0}"#, ""),
            "http.ratelimit.rate",
            String::new(),
        ),
        (
            base(
                &root,
                r#","ratelimit":{"methods":[{"method":"","rate":1}]}"#,
                "",
            ),
            "http.ratelimit.methods[0].method",
            String::new(),
        ),
        (
            base(&root, r#","compat":["docker1"]"#, ""),
            "http.compat[0]",
            "docker1".into(),
        ),
        (
            base(
                &root,
                "",
                &format!(
                    r#","extensions":{{"sync":{{"credentialsFile":{:?},"registries":[{{"urls":["https://a.test"],"onDemand":true}}]}}}}"#,
                    d("no-creds.json")
                ),
            ),
            "extensions.sync.credentialsfile",
            d("no-creds.json"),
        ),
    ];
    for (i, (body, key, path)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad{i}.json"));
        std::fs::write(&config, body).unwrap();
        let out = berth().arg("verify").arg(&config).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "verify {body}: {err}");
        assert!(
            err.to_lowercase().contains(&key.to_lowercase()) && err.contains(path.as_str()),
            "verify {body}: expected {key} and {path} in {err}"
        );
        let (code, err) = serve_refuses(&config);
        assert_eq!(code, Some(2), "serve {body}: {err}");
        assert!(
            err.to_lowercase().contains(&key.to_lowercase()) && err.contains(path.as_str()),
            "serve {body}: expected {key} and {path} in {err}"
        );
    }
    assert!(!std::path::Path::new(&root).exists(), "nothing was created");
}

/// htpasswd lines that cannot log in are warned about by line number,
/// never with their hash.
#[test]
fn verify_warns_of_unusable_htpasswd_lines() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!(
            "alice:{}\nbob:$apr1$salt$hashvalue\ncarol:plain-secret\n",
            bcrypt::hash("pw", 4).unwrap()
        ),
    )
    .unwrap();
    let config = dir.path().join("c.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"storage":{{"rootDirectory":{:?}}},"http":{{"auth":{{"htpasswd":{{"path":{:?}}}}}}}}}"#,
            dir.path().join("data").display().to_string(),
            htpasswd.display().to_string()
        ),
    )
    .unwrap();
    let out = berth().arg("verify").arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let shown = htpasswd.display().to_string();
    for line in [2, 3] {
        assert!(
            text.contains(&format!(
                "warning: http.auth.htpasswd.path {shown} line {line}:"
            )),
            "line {line}: {text}"
        );
    }
    assert!(
        !text.contains("hashvalue") && !text.contains("plain-secret"),
        "{text}"
    );
}

/// Keys accepted but not acted on are named by verify and at start-up.
#[test]
fn not_active_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"storage":{{"rootDirectory":{:?}}},"http":{{"address":"127.0.0.1","port":"0","compat":["docker2s2"],
               "auth":{{"sessionHashKey":"k","mtls":{{"identityAttributes":["CN"]}}}}}},"scheduler":{{"numWorkers":3}}}}"#,
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let out = berth().arg("verify").arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for key in ["http.auth.sessionHashKey", "http.auth.mtls", "scheduler"] {
        assert!(
            text.contains(&format!("not active in this build: {key} (")),
            "{key} not named: {text}"
        );
    }
    assert!(!text.contains("compat"), "{text}");

    let s = Server::start_with(
        r#","http":{"address":"127.0.0.1","port":"0","auth":{"sessionHashKey":"k"}},"scheduler":{"numWorkers":3}"#,
    );
    let log = s.log();
    for key in ["http.auth.sessionHashKey", "scheduler"] {
        assert!(
            log.lines()
                .any(|l| l.contains("not active") && l.contains(key)),
            "{key}: {log}"
        );
    }
}

#[tokio::test]
async fn unsupported_auth_methods_fail_closed() {
    let s = Server::start_with(
        r#","extensions":{"metrics":{}},"http":{"address":"127.0.0.1","port":"0","realm":"test","auth":{"ldap":{"address":"ldap.example.test","baseDN":"dc=x"}}}"#,
    );
    for path in ["/v2/", "/v2/_catalog", "/v2/a/manifests/latest"] {
        let r = s.get(path).await;
        assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(header(&r, "www-authenticate"), "Basic realm=\"test\"");
        assert_eq!(error_code(r).await, "UNAUTHORIZED");
    }
    assert!(s.log().contains("not active"), "{}", s.log());
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certs(dir: &std::path::Path) {
    berth_storage::pg_harness::make_certs(dir, true);
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("curl");
    let text = format!(
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_owned())
}

#[test]
fn tls_and_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let p = |f: &str| certs.path().join(f).display().to_string();
    let tls = format!(
        r#","http":{{"address":"127.0.0.1","port":"0","tls":{{"cert":"{}","key":"{}"}}}}"#,
        p("server.crt"),
        p("server.key")
    );
    // TLS is each process's own (not the test balancer's).
    let s = Server::start_one(&tls);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let url = format!("{}/v2/", s.base);
    let (ok, out) = curl(&["--cacert", &p("ca.crt"), &url]);
    assert!(ok && out == "200 2", "{out}");
    let (ok, out) = curl(&["--http1.1", "--cacert", &p("ca.crt"), &url]);
    assert!(ok && out == "200 1.1", "{out}");
    // Plain HTTP on the TLS port does not get a registry answer.
    let (_, out) = curl(&[&url.replace("https://", "http://")]);
    assert!(!out.starts_with("200"), "{out}");
    drop(s);

    // With a CA for clients, a certificate is required.
    let mtls = tls.replace(
        r#""key":"#,
        &format!(r#""cacert":"{}","key":"#, p("ca.crt")),
    );
    let s = Server::start_one(&mtls);
    let url = format!("{}/v2/", s.base);
    let (_, out) = curl(&["--cacert", &p("ca.crt"), &url]);
    assert!(!out.starts_with("200"), "{out}");
    let (ok, out) = curl(&[
        "--cacert",
        &p("ca.crt"),
        "--cert",
        &p("client.crt"),
        "--key",
        &p("client.key"),
        &url,
    ]);
    assert!(ok && out.starts_with("200"), "{out}");
}
