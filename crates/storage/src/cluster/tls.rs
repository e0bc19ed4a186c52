//! TLS to PostgreSQL: Berth's own reading of `sslmode` and `sslrootcert`
//! (see `ClusterBackend::pool`), and the rustls client configuration.

use crate::{Result, StorageError};
use std::sync::Arc;

/// Takes Berth's TLS settings out of a URL's query (tokio-postgres knows
/// neither `verify-*` nor `sslrootcert`): the URL to connect with, and
/// `Some(CA file, if named)` when every connection must be verified TLS.
pub(super) fn split(url: &str) -> Result<(String, Option<Option<std::path::PathBuf>>)> {
    let bad = |m: String| StorageError::Io(std::io::Error::other(m));
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut kept = Vec::new();
    let (mut mode, mut root) = (None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "sslmode" => mode = Some(v.into_owned()),
            "sslrootcert" => root = Some(std::path::PathBuf::from(&*v)),
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    let tls = match mode.as_deref() {
        Some("require" | "verify-ca" | "verify-full") => true,
        None | Some("prefer" | "disable" | "allow") => false,
        Some(other) => {
            return Err(bad(format!(
                "sslmode {other:?} is not a PostgreSQL sslmode"
            )))
        }
    };
    if !tls && root.is_some() {
        return Err(bad(
            "sslrootcert without sslmode=verify-full (or require): it would not be used".into(),
        ));
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.extend_pairs(&kept);
    // What tokio-postgres does with it: TLS or nothing.
    q.append_pair("sslmode", if tls { "require" } else { "disable" });
    Ok((format!("{base}?{}", q.finish()), tls.then_some(root)))
}

/// The client side of TLS to PostgreSQL: certificates verified against
/// the CAs of `roots` (PEM), or the system's.
pub(super) fn client(roots: Option<&std::path::Path>) -> Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let bad = |m: String| StorageError::Io(std::io::Error::other(m));
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Some(path) => {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| bad(format!("sslrootcert {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(bad(format!(
                    "sslrootcert {}: no certificate",
                    path.display()
                )));
            }
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| bad(format!("sslrootcert {}: {e}", path.display())))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?
        .with_root_certificates(store)
        .with_no_client_auth())
}
