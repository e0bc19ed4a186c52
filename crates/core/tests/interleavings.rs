//! Every interleaving of a client's writes with a collection pass, driven by
//! construction: the pass is stopped at a chosen storage operation (after it
//! hid an object, before it looks again, before it deletes), the write runs
//! to its answer meanwhile, then the pass goes on. Whatever the write was
//! told succeeded must still be there after that pass and after the next.

use berth_core::gc::{GcOptions, GcReport};
use berth_core::manifests::TagWrite;
use berth_core::retention::{KeepRule, Policy, Retention};
use berth_core::{keys, CoreError, Options, Registry};
use berth_oci::{Algorithm, Digest, Reference, RepoName, Tag};
use berth_storage::cluster::ClusterBackend;
use berth_storage::mem::MemBackend;
use berth_storage::pause::{Breakpoint, Op, Pausing, When};
use bytes::Bytes;
use futures_util::TryStreamExt;
use std::sync::Arc;
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct World {
    /// The replica that collects.
    reg: Registry,
    /// The replica clients write through: `reg` itself on one node, another
    /// `Registry` over the same store when replicas share it.
    writer: Registry,
    store: Arc<Pausing>,
    repo: RepoName,
    config: Digest,
    layer: Digest,
    /// A blob of the repository that no manifest references.
    orphan: Digest,
    /// A layer only `dropped` references.
    dropped_layer: Digest,
    /// The manifest tagged `drop-1`, which retention removes.
    dropped: Bytes,
    dropped_digest: Digest,
}

fn body(data: Bytes) -> berth_core::ByteStream {
    Box::pin(futures_util::stream::iter([Ok(data)]))
}

fn blob_data(name: &str) -> Bytes {
    Bytes::from(format!("blob {name} ").repeat(50))
}

async fn push_blob(reg: &Registry, repo: &RepoName, data: Bytes) -> Result<Digest, CoreError> {
    let d = Digest::of(Algorithm::Sha256, &data);
    reg.upload_whole(repo, &d, body(data)).await?;
    Ok(d)
}

fn image(config: &Digest, layers: &[&Digest]) -> Bytes {
    let layers: Vec<String> = layers
        .iter()
        .map(|d| {
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":400}}"#)
        })
        .collect();
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":400}},"layers":[{}]}}"#,
        layers.join(",")
    ))
}

fn tag(name: &str) -> Reference {
    Reference::Tag(Tag::parse(name).unwrap())
}

async fn put(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    m: &Bytes,
) -> Result<Digest, CoreError> {
    reg.put_manifest(
        repo,
        reference,
        Some(OCI_MANIFEST),
        m.clone(),
        TagWrite::Overwrite,
    )
    .await
    .map(|p| p.digest)
}

async fn world() -> World {
    world_on(Arc::new(MemBackend::new()), false).await
}

/// A world over `inner`; with `replicas`, writes go through a second
/// registry sharing the store (a second replica, with its own locks and
/// caches).
async fn world_on(inner: Arc<dyn berth_storage::Backend>, replicas: bool) -> World {
    let store = Arc::new(Pausing::new(inner));
    let reg = Registry::new(store.clone(), Options::default());
    let writer = if replicas {
        Registry::new(store.clone(), Options::default())
    } else {
        reg.clone()
    };
    let repo = RepoName::parse("app").unwrap();
    let config = push_blob(&reg, &repo, blob_data("config")).await.unwrap();
    let layer = push_blob(&reg, &repo, blob_data("layer")).await.unwrap();
    let orphan = push_blob(&reg, &repo, blob_data("orphan")).await.unwrap();
    let dropped_layer = push_blob(&reg, &repo, blob_data("dropped")).await.unwrap();
    put(&reg, &repo, &tag("keep-0"), &image(&config, &[&layer]))
        .await
        .unwrap();
    let dropped = image(&config, &[&dropped_layer]);
    let dropped_digest = put(&reg, &repo, &tag("drop-1"), &dropped).await.unwrap();
    // Everything so far was written long ago: a pass may take what is
    // unreferenced.
    store.age_everything();
    World {
        reg,
        writer,
        store,
        repo,
        config,
        layer,
        orphan,
        dropped_layer,
        dropped,
        dropped_digest,
    }
}

