//! What the repository list and repository pages show, gathered once per
//! request: the HTML templates and the JSON twins render these same structs,
//! so a script sees exactly what a person sees. Facts derived from a
//! manifest (size, platforms, layers) are cached by digest: content under a
//! digest never changes, so the cache is never stale.

use berth_core::{CoreError, Registry};
use berth_oci::manifest::{self, Kind};
use berth_oci::{Digest, Reference, RepoName, Tag};
use futures_util::future::join_all;
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Repositories per page: default and the most a client may ask for.
pub const REPOS_PER_PAGE: usize = 50;
pub const MAX_REPOS_PER_PAGE: usize = 200;
/// Tags per page: default and the most a client may ask for.
pub const TAGS_PER_PAGE: usize = 100;
pub const MAX_TAGS_PER_PAGE: usize = 500;
/// Search strings and filters are cut to this many characters.
pub const MAX_QUERY: usize = 128;
/// Entries kept in the manifest facts cache before it is emptied.
const CACHE_ENTRIES: usize = 100_000;

/// A time as RFC 3339 (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What a manifest says about itself, independent of the repository.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub image: bool,
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// Compressed size: the manifest's config and layers, or for an index
    /// the distinct blobs of its children (those this repository holds).
    pub size: u64,
    /// `os/arch[/variant]` of an index's children.
    pub platforms: Vec<String>,
    /// Distinct blobs (config and layers) with their sizes.
    pub blobs: Vec<(Digest, u64)>,
}

/// What the interface remembers between requests: manifest facts by
/// digest (never stale: content under a digest never changes) and
/// repository summaries for the list (kept [`SUMMARY_TTL`] at most, and
/// forgotten when this server takes a push or delete in the repository).
#[derive(Default)]
pub struct UiCache {
    facts: Mutex<HashMap<Digest, Arc<Facts>>>,
    summaries: Mutex<HashMap<String, (Instant, RepoSummary)>>,
}

/// How long a repository's row in the list may be reused. A summary reads
/// every tag of the repository (one tag file and one time each), so a list
/// showing repositories of thousands of tags would otherwise take seconds;
/// pushes and deletes through this server refresh it at once, others
/// (retention, another replica) within this time.
pub const SUMMARY_TTL: Duration = Duration::from_secs(30);

impl UiCache {
    fn get(&self, d: &Digest) -> Option<Arc<Facts>> {
        self.facts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .cloned()
    }

    fn put(&self, d: Digest, f: Arc<Facts>) {
        let mut m = self.facts.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CACHE_ENTRIES {
            m.clear();
        }
        m.insert(d, f);
    }

    fn summary(&self, repo: &str) -> Option<RepoSummary> {
        let m = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        m.get(repo)
            .filter(|(at, _)| at.elapsed() < SUMMARY_TTL)
            .map(|(_, s)| s.clone())
    }

    fn keep_summary(&self, s: &RepoSummary) {
        let mut m = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CACHE_ENTRIES {
            m.clear();
        }
        m.insert(s.name.clone(), (Instant::now(), s.clone()));
    }

    /// Forgets a repository's summary: its tags changed.
    pub fn forget_repo(&self, repo: &str) {
        self.summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(repo);
    }
}

