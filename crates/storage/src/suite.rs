//! The behaviour every [`Backend`] must show. Each backend's tests call
#![allow(clippy::unwrap_used)] // test support: a failed step is a failed test
//! [`run`]; a new backend is done when it passes.

use crate::{Backend, Durability::Durable, Durability::Lazy, Entry, StorageError};
use bytes::Bytes;
use futures_util::TryStreamExt;

async fn read_all(store: &dyn Backend, key: &str, start: u64, end: Option<u64>) -> Vec<u8> {
    let chunks: Vec<Bytes> = store
        .read(key, start, end)
        .await
        .expect("read")
        .try_collect()
        .await
        .expect("stream");
    chunks.concat()
}

fn entry(name: &str, is_dir: bool) -> Entry {
    Entry {
        name: name.into(),
        is_dir,
    }
}

/// Runs the whole suite against an empty store. Panics on the first failure.
pub async fn run(store: &dyn Backend) {
    // Plain objects.
    assert_eq!(store.stat("a/b").await.unwrap(), None);
    assert_eq!(store.get("a/b").await.unwrap(), None);
    assert!(matches!(
        store.read("a/b", 0, None).await,
        Err(StorageError::NotFound)
    ));
    store
        .put("a/b", Bytes::from_static(b"hello"), Lazy)
        .await
        .unwrap();
    assert_eq!(store.stat("a/b").await.unwrap(), Some(5));
    assert_eq!(store.get("a/b").await.unwrap().unwrap(), "hello");
    store
        .put("a/b", Bytes::from_static(b"bye"), Durable)
        .await
        .unwrap();
    assert_eq!(store.get("a/b").await.unwrap().unwrap(), "bye");
    assert!(!store
        .put_if_absent("a/b", Bytes::from_static(b"no"))
        .await
        .unwrap());
    assert!(store.put_if_absent("a/c/d", Bytes::new()).await.unwrap());
    assert_eq!(store.get("a/b").await.unwrap().unwrap(), "bye");

    // Listing: direct children only, sorted, directories marked.
    store.put("a/a", Bytes::new(), Durable).await.unwrap();
    assert_eq!(
        store.list("a").await.unwrap(),
        vec![entry("a", false), entry("b", false), entry("c", true)]
    );
    assert_eq!(store.list("").await.unwrap(), vec![entry("a", true)]);
    assert_eq!(store.list("nothing/here").await.unwrap(), vec![]);
    // Pages of a listing: after a name, at most so many.
    assert_eq!(
        store.list_after("a", None, 2).await.unwrap(),
        vec![entry("a", false), entry("b", false)]
    );
    assert_eq!(
        store.list_after("a", Some("a"), 5).await.unwrap(),
        vec![entry("b", false), entry("c", true)]
    );
    assert_eq!(
        store.list_after("a", Some("bb"), 5).await.unwrap(),
        vec![entry("c", true)]
    );
    assert_eq!(store.list_after("a", Some("c"), 5).await.unwrap(), vec![]);
    assert_eq!(store.list_after("a", None, 0).await.unwrap(), vec![]);
    // A bound no key can hold (a client's `last`) is still a bound.
    assert_eq!(
        store.list_after("a", Some("a\0z"), 5).await.unwrap(),
        vec![entry("b", false), entry("c", true)]
    );

    // Directories holding a child of a name, at any depth, by the page.
    for key in [
        "t/x/_m/1",
        "t/x/y/_m/1",
        "t/x-y/_m/1",
        "t/z/_n/1",
        "t/z/w/v/_m/1",
        "t0/q/_m/1",
        "u/_m/1",
    ] {
        store.put(key, Bytes::new(), Durable).await.unwrap();
    }
    let holding = |from: Option<&'static str>, limit, descending| async move {
        store
            .dirs_holding("t", &["_m"], from, limit, descending)
            .await
            .unwrap()
    };
    assert_eq!(holding(None, 10, false).await, ["x", "x-y", "x/y", "z/w/v"]);
    assert_eq!(holding(None, 2, false).await, ["x", "x-y"]);
    assert_eq!(holding(Some("x-y"), 10, false).await, ["x/y", "z/w/v"]);
    assert_eq!(holding(Some("x-a"), 1, false).await, ["x-y"]);
    assert_eq!(holding(None, 3, true).await, ["z/w/v", "x/y", "x-y"]);
    assert_eq!(holding(Some("x-y"), 10, true).await, ["x"]);
    assert_eq!(holding(Some("x"), 10, true).await, Vec::<String>::new());
    assert_eq!(holding(Some("x-y\0"), 10, false).await, ["x/y", "z/w/v"]);
    assert_eq!(holding(Some("x-y\0"), 10, true).await, ["x-y", "x"]);
    assert_eq!(holding(None, 0, false).await, Vec::<String>::new());
    assert_eq!(
        store
            .dirs_holding("", &["_m", "_n"], Some("t/x/y"), 10, false)
            .await
            .unwrap(),
        ["t/z", "t/z/w/v", "t0/q", "u"]
    );
    store.delete_prefix("t").await.unwrap();
    store.delete_prefix("t0").await.unwrap();
    store.delete_prefix("u").await.unwrap();

    // Ranged reads, small and large.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    store
        .put("big", Bytes::from(big.clone()), Durable)
        .await
        .unwrap();
    assert_eq!(read_all(store, "big", 0, None).await, big);
    assert_eq!(read_all(store, "big", 10, Some(20)).await, &big[10..20]);
    assert_eq!(
        read_all(store, "big", 1_000_000, Some(2_900_000)).await,
        &big[1_000_000..2_900_000]
    );
    assert_eq!(
        read_all(store, "big", 2_999_990, Some(9_999_999)).await,
        &big[2_999_990..]
    );

    // Several small objects at once, in the order asked.
    store
        .put("many/a", Bytes::from_static(b"A"), Durable)
        .await
        .unwrap();
    store.put("many/b", Bytes::new(), Durable).await.unwrap();
    let got = store
        .get_many(&["many/b", "many/none", "many/a", "big"])
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].as_deref(), Some(&b""[..]));
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_deref(), Some(&b"A"[..]));
    assert_eq!(got[3].as_ref().map(|b| b.len()), Some(3_000_000));
    assert!(store.get_many(&["../x"]).await.is_err());
    store.delete_prefix("many").await.unwrap();

    // Renames replace atomically; a missing source is NotFound.
    store
        .put("r/one", Bytes::from_static(b"1"), Durable)
        .await
        .unwrap();
    store
        .put("r2/two", Bytes::from_static(b"2"), Durable)
        .await
        .unwrap();
    store.rename("r/one", "r2/two", Durable).await.unwrap();
    assert_eq!(store.get("r2/two").await.unwrap().unwrap(), "1");
    assert_eq!(store.get("r/one").await.unwrap(), None);
    let before = store.modified("r2/two").await.unwrap().unwrap();
    store.rename("r2/two", "q/x/y", Durable).await.unwrap();
    assert_eq!(store.get("q/x/y").await.unwrap().unwrap(), "1");
    // Retention tells a re-pushed tag from the one it decided on by this.
    assert_eq!(store.modified("q/x/y").await.unwrap(), Some(before));
    assert!(matches!(
        store.rename("r/none", "r/z", Durable).await,
        Err(StorageError::NotFound)
    ));
    store.delete_prefix("q").await.unwrap();

    // Deletion.
    assert!(store.delete("a/a", Durable).await.unwrap());
    assert!(!store.delete("a/a", Durable).await.unwrap());
    store.delete_prefix("a").await.unwrap();
    assert_eq!(store.get("a/b").await.unwrap(), None);
    assert_eq!(store.get("a/c/d").await.unwrap(), None);

    // Keys that could escape are refused.
    for bad in [
        "",
        "/a",
        "a/",
        "a//b",
        "../x",
        "a/../b",
        "a/./b",
        ".uploads/x",
        "a/.tmp-1",
    ] {
        assert!(
            matches!(
                store.put(bad, Bytes::new(), Lazy).await,
                Err(StorageError::InvalidKey(_))
            ),
            "{bad}"
        );
        assert!(
            matches!(store.get(bad).await, Err(StorageError::InvalidKey(_))),
            "{bad}"
        );
    }

    // Staged uploads: append, resume at the right offset only, commit.
    assert_eq!(store.stage_size("u1").await.unwrap(), None);
    let mut w = store.stage_writer("u1", 0).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    w.write(Bytes::from_static(b"def")).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 6);
    assert_eq!(store.stage_size("u1").await.unwrap(), Some(6));
    // Nor at 0: a stage with bytes is never replaced (its writer may be
    // another process's).
    for at in [4, 0] {
        assert!(matches!(
            store.stage_writer("u1", at).await,
            Err(StorageError::Offset { expected, actual: 6 }) if expected == at
        ));
    }
    assert_eq!(store.stage_size("u1").await.unwrap(), Some(6));
    // A refused chunk is undone by cutting back; never lengthened.
    let mut w = store.stage_writer("u1", 6).await.unwrap();
    w.write(Bytes::from_static(b"refused")).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 13);
    // Not when another writer appended after the refused chunk: the stage
    // no longer ends where that chunk did.
    assert!(matches!(
        store.stage_truncate("u1", 6, Some(12)).await,
        Err(StorageError::Offset {
            expected: 12,
            actual: 13
        })
    ));
    assert_eq!(store.stage_size("u1").await.unwrap(), Some(13));
    store.stage_truncate("u1", 6, Some(13)).await.unwrap();
    store.stage_truncate("u1", 100, None).await.unwrap();
    assert_eq!(store.stage_size("u1").await.unwrap(), Some(6));
    let mut w = store.stage_writer("u1", 6).await.unwrap();
    w.write(Bytes::from_static(b"gh")).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 8);
    for (start, want) in [(0, &b"abcdefgh"[..]), (5, b"fgh"), (9, b"")] {
        let staged: Vec<Bytes> = store
            .stage_read("u1", start)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(staged.concat(), want, "from {start}");
    }
    assert_eq!(store.stage_list().await.unwrap().len(), 1);
    // Committed only at the size that was verified: a stage that grew or
    // shrank since stays as it is.
    for wrong in [7, 9] {
        assert!(matches!(
            store.stage_commit("u1", "blobs/x", wrong).await,
            Err(StorageError::Offset { expected, actual: 8 }) if expected == wrong
        ));
        assert_eq!(store.stat("blobs/x").await.unwrap(), None);
        assert_eq!(store.stage_size("u1").await.unwrap(), Some(8));
    }
    store.stage_commit("u1", "blobs/x", 8).await.unwrap();
    assert_eq!(store.get("blobs/x").await.unwrap().unwrap(), "abcdefgh");
    assert_eq!(store.stage_size("u1").await.unwrap(), None);
    assert!(store.stage_list().await.unwrap().is_empty());
    assert!(matches!(
        store.stage_commit("u1", "blobs/y", 8).await,
        Err(StorageError::NotFound)
    ));

    // A discarded upload is gone; bad ids are refused.
    let w = store.stage_writer("u2", 0).await.unwrap();
    w.finish().await.unwrap();
    store.stage_delete("u2").await.unwrap();
    store.stage_delete("u2").await.unwrap();
    assert_eq!(store.stage_size("u2").await.unwrap(), None);
    assert!(matches!(
        store.stage_size("../x").await,
        Err(StorageError::InvalidKey(_))
    ));

    large_stages(store).await;
    pins(store).await;
    turns(store).await;
}

