//! Browser sessions: a random id in a signed and encrypted cookie, the
//! session itself stored server-side under the id's hash (so logout really
//! ends it, and a stolen database reveals no usable id).
//!
//! The cookie key comes from `http.auth.sessionKeysFile` (zot's
//! `{"hashKey": ..., "encryptKey": ...}`, raw strings). Without it, zot
//! makes a random key at each start; Berth makes one once per store and
//! keeps it there (`auth/secret`), so sessions survive a restart and every
//! replica of a shared store reads every cookie.

use berth_core::accounts::RecordKind;
use berth_core::Registry;
use cookie::{Cookie, CookieJar, Key, SameSite};
use http::{header, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SESSION_COOKIE: &str = "berth_session";
pub const LOGIN_COOKIE: &str = "berth_login";
/// How long a login session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A signed-in browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub groups: Vec<String>,
    pub provider: String,
    /// Seconds since the Unix epoch.
    pub expires: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(alias = "hashKey", alias = "hashkey")]
    hash_key: String,
    #[serde(default, alias = "encryptKey", alias = "encryptkey")]
    encrypt_key: Option<String>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The cookie key derived from the keys file; `None` without one.
pub fn cookie_key(keys_file: Option<&str>) -> Result<Option<Key>, String> {
    let Some(path) = keys_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("http.auth.sessionKeysFile {path}: {e}"))?;
    let k: KeysFile = serde_json::from_str(&text)
        .map_err(|e| format!("http.auth.sessionKeysFile {path}: {e}"))?;
    if k.hash_key.len() < 32 {
        return Err(format!(
            "http.auth.sessionKeysFile {path}: hashKey must be at least 32 bytes"
        ));
    }
    let mut h = Sha512::new();
    h.update(b"berth-session-keys-v1\0");
    for part in [
        k.hash_key.as_bytes(),
        k.encrypt_key.as_deref().unwrap_or("").as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    Key::try_from(h.finalize().as_slice())
        .map(Some)
        .map_err(|e| format!("session key: {e}"))
}

/// The cookie key in force: the keys file's, else the store's own secret
/// (random, made once per store, shared by every replica on it).
pub async fn cookie_key_for(keys_file: Option<&str>, registry: &Registry) -> Result<Key, String> {
    if let Some(k) = cookie_key(keys_file)? {
        return Ok(k);
    }
    let fresh = bytes::Bytes::copy_from_slice(Key::generate().master());
    let secret = registry
        .store_secret(fresh)
        .await
        .map_err(|e| format!("the store's cookie key: {e}"))?;
    Key::try_from(&secret[..]).map_err(|e| format!("the store's cookie key: {e}"))
}

/// Reads the request's cookies (ours only; the IdP's share the host).
pub fn jar(headers: &HeaderMap) -> CookieJar {
    let mut jar = CookieJar::new();
    for v in headers.get_all(header::COOKIE) {
        let Ok(text) = v.to_str() else { continue };
        for c in Cookie::split_parse(text.to_owned()).flatten() {
            if c.name().starts_with("berth_") {
                jar.add_original(c.into_owned());
            }
        }
    }
    jar
}

/// A private (encrypted and authenticated) cookie's value.
pub fn private_value(headers: &HeaderMap, key: &Key, name: &str) -> Option<String> {
    jar(headers)
        .private(key)
        .get(name)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` value for a private cookie.
pub fn set_private(
    key: &Key,
    name: &'static str,
    value: String,
    path: &'static str,
    max_age: Duration,
    secure: bool,
) -> HeaderValue {
    let mut jar = CookieJar::new();
    jar.private_mut(key).add(
        Cookie::build((name, value))
            .path(path)
            .http_only(true)
            .secure(secure)
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::seconds(max_age.as_secs() as i64)),
    );
    let text = jar
        .delta()
        .next()
        .map(|c| c.to_string())
        .unwrap_or_default();
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that removes a cookie.
pub fn clear(name: &'static str, path: &'static str) -> HeaderValue {
    let c = Cookie::build((name, ""))
        .path(path)
        .http_only(true)
        .max_age(cookie::time::Duration::ZERO);
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// Session storage and cookies.
pub struct Sessions {
    pub key: Key,
    /// Mark cookies Secure (TLS, or `secureSession`).
    pub secure: bool,
    registry: Registry,
}

impl Sessions {
    pub fn new(key: Key, secure: bool, registry: Registry) -> Sessions {
        Sessions {
            key,
            secure,
            registry,
        }
    }

    /// Starts a session; returns the `Set-Cookie` value for it.
    pub async fn create(&self, session: &Session) -> Result<HeaderValue, berth_core::CoreError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)
            .map_err(|e| berth_core::CoreError::UploadInvalid(format!("no randomness: {e}")))?;
        let id = hex::encode(raw);
        let record = serde_json::to_vec(session)
            .map_err(|e| berth_core::CoreError::UploadInvalid(e.to_string()))?;
        self.registry
            .put_record(RecordKind::Session, &id_hash(&id), record.into())
            .await?;
        Ok(set_private(
            &self.key,
            SESSION_COOKIE,
            id,
            "/",
            SESSION_TTL,
            self.secure,
        ))
    }

    /// The live session a request's cookie names, if any. A forged,
    /// tampered, expired or ended session is simply none.
    pub async fn lookup(&self, headers: &HeaderMap) -> Option<Session> {
        let id = private_value(headers, &self.key, SESSION_COOKIE)?;
        let raw = self
            .registry
            .get_record(RecordKind::Session, &id_hash(&id))
            .await
            .ok()??;
        let s: Session = serde_json::from_slice(&raw).ok()?;
        (s.expires > now()).then_some(s)
    }

    /// Ends the request's session; returns the `Set-Cookie` that clears it.
    pub async fn end(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(id) = private_value(headers, &self.key, SESSION_COOKIE) {
            if let Err(e) = self
                .registry
                .delete_record(RecordKind::Session, &id_hash(&id))
                .await
            {
                tracing::warn!(error = %e, "could not delete a session record");
            }
        }
        clear(SESSION_COOKIE, "/")
    }
}
