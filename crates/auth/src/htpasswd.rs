//! An htpasswd file: bcrypt (`$2a$`, `$2b$`, `$2y$`) and SHA-crypt (`$5$`,
//! `$6$`) entries, as zot accepts them.
//!
//! The file is re-read when it changes (checked at most once a second, on
//! use). A successful verification is remembered for a short time, keyed by
//! a hash of user, password and stored hash, so an authenticated pull does
//! not pay bcrypt on every request; a changed password or file can never hit
//! a stale entry because the stored hash is part of the key.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How long a successful check is remembered.
const CACHE_TTL: Duration = Duration::from_secs(120);
/// Most remembered successes before the cache is cleared.
const CACHE_MAX: usize = 10_000;
/// How often the file's metadata is looked at.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Loaded {
    users: HashMap<String, String>,
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
}

/// A watched htpasswd file.
pub struct Htpasswd {
    path: PathBuf,
    loaded: RwLock<Loaded>,
    cache: Mutex<HashMap<[u8; 32], Instant>>,
}

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified()?, m.len()))
}

/// Parses `user:hash` lines; blank lines and `#` comments are skipped, and
/// a later line for the same user wins.
pub fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(u, h)| (u.to_owned(), h.trim().to_owned()))
        .collect()
}

/// Checks a password against one stored hash.
pub fn verify_hash(password: &str, hash: &str) -> bool {
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        bcrypt::verify(password, hash).unwrap_or(false)
    } else if hash.starts_with("$6$") {
        sha_crypt_matches(password, hash, true)
    } else if hash.starts_with("$5$") {
        sha_crypt_matches(password, hash, false)
    } else {
        false
    }
}

/// A SHA-crypt entry, `$5$[rounds=N$]salt$hash` (or `$6$`): the hash is
/// computed from the password and compared as text in constant time. (The
/// crate's own `sha256_check` decodes the stored hash with an `unwrap` and
/// panics on a malformed `$5$` line.)
fn sha_crypt_matches(password: &str, hash: &str, sha512: bool) -> bool {
    use subtle::ConstantTimeEq;
    let mut parts = hash.split('$').skip(2);
    let Some(mut salt) = parts.next() else {
        return false;
    };
    let mut rounds = 5000; // the scheme's default
    if let Some(r) = salt.strip_prefix("rounds=") {
        let (Ok(r), Some(next)) = (r.parse(), parts.next()) else {
            return false;
        };
        (rounds, salt) = (r, next);
    }
    let (Some(stored), None) = (parts.next(), parts.next()) else {
        return false;
    };
    let (pw, salt) = (password.as_bytes(), salt.as_bytes());
    let computed = if sha512 {
        sha_crypt::Sha512Params::new(rounds)
            .ok()
            .and_then(|p| sha_crypt::sha512_crypt_b64(pw, salt, &p).ok())
    } else {
        sha_crypt::Sha256Params::new(rounds)
            .ok()
            .and_then(|p| sha_crypt::sha256_crypt_b64(pw, salt, &p).ok())
    };
    computed.is_some_and(|c| c.as_bytes().ct_eq(stored.as_bytes()).into())
}

/// A bcrypt hash of a random password, checked against for unknown users so
/// that their answer takes as long as a known user's.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut pw = [0u8; 16];
        let _ = getrandom::fill(&mut pw);
        bcrypt::hash(hex::encode(pw), bcrypt::DEFAULT_COST).unwrap_or_default()
    })
}

