//! Retention: which tags and manifests a repository keeps (zot's
//! `storage.retention`), applied at the start of each garbage collection
//! pass, before blobs are marked.
//!
//! Semantics, as zot documents them:
//! - the first policy whose `repositories` globs match a repository applies;
//!   a repository no policy matches keeps all its tags, and loses untagged
//!   manifests (`deleteUntagged` defaults to true);
//! - with `keepTags`, each tag falls to the first rule whose `patterns`
//!   (regular expressions, unanchored; none = every tag) match it; a tag no
//!   rule matches is removed; within a rule, a tag is kept if it meets any
//!   of the rule's criteria (a rule without criteria keeps all its tags);
//!   `pulledWithin` also keeps a tag pushed within the window;
//! - untagged manifests neither pushed nor pulled within `delay` go when
//!   `deleteUntagged` (zot looks at the push alone; a digest that clients
//!   still pull, as a pinned deployment or a pull-through cache does, stays
//!   here), unless
//!   something kept refers to them: an index (its children), a subject (its
//!   referrers), or a referrer (its subject). Referrers whose subject is
//!   gone are kept unless `deleteReferrers`.
//!
//! Push time is the tag file's (or manifest link's) modification time: a
//! push rewrites the tag. Pull times are noted in memory on each manifest
//! GET and written to `_pulls` of the repository now and then.
//!
//! Nothing here takes a lock that a push waits on. Removal follows the
//! garbage collector's protocol: hide, look again, restore what a writer
//! has touched meanwhile, delete the rest. The writer's half is in
//! [`Registry::put_manifest`]: it links, writes the tag, then makes sure
//! the link and content it acknowledged are still there.

use crate::{keys, Registry, Result};
use berth_oci::{Digest, RepoName, Tag};
use berth_storage::Durability;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whether a policy applies to a repository name.
pub type RepoMatcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// `storage.retention`, resolved.
#[derive(Clone)]
pub struct Retention {
    /// Decide and report, remove nothing.
    pub dry_run: bool,
    /// Untagged manifests younger than this stay.
    pub delay: Duration,
    pub policies: Vec<Policy>,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            dry_run: false,
            delay: Duration::from_secs(24 * 3600),
            policies: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention")
            .field("dry_run", &self.dry_run)
            .field("delay", &self.delay)
            .field("policies", &self.policies.len())
            .finish()
    }
}

/// One entry of `policies`.
#[derive(Clone)]
pub struct Policy {
    pub repositories: RepoMatcher,
    pub delete_referrers: bool,
    pub delete_untagged: bool,
    pub keep_tags: Vec<KeepRule>,
    /// Untagged manifests meeting this rule stay (its patterns are unused).
    pub keep_untagged: Option<KeepRule>,
}

/// What applies to a repository no policy names.
fn default_policy() -> Policy {
    Policy {
        repositories: Arc::new(|_| true),
        delete_referrers: false,
        delete_untagged: true,
        keep_tags: Vec::new(),
        keep_untagged: None,
    }
}

/// One entry of `keepTags`.
#[derive(Clone, Default, Debug)]
pub struct KeepRule {
    pub patterns: Vec<regex::Regex>,
    pub pulled_within: Option<Duration>,
    pub pushed_within: Option<Duration>,
    pub most_recently_pushed: usize,
    pub most_recently_pulled: usize,
}

impl KeepRule {
    /// A rule from its configured parts; an invalid pattern is named.
    pub fn new(
        patterns: &[String],
        pulled_within: Option<Duration>,
        pushed_within: Option<Duration>,
        most_recently_pushed: usize,
        most_recently_pulled: usize,
    ) -> std::result::Result<KeepRule, String> {
        let patterns = patterns
            .iter()
            .map(|p| regex::Regex::new(p).map_err(|e| format!("pattern {p:?}: {e}")))
            .collect::<std::result::Result<_, _>>()?;
        Ok(KeepRule {
            patterns,
            pulled_within,
            pushed_within,
            most_recently_pushed,
            most_recently_pulled,
        })
    }

