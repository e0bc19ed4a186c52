//! Tag lists and the catalog, in byte order, with `n`/`last` pagination.
//!
//! On a store this process alone writes, the catalog is answered from an
//! in-memory index of repository names: built by one walk of storage on
//! first use, and kept current by every write that can create a repository
//! (see [`Registry::note_repo`]) and by every delete that can empty one.
//! Storage stays the source of truth; the index is derived and rebuilt at
//! start. On the shared store (`Options::shared_store`) other replicas
//! write too, and every page is read from the store with keyset queries
//! ([`Backend::dirs_holding`]): never stale, never a walk.
//!
//! [`Backend::dirs_holding`]: berth_storage::Backend::dirs_holding

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
            for alg in crate::gc::ALGORITHMS {
                let dir = keys::links(repo, kind, alg);
                if !self.store.list_after(&dir, None, 1).await?.is_empty() {
                    return Ok(true);
                }
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
    }

    /// Repository names, after `last`, at most `n`, among those `visible`
    /// accepts (the server passes what the caller may read).
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Page> {
        self.catalog_page(n.unwrap_or(usize::MAX), last, false, visible)
            .await
    }

    /// Repository names beyond `from` in byte order (or reversed), at most
    /// `n`, among those `visible` accepts; `more` when another follows.
    pub(crate) async fn catalog_page(
        &self,
        n: usize,
        from: Option<&str>,
        descending: bool,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Page> {
        if self.options.shared_store {
            return self.catalog_query(n, from, descending, visible).await;
        }
        self.catalog
            .loaded
            .get_or_try_init(|| async {
                let walked = self.walk_repositories().await?;
                self.catalog
                    .names
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(walked);
                Ok::<_, CoreError>(())
            })
            .await?;
        let names = self.catalog.names.read().unwrap_or_else(|p| p.into_inner());
        let beyond = from.map_or(Bound::Unbounded, Bound::Excluded);
        let mut iter: Box<dyn Iterator<Item = &String>> = if descending {
            Box::new(names.range::<str, _>((Bound::Unbounded, beyond)).rev())
        } else {
            Box::new(names.range::<str, _>((beyond, Bound::Unbounded)))
        };
        let mut iter = iter.by_ref().filter(|n| visible(n));
        let items: Vec<String> = iter.by_ref().take(n).cloned().collect();
        let more = n > 0 && iter.next().is_some();
        Ok(Page { items, more })
    }

    /// [`Registry::catalog_page`] read from the store: repositories are the
    /// directories holding `_manifests` or `_layers`, asked for a batch at
    /// a time beyond the last one seen, each kept if visible and not empty.
    async fn catalog_query(
        &self,
        n: usize,
        from: Option<&str>,
        descending: bool,
        visible: impl Fn(&str) -> bool,
    ) -> Result<Page> {
        let batch = n.saturating_add(1).clamp(16, 500);
        let mut items = Vec::new();
        let mut cursor = from.map(str::to_owned);
        loop {
            let dirs = self
                .store
                .dirs_holding(
                    keys::REPOSITORIES,
                    &[keys::MANIFESTS, keys::LAYERS],
                    cursor.as_deref(),
                    batch,
                    descending,
                )
                .await?;
            let exhausted = dirs.len() < batch;
            cursor = dirs.last().cloned();
            for name in dirs {
                if !visible(&name) {
                    continue;
                }
                let Some(repo) = RepoName::parse(&name) else {
                    continue;
                };
                if !self.repo_exists(&repo).await? {
                    continue;
                }
                if items.len() == n {
                    return Ok(Page { items, more: n > 0 });
                }
                items.push(name);
            }
            if exhausted {
                return Ok(Page { items, more: false });
            }
        }
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
