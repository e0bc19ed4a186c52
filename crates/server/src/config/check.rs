//! The checks start-up makes on the files and directories a configuration
//! names, run by `berth verify` and by `berth serve` before anything
//! starts, so that `verify` accepts exactly what `serve` accepts.
//!
//! Each error names its key and the path at fault. Nothing is created or
//! changed, except a probe file that is removed at once, to learn whether
//! a directory is writable.

use super::{build_sync, ConfigError, Settings};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Checks everything start-up reads or opens. `Ok` carries warnings:
/// things that work but that the operator should hear of (htpasswd lines
/// that cannot log in, not-active keys are listed separately).
pub fn check(s: &Settings) -> Result<Vec<String>, ConfigError> {
    let origin = s
        .config_path
        .as_ref()
        .map_or("embedded default".into(), |p| p.display().to_string());
    let err = |key: &str, message: String| ConfigError::Key {
        path: origin.clone(),
        key: key.to_owned(),
        message,
    };
    let mut warnings = Vec::new();
    if let Some(out) = &s.log_output {
        writable_file(out).map_err(|m| err("log.output", m))?;
    }
    if let Some(audit) = &s.audit_path {
        writable_file(audit).map_err(|m| err("log.audit", m))?;
    }
    storage_root(&s.root_directory).map_err(|m| err("storage.rootDirectory", m))?;
    if let Some(tls) = &s.tls {
        pem_certs(&tls.cert).map_err(|m| err("http.tls.cert", m))?;
        pem_key(&tls.key).map_err(|m| err("http.tls.key", m))?;
        if let Some(ca) = &tls.client_ca {
            pem_certs(ca).map_err(|m| err("http.tls.cacert", m))?;
        }
    }
    if let Some(a) = &s.auth {
        if let Some(h) = &a.htpasswd {
            let path = h.path.as_deref().unwrap_or("");
            if path.is_empty() {
                return Err(err(
                    "http.auth.htpasswd.path",
                    "is required (the htpasswd section names no file)".into(),
                ));
            }
            let (users, unusable) = berth_auth::htpasswd::check_file(Path::new(path))
                .map_err(|e| err("http.auth.htpasswd.path", format!("{path}: {e}")))?;
            for u in unusable {
                warnings.push(format!(
                    "http.auth.htpasswd.path {path} line {}: {}; the line is ignored",
                    u.line, u.reason
                ));
            }
            if users == 0 {
                warnings.push(format!(
                    "http.auth.htpasswd.path {path}: no usable entries; nobody can log in with a password"
                ));
            }
        }
        if let Some(openid) = &a.openid {
            crate::session::cookie_key(a.session_keys_file.as_deref())
                .map_err(|m| err("http.auth.sessionKeysFile", m))?;
            let base = s.external_url.as_deref().unwrap_or("http://127.0.0.1");
            crate::oidc::Oidc::new(openid, base).map_err(|m| err("http.auth.openid", m))?;
        }
    }
    build_sync(s)?;
    Ok(warnings)
}

/// A file that start-up opens for appending (creating it, not its
/// directory).
fn writable_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err("the path is empty".into());
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(format!("{shown}: is a directory")),
        Ok(_) => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("{shown}: {e}")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let dir = parent(path);
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => probe(&dir).map_err(|e| format!("{shown}: {e}")),
                Ok(_) => Err(format!("{shown}: {} is not a directory", dir.display())),
                Err(e) => Err(format!("{shown}: {}: {e}", dir.display())),
            }
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

/// The storage root: a writable directory, or one that can be made (its
/// nearest existing ancestor is a writable directory).
fn storage_root(root: &Path) -> Result<(), String> {
    let shown = root.display();
    let mut dir = root.to_path_buf();
    loop {
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {
                return probe(&dir).map_err(|e| format!("{shown}: {e}"));
            }
            Ok(_) if dir == root => return Err(format!("{shown}: is not a directory")),
            Ok(_) => return Err(format!("{shown}: {} is not a directory", dir.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let up = parent(&dir);
                if up == dir {
                    return Err(format!("{shown}: {e}"));
                }
                dir = up;
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        Some(_) => PathBuf::from("."),
        None => path.to_path_buf(),
    }
}

/// Whether a file can be made in `dir` (made and removed at once).
fn probe(dir: &Path) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let path = dir.join(format!(".berth-check-{}-{nanos}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)
}

fn pem_certs(path: &Path) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{shown}: no PEM certificate in it"));
    }
    Ok(())
}

fn pem_key(path: &Path) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    PrivateKeyDer::from_pem_file(path)
        .map(drop)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(writable_file(&file).is_ok());
        assert!(writable_file(&dir.path().join("new.log")).is_ok());
        assert!(
            !dir.path().join("new.log").exists(),
            "a check creates nothing"
        );
        assert!(writable_file(&file.join("under-a-file.log")).is_err());
        assert!(writable_file(&dir.path().join("no/such/dir.log")).is_err());
        assert!(writable_file(dir.path()).is_err());
        assert!(storage_root(dir.path()).is_ok());
        assert!(storage_root(&dir.path().join("a/b/c")).is_ok());
        assert!(!dir.path().join("a").exists());
        assert!(storage_root(&file)
            .unwrap_err()
            .contains("is not a directory"));
        assert!(storage_root(&file.join("x")).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
