//! Repository globs with zot's (doublestar) meaning.
//!
//! `*` matches any run of characters within one path segment, `?` one
//! character, a whole segment `**` zero or more segments (so `a/**` matches
//! `a` itself), and `{x,y}` alternatives. Character classes are refused when
//! the configuration is loaded rather than half-supported.

/// A compiled pattern: its alternatives, each split into segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    alternatives: Vec<Vec<String>>,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository pattern {pattern:?}: {reason}")]
pub struct GlobError {
    pub pattern: String,
    pub reason: &'static str,
}

fn expand_braces(p: &str) -> Result<Vec<String>, &'static str> {
    let Some(open) = p.find('{') else {
        if p.contains('}') {
            return Err("unbalanced braces");
        }
        return Ok(vec![p.to_owned()]);
    };
    let close = p[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or("unbalanced braces")?;
    if p[open + 1..close].contains('{') {
        return Err("nested braces are not supported");
    }
    let mut out = Vec::new();
    for alt in p[open + 1..close].split(',') {
        out.extend(expand_braces(&format!(
            "{}{alt}{}",
            &p[..open],
            &p[close + 1..]
        ))?);
    }
    Ok(out)
}

/// `*` and `?` within one segment.
fn segment_matches(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// Whether pattern segments match name segments. Dynamic programming over
/// (pattern position, name position): linear in their product, whatever the
/// number of `**`.
fn segments_match(pat: &[String], name: &[&str]) -> bool {
    let (p, n) = (pat.len(), name.len());
    // ok[j] = pat[i..] matches name[j..], computed for i from the end.
    let mut ok = vec![false; n + 1];
    ok[n] = true;
    for i in (0..p).rev() {
        let mut next = vec![false; n + 1];
        if pat[i] == "**" {
            // Zero or more segments: pat[i+1..] matches name[j..] or later.
            let mut any = false;
            for j in (0..=n).rev() {
                any |= ok[j];
                next[j] = any;
            }
        } else {
            for j in 0..n {
                next[j] = ok[j + 1] && segment_matches(pat[i].as_bytes(), name[j].as_bytes());
            }
        }
        ok = next;
    }
    ok[0]
}

/// Longest pattern accepted, and most `{}` alternatives it may expand to.
const MAX_PATTERN: usize = 512;
const MAX_ALTERNATIVES: usize = 64;

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let err = |reason| GlobError {
            pattern: pattern.to_owned(),
            reason,
        };
        if pattern.is_empty() {
            return Err(err("empty pattern"));
        }
        if pattern.contains(['[', ']', '\\']) {
            return Err(err("character classes and escapes are not supported"));
        }
        if pattern.len() > MAX_PATTERN {
            return Err(err("pattern too long"));
        }
        // Each brace group multiplies the alternatives: bound before expanding.
        let mut product: usize = 1;
        for group in pattern.split('{').skip(1) {
            let alts = group.split('}').next().unwrap_or("").split(',').count();
            product = product.saturating_mul(alts.max(1));
            if product > MAX_ALTERNATIVES {
                return Err(err("too many {} alternatives"));
            }
        }
        let alternatives = expand_braces(pattern)
            .map_err(err)?
            .into_iter()
            .map(|alt| alt.split('/').map(str::to_owned).collect())
            .collect();
        Ok(Glob {
            text: pattern.to_owned(),
            alternatives,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, name: &str) -> bool {
        let parts: Vec<&str> = name.split('/').collect();
        self.alternatives
            .iter()
            .any(|alt| segments_match(alt, &parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Glob::new(p).unwrap().matches(n)
    }

    #[test]
    fn doublestar_semantics() {
        assert!(m("**", "a"));
        assert!(m("**", "a/b/c"));
        assert!(m("a/**", "a"));
        assert!(m("a/**", "a/b/c"));
        assert!(!m("a/**", "ab"));
        assert!(m("a/*", "a/b"));
        assert!(!m("a/*", "a/b/c"));
        assert!(!m("a/*", "a"));
        assert!(m("*", "alpine"));
        assert!(!m("*", "library/alpine"));
        assert!(m("**/alpine", "library/alpine"));
        assert!(m("**/alpine", "alpine"));
        assert!(m("a/**/z", "a/z"));
        assert!(m("a/**/z", "a/b/c/z"));
        assert!(!m("a/**/z", "a/b/c"));
        assert!(m("ci-*/app?", "ci-x/app1"));
        assert!(!m("ci-*/app?", "ci-x/app12"));
        assert!(m("{infra,ops}/**", "ops/x"));
        assert!(!m("{infra,ops}/**", "dev/x"));
        assert!(m("*-prod", "api-prod"));
        assert!(!m("*-prod", "api-prod/x"));
    }

    #[test]
    fn many_double_stars_stay_cheap() {
        let pattern = vec!["**"; 20].join("/") + "/z";
        let name = vec!["a"; 126].join("/");
        // With backtracking this would not finish in any lifetime.
        assert!(!m(&pattern, &name));
        assert!(m(&pattern, &(name.clone() + "/z")));
    }

    #[test]
    fn refusals() {
        let braces = "{a,b}".repeat(30);
        let long = "a".repeat(600);
        for bad in [
            "",
            "[ab]",
            "a\\*",
            "{a,b",
            "a}",
            "{a,{b}}",
            braces.as_str(),
            long.as_str(),
        ] {
            assert!(Glob::new(bad).is_err(), "{bad}");
        }
    }
}
