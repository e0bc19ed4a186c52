//! Where things live in the object store. No other module builds a key.
//!
//! ```text
//! blobs/<alg>/<hex[0..2]>/<hex>                  content, shared by all repositories
//! quarantine/<alg>/<hex>                         content scrub found corrupt (never served)
//! gc-trash/<pass>/<key with ~ for />             what a GC pass has hidden, pending its re-check
//! gc-trash/<pass>/h-<sha256 of key>[.key]        the same for a long key, and that key
//! gc-leases/<generation, 20 digits>              the collection lease's ladder (see lease)
//! gc-lease                                       an older Berth's single lease (honoured, removed when stale)
//! sync-claims/<alg>-<hex>-<name with ~ for />    a replica fetching a blob from upstream (see sync)
//! repositories/<name>/_layers/<alg>/<hex>        blob belongs to the repository (empty)
//! repositories/<name>/_manifests/<alg>/<hex>     manifest belongs to it (holds its media type)
//! repositories/<name>/_tags/<tag>                tag (holds the manifest digest)
//! repositories/<name>/_pulls                    when each manifest was last pulled (JSON)
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>
//!                                                referrer of a subject (holds its descriptor)
//! uploads/<id>                                   upload session (holds its repository)
//! auth/apikeys/<sha256-hex>                      an API key record (never the key)
//! auth/sessions/<sha256-hex>                     a login session (never its id)
//! auth/secret                                    the cookie key without a keys file (made once)
//! ```
//! Repository name components never start with `_`, so the `_` directories
//! cannot collide with nested repository names.

use berth_oci::{Algorithm, Digest, RepoName, Tag};

pub const REPOSITORIES: &str = "repositories";
pub const LAYERS: &str = "_layers";
pub const MANIFESTS: &str = "_manifests";
pub const TAGS: &str = "_tags";
pub const REFERRERS: &str = "_referrers";
pub const PULLS: &str = "_pulls";
pub const UPLOADS: &str = "uploads";
pub const API_KEYS: &str = "auth/apikeys";
pub const SESSIONS: &str = "auth/sessions";
pub const STORE_SECRET: &str = "auth/secret";

pub const BLOBS: &str = "blobs";
pub const QUARANTINE: &str = "quarantine";
pub const GC_TRASH: &str = "gc-trash";
/// The collection lease's generations (see `lease`).
pub const GC_LEASES: &str = "gc-leases";
/// The single collection lease object of Berth before the generations.
pub const LEGACY_GC_LEASE: &str = "gc-lease";
pub const SYNC_CLAIMS: &str = "sync-claims";

/// The name of the turn a manifest's push and delete take (not a key:
/// a name for `Backend::exclusive`).
pub fn manifest_turn(r: &RepoName, d: &Digest) -> String {
    format!("manifest {r}@{d}")
}

/// An entry of a listing, under the directory listed.
pub fn child(dir: &str, name: &str) -> String {
    format!("{dir}/{name}")
}

/// The directory of a repository's links of one kind (`_layers` or
/// `_manifests`) and algorithm.
pub fn links(r: &RepoName, kind: &str, alg: Algorithm) -> String {
    format!("{REPOSITORIES}/{r}/{kind}/{}", alg.as_str())
}

/// The directory of the content shards of one algorithm.
pub fn blob_shards(alg: Algorithm) -> String {
    format!("{BLOBS}/{}", alg.as_str())
}

/// Everything of a repository is under this prefix.
pub fn repo_prefix(r: &RepoName) -> String {
    format!("{REPOSITORIES}/{r}/")
}

/// The directory that may hold repositories named `parent/...` (`""` for
/// the top).
pub fn repositories_under(parent: &str) -> String {
    if parent.is_empty() {
        REPOSITORIES.to_owned()
    } else {
        format!("{REPOSITORIES}/{parent}")
    }
}

/// The repository a key under `repositories/` belongs to.
pub fn repo_of(key: &str) -> Option<RepoName> {
    let rest = key.strip_prefix(REPOSITORIES)?.strip_prefix('/')?;
    let end = rest.find("/_")?;
    RepoName::parse(&rest[..end])
}

/// Where a collection pass hides what it may delete.
pub fn gc_pass(id: &str) -> String {
    format!("{GC_TRASH}/{id}")
}

/// The longest hidden name spelled from its key; past it (a long
/// repository name: a file name has at most 255 bytes) the name is a hash
/// and the key is kept beside it (see [`hidden_key`]).
const HIDDEN_NAME_MAX: usize = 200;