    fn matches(&self, tag: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.is_match(tag))
    }

    fn has_criteria(&self) -> bool {
        self.pulled_within.is_some()
            || self.pushed_within.is_some()
            || self.most_recently_pushed > 0
            || self.most_recently_pulled > 0
    }

    /// The members of `group` this rule keeps (indices into `group`).
    fn keeps(&self, group: &[&Candidate], now: SystemTime) -> HashSet<usize> {
        if !self.has_criteria() {
            return (0..group.len()).collect();
        }
        let since = |d: Duration| now.checked_sub(d).unwrap_or(UNIX_EPOCH);
        let mut kept = HashSet::new();
        let mut order: Vec<usize> = (0..group.len()).collect();
        if self.most_recently_pushed > 0 {
            order.sort_by_key(|&i| std::cmp::Reverse(group[i].pushed));
            kept.extend(order.iter().take(self.most_recently_pushed));
        }
        if self.most_recently_pulled > 0 {
            // Never pulled sorts last, and is not "recently pulled".
            order.sort_by_key(|&i| std::cmp::Reverse(group[i].pulled));
            kept.extend(
                order
                    .iter()
                    .take(self.most_recently_pulled)
                    .filter(|&&i| group[i].pulled.is_some()),
            );
        }
        for (i, c) in group.iter().enumerate() {
            let pushed_after = |d: Duration| c.pushed > since(d);
            if self.pushed_within.is_some_and(pushed_after)
                || self
                    .pulled_within
                    .is_some_and(|d| c.pulled.is_some_and(|p| p > since(d)) || pushed_after(d))
            {
                kept.insert(i);
            }
        }
        kept
    }
}

/// A tag (or untagged manifest) as retention weighs it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub digest: Digest,
    pub pushed: SystemTime,
    pub pulled: Option<SystemTime>,
}

impl Policy {
    /// The candidates (tags) this policy removes, by index.
    pub fn tags_to_remove(&self, tags: &[Candidate], now: SystemTime) -> Vec<usize> {
        if self.keep_tags.is_empty() {
            return Vec::new();
        }
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.keep_tags.len()];
        let mut out = Vec::new();
        for (i, t) in tags.iter().enumerate() {
            match self.keep_tags.iter().position(|r| r.matches(&t.name)) {
                Some(rule) => groups[rule].push(i),
                None => out.push(i),
            }
        }
        for (rule, members) in self.keep_tags.iter().zip(groups) {
            let group: Vec<&Candidate> = members.iter().map(|&i| &tags[i]).collect();
            let kept = rule.keeps(&group, now);
            out.extend(
                members
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| !kept.contains(j))
                    .map(|(_, &i)| i),
            );
        }
        out.sort_unstable();
        out
    }
}

impl Retention {
    /// The policy governing a repository.
    pub fn policy_for(&self, repo: &str) -> Policy {
        self.policies
            .iter()
            .find(|p| (p.repositories)(repo))
            .cloned()
            .unwrap_or_else(default_policy)
    }
}

/// What a manifest points at, as retention and GC need it.
#[derive(Debug, Default)]
pub(crate) struct Refs {
    pub blobs: Vec<Digest>,
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
}

/// Most manifests whose references a process remembers.
const REFS_MAX: usize = 1_000_000;

/// Tags and manifests removed by a pass (or, dry, that would be).
#[derive(Debug, Clone, Default)]
pub struct RetentionReport {
    pub tags_removed: Vec<(String, String)>,
    pub manifests_removed: Vec<(String, Digest)>,
}

impl Registry {
    /// What a manifest references (parsed once per process: a manifest's
    /// digest is its content). `None` when its content is missing or
    /// unreadable.
    pub(crate) async fn refs(&self, m: &Digest) -> Result<Option<Arc<Refs>>> {
        if let Some(r) = self
            .gc_refs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(m)
        {
            return Ok(Some(r.clone()));
        }
        let Some(body) = self.store.get(&keys::blob(m)).await? else {
            return Ok(None);
        };
        let Ok(parsed) = berth_oci::manifest::parse(&body, None) else {
            return Ok(None);
        };
        let refs = Arc::new(Refs {
            blobs: parsed.blobs.into_iter().map(|d| d.digest).collect(),
            children: parsed.manifests.into_iter().map(|d| d.digest).collect(),
            subject: parsed.subject.map(|d| d.digest),
        });
        let mut cache = self.gc_refs.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= REFS_MAX {
            cache.clear();
        }
        cache.insert(m.clone(), refs.clone());
        Ok(Some(refs))
    }

