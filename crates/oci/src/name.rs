//! Repository names, tags and manifest references.
//!
//! A [`RepoName`] can only be built from a string that matches the
//! distribution-spec grammar, so it never holds `..`, an absolute path, a
//! percent escape or an upper-case letter: storage may use it as a path.

use crate::digest::{Digest, DigestError};
use std::fmt;

/// Longest repository name accepted (the spec bounds host plus name by 255).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted by the spec's grammar.
pub const MAX_TAG_LEN: usize = 128;

/// A validated repository name such as `library/alpine`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl RepoName {
    pub fn parse(s: &str) -> Option<RepoName> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return None;
        }
        if s.split('/').all(valid_component) {
            Some(RepoName(s.to_owned()))
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A validated tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Option<Tag> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > MAX_TAG_LEN {
            return None;
        }
        let first_ok = b[0].is_ascii_alphanumeric() || b[0] == b'_';
        let rest_ok = b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
        (first_ok && rest_ok).then(|| Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceError {
    /// Neither a tag nor a digest.
    Invalid,
    /// Looks like a digest but is malformed or of an unsupported algorithm.
    Digest(DigestError),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            return s
                .parse()
                .map(Reference::Digest)
                .map_err(ReferenceError::Digest);
        }
        Tag::parse(s)
            .map(Reference::Tag)
            .ok_or(ReferenceError::Invalid)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "a",
            "library/alpine",
            "a/b/c/d/e/f",
            "foo.bar_baz__qux---x",
            "0/1",
            "my-org/my_repo.v2",
            "a/manifests/b",
        ] {
            assert!(RepoName::parse(good).is_some(), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "A",
            "a/../../etc",
            "..",
            ".",
            "a/./b",
            "a%2fb",
            "-a",
            "a-",
            "a___b",
            "a._b",
            "a b",
            "a\\b",
            "_a",
            &"a".repeat(256),
        ] {
            assert!(RepoName::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        for good in ["latest", "v1.0.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(Tag::parse(good).is_some(), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "..", &"t".repeat(129), "é"] {
            assert!(Tag::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(Reference::parse(d), Ok(Reference::Digest(_))));
        assert_eq!(
            Reference::parse("sha256:xyz"),
            Err(ReferenceError::Digest(DigestError::Invalid))
        );
        assert_eq!(Reference::parse("bad/tag"), Err(ReferenceError::Invalid));
    }
}