/// `os/arch[/variant]` from a descriptor's `platform`.
pub fn platform_of(p: Option<&serde_json::Value>) -> Option<String> {
    let p = p?;
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    Some(match p.get("variant").and_then(|v| v.as_str()) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

fn image_facts(m: &manifest::Manifest) -> Facts {
    let mut seen = HashSet::new();
    let blobs: Vec<(Digest, u64)> = m
        .blobs
        .iter()
        .filter(|d| seen.insert(d.digest.clone()))
        .map(|d| (d.digest.clone(), d.size))
        .collect();
    Facts {
        image: m.kind == Kind::Image,
        media_type: m.media_type.clone(),
        artifact_type: m.artifact_type.clone(),
        size: blobs.iter().map(|b| b.1).sum(),
        platforms: Vec::new(),
        blobs,
    }
}

/// The facts of a manifest of `repo`, from the cache or read now.
pub async fn facts(
    reg: &Registry,
    cache: &UiCache,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Arc<Facts>, CoreError> {
    if let Some(f) = cache.get(digest) {
        return Ok(f);
    }
    let stored = reg
        .peek_manifest(repo, &Reference::Digest(digest.clone()))
        .await?;
    let m = manifest::parse(&stored.body, None)
        .map_err(|e| CoreError::ManifestInvalid(e.to_string()))?;
    let mut f = image_facts(&m);
    if m.kind == Kind::Index {
        let mut seen = HashSet::new();
        for child in &m.manifests {
            if let Some(p) = platform_of(child.platform.as_ref()) {
                f.platforms.push(p);
            }
            let Ok(c) = reg
                .peek_manifest(repo, &Reference::Digest(child.digest.clone()))
                .await
            else {
                continue;
            };
            if let Ok(cm) = manifest::parse(&c.body, None) {
                for (d, s) in image_facts(&cm).blobs {
                    if seen.insert(d.clone()) {
                        f.blobs.push((d, s));
                    }
                }
            }
        }
        f.size = f.blobs.iter().map(|b| b.1).sum();
    }
    let f = Arc::new(f);
    cache.put(digest.clone(), f.clone());
    Ok(f)
}

/// One row of the repository list.
#[derive(Debug, Clone, Serialize)]
pub struct RepoSummary {
    pub name: String,
    pub tags: usize,
    /// The latest tag push, RFC 3339.
    pub last_push: Option<String>,
    /// Distinct blobs of every tagged manifest, in bytes.
    pub size: u64,
}

/// The repository list (`/` and `/ui/api/repositories`).
#[derive(Debug, Clone, Serialize)]
pub struct RepoList {
    pub query: String,
    /// `name` (A to Z) or `-name` (Z to A).
    pub sort: &'static str,
    pub per_page: usize,
    pub repositories: Vec<RepoSummary>,
    /// The cursor for the next page (`after=`), when there is one.
    pub next: Option<String>,
    /// Whether this page follows another (a cursor was given).
    pub has_previous: bool,
}

/// Cuts a client's string to [`MAX_QUERY`] characters.
pub fn bounded(s: &str) -> String {
    s.trim().chars().take(MAX_QUERY).collect()
}

/// The repository list: names `visible` accepts that contain `query`, in
/// the order asked, a page after `after`.
pub async fn repo_list(
    reg: &Registry,
    cache: &UiCache,
    query: &str,
    descending: bool,
    after: Option<&str>,
    per_page: usize,
    visible: impl Fn(&str) -> bool,
) -> Result<RepoList, CoreError> {
    let needle = query.to_ascii_lowercase();
    let accept = |n: &str| n.contains(needle.as_str()) && visible(n);
    let page = if descending {
        reg.catalog_descending(per_page, after, accept).await?
    } else {
        reg.catalog(Some(per_page), after, accept).await?
    };
    let rows = join_all(page.items.iter().map(|n| summary(reg, cache, n))).await;
    let next = if page.more {
        page.items.last().cloned()
    } else {
        None
    };
    Ok(RepoList {
        query: query.to_owned(),
        sort: if descending { "-name" } else { "name" },
        per_page,
        repositories: rows.into_iter().flatten().collect(),
        next,
        has_previous: after.is_some(),
    })
}

/// A repository's row, remembered for a while; `None` when it vanished.
async fn summary(reg: &Registry, cache: &UiCache, name: &str) -> Option<RepoSummary> {
    if let Some(s) = cache.summary(name) {
        return Some(s);
    }
    let s = summarize(reg, cache, name).await?;
    cache.keep_summary(&s);
    Some(s)
}

/// Tags of one repository read at once while summarizing it.
const TAG_READS_IN_FLIGHT: usize = 16;

async fn summarize(reg: &Registry, cache: &UiCache, name: &str) -> Option<RepoSummary> {
    let repo = RepoName::parse(name)?;
    let tags = reg.tag_names(&repo).await.ok()?;
    // Each tag is two small reads (its target, its time): overlapped, so
    // a repository of thousands of tags is not read one file at a time.
    let parsed: Vec<Tag> = tags.iter().filter_map(|t| Tag::parse(t)).collect();
    let repo_ref = &repo;
    let read: Vec<(Digest, Option<SystemTime>)> = futures_util::stream::iter(parsed)
        .map(move |tag: Tag| async move {
            let (target, pushed) = tokio::join!(
                reg.tag_target(repo_ref, &tag),
                reg.tag_pushed(repo_ref, &tag)
            );
            Some((target.ok()??, pushed.ok()?))
        })
        .buffered(TAG_READS_IN_FLIGHT)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let mut last: Option<SystemTime> = None;
    let mut seen = HashSet::new();
    let mut size = 0;
    for (d, pushed) in read {
        last = last.max(pushed);
        if let Ok(f) = facts(reg, cache, &repo, &d).await {
            for (b, s) in &f.blobs {
                if seen.insert(b.clone()) {
                    size += s;
                }
            }
        }
    }
    Some(RepoSummary {
        name: name.to_owned(),
        tags: tags.len(),
        last_push: last.map(rfc3339),
        size,
    })
}

/// One tag of a repository page.
#[derive(Debug, Clone, Serialize)]
pub struct TagRow {
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// `image`, `index` or the artifact type.
    pub kind: String,
    pub platforms: Vec<String>,
    pub size: u64,
    pub pushed: Option<String>,
    pub last_pull: Option<String>,
}

/// A repository page (`/ui/r/<name>` and `/ui/api/r/<name>`).
#[derive(Debug, Clone, Serialize)]
pub struct RepoPage {
    pub name: String,
    /// `docker pull` and `podman pull` of `latest` if shown, else of the
    /// most recently pushed tag shown.
    pub pull_docker: String,
    pub pull_podman: String,
    /// The host clients pull from: `http.externalUrl`'s, or the request's.
    pub host: String,
    pub filter: String,
    pub total_tags: usize,
    pub matching_tags: usize,
    pub per_page: usize,
    pub tags: Vec<TagRow>,
    pub next: Option<String>,
    pub has_previous: bool,
    /// The viewer may delete tags and manifests here.
    pub can_delete: bool,
}

/// What a repository page asks for.
pub struct TagQuery<'a> {
    pub filter: &'a str,
    pub after: Option<&'a str>,
    pub per_page: usize,
}

/// A page of a repository's tags containing the filter, after the cursor.
pub async fn repo_page(
    reg: &Registry,
    cache: &UiCache,
    repo: &RepoName,
    host: &str,
    q: TagQuery<'_>,
    can_delete: bool,
) -> Result<RepoPage, CoreError> {
    let all = reg.tag_names(repo).await?;
    let total_tags = all.len();
    let matching: Vec<String> = all.into_iter().filter(|t| t.contains(q.filter)).collect();
    let start = q
        .after
        .map_or(0, |a| matching.partition_point(|t| t.as_str() <= a));
    let end = (start + q.per_page).min(matching.len());
    let shown = &matching[start..end];
    let pulls = reg.pull_times(repo).await.unwrap_or_default();
    let rows = join_all(shown.iter().map(|t| tag_row(reg, cache, repo, t, &pulls))).await;
    let tags: Vec<TagRow> = rows.into_iter().flatten().collect();
    // `latest` when shown, else the most recently pushed tag shown.
    let first = tags
        .iter()
        .find(|t| t.tag == "latest")
        .or_else(|| tags.iter().max_by(|a, b| a.pushed.cmp(&b.pushed)))
        .map_or("latest", |t| t.tag.as_str());
    let next = if end < matching.len() {
        shown.last().cloned()
    } else {
        None
    };
    Ok(RepoPage {
        name: repo.to_string(),
        pull_docker: format!("docker pull {host}/{repo}:{first}"),
        pull_podman: format!("podman pull {host}/{repo}:{first}"),
        host: host.to_owned(),
        filter: q.filter.to_owned(),
        total_tags,
        matching_tags: matching.len(),
        per_page: q.per_page,
        tags,
        next,
        has_previous: q.after.is_some(),
        can_delete,
    })
}

async fn tag_row(
    reg: &Registry,
    cache: &UiCache,
    repo: &RepoName,
    t: &str,
    pulls: &HashMap<Digest, SystemTime>,
) -> Option<TagRow> {
    let tag = Tag::parse(t)?;
    let digest = reg.tag_target(repo, &tag).await.ok()??;
    let pushed = reg.tag_pushed(repo, &tag).await.ok()?;
    let f = facts(reg, cache, repo, &digest).await.ok()?;
    Some(TagRow {
        tag: t.to_owned(),
        digest: digest.to_string(),
        media_type: f.media_type.clone(),
        kind: kind_label(&f),
        platforms: f.platforms.clone(),
        size: f.size,
        pushed: pushed.map(rfc3339),
        last_pull: pulls.get(&digest).copied().map(rfc3339),
    })
}

/// Whether an artifact type is just a container image's config type.
pub fn is_image_config(t: &str) -> bool {
    t == "application/vnd.oci.image.config.v1+json"
        || t == "application/vnd.docker.container.image.v1+json"
}

/// `image`, `index`, or an artifact's type.
pub fn kind_label(f: &Facts) -> String {
    match (&f.artifact_type, f.image) {
        (_, false) => "index".into(),
        (Some(t), true) if !is_image_config(t) => t.clone(),
        _ => "image".into(),
    }
}

/// Bytes in a unit a person reads (powers of 1000).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `sha256:0123456789ab`: the first 12 hex digits.
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.get(..12).unwrap_or(hex)),
        None => d.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_digests_and_bounds_read_well() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500), "1.5 kB");
        assert_eq!(human_size(2_000_000_000), "2.0 GB");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("sha256:01"), "sha256:01");
        assert_eq!(bounded(&"é".repeat(500)).chars().count(), MAX_QUERY);
        assert_eq!(
            platform_of(Some(
                &serde_json::json!({"os":"linux","architecture":"arm","variant":"v7"})
            ))
            .as_deref(),
            Some("linux/arm/v7")
        );
        assert_eq!(platform_of(Some(&serde_json::json!({"os":"linux"}))), None);
    }
}