    /// Every tag of a repository: name, target, time of its last push.
    async fn tag_states(&self, repo: &RepoName) -> Result<Vec<(Tag, Digest, SystemTime)>> {
        let mut out = Vec::new();
        for e in self.store.list(&keys::tags(repo)).await? {
            let Some(tag) = Tag::parse(&e.name) else {
                continue;
            };
            let key = keys::tag(repo, &tag);
            let (Some(target), Some(at)) = (
                self.tag_target(repo, &tag).await?,
                self.store.modified(&key).await?,
            ) else {
                continue;
            };
            out.push((tag, target, at));
        }
        Ok(out)
    }

    /// Removes a tag if it is still what retention decided on: hidden
    /// first, then compared; a tag pushed again meanwhile is put back.
    async fn remove_tag_if_unchanged(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        pushed: SystemTime,
        trash: &str,
    ) -> Result<bool> {
        let key = keys::tag(repo, tag);
        let Some(hidden) = self.hide(&key, trash).await else {
            return Ok(false);
        };
        let same_target =
            self.store.get(&hidden).await?.is_some_and(|b| {
                std::str::from_utf8(&b).ok().map(str::trim) == Some(digest.as_str())
            });
        let same_push = self.store.modified(&hidden).await? == Some(pushed);
        if same_target && same_push {
            self.store.delete(&hidden, Durability::Durable).await?;
            return Ok(true);
        }
        // Pushed again since the decision: it stays.
        self.restore(&hidden, &key).await?;
        Ok(false)
    }