impl Htpasswd {
    /// Loads the file; a missing or unreadable file is an error.
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Htpasswd> {
        let path = path.into();
        let text = std::fs::read_to_string(&path)?;
        let loaded = Loaded {
            users: parse(&text),
            stamp: stamp(&path).ok(),
            checked: Some(Instant::now()),
        };
        Ok(Htpasswd {
            path,
            loaded: RwLock::new(loaded),
            cache: Mutex::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn user_count(&self) -> usize {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .users
            .len()
    }

    fn reload_if_changed(&self) {
        let due = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .checked
            .is_none_or(|t| t.elapsed() >= RECHECK);
        if !due {
            return;
        }
        let mut l = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        l.checked = Some(Instant::now());
        let now = stamp(&self.path).ok();
        if now.is_none() || now == l.stamp {
            return; // unchanged, or briefly missing: keep what we have
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                l.users = parse(&text);
                l.stamp = now;
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
                tracing::info!(path = %self.path.display(), users = l.users.len(), "htpasswd reloaded");
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "htpasswd reload failed; keeping the old entries")
            }
        }
    }

    /// Whether the user exists (for choosing between credential kinds).
    pub fn has_user(&self, user: &str) -> bool {
        self.reload_if_changed();
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .users
            .contains_key(user)
    }

    /// The stored hash of a user, after picking up a changed file.
    fn stored_hash(&self, user: &str) -> Option<String> {
        self.reload_if_changed();
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .users
            .get(user)
            .cloned()
    }

    /// Checks a password. May take bcrypt's time: call it off the async
    /// threads unless [`Htpasswd::cached`] said yes.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.stored_hash(user) else {
            let _ = verify_hash(password, decoy());
            return false;
        };
        let key = cache_key(user, password, &hash);
        if self.fresh(&key) {
            return true;
        }
        let ok = verify_hash(password, &hash);
        if ok {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(key, Instant::now());
        }
        ok
    }

    /// A remembered success for these credentials, without hashing cost.
    pub fn cached(&self, user: &str, password: &str) -> bool {
        self.stored_hash(user)
            .is_some_and(|h| self.fresh(&cache_key(user, password, &h)))
    }

    fn fresh(&self, key: &[u8; 32]) -> bool {
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.get(key).is_some_and(|t| t.elapsed() < CACHE_TTL)
    }
}

fn cache_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [user, password, hash] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let bcrypt_hash = bcrypt::hash("s3cret", 4).unwrap();
        assert!(verify_hash("s3cret", &bcrypt_hash));
        assert!(!verify_hash("wrong", &bcrypt_hash));
        let y = bcrypt_hash.replacen("$2b$", "$2y$", 1);
        assert!(verify_hash("s3cret", &y));
        // Vectors produced by glibc's crypt(3).
        let sha512 = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
        assert!(verify_hash("Hello world!", sha512));
        let sha256 = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
        assert!(verify_hash("Hello world!", sha256));
        assert!(!verify_hash("Hello world", sha256));
        for unsupported in [
            "$apr1$abc$def",
            "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
            "plain",
        ] {
            assert!(!verify_hash("x", unsupported));
        }
        assert!(!verify_hash("x", "$2y$10$broken"));
    }

    /// Found by the property tests: sha-crypt 0.5.0 panicked on a `$5$`
    /// entry whose hash part is not its base64 (`$5$$s`).
    #[test]
    fn malformed_sha_crypt_entries_do_not_panic() {
        for bad in [
            "$5$$s",
            "$5$salt$!!!",
            "$5$salt$",
            "$5$salt",
            "$5$",
            "$5$rounds=$salt$hash",
            "$5$rounds=10$salt$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
            "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5$",
            "$6$$s",
            "$6$salt$!!!",
        ] {
            assert!(!verify_hash("Hello world!", bad), "{bad}");
        }
        // With rounds, as glibc writes them.
        let sha256 = "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA";
        assert!(verify_hash("Hello world!", sha256));
        let sha512 = "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.";
        assert!(verify_hash("Hello world!", sha512));
    }

    #[test]
    fn file_reload_and_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            format!(
                "# users\nalice:{}\n\nbob:nothash\n",
                bcrypt::hash("a", 4).unwrap()
            ),
        )
        .unwrap();
        let h = Htpasswd::open(&path).unwrap();
        assert_eq!(h.user_count(), 2);
        assert!(!h.cached("alice", "a"));
        assert!(h.verify("alice", "a"));
        assert!(h.cached("alice", "a"));
        assert!(!h.verify("alice", "b"));
        assert!(!h.verify("bob", "nothash"));
        assert!(!h.verify("carol", "x"));
        // A new password replaces the old one after the recheck interval.
        std::fs::write(
            &path,
            format!("alice:{}\n", bcrypt::hash("new-password", 4).unwrap()),
        )
        .unwrap();
        h.loaded.write().unwrap().checked = None;
        assert!(!h.verify("alice", "a"));
        assert!(h.verify("alice", "new-password"));
        assert!(Htpasswd::open(dir.path().join("missing")).is_err());
    }
}
