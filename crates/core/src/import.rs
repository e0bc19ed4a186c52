//! Imports OCI image layouts (the way zot keeps each repository under its
//! `rootDirectory`) into the registry.
//!
//! A repository of the source is a directory holding `oci-layout` and
//! `index.json`; its name is its path under the root (nested repositories
//! included, a repository's own `blobs/` excepted). Tags are the
//! `org.opencontainers.image.ref.name` annotations of `index.json`; every
//! other entry there (untagged manifests, referrers) is imported too, and so
//! is every manifest an index names.
//!
//! Everything goes through the registry's own write paths, so nothing is
//! trusted: blobs are hashed as they stream in (a mismatch is refused and
//! nothing of it is kept), manifests are validated and must find their
//! blobs, content before manifests, children before their index, subjects
//! before their referrers, tags last. The state lives in the destination,
//! so an interrupted import run again skips what is already there
//! (a linked blob, a stored manifest, a tag already pointing at the same
//! digest) and picks up where it stopped. A tag that already points
//! elsewhere in the destination is reported and left alone.
//!
//! The source is read through a [`Backend`] (the server opens it with
//! [`berth_storage::fs::FsBackend::reader`]) and never written.

use crate::manifests::TagWrite;
use crate::{CoreError, Registry, Result};
use berth_oci::manifest::{self, Descriptor, Kind};
use berth_oci::{Digest, Reference, RepoName, Tag};
use berth_storage::Backend;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// The annotation holding a manifest's tag in an image layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Deepest repository path searched (a repository name has at most this
/// many components in practice; the walk must end on any tree).
const MAX_DEPTH: usize = 32;
/// Largest `index.json` read (a layout with ~1 million tags).
const MAX_INDEX: u64 = 256 * 1024 * 1024;
/// Deepest nesting of indexes followed.
const MAX_NESTING: usize = 8;

/// What an import did. Counts are of things imported by this run;
/// `present` counts what the destination already held.
#[derive(Debug, Default, Clone)]
pub struct ImportReport {
    pub repositories: usize,
    pub tags: usize,
    pub manifests: usize,
    pub blobs: usize,
    pub bytes: u64,
    /// Tags, manifests and blobs the destination already held.
    pub present: usize,
    /// What could not be imported, one line each (the import goes on).
    pub problems: Vec<String>,
    /// Read back from the destination after the import: tags pointing at
    /// the source's digest, manifests matching their digest, blobs of the
    /// source's size.
    pub verified_tags: usize,
    pub verified_manifests: usize,
    pub verified_blobs: usize,
}

/// Where an import is, for progress lines.
#[derive(Debug, Clone)]
pub struct ImportProgress<'a> {
    /// The repository being imported and its place among all of them.
    pub repository: &'a str,
    pub index: usize,
    pub of: usize,
    pub report: &'a ImportReport,
}

#[derive(Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutMarker {
    image_layout_version: String,
}

/// What one repository's import must check at the end.
#[derive(Default)]
struct Seen {
    tags: BTreeMap<Tag, Digest>,
    manifests: BTreeSet<Digest>,
    blobs: BTreeMap<Digest, u64>,
}