/// Where a pass's `trash` holds a hidden object: its original key with `/`
/// spelled `~` (no key component may contain `~`), so an interrupted pass
/// can be undone; for a long key, `h-<sha256 of the key>`, whose key is
/// at [`hidden_key`].
pub fn hidden(trash: &str, original: &str) -> String {
    let name = original.replace('/', "~");
    if name.len() <= HIDDEN_NAME_MAX {
        format!("{trash}/{name}")
    } else {
        let hash = Digest::of(berth_oci::Algorithm::Sha256, original.as_bytes());
        format!("{trash}/h-{}", hash.hex())
    }
}

/// Where the original key of a hidden object named by hash is kept.
pub fn hidden_key(hidden: &str) -> String {
    format!("{hidden}.key")
}

/// The original key of a hidden object's name, inverse of [`hidden`];
/// `None` for a name by hash (its key is at [`hidden_key`]).
pub fn unhidden(name: &str) -> Option<String> {
    (!name.starts_with("h-")).then(|| name.replace('~', "/"))
}

/// The claim of the replica fetching `d` for `r` from upstream.
/// One flat directory: the repository's `/` are spelled `~` (no name
/// component holds one), so a claim leaves no directory behind.
pub fn sync_claim(r: &RepoName, d: &Digest) -> String {
    format!(
        "{SYNC_CLAIMS}/{}-{}-{}",
        d.algorithm().as_str(),
        d.hex(),
        r.as_str().replace('/', "~")
    )
}

/// A generation of the collection lease. Zero-padded, so that listings
/// sort as the numbers do.
pub fn gc_lease(generation: u64) -> String {
    format!("{GC_LEASES}/{generation:020}")
}

/// The generation a name under [`GC_LEASES`] stands for.
pub fn gc_lease_generation(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

pub fn blob(d: &Digest) -> String {
    format!(
        "{BLOBS}/{}/{}/{}",
        d.algorithm().as_str(),
        &d.hex()[..2],
        d.hex()
    )
}

/// Where scrub moves content that no longer matches its digest.
pub fn quarantined(d: &Digest) -> String {
    format!("{QUARANTINE}/{}/{}", d.algorithm().as_str(), d.hex())
}

pub fn repo(r: &RepoName) -> String {
    format!("{REPOSITORIES}/{r}")
}

pub fn layer_link(r: &RepoName, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{r}/{LAYERS}/{}/{}",
        d.algorithm().as_str(),
        d.hex()
    )
}

pub fn manifest_link(r: &RepoName, d: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{r}/{MANIFESTS}/{}/{}",
        d.algorithm().as_str(),
        d.hex()
    )
}

pub fn tags(r: &RepoName) -> String {
    format!("{REPOSITORIES}/{r}/{TAGS}")
}

pub fn tag(r: &RepoName, t: &Tag) -> String {
    format!("{REPOSITORIES}/{r}/{TAGS}/{t}")
}

pub fn pulls(r: &RepoName) -> String {
    format!("{REPOSITORIES}/{r}/{PULLS}")
}

pub fn referrers(r: &RepoName, subject: &Digest) -> String {
    format!(
        "{REPOSITORIES}/{r}/{REFERRERS}/{}/{}",
        subject.algorithm().as_str(),
        subject.hex()
    )
}

pub fn referrer(r: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}/{}-{}",
        referrers(r, subject),
        referrer.algorithm().as_str(),
        referrer.hex()
    )
}

pub fn upload(id: &str) -> String {
    format!("{UPLOADS}/{id}")
}

/// The directory of a kind of account record.
pub fn records(kind: crate::accounts::RecordKind) -> &'static str {
    match kind {
        crate::accounts::RecordKind::ApiKey => API_KEYS,
        crate::accounts::RecordKind::Session => SESSIONS,
    }
}

/// The key of an account record; the hash must be lower-case hex SHA-256.
pub fn record(kind: crate::accounts::RecordKind, hash: &str) -> Result<String, crate::CoreError> {
    let ok = hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(format!("{}/{hash}", records(kind)))
    } else {
        Err(crate::CoreError::DigestInvalid(
            "record hash must be 64 hex digits".into(),
        ))
    }
}

#[cfg(test)]
mod repo_of_tests {
    use super::*;

    #[test]
    fn repo_of_a_key() {
        let r = RepoName::parse("a/b/c").unwrap();
        let d = Digest::of(Algorithm::Sha256, b"x");
        for key in [layer_link(&r, &d), manifest_link(&r, &d), tags(&r)] {
            assert_eq!(repo_of(&key), Some(r.clone()), "{key}");
        }
        assert_eq!(repo_of(&blob(&d)), None);
        assert_eq!(repo_of("repositories/a"), None);
    }
}
