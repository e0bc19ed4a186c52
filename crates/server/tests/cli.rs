//! The `berth` command line and listener options: verify, version, TLS,
//! client certificates, and the fail-closed answer to configured auth.

mod common;

use common::*;
use std::process::Command;

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn version_and_verify() {
    let out = berth().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));

    // The seed deployment's configuration is accepted; what is not active
    // yet is listed, not silently ignored.
    let out = berth()
        .arg("verify")
        .arg(examples().join("config-seed.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // The credentials file it names is not on this machine: a warning.
    assert!(
        text.contains("warning:") && text.contains("extensions.sync.credentialsfile"),
        "{text}"
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
    let sh = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=berth-test-ca");
    sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1");
    sh("printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext");
    sh("openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client");
    sh("printf 'extendedKeyUsage=clientAuth\\n' > client.ext && openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 -extfile client.ext");
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
    let s = Server::start_with(&tls);
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
    let s = Server::start_with(&mtls);
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