fn options() -> GcOptions {
    let keep = KeepRule::new(&["^keep".to_owned()], None, None, 0, 0).unwrap();
    GcOptions {
        retention: Some(Arc::new(Retention {
            dry_run: false,
            delay: Duration::from_secs(3600),
            policies: vec![Policy {
                repositories: Arc::new(|_| true),
                delete_referrers: true,
                delete_untagged: true,
                keep_tags: vec![keep],
                keep_untagged: None,
            }],
        })),
        delay: Duration::from_secs(3600),
        dry_run: false,
        pace: 1.0,
    }
}

async fn pass(reg: &Registry) -> GcReport {
    reg.gc(options(), |_| {}).await.unwrap()
}

/// Where the pass stops.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// Retention hid the tag `drop-1`.
    RetentionHidTag,
    /// Retention looks again at the hidden tag.
    RetentionRecheckTag,
    /// Retention hid the manifest `drop-1` named.
    RetentionHidManifest,
    /// GC hid the orphan's link.
    GcHidLink,
    /// GC looks again for the orphan's link.
    GcRecheckLink,
    /// GC hid the orphan's content.
    GcHidContent,
    /// GC decided and is about to delete what stayed hidden.
    GcDelete,
}

const POINTS: [Point; 7] = [
    Point::RetentionHidTag,
    Point::RetentionRecheckTag,
    Point::RetentionHidManifest,
    Point::GcHidLink,
    Point::GcRecheckLink,
    Point::GcHidContent,
    Point::GcDelete,
];

fn arm(w: &World, p: Point) -> Breakpoint {
    let s = &w.store;
    let eq = |k: String| move |key: &str| key == k;
    match p {
        Point::RetentionHidTag => s.pause(
            "gc",
            Op::Rename,
            When::After,
            eq(keys::tag(&w.repo, &Tag::parse("drop-1").unwrap())),
        ),
        Point::RetentionRecheckTag => s.pause("gc", Op::Get, When::Before, |k: &str| {
            k.starts_with("gc-trash/") && k.ends_with("~_tags~drop-1")
        }),
        Point::RetentionHidManifest => s.pause(
            "gc",
            Op::Rename,
            When::After,
            eq(keys::manifest_link(&w.repo, &w.dropped_digest)),
        ),
        Point::GcHidLink => s.pause(
            "gc",
            Op::Rename,
            When::After,
            eq(keys::layer_link(&w.repo, &w.orphan)),
        ),
        Point::GcRecheckLink => s.pause(
            "gc",
            Op::Stat,
            When::Before,
            eq(keys::layer_link(&w.repo, &w.orphan)),
        ),
        Point::GcHidContent => s.pause("gc", Op::Rename, When::After, eq(keys::blob(&w.orphan))),
        Point::GcDelete => s.pause("gc", Op::DeletePrefix, When::Before, |k: &str| {
            k.starts_with("gc-trash/")
        }),
    }
}

/// Starts a pass and waits until it stopped at `point`.
async fn stopped_pass(w: &World, point: Point) -> (Breakpoint, tokio::task::JoinHandle<GcReport>) {
    let mut stop = arm(w, point);
    let reg = w.reg.clone();
    let pass = tokio::spawn(async move { Pausing::act("gc", pass(&reg)).await });
    stop.reached().await;
    (stop, pass)
}

/// A client's write during the pass.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// Push the orphan blob again (then, later, a manifest using it).
    PushBlob,
    /// Push the orphan blob and a manifest using it and the dropped layer.
    PushManifest,
    /// Tag the manifest retention is removing with a kept tag.
    Tag,
    /// Push `drop-1` again.
    Repush,
    /// Delete the kept tag.
    DeleteTag,
    /// Delete the orphan from the repository.
    DeleteBlob,
}

const WRITES: [Write; 6] = [
    Write::PushBlob,
    Write::PushManifest,
    Write::Tag,
    Write::Repush,
    Write::DeleteTag,
    Write::DeleteBlob,
];

