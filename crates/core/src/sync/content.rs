//! zot's `content` rules of a sync registry: `prefix` (a glob over upstream
//! names), `destination` (where they go locally), `stripPrefix` (drop the
//! prefix's fixed part from local names) and the `tags` filters.

use berth_oci::glob::Glob;

/// Glob metacharacters: a name component with one of them is a pattern.
fn is_meta(component: &str) -> bool {
    component.contains(['*', '?', '{'])
}

/// `tags`: which upstream tags a rule takes.
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    pub regex: Option<regex::Regex>,
    pub exclude: Option<regex::Regex>,
    pub semver: bool,
}

/// Semantic versions as the Go library zot uses reads them: a `v` is
/// optional, and so are the minor and patch numbers.
fn is_semver(tag: &str) -> bool {
    static SEMVER: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    SEMVER
        .get_or_init(|| {
            regex::Regex::new(
                r"^v?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?(\.(0|[1-9][0-9]*))?(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$",
            )
            .unwrap_or_else(|_| unreachable!("a fixed, valid pattern"))
        })
        .is_match(tag)
}

impl TagFilter {
    pub fn new(
        regex: Option<&str>,
        exclude: Option<&str>,
        semver: bool,
    ) -> Result<TagFilter, String> {
        let compile = |p: &str| regex::Regex::new(p).map_err(|e| format!("{p:?}: {e}"));
        Ok(TagFilter {
            regex: regex.filter(|r| !r.is_empty()).map(compile).transpose()?,
            exclude: exclude.filter(|r| !r.is_empty()).map(compile).transpose()?,
            semver,
        })
    }

    pub fn allows(&self, tag: &str) -> bool {
        self.regex.as_ref().is_none_or(|r| r.is_match(tag))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(tag))
            && (!self.semver || is_semver(tag))
    }

    pub fn filter(&self, tags: Vec<String>) -> Vec<String> {
        tags.into_iter().filter(|t| self.allows(t)).collect()
    }
}

/// One entry of `content`.
#[derive(Debug, Clone)]
pub struct ContentRule {
    /// Upstream names covered (`prefix`, without a leading `/`).
    upstream: Glob,
    /// Local names covered.
    local: Glob,
    /// The prefix's fixed part (its leading components without glob
    /// characters), as zot trims it.
    fixed: String,
    destination: String,
    strip_prefix: bool,
    pub tags: TagFilter,
}

impl ContentRule {
    pub fn new(
        prefix: &str,
        destination: Option<&str>,
        strip_prefix: bool,
        tags: TagFilter,
    ) -> Result<ContentRule, String> {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            return Err("prefix is empty".into());
        }
        let destination = destination.unwrap_or("").trim_matches('/').to_owned();
        let components: Vec<&str> = prefix.split('/').collect();
        let fixed_len = components.iter().take_while(|c| !is_meta(c)).count();
        let fixed = components[..fixed_len].join("/");
        let rest = components[fixed_len..].join("/");
        let local_pattern = [
            destination.as_str(),
            if strip_prefix { rest.as_str() } else { prefix },
        ]
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("/");
        let glob = |p: &str| Glob::new(p).map_err(|e| e.to_string());
        Ok(ContentRule {
            upstream: glob(prefix)?,
            // A stripped, fixed prefix maps to the destination itself.
            local: glob(if local_pattern.is_empty() {
                "**"
            } else {
                &local_pattern
            })?,
            fixed,
            destination,
            strip_prefix,
            tags,
        })
    }

    /// Whether an upstream repository is covered.
    pub fn covers_upstream(&self, name: &str) -> bool {
        self.upstream.matches(name)
    }

    /// The upstream name of a local one (zot's inverse mapping).
    fn source_of(&self, local: &str) -> String {
        let rest = local
            .strip_prefix(self.destination.as_str())
            .unwrap_or(local)
            .trim_matches('/');
        let joined = if self.strip_prefix {
            format!("{}/{rest}", self.fixed)
        } else {
            rest.to_owned()
        };
        joined.trim_matches('/').to_owned()
    }

    /// The local name of an upstream one.
    pub fn destination_of(&self, upstream: &str) -> String {
        let name = if self.strip_prefix {
            upstream
                .strip_prefix(self.fixed.as_str())
                .unwrap_or(upstream)
                .trim_matches('/')
        } else {
            upstream
        };
        [self.destination.as_str(), name]
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The one upstream repository a prefix without glob characters names.
    pub fn static_repository(&self) -> Option<String> {
        (!is_meta(self.upstream.as_str())).then(|| self.upstream.as_str().to_owned())
    }
}

/// The first rule covering a local name, and the upstream name it maps to
/// (which the rule's prefix must cover too).
pub fn route<'a>(rules: &'a [ContentRule], local: &str) -> Option<(&'a ContentRule, String)> {
    rules.iter().find_map(|r| {
        if !r.local.matches(local) {
            return None;
        }
        let source = r.source_of(local);
        r.covers_upstream(&source).then_some((r, source))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, destination: Option<&str>, strip: bool) -> ContentRule {
        ContentRule::new(prefix, destination, strip, TagFilter::default()).unwrap()
    }

    #[test]
    fn plain_prefix_maps_names_unchanged() {
        let rules = [rule("library/**", None, false)];
        assert_eq!(route(&rules, "library/alpine").unwrap().1, "library/alpine");
        assert!(route(&rules, "other/alpine").is_none());
        assert_eq!(rules[0].destination_of("library/alpine"), "library/alpine");
    }

    #[test]
    fn destination_and_strip_prefix() {
        // upstream library/alpine <-> local hub/alpine
        let rules = [rule("/library/*", Some("/hub"), true)];
        assert_eq!(route(&rules, "hub/alpine").unwrap().1, "library/alpine");
        assert_eq!(rules[0].destination_of("library/alpine"), "hub/alpine");
        assert!(route(&rules, "alpine").is_none());
        assert!(route(&rules, "hub/a/b").is_none());
        // upstream ci/app <-> local mirror/ci/app
        let rules = [rule("ci/**", Some("mirror"), false)];
        assert_eq!(route(&rules, "mirror/ci/app").unwrap().1, "ci/app");
        assert_eq!(rules[0].destination_of("ci/app"), "mirror/ci/app");
        assert!(route(&rules, "ci/app").is_none());
        // A fixed prefix, stripped: the destination is the repository.
        let rules = [rule("team/app", Some("app"), true)];
        assert_eq!(route(&rules, "app").unwrap().1, "team/app");
        assert_eq!(rules[0].static_repository().as_deref(), Some("team/app"));
        assert!(rule("team/*", None, false).static_repository().is_none());
    }

    #[test]
    fn tag_filters() {
        let f = TagFilter::new(Some("^1\\."), Some("-rc"), false).unwrap();
        assert!(f.allows("1.2"));
        assert!(!f.allows("1.2-rc1"));
        assert!(!f.allows("2.0"));
        let s = TagFilter::new(None, None, true).unwrap();
        for ok in ["1.2.3", "v1.2", "1", "1.0.0-alpha.1+build.5"] {
            assert!(s.allows(ok), "{ok}");
        }
        for bad in ["latest", "1.2.3.4", "01.2", "v"] {
            assert!(!s.allows(bad), "{bad}");
        }
        assert!(TagFilter::new(Some("("), None, false).is_err());
    }
}