    /// Applies a policy to one repository. Returns what went (or would).
    pub(crate) async fn retain_repo(
        &self,
        repo: &RepoName,
        retention: &Retention,
        dry_run: bool,
        trash: &str,
    ) -> Result<RetentionReport> {
        let policy = retention.policy_for(repo.as_str());
        let now = SystemTime::now();
        let mut report = RetentionReport::default();
        let pulls = self.pull_times(repo).await?;

        // Tags.
        let tags = self.tag_states(repo).await?;
        let candidates: Vec<Candidate> = tags
            .iter()
            .map(|(t, d, at)| Candidate {
                name: t.to_string(),
                digest: d.clone(),
                pushed: *at,
                pulled: pulls.get(d).copied(),
            })
            .collect();
        let doomed: HashSet<usize> = policy
            .tags_to_remove(&candidates, now)
            .into_iter()
            .collect();
        let mut tagged: HashSet<Digest> = HashSet::new();
        for (i, (tag, digest, pushed)) in tags.iter().enumerate() {
            if !doomed.contains(&i) {
                tagged.insert(digest.clone());
                continue;
            }
            let removed = dry_run
                || self
                    .remove_tag_if_unchanged(repo, tag, digest, *pushed, trash)
                    .await?;
            if removed {
                tracing::info!(repository = %repo, tag = %tag, %digest, dry_run, decision = "delete", reason = "no keepTags rule retains it", "retention");
                report
                    .tags_removed
                    .push((repo.to_string(), tag.to_string()));
            } else {
                tagged.insert(digest.clone());
            }
        }

        // Untagged manifests.
        let cutoff = now.checked_sub(retention.delay).unwrap_or(UNIX_EPOCH);
        let mut manifests: HashMap<Digest, (SystemTime, Option<Arc<Refs>>)> = HashMap::new();
        for d in self.linked(repo, keys::MANIFESTS).await? {
            let Some(at) = self.store.modified(&keys::manifest_link(repo, &d)).await? else {
                continue;
            };
            let refs = self.refs(&d).await?;
            manifests.insert(d, (at, refs));
        }
        let mut referrers_of: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
        for (d, (_, refs)) in &manifests {
            if let Some(s) = refs.as_ref().and_then(|r| r.subject.as_ref()) {
                referrers_of.entry(s).or_default().push(d);
            }
        }
        let mut kept: HashSet<&Digest> = HashSet::new();
        let mut pending: Vec<&Digest> = Vec::new();
        for (d, (at, refs)) in &manifests {
            let is_referrer = refs.as_ref().is_some_and(|r| r.subject.is_some());
            let untagged_rule = policy.keep_untagged.as_ref().is_some_and(|rule| {
                let c = Candidate {
                    name: String::new(),
                    digest: d.clone(),
                    pushed: *at,
                    pulled: pulls.get(d).copied(),
                };
                rule.keeps(&[&c], now).contains(&0)
            });
            let root = tagged.contains(d)
                || *at > cutoff
                // Pulled within the delay: in use (a deployment pinned to a
                // digest, or a pull-through cache serving one).
                || pulls.get(d).is_some_and(|p| *p > cutoff)
                // Unreadable: never guess.
                || refs.is_none()
                || untagged_rule
                || if is_referrer {
                    !policy.delete_referrers
                } else {
                    !policy.delete_untagged
                };
            if root {
                pending.push(d);
            }
        }
        while let Some(d) = pending.pop() {
            if !kept.insert(d) {
                continue;
            }
            let refs = manifests.get(d).and_then(|(_, r)| r.as_ref());
            let children = refs.map(|r| r.children.iter()).into_iter().flatten();
            let subject = refs.and_then(|r| r.subject.as_ref());
            let referrers = referrers_of.get(d).into_iter().flatten().copied();
            for next in children.chain(subject).chain(referrers) {
                if let Some((key, _)) = manifests.get_key_value(next) {
                    if !kept.contains(key) {
                        pending.push(key);
                    }
                }
            }
        }
        let mut doomed: Vec<Digest> = manifests
            .keys()
            .filter(|d| !kept.contains(d))
            .cloned()
            .collect();
        doomed.sort();
        if doomed.is_empty() {
            return Ok(report);
        }
        if dry_run {
            for d in doomed {
                tracing::info!(repository = %repo, digest = %d, dry_run, decision = "delete", reason = "untagged", "retention");
                report.manifests_removed.push((repo.to_string(), d));
            }
            return Ok(report);
        }

        // Hide (the link and its referrer entry), look again, restore
        // what is in use now, delete the rest.
        let mut hidden = Vec::new();
        for d in doomed {
            let Some(at) = self.hide(&keys::manifest_link(repo, &d), trash).await else {
                continue;
            };
            let entry = manifests
                .get(&d)
                .and_then(|(_, r)| r.as_ref())
                .and_then(|r| r.subject.as_ref())
                .map(|s| keys::referrer(repo, s, &d));
            let entry = match entry {
                Some(key) => self.hide(&key, trash).await.map(|at| (key, at)),
                None => None,
            };
            hidden.push((d, at, entry));
        }
        // In use: what is tagged now, every manifest still (or again)
        // linked, and, followed to the end, whatever those refer to.
        let mut pending: Vec<Digest> = self
            .tag_states(repo)
            .await?
            .into_iter()
            .map(|(_, d, _)| d)
            .collect();
        pending.extend(self.linked(repo, keys::MANIFESTS).await?);
        for (d, at, _) in &hidden {
            // Pushed again since the decision (a push refreshes the link).
            let snapshot = manifests.get(d).map(|(t, _)| *t);
            if self.store.modified(at).await? != snapshot {
                pending.push(d.clone());
            }
        }
        let mut in_use: HashSet<Digest> = HashSet::new();
        while let Some(d) = pending.pop() {
            if !in_use.insert(d.clone()) {
                continue;
            }
            if let Some(refs) = self.refs(&d).await? {
                pending.extend(refs.children.iter().cloned());
                pending.extend(refs.subject.iter().cloned());
            }
        }
        for (d, at, entry) in hidden {
            let link = keys::manifest_link(repo, &d);
            if in_use.contains(&d) {
                self.restore(&at, &link).await?;
                if let Some((key, at)) = entry {
                    self.restore(&at, &key).await?;
                }
                continue;
            }
            self.store.delete(&at, Durability::Durable).await?;
            if let Some((_, at)) = entry {
                self.store.delete(&at, Durability::Lazy).await?;
            }
            tracing::info!(repository = %repo, digest = %d, dry_run, decision = "delete", reason = "untagged", "retention");
            report.manifests_removed.push((repo.to_string(), d));
        }
        // Forget the pull times of what went, in memory too (else a later
        // flush writes them back, and a manifest pushed again would start
        // with an old pull time).
        if !report.manifests_removed.is_empty() {
            self.forget_noted_pulls(repo, report.manifests_removed.iter().map(|(_, d)| d));
            let _turn = self.store.exclusive(&keys::pulls(repo)).await?;
            let mut stored = self.stored_pulls(repo).await?;
            let before = stored.len();
            for (_, d) in &report.manifests_removed {
                stored.remove(d.as_str());
            }
            if stored.len() != before {
                self.write_pulls(repo, &stored).await?;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(berth_oci::Algorithm::Sha256, &[n])
    }

    fn cand(name: &str, pushed_ago: u64, pulled_ago: Option<u64>, now: SystemTime) -> Candidate {
        Candidate {
            name: name.into(),
            digest: digest(name.len() as u8),
            pushed: now - Duration::from_secs(pushed_ago),
            pulled: pulled_ago.map(|a| now - Duration::from_secs(a)),
        }
    }

    fn rule(patterns: &[&str]) -> KeepRule {
        KeepRule {
            patterns: patterns
                .iter()
                .map(|p| regex::Regex::new(p).unwrap())
                .collect(),
            ..KeepRule::default()
        }
    }

    fn policy(keep_tags: Vec<KeepRule>) -> Policy {
        Policy {
            keep_tags,
            ..default_policy()
        }
    }

    fn removed(p: &Policy, tags: &[Candidate], now: SystemTime) -> Vec<String> {
        p.tags_to_remove(tags, now)
            .into_iter()
            .map(|i| tags[i].name.clone())
            .collect()
    }

    const H: u64 = 3600;

    #[test]
    fn no_keep_tags_keeps_every_tag() {
        let now = SystemTime::now();
        let tags = [cand("a", 100 * H, None, now), cand("b", 0, None, now)];
        assert!(removed(&default_policy(), &tags, now).is_empty());
    }

    #[test]
    fn patterns_are_unanchored_regexes_and_unmatched_tags_go() {
        let now = SystemTime::now();
        let tags = [
            cand("v1.0", H, None, now),
            cand("v2.0-prod", H, None, now),
            cand("dev", H, None, now),
        ];
        let p = policy(vec![rule(&["^v1\\.", "-prod$"])]);
        assert_eq!(removed(&p, &tags, now), ["dev"]);
    }

    #[test]
    fn pushed_within_and_counts_combine_with_or() {
        let now = SystemTime::now();
        let tags = [
            cand("old", 50 * H, None, now),
            cand("older", 60 * H, Some(H), now),
            cand("new", H, None, now),
            cand("oldest", 70 * H, None, now),
        ];
        let mut r = rule(&[]);
        r.pushed_within = Some(Duration::from_secs(24 * H));
        r.most_recently_pulled = 1;
        assert_eq!(removed(&policy(vec![r]), &tags, now), ["old", "oldest"]);

        let mut r = rule(&[]);
        r.most_recently_pushed = 2;
        assert_eq!(removed(&policy(vec![r]), &tags, now), ["older", "oldest"]);
    }

    #[test]
    fn pulled_within_also_keeps_recent_pushes() {
        let now = SystemTime::now();
        let tags = [
            cand("fresh", H, None, now),
            cand("pulled", 90 * H, Some(2 * H), now),
            cand("stale", 90 * H, Some(80 * H), now),
            cand("never", 90 * H, None, now),
        ];
        let mut r = rule(&[".*"]);
        r.pulled_within = Some(Duration::from_secs(24 * H));
        assert_eq!(removed(&policy(vec![r]), &tags, now), ["stale", "never"]);
    }

    #[test]
    fn the_first_matching_rule_decides_and_counts_are_per_rule() {
        let now = SystemTime::now();
        let tags = [
            cand("v1", 10 * H, None, now),
            cand("v2", 5 * H, None, now),
            cand("latest", 90 * H, None, now),
        ];
        let mut releases = rule(&["^v"]);
        releases.most_recently_pushed = 1;
        // "latest" falls to the second rule, which has no criteria: kept,
        // although it is the oldest push of all.
        let p = policy(vec![releases, rule(&[])]);
        assert_eq!(removed(&p, &tags, now), ["v1"]);
    }

    #[test]
    fn most_recently_pulled_never_keeps_the_never_pulled() {
        let now = SystemTime::now();
        let tags = [cand("a", H, None, now), cand("b", H, None, now)];
        let mut r = rule(&[]);
        r.most_recently_pulled = 5;
        assert_eq!(removed(&policy(vec![r]), &tags, now), ["a", "b"]);
    }

    #[test]
    fn first_matching_policy_applies() {
        let r = Retention {
            policies: vec![
                Policy {
                    repositories: Arc::new(|n| n.starts_with("tmp/")),
                    delete_referrers: true,
                    ..default_policy()
                },
                Policy {
                    repositories: Arc::new(|_| true),
                    delete_untagged: false,
                    ..default_policy()
                },
            ],
            ..Retention::default()
        };
        assert!(r.policy_for("tmp/x").delete_referrers);
        assert!(r.policy_for("tmp/x").delete_untagged);
        assert!(!r.policy_for("prod/x").delete_untagged);
        assert!(Retention::default().policy_for("any").delete_untagged);
    }
}