/// What an acknowledged write promised, checked after each pass.
async fn promised(w: &World, write: Write, after_second_pass: bool) -> Result<(), String> {
    let (reg, repo) = (&w.reg, &w.repo);
    match write {
        Write::PushBlob => readable_blob(w, &w.orphan).await,
        Write::PushManifest => readable_image(w, "keep-m").await,
        Write::Tag => readable_image(w, "keep-d").await,
        // Only until the next pass, which may remove it by policy.
        Write::Repush if after_second_pass => Ok(()),
        Write::Repush => readable_image(w, "drop-1").await,
        Write::DeleteTag => match reg.resolve_manifest(repo, &tag("keep-0")).await {
            Err(CoreError::ManifestUnknown) => Ok(()),
            other => Err(format!("deleted tag keep-0 is back: {other:?}")),
        },
        Write::DeleteBlob => match reg.blob_size(repo, &w.orphan).await {
            Err(CoreError::BlobUnknown) => Ok(()),
            other => Err(format!("deleted blob is back: {other:?}")),
        },
    }
}

async fn readable_blob(w: &World, d: &Digest) -> Result<(), String> {
    let size = w
        .reg
        .blob_size(&w.repo, d)
        .await
        .map_err(|e| format!("blob {d}: {e}"))?;
    let bytes: Vec<Bytes> = w
        .reg
        .read_blob(d, 0, size)
        .await
        .map_err(|e| format!("blob {d}: {e}"))?
        .try_collect()
        .await
        .map_err(|e| format!("blob {d}: {e}"))?;
    if Digest::of(d.algorithm(), &bytes.concat()) != *d {
        return Err(format!("blob {d} corrupt"));
    }
    Ok(())
}

async fn readable_image(w: &World, t: &str) -> Result<(), String> {
    let m = w
        .reg
        .get_manifest(&w.repo, &tag(t))
        .await
        .map_err(|e| format!("manifest {t}: {e}"))?;
    let parsed = berth_oci::manifest::parse(&m.body, None).map_err(|e| e.to_string())?;
    for d in &parsed.blobs {
        readable_blob(w, &d.digest).await?;
    }
    Ok(())
}

/// Runs the write; `Ok(true)` when it was acknowledged.
async fn write(w: &World, write: Write) -> Result<bool, CoreError> {
    let (reg, repo) = (&w.writer, &w.repo);
    let outcome = match write {
        Write::PushBlob => push_blob(reg, repo, blob_data("orphan")).await.map(|_| ()),
        Write::PushManifest => {
            push_blob(reg, repo, blob_data("orphan")).await?;
            push_blob(reg, repo, blob_data("dropped")).await?;
            let m = image(&w.config, &[&w.orphan, &w.dropped_layer]);
            put(reg, repo, &tag("keep-m"), &m).await.map(|_| ())
        }
        Write::Tag => put(reg, repo, &tag("keep-d"), &w.dropped).await.map(|_| ()),
        Write::Repush => put(reg, repo, &tag("drop-1"), &w.dropped).await.map(|_| ()),
        Write::DeleteTag => reg.delete_manifest(repo, &tag("keep-0")).await,
        Write::DeleteBlob => reg.delete_blob(repo, &w.orphan).await,
    };
    match outcome {
        Ok(()) => Ok(true),
        // Refusals a client may get while a pass runs: nothing promised.
        Err(CoreError::ManifestBlobUnknown(_) | CoreError::BlobUnknown) => Ok(false),
        Err(e) => Err(e),
    }
}

#[tokio::test]
async fn no_interleaving_loses_an_acknowledged_write() {
    every_interleaving(|| async { world().await }).await;
}

/// The same matrix with the store replicas share (PostgreSQL over an object
/// store), the pass on one replica and the writes on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_interleaving_loses_an_acknowledged_write_between_replicas() {
    let pg = berth_storage::pg_harness::Postgres::start();
    every_interleaving(|| async {
        let pool = ClusterBackend::pool(&pg.database().await, 4).unwrap();
        let objects = Arc::new(berth_storage::cluster::object_store::memory::InMemory::new());
        let store = ClusterBackend::connect(pool, objects, "").await.unwrap();
        world_on(Arc::new(store), true).await
    })
    .await;
}

