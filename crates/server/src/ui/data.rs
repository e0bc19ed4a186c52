//! What the repository list and repository pages show, gathered once per
//! request: the HTML templates and the JSON twins render these same structs,
//! so a script sees exactly what a person sees. Facts derived from a
//! manifest (size, platforms, layers) are cached by digest: content under a
//! digest never changes, so the cache is never stale.

use berth_core::{CoreError, Registry};
use berth_oci::manifest::{self, Kind};
use berth_oci::{Digest, Reference, RepoName, Tag};
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
/// Entries kept in each cache before it is emptied.
const CACHE_ENTRIES: usize = 100_000;
/// Approximate bytes of manifest facts kept before the cache is emptied.
const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Children of an index read for its size and platforms: a 4 MiB index
/// can name one child tens of thousands of times.
const MAX_CHILDREN: usize = 256;
/// Rows of a page gathered at once.
const ROWS_IN_FLIGHT: usize = 16;

/// Adds sizes without overflowing: descriptor sizes are the pusher's word.
pub fn total(sizes: impl Iterator<Item = u64>) -> u64 {
    sizes.fold(0, u64::saturating_add)
}

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
    /// Image facts by digest (`None`), index facts by repository and digest
    /// (they count only the children that repository holds); with their
    /// approximate total size.
    facts: Mutex<(HashMap<FactsKey, Arc<Facts>>, usize)>,
    summaries: Mutex<HashMap<String, (Instant, RepoSummary)>>,
}

/// How long a repository's row in the list may be reused. A summary reads
/// every tag of the repository (one tag file and one time each), so a list
/// showing repositories of thousands of tags would otherwise take seconds;
/// pushes and deletes through this server refresh it at once, others
/// (retention, another replica) within this time.
pub const SUMMARY_TTL: Duration = Duration::from_secs(30);

type FactsKey = (Option<String>, Digest);

impl Facts {
    /// Roughly what it holds in memory.
    fn weight(&self) -> usize {
        128 + self.blobs.len() * 112 + self.platforms.iter().map(|p| p.len() + 24).sum::<usize>()
    }
}

impl UiCache {
    fn get(&self, key: &FactsKey) -> Option<Arc<Facts>> {
        self.facts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(key)
            .cloned()
    }

    fn put(&self, key: FactsKey, f: Arc<Facts>) {
        let w = f.weight();
        if w > CACHE_BYTES / 4 {
            return;
        }
        let mut g = self.facts.lock().unwrap_or_else(|p| p.into_inner());
        let (m, bytes) = &mut *g;
        if m.len() >= CACHE_ENTRIES || *bytes + w > CACHE_BYTES {
            m.clear();
            *bytes = 0;
        }
        if m.insert(key, f).is_none() {
            *bytes += w;
        }
    }

    fn summary(&self, repo: &str) -> Option<RepoSummary> {
        let m = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        m.get(repo)
            .filter(|(at, _)| at.elapsed() < SUMMARY_TTL)
            .map(|(_, s)| s.clone())
    }

    /// Keeps a row read from `started` on: its age counts from then, so a
    /// change made while it was read is seen within [`SUMMARY_TTL`].
    fn keep_summary(&self, s: &RepoSummary, started: Instant) {
        let mut m = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= CACHE_ENTRIES {
            m.clear();
        }
        m.insert(s.name.clone(), (started, s.clone()));
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
        size: total(blobs.iter().map(|b| b.1)),
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
    let image_key = (None, digest.clone());
    let index_key = (Some(repo.to_string()), digest.clone());
    if let Some(f) = cache.get(&image_key).or_else(|| cache.get(&index_key)) {
        return Ok(f);
    }
    let m = read_manifest(reg, repo, digest).await?;
    let mut f = image_facts(&m);
    if m.kind != Kind::Index {
        let f = Arc::new(f);
        cache.put(image_key, f.clone());
        return Ok(f);
    }
    let mut blobs_seen = HashSet::new();
    let mut children_seen = HashSet::new();
    for child in &m.manifests {
        if let Some(p) = platform_of(child.platform.as_ref()) {
            f.platforms.push(p);
        }
        if children_seen.len() >= MAX_CHILDREN || !children_seen.insert(child.digest.clone()) {
            continue;
        }
        let Ok(cf) = child_facts(reg, cache, repo, &child.digest).await else {
            continue;
        };
        for (d, s) in &cf.blobs {
            if blobs_seen.insert(d.clone()) {
                f.blobs.push((d.clone(), *s));
            }
        }
    }
    f.platforms.truncate(MAX_CHILDREN);
    f.size = total(f.blobs.iter().map(|b| b.1));
    let f = Arc::new(f);
    cache.put(index_key, f.clone());
    Ok(f)
}

async fn read_manifest(
    reg: &Registry,
    repo: &RepoName,
    digest: &Digest,
) -> Result<manifest::Manifest, CoreError> {
    let stored = reg
        .peek_manifest(repo, &Reference::Digest(digest.clone()))
        .await?;
    manifest::parse(&stored.body, None).map_err(|e| CoreError::ManifestInvalid(e.to_string()))
}

/// The facts of an index's child (read as an image: an index nested in an
/// index adds only its own platforms), cached by digest.
async fn child_facts(
    reg: &Registry,
    cache: &UiCache,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Arc<Facts>, CoreError> {
    let key = (None, digest.clone());
    if let Some(f) = cache.get(&key) {
        return Ok(f);
    }
    let m = read_manifest(reg, repo, digest).await?;
    let f = Arc::new(image_facts(&m));
    if m.kind != Kind::Index {
        cache.put(key, f.clone());
    }
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
    let rows: Vec<Option<RepoSummary>> = futures_util::stream::iter(page.items.clone())
        .map(|n| async move { summary(reg, cache, &n).await })
        .buffered(ROWS_IN_FLIGHT)
        .collect()
        .await;
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
    let started = Instant::now();
    let s = summarize(reg, cache, name).await?;
    cache.keep_summary(&s, started);
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
                    size = u64::saturating_add(size, *s);
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
    let pulls = &pulls;
    let rows: Vec<Option<TagRow>> = futures_util::stream::iter(shown.to_vec())
        .map(|t| async move { tag_row(reg, cache, repo, &t, pulls).await })
        .buffered(ROWS_IN_FLIGHT)
        .collect()
        .await;
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
    fn sizes_a_pusher_declares_never_overflow() {
        assert_eq!(total([u64::MAX, 5, 7].into_iter()), u64::MAX);
        assert_eq!(total([1, 2, 3].into_iter()), 6);
    }

    #[test]
    fn the_facts_cache_is_bounded_by_size() {
        let cache = UiCache::default();
        let digest =
            |i: usize| berth_oci::Digest::of(berth_oci::Algorithm::Sha256, &i.to_le_bytes());
        let blobs: Vec<(Digest, u64)> = (0..10_000).map(|i| (digest(i), 1)).collect();
        for i in 0..200 {
            let f = Facts {
                blobs: blobs.clone(),
                ..Facts::default()
            };
            cache.put((None, digest(1_000_000 + i)), Arc::new(f));
            let (m, bytes) = &*cache.facts.lock().unwrap();
            assert!(*bytes <= CACHE_BYTES, "{bytes} bytes after {i} entries");
            assert!(m.len() * 10_000 * 112 <= CACHE_BYTES + 10_000 * 112);
        }
    }

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
