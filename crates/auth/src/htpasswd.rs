//! An htpasswd file: bcrypt (`$2a$`, `$2b$`, `$2y$`) and SHA-crypt (`$5$`,
//! `$6$`) entries, as zot accepts them.
//!
//! Lines Berth cannot use (`$apr1$`, `{SHA}`, plain text, garbage) are
//! reported by line number (never with their hash) when the file is loaded.
//! Unknown users are checked against a decoy hash of the same scheme and
//! cost as most of the file's entries, so a wrong password takes as long
//! for a name that does not exist as for one that does.
//!
//! The file is re-read when it changes (checked at most once a second, on
//! use); a file that disappears is reported as an error and the entries
//! loaded last stay in force. A successful verification is remembered for a short time, keyed by
//! a hash of user, password and stored hash, so an authenticated pull does
//! not pay bcrypt on every request; a changed password or file can never hit
//! a stale entry because the stored hash is part of the key.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
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
    /// Checked for unknown users: a hash of the file's most common scheme
    /// and cost, made on first use (on the blocking path that checks
    /// passwords, not while the file is loaded).
    decoy: Arc<OnceLock<String>>,
    decoy_cost: Option<Cost>,
    stamp: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
    /// The file was found missing (reported once until it is back).
    missing: bool,
}

/// A line of the file that cannot be used to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// 1-based.
    pub line: usize,
    pub reason: &'static str,
}

/// What a stored hash is, for the decoy: the scheme and its work factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cost {
    Bcrypt(u32),
    Sha512(usize),
    Sha256(usize),
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
    parse_report(text).0
}

/// Like [`parse`], also listing the lines that cannot be used to log in.
/// Only usable entries are returned.
pub fn parse_report(text: &str) -> (HashMap<String, String>, Vec<Unusable>) {
    let mut users = HashMap::new();
    let mut unusable = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim_end_matches('\r');
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        let reason = match l.split_once(':') {
            None => Some("not a user:hash line"),
            Some(("", _)) => Some("empty user name"),
            Some((u, h)) => match cost_of(h.trim()) {
                Ok(_) => {
                    users.insert(u.to_owned(), h.trim().to_owned());
                    None
                }
                Err(reason) => Some(reason),
            },
        };
        if let Some(reason) = reason {
            unusable.push(Unusable {
                line: i + 1,
                reason,
            });
        }
    }
    (users, unusable)
}

/// The scheme and cost of a stored hash, or why it cannot be checked.
pub fn cost_of(hash: &str) -> Result<Cost, &'static str> {
    if hash.starts_with("$apr1$") {
        return Err("apr1 (MD5) hashes are not supported; use htpasswd -B");
    }
    if hash.starts_with("{SHA}") {
        return Err("{SHA} hashes are not supported; use htpasswd -B");
    }
    for prefix in ["$2a$", "$2b$", "$2y$"] {
        if let Some(rest) = hash.strip_prefix(prefix) {
            // $2y$NN$ + 53 characters of salt and hash.
            let cost = rest
                .get(..2)
                .and_then(|c| c.parse::<u32>().ok())
                .filter(|c| (4..=31).contains(c));
            return match cost {
                Some(c) if hash.len() == 60 && rest.as_bytes().get(2) == Some(&b'$') => {
                    Ok(Cost::Bcrypt(c))
                }
                _ => Err("malformed bcrypt hash"),
            };
        }
    }
    let sha = |rest: &str| -> Result<usize, &'static str> {
        let mut parts = rest.split('$');
        let first = parts.next().unwrap_or("");
        let rounds = match first.strip_prefix("rounds=") {
            Some(r) => r
                .parse::<usize>()
                .map_err(|_| "malformed SHA-crypt rounds")?
                .clamp(1_000, 999_999_999),
            None => 5_000,
        };
        let fields = if first.starts_with("rounds=") { 2 } else { 1 };
        if parts.count() != fields {
            return Err("malformed SHA-crypt hash");
        }
        Ok(rounds)
    };
    if let Some(rest) = hash.strip_prefix("$6$") {
        return sha(rest).map(Cost::Sha512);
    }
    if let Some(rest) = hash.strip_prefix("$5$") {
        return sha(rest).map(Cost::Sha256);
    }
    if hash.starts_with('$') {
        Err("unsupported hash scheme")
    } else {
        Err("not a hash (plain text passwords are not supported)")
    }
}