async fn every_interleaving<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = World>,
{
    let mut failures = Vec::new();
    let mut acknowledged = 0;
    for point in POINTS {
        for op in WRITES {
            let w = fresh().await;
            let (stop, collector) = stopped_pass(&w, point).await;
            let acked = write(&w, op)
                .await
                .unwrap_or_else(|e| panic!("{point:?} {op:?}: {e}"));
            stop.release();
            collector.await.unwrap();
            if !acked {
                continue;
            }
            acknowledged += 1;
            if let Err(e) = promised(&w, op, false).await {
                failures.push(format!("{point:?} / {op:?}, after its pass: {e}"));
                continue;
            }
            // Pushes that followed a blob push: the manifest that uses it.
            if let Write::PushBlob = op {
                let m = image(&w.config, &[&w.orphan, &w.layer]);
                pass(&w.reg).await;
                if let Err(e) = put(&w.reg, &w.repo, &tag("keep-b"), &m).await {
                    failures.push(format!("{point:?} / {op:?}, manifest after: {e}"));
                    continue;
                }
            }
            pass(&w.reg).await;
            if let Err(e) = promised(&w, op, true).await {
                failures.push(format!("{point:?} / {op:?}, after the next pass: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The matrix exercised real races, not only refusals.
    assert!(
        acknowledged >= 30,
        "only {acknowledged} writes acknowledged"
    );
}

/// A blob pushed again while its old link is hidden keeps its new link:
/// the pass must not put the old one back over it (the old one would look
/// old to the next pass, which would remove it before the manifest PUT).
#[tokio::test]
async fn a_hidden_link_never_goes_back_over_a_fresh_one() {
    let w = world().await;
    let (stop, collector) = stopped_pass(&w, Point::GcHidLink).await;
    push_blob(&w.reg, &w.repo, blob_data("orphan"))
        .await
        .unwrap();
    stop.release();
    collector.await.unwrap();
    let report = pass(&w.reg).await;
    assert!(
        !report.links_removed.iter().any(|(_, d)| *d == w.orphan),
        "the fresh link was collected: {:?}",
        report.links_removed
    );
    let m = image(&w.config, &[&w.orphan]);
    put(&w.reg, &w.repo, &tag("keep-b"), &m).await.unwrap();
}

/// A second collector (a `berth gc` beside the server's pass) stays out
/// while the first holds the store, and does not put back what it hid.
#[tokio::test]
async fn one_collection_pass_at_a_time() {
    let w = world().await;
    let (stop, first) = stopped_pass(&w, Point::GcHidLink).await;
    assert!(matches!(
        w.reg.gc(options(), |_| {}).await,
        Err(CoreError::Busy)
    ));
    assert_eq!(w.reg.recover_gc_trash().await.unwrap(), 0);
    assert!(matches!(
        w.reg.blob_size(&w.repo, &w.orphan).await,
        Err(CoreError::BlobUnknown)
    ));
    stop.release();
    let report = first.await.unwrap();
    assert!(report.links_removed.iter().any(|(_, d)| *d == w.orphan));
    // Released: the next pass runs.
    pass(&w.reg).await;
}

/// Puts a lease held by `holder` on top of the ladder, as a pass that
/// takes it would.
async fn plant_lease(store: &Pausing, holder: &str) {
    use berth_storage::Backend;
    let newest = store
        .list(keys::GC_LEASES)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| keys::gc_lease_generation(&e.name))
        .max()
        .unwrap_or(0);
    assert!(store
        .put_if_absent(&keys::gc_lease(newest + 1), Bytes::from(holder.to_owned()))
        .await
        .unwrap());
}

/// A lease its pass stopped refreshing (the process died) is taken over.
#[tokio::test]
async fn a_dead_pass_lease_is_taken_over() {
    let store = Arc::new(Pausing::new(Arc::new(MemBackend::new())));
    let reg = Registry::new(store.clone(), Options::default());
    plant_lease(&store, "dead pass").await;
    assert!(matches!(
        reg.gc(options(), |_| {}).await,
        Err(CoreError::Busy)
    ));
    store.age_everything();
    reg.gc(options(), |_| {}).await.unwrap();
    // And given up at the end: the next pass runs at once.
    reg.gc(options(), |_| {}).await.unwrap();
}

/// A lease naming a process of this host that no longer runs (a Berth
/// killed mid-pass) is taken over at once, so the restarted server
/// recovers what that pass had hidden at start-up.
#[tokio::test]
async fn a_lease_of_a_dead_local_process_is_taken_over_at_once() {
    let w = world().await;
    let read = |p: &str| std::fs::read_to_string(p).unwrap().trim().to_owned();
    let machine = format!(
        "{}/{}",
        read("/proc/sys/kernel/hostname"),
        read("/proc/sys/kernel/random/boot_id")
    );
    // Beyond any pid_max: no such process.
    let dead = format!("old pid 99999999 machine {machine}");
    plant_lease(&w.store, &dead).await;
    pass(&w.reg).await;
    // A live holder (this very process, another pass) keeps it.
    let alive = format!("other pid {} machine {machine}", std::process::id());
    plant_lease(&w.store, &alive).await;
    assert!(matches!(
        w.reg.gc(options(), |_| {}).await,
        Err(CoreError::Busy)
    ));
}

/// A pass cut short by shutdown (its task aborted) is undone and its lease
/// given up, so nothing stays hidden and the next start collects at once.
#[tokio::test]
async fn a_pass_cut_short_by_shutdown_is_undone() {
    let w = world().await;
    let (stop, collector) = stopped_pass(&w, Point::GcHidLink).await;
    collector.abort();
    let _ = collector.await;
    drop(stop);
    assert!(matches!(
        w.reg.blob_size(&w.repo, &w.orphan).await,
        Err(CoreError::BlobUnknown)
    ));
    w.reg.end_collection().await.unwrap();
    readable_blob(&w, &w.orphan).await.unwrap();
    pass(&w.reg).await;
}

/// A pull time noted while retention removes its manifest (after the pass
/// flushed the times it found) goes with the manifest, from memory too: a
/// later flush would write it back, and the manifest pushed again would
/// start with an old pull time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_forgets_a_pull_time_noted_during_the_pass() {
    let w = world().await;
    let (stop, pass) = stopped_pass(&w, Point::RetentionHidManifest).await;
    w.reg.note_pull(&w.repo, &w.dropped_digest);
    stop.release();
    let report = pass.await.unwrap();
    assert!(report
        .retention
        .manifests_removed
        .iter()
        .any(|(_, d)| *d == w.dropped_digest));
    let times = w.reg.pull_times(&w.repo).await.unwrap();
    assert!(!times.contains_key(&w.dropped_digest), "{times:?}");
    w.reg.flush_pulls().await.unwrap();
    let stored = berth_storage::Backend::get(w.store.as_ref(), &keys::pulls(&w.repo))
        .await
        .unwrap();
    let stored = String::from_utf8_lossy(stored.as_deref().unwrap_or_default()).into_owned();
    assert!(!stored.contains(w.dropped_digest.as_str()), "{stored}");
}

/// A pass that fails after it hid something (a store error, or a lease
/// taken over) puts it back at once: a writer may have linked it meanwhile,
/// and it must not stay hidden until the next pass.
#[tokio::test]
async fn a_failed_pass_puts_back_what_it_hid() {
    let w = world().await;
    let mut stop = arm(&w, Point::GcHidLink);
    let reg = w.reg.clone();
    let pass = tokio::spawn(async move { Pausing::act("gc", reg.gc(options(), |_| {})).await });
    stop.reached().await;
    // The pass's look for the orphan's link fails (a store error).
    let link = keys::layer_link(&w.repo, &w.orphan);
    w.store.fail_next(Op::Stat, move |k: &str| k == link);
    stop.release();
    assert!(pass.await.unwrap().is_err());
    readable_blob(&w, &w.orphan).await.unwrap();
}
