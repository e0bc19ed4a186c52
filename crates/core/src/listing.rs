//! Tag lists and the catalog, in byte order, with `n`/`last` pagination.
//!
//! The catalog is answered from an in-memory index of repository names:
//! built by one walk of storage on first use, and kept current by every
//! write that can create a repository (see [`Registry::note_repo`]) and by
//! every delete that can empty one. Storage stays the source of truth; the
//! index is derived and rebuilt at start.

use crate::{keys, CoreError, Registry, Result};
use berth_oci::RepoName;
use berth_storage::Entry;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::RwLock;

/// The repository names known to this process.
#[derive(Default)]
pub struct CatalogIndex {
    pub(crate) names: RwLock<BTreeSet<String>>,
    loaded: tokio::sync::OnceCell<()>,
    /// With `Options::catalog_refresh`: when the last walk began.
    walked_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// Names noted since the last walk began (a walk must not drop them).
    noted: std::sync::Mutex<BTreeSet<String>>,
    refreshing: std::sync::atomic::AtomicBool,
}

/// One page of names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// More names follow the last one returned.
    pub more: bool,
}

/// Takes the names after `last`, at most `n` of them. `names` is sorted.
pub fn paginate(names: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    let start = match last {
        Some(l) => names.partition_point(|x| x.as_str() <= l),
        None => 0,
    };
    let rest = names.len() - start;
    let take = n.unwrap_or(rest).min(rest);
    // `n=0` asks for nothing and gets no continuation (distribution-spec).
    let more = take > 0 && take < rest;
    let items = names.into_iter().skip(start).take(take).collect();
    Page { items, more }
}

impl Registry {
    /// Tags of a repository.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let prefix = keys::tags(repo);
        // A page asks the store for that page (and one more name, to know
        // whether more follow), not for every tag.
        let tags = match n {
            Some(n) => {
                let want = n.saturating_add(1);
                self.store.list_after(&prefix, last, want).await?
            }
            None => self.store.list(&prefix).await?,
        };
        if tags.is_empty() && !self.repo_exists(repo).await? {
            return Err(CoreError::NameUnknown);
        }
        let mut names: Vec<String> = tags
            .into_iter()
            .filter(|e| !e.is_dir)
            .map(|e| e.name)
            .collect();
        names.sort();
        Ok(paginate(names, n, last))
    }

    /// Whether a repository holds anything: a manifest or a blob link.
    /// (Directories a backend leaves behind after the last delete do not
    /// count.)
    pub async fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        if !is_repo(&self.store.list(&keys::repo(repo)).await?) {
            return Ok(false);
        }
        for kind in [keys::MANIFESTS, keys::LAYERS] {
            if !self.linked(repo, kind).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Takes a repository out of the catalog once it holds nothing. Called
    /// after deletes; a push racing with it is never lost: the name goes
    /// first and the repository is looked at again, and a push notes its
    /// name after writing its link. The delete that calls this has been
    /// done: a failure to look is logged and the name stays listed.
    pub(crate) async fn forget_repo_if_empty(&self, repo: &RepoName) {
        if let Err(e) = self.forget_if_empty(repo).await {
            tracing::warn!(repository = %repo, error = %e, "could not check whether a repository is empty");
        }
    }

    async fn forget_if_empty(&self, repo: &RepoName) -> Result<()> {
        if self.repo_exists(repo).await? {
            return Ok(());
        }
        self.catalog
            .names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(repo.as_str());
        if self.repo_exists(repo).await? {
            self.note_repo(repo);
        }
        Ok(())
    }

    /// Records that `repo` holds something. Called by every write that can
    /// create a repository, whether or not the index is loaded yet, so a
    /// walk racing with a write cannot lose the name.
    pub(crate) fn note_repo(&self, repo: &RepoName) {
        let known = self
            .catalog
            .names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(repo.as_str());
        if !known {
            self.catalog
                .names
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(repo.to_string());
        }
        if self.options.catalog_refresh.is_some() {
            self.catalog
                .noted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(repo.to_string());
        }
    }

    /// With `Options::catalog_refresh`, starts a walk in the background
    /// when the last one began longer ago than that: names other replicas
    /// created (or emptied) reach this one's index within the interval
    /// plus one walk.
    fn refresh_catalog_if_due(&self) {
        use std::sync::atomic::Ordering;
        let Some(every) = self.options.catalog_refresh else {
            return;
        };
        let due = self
            .catalog
            .walked_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|t| t.elapsed() >= every);
        if !due || self.catalog.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.catalog
                .noted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            *me.catalog
                .walked_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
            match me.walk_repositories().await {
                Ok(walked) => {
                    let mut names: BTreeSet<String> = walked.into_iter().collect();
                    names.extend(
                        me.catalog
                            .noted
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .iter()
                            .cloned(),
                    );
                    *me.catalog.names.write().unwrap_or_else(|p| p.into_inner()) = names;
                }
                Err(e) => tracing::warn!(error = %e, "could not refresh the catalog"),
            }
            me.catalog.refreshing.store(false, Ordering::Release);
        });
    }

    /// Repository names, after `last`, at most `n`, among those `visible`
    /// accepts (the server passes what the caller may read).
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Page> {
        self.catalog
            .loaded
            .get_or_try_init(|| async {
                *self
                    .catalog
                    .walked_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
                let walked = self.walk_repositories().await?;
                self.catalog
                    .names
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(walked);
                Ok::<_, CoreError>(())
            })
            .await?;
        self.refresh_catalog_if_due();
        let names = self.catalog.names.read().unwrap_or_else(|p| p.into_inner());
        let lower = last.map_or(Bound::Unbounded, Bound::Excluded);
        let mut iter = names
            .range::<str, _>((lower, Bound::Unbounded))
            .filter(|n| visible(n));
        let items: Vec<String> = iter
            .by_ref()
            .take(n.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        let more = n.is_some_and(|n| n > 0) && iter.next().is_some();
        Ok(Page { items, more })
    }

    /// Finds every repository in storage.
    pub(crate) async fn walk_repositories(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(name) = pending.pop() {
            let prefix = keys::repositories_under(&name);
            let entries = self.store.list(&prefix).await?;
            if !name.is_empty() && is_repo(&entries) {
                if let Some(repo) = RepoName::parse(&name) {
                    if self.repo_exists(&repo).await? {
                        names.push(name.clone());
                    }
                }
            }
            for e in entries
                .iter()
                .filter(|e| e.is_dir && !e.name.starts_with('_'))
            {
                pending.push(if name.is_empty() {
                    e.name.clone()
                } else {
                    format!("{name}/{}", e.name)
                });
            }
        }
        Ok(names)
    }
}

fn is_repo(entries: &[Entry]) -> bool {
    entries
        .iter()
        .any(|e| e.is_dir && (e.name == keys::MANIFESTS || e.name == keys::LAYERS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages() {
        let all = v(&["a", "b", "c", "d"]);
        assert_eq!(
            paginate(all.clone(), None, None),
            Page {
                items: all.clone(),
                more: false
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(2), None),
            Page {
                items: v(&["a", "b"]),
                more: true
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            Page {
                items: v(&["c", "d"]),
                more: false
            }
        );
        assert_eq!(
            paginate(all.clone(), None, Some("bb")),
            Page {
                items: v(&["c", "d"]),
                more: false
            }
        );
        assert_eq!(
            paginate(all.clone(), Some(0), None),
            Page {
                items: vec![],
                more: false
            }
        );
        assert_eq!(
            paginate(all, Some(9), Some("z")),
            Page {
                items: vec![],
                more: false
            }
        );
    }
}
