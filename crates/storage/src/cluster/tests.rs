use super::*;

async fn store(pg: &crate::pg_harness::Postgres, part: usize) -> ClusterBackend {
    let url = pg.database().await;
    let pool = ClusterBackend::pool(&url, 8).unwrap();
    let objects = Arc::new(object_store::memory::InMemory::new());
    ClusterBackend::connect(pool, objects, "/berth/")
        .await
        .unwrap()
        .with_part_size(part)
}

/// The object-store keys no chunk row names, and the chunk rows'
/// objects that are missing.
async fn leaks(store: &ClusterBackend) -> (Vec<String>, Vec<String>) {
    let listed: std::collections::BTreeSet<String> = store
        .inner
        .objects
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let client = store.client().await.unwrap();
    let named: std::collections::BTreeSet<String> = all(
        &client,
        "SELECT object FROM chunks UNION SELECT object FROM doomed",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| store.object_path(&r.get::<_, String>(0)).to_string())
    .collect();
    (
        listed.difference(&named).cloned().collect(),
        named.difference(&listed).cloned().collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_suite_over_postgres_and_an_object_store() {
    let pg = crate::pg_harness::Postgres::start();
    // One part size that splits every large write, and the default.
    for part in [300_000, PART] {
        let store = store(&pg, part).await;
        crate::suite::run(&store).await;
        // Every object still stored is named by a chunk, and the
        // reverse: nothing leaked, nothing lost.
        assert_eq!(leaks(&store).await, (vec![], vec![]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_removes_old_unrecorded_objects_only() {
    let pg = crate::pg_harness::Postgres::start();
    let store = store(&pg, 100_000).await;
    // Content whose last reference went stays until its grace passed
    // (a read of it may still be streaming), then goes.
    store
        .put("big", Bytes::from(vec![7u8; 200_000]), Durability::Durable)
        .await
        .unwrap();
    let reading = store.read("big", 0, None).await.unwrap();
    store.delete("big", Durability::Durable).await.unwrap();
    let hour = Duration::from_secs(3600);
    assert_eq!(
        store.sweep(hour, false).await.unwrap(),
        crate::Swept::default()
    );
    let read: Vec<Bytes> = reading.try_collect().await.unwrap();
    assert_eq!(read.concat().len(), 200_000, "a read begun before finishes");
    let swept = store.sweep(Duration::ZERO, false).await.unwrap();
    assert_eq!(swept.objects, 1);
    assert_eq!(leaks(&store).await, (vec![], vec![]));
    let put = |name: &str| {
        let (store, name) = (store.clone(), name.to_owned());
        async move {
            store
                .inner
                .objects
                .put(
                    &store.object_path(&name),
                    PutPayload::from_static(b"orphan"),
                )
                .await
                .unwrap();
        }
    };
    let hours_ago = |h: u64| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - h * 3600
    };
    // Left by a replica that died two hours ago, and one a second ago.
    put(&format!("chunks/{:x}-dead", hours_ago(2))).await;
    put(&format!("chunks/{:x}-fresh", hours_ago(0))).await;
    // Old but recorded: content that stays.
    let kept = format!("chunks/{:x}-kept", hours_ago(3));
    put(&kept).await;
    let client = store.client().await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO stages VALUES ('s', 6, 0, 77); INSERT INTO chunks VALUES (77, 0, 6, '{kept}', 0)"
        ))
        .await
        .unwrap();
    drop(client);
    let dry = store.sweep(hour, true).await.unwrap();
    assert_eq!(
        dry,
        crate::Swept {
            objects: 1,
            bytes: 6
        }
    );
    assert_eq!(store.sweep(hour, false).await.unwrap(), dry);
    let (unnamed, missing) = leaks(&store).await;
    assert_eq!(missing, Vec::<String>::new());
    assert_eq!(
        unnamed.len(),
        1,
        "only the fresh one is left unrecorded: {unnamed:?}"
    );
    assert!(unnamed[0].ends_with("-fresh"));
    assert_eq!(
        store
            .stage_read("s", 0)
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .concat(),
        b"orphan"
    );
    assert_eq!(
        store.sweep(hour, false).await.unwrap(),
        crate::Swept::default()
    );
}

/// The same suite over a real S3 server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_suite_over_postgres_and_garage() {
    let pg = crate::pg_harness::Postgres::start();
    let garage = crate::garage_harness::Garage::start();
    let pool = ClusterBackend::pool(&pg.database().await, 8).unwrap();
    let store = ClusterBackend::connect(pool, garage.object_store(), "berth")
        .await
        .unwrap()
        .with_part_size(1_000_000);
    crate::suite::run(&store).await;
    assert_eq!(leaks(&store).await, (vec![], vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_one_key_or_one_offset_have_one_winner() {
    let pg = crate::pg_harness::Postgres::start();
    let url = pg.database().await;
    let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let pool = ClusterBackend::pool(&url, 8).unwrap();
        let r = ClusterBackend::connect(pool, objects.clone(), "r")
            .await
            .unwrap();
        replicas.push(r.with_part_size(100_000));
    }
    // Create-once, large and small, from both replicas at once.
    for size in [10, 200_000] {
        let key = format!("tags/t{size}");
        let racers: Vec<_> = (0..16u8)
            .map(|i| {
                let (r, key) = (replicas[usize::from(i % 2)].clone(), key.clone());
                tokio::spawn(async move {
                    let data = Bytes::from(vec![i; size]);
                    (i, r.put_if_absent(&key, data).await.unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in racers {
            let (i, won) = t.await.unwrap();
            if won {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let kept = replicas[0].get(&key).await.unwrap().unwrap();
        assert_eq!(kept, vec![winners[0]; size]);
    }
    // Two writers appending at the same offset of one upload, one per
    // replica: one append is kept, the other refused, never both.
    let mut w = replicas[0].stage_writer("up", 0).await.unwrap();
    w.write(Bytes::from(vec![0u8; 150_000])).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 150_000);
    let mut a = replicas[0].stage_writer("up", 150_000).await.unwrap();
    let mut b = replicas[1].stage_writer("up", 150_000).await.unwrap();
    a.write(Bytes::from(vec![1u8; 120_000])).await.unwrap();
    b.write(Bytes::from(vec![2u8; 120_000])).await.unwrap();
    let (ra, rb) = (a.finish().await, b.finish().await);
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one append is kept: {ra:?} {rb:?}"
    );
    let refused = if ra.is_ok() { rb } else { ra };
    assert!(
        matches!(refused, Err(StorageError::Offset { .. })),
        "{refused:?}"
    );
    let staged: Vec<Bytes> = replicas[1]
        .stage_read("up", 0)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let staged = staged.concat();
    assert_eq!(staged.len(), 270_000);
    let tail = staged[150_000];
    assert!(tail == 1 || tail == 2);
    assert!(staged[150_000..].iter().all(|&x| x == tail));
    // Committed on the other replica; the refused part left nothing.
    replicas[1]
        .stage_commit("up", "blobs/up", 270_000)
        .await
        .unwrap();
    assert_eq!(replicas[0].stat("blobs/up").await.unwrap(), Some(270_000));
    assert_eq!(leaks(&replicas[0]).await, (vec![], vec![]));
}