/// A source blob's key in an image layout.
fn layout_blob(repo: &str, d: &Digest) -> String {
    format!("{repo}/blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// Finds the image layouts under `root` of `source`: their repository
/// names, sorted. Directories that are not repository names (hidden ones,
/// `_`-prefixed ones such as zot's `_trivy`, a layout's `blobs`) are not
/// searched.
pub async fn find_layouts(source: &dyn Backend) -> Result<Vec<RepoName>> {
    let mut found = Vec::new();
    let mut pending = vec![(String::new(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        let entries = source.list(&dir).await?;
        let is_layout = entries.iter().any(|e| !e.is_dir && e.name == "oci-layout")
            && entries.iter().any(|e| !e.is_dir && e.name == "index.json");
        if is_layout {
            if let Some(name) = RepoName::parse(&dir) {
                found.push(name);
            }
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        for e in entries.iter().filter(|e| e.is_dir) {
            if e.name.starts_with(['.', '_']) || (is_layout && e.name == "blobs") {
                continue;
            }
            let child = if dir.is_empty() {
                e.name.clone()
            } else {
                format!("{dir}/{}", e.name)
            };
            pending.push((child, depth + 1));
        }
    }
    found.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(found)
}

impl Registry {
    /// Imports every image layout of `source` (see the module
    /// documentation), calling `progress` after each manifest.
    pub async fn import_layouts(
        &self,
        source: &dyn Backend,
        mut progress: impl FnMut(&ImportProgress<'_>),
    ) -> Result<ImportReport> {
        let repos = find_layouts(source).await?;
        let mut report = ImportReport::default();
        for (i, repo) in repos.iter().enumerate() {
            let mut step = |report: &ImportReport| {
                progress(&ImportProgress {
                    repository: repo.as_str(),
                    index: i + 1,
                    of: repos.len(),
                    report,
                })
            };
            match self
                .import_layout(source, repo, &mut report, &mut step)
                .await
            {
                Ok(seen) => {
                    report.repositories += 1;
                    self.verify_import(repo, &seen, &mut report).await?;
                }
                Err(Problem(line)) => report.problems.push(format!("{repo}: {line}")),
            }
            step(&report);
        }
        Ok(report)
    }

    /// Imports one layout. A problem that stops the whole repository (an
    /// unreadable `index.json`) is returned; problems with single
    /// manifests are recorded and the rest goes on.
    async fn import_layout(
        &self,
        source: &dyn Backend,
        repo: &RepoName,
        report: &mut ImportReport,
        progress: &mut impl FnMut(&ImportReport),
    ) -> std::result::Result<Seen, Problem> {
        let marker = source
            .get(&format!("{repo}/oci-layout"))
            .await
            .map_err(Problem::io)?
            .unwrap_or_default();
        match serde_json::from_slice::<LayoutMarker>(&marker) {
            Ok(m) if m.image_layout_version.starts_with("1.") => {}
            Ok(m) => {
                return Err(Problem(format!(
                    "oci-layout: version {:?} is not supported",
                    m.image_layout_version
                )))
            }
            Err(e) => return Err(Problem(format!("oci-layout: {e}"))),
        }
        let index_key = format!("{repo}/index.json");
        match source.stat(&index_key).await.map_err(Problem::io)? {
            Some(n) if n > MAX_INDEX => {
                return Err(Problem(format!(
                    "index.json is {n} bytes, over {MAX_INDEX}"
                )))
            }
            _ => {}
        }
        let index = source
            .get(&index_key)
            .await
            .map_err(Problem::io)?
            .unwrap_or_default();
        let index: LayoutIndex =
            serde_json::from_slice(&index).map_err(|e| Problem(format!("index.json: {e}")))?;

        let mut seen = Seen::default();
        // Subjects before their referrers: entries without a subject first.
        let mut entries: Vec<(bool, &Descriptor)> = Vec::new();
        for d in &index.manifests {
            let has_subject = match self.read_source_manifest(source, repo, d).await {
                Ok((_, m)) => m.subject.is_some(),
                Err(_) => false, // reported when imported
            };
            entries.push((has_subject, d));
        }
        entries.sort_by_key(|(has_subject, _)| *has_subject);
        for (_, d) in &entries {
            if let Err(Problem(line)) = self
                .import_manifest(source, repo, d, 0, &mut seen, report)
                .await
            {
                report.problems.push(format!("{repo}@{}: {line}", d.digest));
            }
            progress(report);
        }
        // Tags last, each to a manifest now stored.
        for d in &index.manifests {
            let Some(name) = d.annotations.as_ref().and_then(|a| a.get(REF_NAME)) else {
                continue;
            };
            let Some(tag) = Tag::parse(name) else {
                report
                    .problems
                    .push(format!("{repo}: {REF_NAME} {name:?} is not a tag"));
                continue;
            };
            if !seen.manifests.contains(&d.digest) {
                continue; // its manifest was not imported: reported above
            }
            match self.tag_target(repo, &tag).await.map_err(Problem::core) {
                Ok(Some(current)) if current == d.digest => {
                    report.present += 1;
                    seen.tags.insert(tag, d.digest.clone());
                }
                Ok(Some(current)) => report.problems.push(format!(
                    "{repo}:{tag}: already points at {current} here, not {} (left alone)",
                    d.digest
                )),
                Ok(None) => {
                    let body = match self
                        .peek_manifest(repo, &Reference::Digest(d.digest.clone()))
                        .await
                    {
                        Ok(m) => m,
                        Err(e) => {
                            report.problems.push(format!("{repo}:{tag}: {e}"));
                            continue;
                        }
                    };
                    match self
                        .put_manifest(
                            repo,
                            &Reference::Tag(tag.clone()),
                            Some(&body.media_type),
                            body.body,
                            TagWrite::CreateOnly,
                        )
                        .await
                    {
                        Ok(_) => {
                            report.tags += 1;
                            seen.tags.insert(tag, d.digest.clone());
                        }
                        Err(e) => report.problems.push(format!("{repo}:{tag}: {e}")),
                    }
                }
                Err(Problem(line)) => report.problems.push(format!("{repo}:{tag}: {line}")),
            }
        }
        Ok(seen)
    }

    /// A manifest of the source, read whole (bounded by the registry's
    /// manifest limit) and parsed with the media type its descriptor gives.
    async fn read_source_manifest(
        &self,
        source: &dyn Backend,
        repo: &RepoName,
        d: &Descriptor,
    ) -> std::result::Result<(bytes::Bytes, manifest::Manifest), Problem> {
        let key = layout_blob(repo.as_str(), &d.digest);
        let limit = self.options.max_manifest_size as u64;
        match source.stat(&key).await.map_err(Problem::io)? {
            None => return Err(Problem("manifest missing from blobs/".into())),
            Some(n) if n > limit => {
                return Err(Problem(format!("manifest is {n} bytes, over {limit}")))
            }
            Some(_) => {}
        }
        let body = source
            .get(&key)
            .await
            .map_err(Problem::io)?
            .ok_or_else(|| Problem("manifest missing from blobs/".into()))?;
        if Digest::of(d.digest.algorithm(), &body) != d.digest {
            return Err(Problem("manifest does not match its digest".into()));
        }
        let content_type = Some(d.media_type.as_str()).filter(|t| !t.is_empty());
        let parsed = manifest::parse(&body, content_type).map_err(|e| Problem(e.to_string()))?;
        Ok((body, parsed))
    }

    /// Imports one manifest with what it references, children first.
    async fn import_manifest(
        &self,
        source: &dyn Backend,
        repo: &RepoName,
        d: &Descriptor,
        depth: usize,
        seen: &mut Seen,
        report: &mut ImportReport,
    ) -> std::result::Result<(), Problem> {
        if seen.manifests.contains(&d.digest) {
            return Ok(());
        }
        if depth > MAX_NESTING {
            return Err(Problem(format!("indexes nested deeper than {MAX_NESTING}")));
        }
        let reference = Reference::Digest(d.digest.clone());
        let (body, parsed) = self.read_source_manifest(source, repo, d).await?;
        let present = self.resolve_manifest(repo, &reference).await.is_ok();
        if present && parsed.kind == Kind::Image {
            // Stored by an earlier run, with every blob it references (a
            // push is refused otherwise): they are only checked at the end.
            report.present += 1;
            note_seen(&parsed, d, seen);
            return Ok(());
        }
        match parsed.kind {
            Kind::Index => {
                for child in &parsed.manifests {
                    Box::pin(self.import_manifest(source, repo, child, depth + 1, seen, report))
                        .await
                        .map_err(|Problem(line)| {
                            Problem(format!("child {}: {line}", child.digest))
                        })?;
                }
            }
            Kind::Image => {
                for b in &parsed.blobs {
                    self.import_blob(source, repo, b, seen, report).await?;
                }
            }
        }
        if present {
            // An index stored by an earlier run: its children were walked
            // above (all present too) so that the final check covers them.
            report.present += 1;
            seen.manifests.insert(d.digest.clone());
            return Ok(());
        }
        self.put_manifest(
            repo,
            &reference,
            Some(&parsed.media_type),
            body,
            TagWrite::CreateOnly,
        )
        .await
        .map_err(Problem::core)?;
        report.manifests += 1;
        seen.manifests.insert(d.digest.clone());
        Ok(())
    }

    /// Imports one blob, hashing it on the way in.
    async fn import_blob(
        &self,
        source: &dyn Backend,
        repo: &RepoName,
        b: &Descriptor,
        seen: &mut Seen,
        report: &mut ImportReport,
    ) -> std::result::Result<(), Problem> {
        if seen.blobs.contains_key(&b.digest) {
            return Ok(());
        }
        let key = layout_blob(repo.as_str(), &b.digest);
        let in_source = source.stat(&key).await.map_err(Problem::io)?;
        if !b.must_exist() && in_source.is_none() {
            return Ok(()); // a foreign layer, fetched from its URLs by clients
        }
        match self.blob_size(repo, &b.digest).await {
            Ok(_) => {
                report.present += 1;
                seen.blobs.insert(b.digest.clone(), b.size);
                return Ok(());
            }
            Err(CoreError::BlobUnknown) => {}
            Err(e) => return Err(Problem::core(e)),
        }
        let Some(size) = in_source else {
            return Err(Problem(format!("blob {} missing from blobs/", b.digest)));
        };
        if size != b.size {
            return Err(Problem(format!(
                "blob {} is {size} bytes, its descriptor says {}",
                b.digest, b.size
            )));
        }
        let body = source.read(&key, 0, None).await.map_err(Problem::io)?;
        self.upload_whole(repo, &b.digest, body)
            .await
            .map_err(|e| Problem(format!("blob {}: {e}", b.digest)))?;
        report.blobs += 1;
        report.bytes = report.bytes.saturating_add(size);
        seen.blobs.insert(b.digest.clone(), b.size);
        Ok(())
    }

    /// Reads back what one repository's import holds.
    async fn verify_import(
        &self,
        repo: &RepoName,
        seen: &Seen,
        report: &mut ImportReport,
    ) -> Result<()> {
        for (tag, digest) in &seen.tags {
            match self.tag_target(repo, tag).await? {
                Some(d) if d == *digest => report.verified_tags += 1,
                other => report.problems.push(format!(
                    "{repo}:{tag}: verification: points at {other:?}, not {digest}"
                )),
            }
        }
        for digest in &seen.manifests {
            match self
                .peek_manifest(repo, &Reference::Digest(digest.clone()))
                .await
            {
                Ok(_) => report.verified_manifests += 1,
                Err(e) => report
                    .problems
                    .push(format!("{repo}@{digest}: verification: {e}")),
            }
        }
        for (digest, size) in &seen.blobs {
            match self.blob_size(repo, digest).await {
                Ok(n) if n == *size => report.verified_blobs += 1,
                Ok(n) => report.problems.push(format!(
                    "{repo} blob {digest}: verification: {n} bytes, not {size}"
                )),
                Err(e) => report
                    .problems
                    .push(format!("{repo} blob {digest}: verification: {e}")),
            }
        }
        Ok(())
    }
}

/// Notes what an already stored manifest holds, for the final check (the
/// children of a stored index were stored before it, as for any push).
fn note_seen(parsed: &manifest::Manifest, d: &Descriptor, seen: &mut Seen) {
    seen.manifests.insert(d.digest.clone());
    for b in parsed.blobs.iter().filter(|b| b.must_exist()) {
        seen.blobs.insert(b.digest.clone(), b.size);
    }
}

/// Why one manifest or repository could not be imported.
struct Problem(String);

impl Problem {
    fn io(e: berth_storage::StorageError) -> Problem {
        Problem(format!("reading the source: {e}"))
    }
    fn core(e: CoreError) -> Problem {
        Problem(e.to_string())
    }
}