/// A turn is held by one caller at a time; a caller that stops waiting
/// leaves nothing held.
async fn turns(store: &dyn Backend) {
    use std::time::Duration;
    let held = store.exclusive("manifest a@b").await.unwrap();
    {
        let waiter = store.exclusive("manifest a@b");
        tokio::pin!(waiter);
        // However long it is polled, it cannot get the turn while held.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut waiter)
                .await
                .is_err()
        );
        drop(held);
        let next = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the turn is given back when dropped")
            .unwrap();
        // A caller that gives up waiting...
        let gave_up = store.exclusive("manifest a@b");
        assert!(tokio::time::timeout(Duration::from_millis(100), gave_up)
            .await
            .is_err());
        drop(next);
    }
    // ...holds nothing once the turn is free.
    let last = tokio::time::timeout(Duration::from_secs(30), store.exclusive("manifest a@b"))
        .await
        .expect("a waiter that gave up holds nothing")
        .unwrap();
    drop(last);
}

/// Bytes that tell every position apart.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// Large uploads in odd-sized pieces, both writers, resumed at offsets that
/// fall inside a disk block, cut back and resumed again: what was written
/// is exactly what is read.
async fn large_stages(store: &dyn Backend) {
    let first = pattern(1, 5 * 1024 * 1024 + 12_345);
    let second = pattern(2, 3 * 1024 * 1024 + 777);
    let third = pattern(3, 300_001);
    for cached in [false, true] {
        let open = |offset| async move {
            if cached {
                store.stage_writer_cached("big", offset).await.unwrap()
            } else {
                store.stage_writer("big", offset).await.unwrap()
            }
        };
        let mut want = Vec::new();
        let mut offset = 0;
        for part in [&first, &second, &third] {
            let mut w = open(offset).await;
            for piece in part.chunks(65_537) {
                w.write(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            want.extend_from_slice(part);
            offset = w.finish().await.unwrap();
            assert_eq!(offset, want.len() as u64, "cached: {cached}");
        }
        // A refused chunk cut back, then the upload goes on.
        let mut w = open(offset).await;
        w.write(Bytes::from(pattern(9, 1_000_000))).await.unwrap();
        w.finish().await.unwrap();
        store.stage_truncate("big", offset, None).await.unwrap();
        let mut w = open(offset).await;
        w.write(Bytes::from(third.clone())).await.unwrap();
        want.extend_from_slice(&third);
        assert_eq!(w.finish().await.unwrap(), want.len() as u64);
        let staged: Vec<Bytes> = store
            .stage_read("big", 0)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(staged.concat() == want, "cached: {cached}");
        store
            .stage_commit("big", "blobs/big", want.len() as u64)
            .await
            .unwrap();
        assert!(read_all(store, "blobs/big", 0, None).await == want);
        store.delete("blobs/big", Durable).await.unwrap();
    }
}

/// A pin stages an object without copying it: deleting the pin leaves the
/// object; committing it puts the object back where it was removed.
async fn pins(store: &dyn Backend) {
    assert!(!store.stage_from("pin", "blobs/none").await.unwrap());
    assert_eq!(store.stage_size("pin").await.unwrap(), None);
    store
        .put("blobs/p", Bytes::from(pattern(4, 100_000)), Durable)
        .await
        .unwrap();
    assert!(store.stage_from("pin", "blobs/p").await.unwrap());
    assert_eq!(store.stage_size("pin").await.unwrap(), Some(100_000));
    store.stage_delete("pin").await.unwrap();
    assert_eq!(store.stat("blobs/p").await.unwrap(), Some(100_000));
    assert!(store.stage_from("pin", "blobs/p").await.unwrap());
    store.delete("blobs/p", Durable).await.unwrap();
    store.stage_commit("pin", "blobs/p", 100_000).await.unwrap();
    assert!(read_all(store, "blobs/p", 0, None).await == pattern(4, 100_000));
    assert_eq!(store.stage_size("pin").await.unwrap(), None);
    store.delete("blobs/p", Durable).await.unwrap();
}