/// The most common scheme and cost among the entries (on a tie, the
/// dearest); bcrypt at `htpasswd -B`'s cost when there is none.
pub fn common_cost(users: &HashMap<String, String>) -> Cost {
    let mut counts: HashMap<Cost, usize> = HashMap::new();
    for h in users.values() {
        if let Ok(c) = cost_of(h) {
            *counts.entry(c).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
        .map_or(Cost::Bcrypt(5), |(c, _)| c)
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

/// A hash of a random password with the given scheme and cost, checked
/// against for unknown users so that their answer takes as long as a known
/// user's.
pub fn decoy(cost: Cost) -> String {
    let mut pw = [0u8; 16];
    let _ = getrandom::fill(&mut pw);
    let pw = hex::encode(pw);
    let salt = &pw[..16];
    match cost {
        Cost::Bcrypt(c) => bcrypt::hash(&pw, c).unwrap_or_default(),
        Cost::Sha512(r) => sha_crypt::Sha512Params::new(r)
            .ok()
            .and_then(|p| sha_crypt::sha512_crypt_b64(pw.as_bytes(), salt.as_bytes(), &p).ok())
            .map(|h| format!("$6$rounds={r}${salt}${h}"))
            .unwrap_or_default(),
        Cost::Sha256(r) => sha_crypt::Sha256Params::new(r)
            .ok()
            .and_then(|p| sha_crypt::sha256_crypt_b64(pw.as_bytes(), salt.as_bytes(), &p).ok())
            .map(|h| format!("$5$rounds={r}${salt}${h}"))
            .unwrap_or_default(),
    }
}

/// Reads the file: its usable entries and the decoy for them, reporting
/// unusable lines.
fn load(path: &Path) -> std::io::Result<Loaded> {
    let text = std::fs::read_to_string(path)?;
    let (users, unusable) = parse_report(&text);
    for u in &unusable {
        tracing::warn!(path = %path.display(), line = u.line, reason = u.reason, "htpasswd line cannot be used; it is ignored");
    }
    Ok(Loaded {
        decoy: Arc::default(),
        decoy_cost: Some(common_cost(&users)),
        users,
        stamp: stamp(path).ok(),
        checked: Some(Instant::now()),
        missing: false,
    })
}

/// The lines of an htpasswd file that cannot be used (for `berth verify`).
pub fn check_file(path: &Path) -> std::io::Result<(usize, Vec<Unusable>)> {
    let text = std::fs::read_to_string(path)?;
    let (users, unusable) = parse_report(&text);
    Ok((users.len(), unusable))
}

impl Htpasswd {
    /// Loads the file; a missing or unreadable file is an error.
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Htpasswd> {
        let path = path.into();
        let loaded = load(&path)?;
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
        let (previous, was_missing) = {
            let mut l = self.loaded.write().unwrap_or_else(|p| p.into_inner());
            l.checked = Some(Instant::now());
            (l.stamp, l.missing)
        };
        let now = match stamp(&self.path) {
            Ok(s) => s,
            Err(e) => {
                let mut l = self.loaded.write().unwrap_or_else(|p| p.into_inner());
                if !l.missing {
                    l.missing = true;
                    tracing::error!(path = %self.path.display(), error = %e, users = l.users.len(), "htpasswd file cannot be read; the entries loaded last stay in force");
                }
                return;
            }
        };
        if Some(now) == previous && !was_missing {
            return;
        }
        match load(&self.path) {
            Ok(new) => {
                let users = new.users.len();
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = new;
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
                tracing::info!(path = %self.path.display(), users, "htpasswd reloaded");
            }
            Err(e) => {
                let mut l = self.loaded.write().unwrap_or_else(|p| p.into_inner());
                if !l.missing {
                    l.missing = true;
                    tracing::error!(path = %self.path.display(), error = %e, "htpasswd reload failed; the entries loaded last stay in force");
                }
            }
        }
    }

    /// The decoy for the entries in force, made once per load.
    fn decoy_hash(&self) -> String {
        let (cell, cost) = {
            let l = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            (l.decoy.clone(), l.decoy_cost.unwrap_or(Cost::Bcrypt(5)))
        };
        cell.get_or_init(|| decoy(cost)).clone()
    }

    /// Whether the file was missing or unreadable at the last look.
    pub fn missing(&self) -> bool {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .missing
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
            let _ = verify_hash(password, &self.decoy_hash());
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
        // bob's line is plain text: reported, not loaded.
        assert_eq!(h.user_count(), 1);
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

        // A deleted file is noticed (and logged as an error); the entries
        // loaded last stay in force.
        assert!(!h.missing());
        std::fs::remove_file(&path).unwrap();
        h.loaded.write().unwrap().checked = None;
        assert!(h.verify("alice", "new-password"));
        assert!(h.missing());
        std::fs::write(
            &path,
            format!("alice:{}\n", bcrypt::hash("back", 4).unwrap()),
        )
        .unwrap();
        h.loaded.write().unwrap().checked = None;
        assert!(h.verify("alice", "back"));
        assert!(!h.missing());
    }

    #[test]
    fn unusable_lines_are_numbered() {
        let good = bcrypt::hash("a", 4).unwrap();
        let text = format!(
            "# comment\nalice:{good}\nplain:secret\napr:$apr1$abc$def\nsha:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\nnocolon\nbroken:$2y$10$short\n\nsha5:$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5\n"
        );
        let (users, unusable) = parse_report(&text);
        assert_eq!(users.len(), 2, "{users:?}");
        assert!(users.contains_key("alice") && users.contains_key("sha5"));
        let lines: Vec<usize> = unusable.iter().map(|u| u.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7]);
        assert!(unusable[1].reason.contains("apr1"), "{unusable:?}");
        // No reason quotes the line's content.
        for u in &unusable {
            assert!(!u.reason.contains("secret") && !u.reason.contains("abc"));
        }
    }

    #[test]
    fn decoy_has_the_cost_of_the_file() {
        let users = |entries: &[String]| -> HashMap<String, String> {
            entries
                .iter()
                .enumerate()
                .map(|(i, h)| (format!("u{i}"), h.clone()))
                .collect()
        };
        // htpasswd -B writes cost 5: the decoy must not be dearer.
        let five = vec![bcrypt::hash("a", 5).unwrap(), bcrypt::hash("b", 5).unwrap()];
        assert_eq!(common_cost(&users(&five)), Cost::Bcrypt(5));
        let mut mixed = five.clone();
        mixed.push(bcrypt::hash("c", 6).unwrap());
        assert_eq!(common_cost(&users(&mixed)), Cost::Bcrypt(5));
        let d = decoy(Cost::Bcrypt(5));
        assert_eq!(cost_of(&d), Ok(Cost::Bcrypt(5)));
        assert!(!verify_hash("a", &d));
        // SHA-crypt files get a SHA-crypt decoy with their rounds.
        let sha = vec![
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1".to_owned(),
        ];
        assert_eq!(common_cost(&users(&sha)), Cost::Sha512(5000));
        let d = decoy(Cost::Sha512(5000));
        assert_eq!(cost_of(&d), Ok(Cost::Sha512(5000)));
        assert!(!verify_hash("Hello world!", &d));
        assert!(d.starts_with("$6$rounds=5000$"), "{d}");
        let d = decoy(Cost::Sha256(1000));
        assert_eq!(cost_of(&d), Ok(Cost::Sha256(1000)));
        // An empty file: htpasswd -B's cost.
        assert_eq!(common_cost(&HashMap::new()), Cost::Bcrypt(5));

        // The loaded file's decoy follows the file, and a reload recomputes it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("alice:{}\n", five[0])).unwrap();
        let h = Htpasswd::open(&path).unwrap();
        let decoy_cost = |h: &Htpasswd| cost_of(&h.decoy_hash());
        assert_eq!(decoy_cost(&h), Ok(Cost::Bcrypt(5)));
        std::fs::write(
            &path,
            format!(
                "alice:{}\nbob:{}\n",
                bcrypt::hash("x", 4).unwrap(),
                bcrypt::hash("y", 4).unwrap()
            ),
        )
        .unwrap();
        h.loaded.write().unwrap().checked = None;
        assert!(!h.verify("nobody", "x"));
        assert_eq!(decoy_cost(&h), Ok(Cost::Bcrypt(4)));
    }
}
