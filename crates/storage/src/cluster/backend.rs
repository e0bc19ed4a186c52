//! The `Backend` contract kept by the shared store (see the module
//! documentation of `cluster` for the protocol).

use super::*;

#[async_trait::async_trait]
impl Backend for ClusterBackend {
    async fn stat(&self, key: &str) -> Result<Option<u64>> {
        let row = self.object_row("SELECT size FROM objects WHERE key = $1", key);
        Ok(row.await?.map(|r| to_u64(r.get(0))))
    }

    async fn modified(&self, key: &str) -> Result<Option<SystemTime>> {
        let row = self.object_row("SELECT modified FROM objects WHERE key = $1", key);
        Ok(row.await?.map(|r| micros_to_time(r.get(0))))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let stream = match self.read(key, 0, None).await {
            Err(StorageError::NotFound) => return Ok(None),
            other => other?,
        };
        let parts: Vec<Bytes> = stream.try_collect().await?;
        Ok(Some(match parts.len() {
            1 => parts.into_iter().next().unwrap_or_default(),
            _ => parts.concat().into(),
        }))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        for key in keys {
            check_key(key, false)?;
        }
        let client = self.client().await?;
        let rows = all(
            &client,
            "SELECT key, inline FROM objects WHERE key = ANY($1)",
            &[&keys],
        )
        .await
        .map_err(db)?;
        drop(client);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let row = rows.iter().find(|r| r.get::<_, &str>(0) == *key);
            out.push(match row.map(|r| r.get::<_, Option<Vec<u8>>>(1)) {
                None => None,
                Some(Some(inline)) => Some(Bytes::from(inline)),
                // Kept in chunks: read on its own.
                Some(None) => self.get(key).await?,
            });
        }
        Ok(out)
    }

    async fn read(&self, key: &str, start: u64, end: Option<u64>) -> Result<ByteStream> {
        check_key(key, false)?;
        let client = self.client().await?;
        // The row and its chunks in one statement: one snapshot, so a
        // replacement committed meanwhile cannot tear the answer.
        let rows = all(
            &client,
            "SELECT o.size, o.inline, c.start, c.len, c.object, c.skip
             FROM objects o LEFT JOIN chunks c
               ON c.content = o.content AND c.start + c.len > $2 AND c.start < $3
             WHERE o.key = $1 ORDER BY c.start",
            &[&key, &to_i64(start), &to_i64(end.unwrap_or(u64::MAX))],
        )
        .await
        .map_err(db)?;
        drop(client);
        let first = rows.first().ok_or(StorageError::NotFound)?;
        let size = to_u64(first.get(0));
        let end = end.unwrap_or(size).min(size);
        let start = start.min(end);
        if let Some(inline) = first.get::<_, Option<Vec<u8>>>(1) {
            let data = Bytes::from(inline).slice(start as usize..end as usize);
            return Ok(Box::pin(futures_util::stream::iter([Ok(data)])));
        }
        self.stream_rows(&rows, 2, start, end)
    }

    async fn put(&self, key: &str, data: Bytes, durability: Durability) -> Result<()> {
        self.put_inner(key, data, durability, false)
            .await
            .map(|_| ())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        self.put_inner(key, data, Durability::Durable, true).await
    }

    async fn delete(&self, key: &str, durability: Durability) -> Result<bool> {
        check_key(key, false)?;
        let mut client = self.client().await?;
        let tx = begin(&mut client, durability).await?;
        let Some(released) = Self::remove(&tx, key).await? else {
            return Ok(false);
        };
        tx.commit().await.map_err(db)?;
        self.release(released).await;
        Ok(true)
    }

    async fn rename(&self, from: &str, to: &str, durability: Durability) -> Result<()> {
        check_key(from, false)?;
        check_key(to, false)?;
        let mut client = self.client().await?;
        let tx = begin(&mut client, durability).await?;
        let row = opt(
            &tx,
            "DELETE FROM objects WHERE key = $1 RETURNING size, modified, inline, content",
            &[&from],
        )
        .await
        .map_err(db)?
        .map(|r| Row {
            size: r.get(0),
            modified: Some(r.get(1)),
            inline: r.get(2),
            content: r.get(3),
        })
        .ok_or(StorageError::NotFound)?;
        let released = Self::place(&tx, to, &row).await?;
        tx.commit().await.map_err(db)?;
        self.release(released).await;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        check_key(prefix, false)?;
        let (low, high) = (format!("{prefix}/"), prefix_end(prefix));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // Directories first: a write below the prefix that holds a
        // directory row is waited for, then its object is deleted too.
        let (parent, name) = split(prefix);
        exec(
            &tx,
            "DELETE FROM dirs WHERE (parent = $1 AND name = $2) OR parent = $3
               OR (parent >= $4 AND parent < $5)",
            &[&parent, &name, &prefix, &low, &high],
        )
        .await
        .map_err(db)?;
        let contents: Vec<i64> = all(
            &tx,
            "DELETE FROM objects WHERE key >= $1 AND key < $2 RETURNING content",
            &[&low, &high],
        )
        .await
        .map_err(db)?
        .iter()
        .filter_map(|r| r.get::<_, Option<i64>>(0))
        .collect();
        let released = Self::drop_contents(&tx, &contents).await?;
        tx.commit().await.map_err(db)?;
        self.release(released).await;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        check_key(prefix, true)?;
        let client = self.client().await?;
        let rows = all(
            &client,
            "SELECT name, true FROM dirs WHERE parent = $1
                 UNION SELECT name, false FROM objects WHERE parent = $1
                 ORDER BY 1, 2",
            &[&prefix],
        )
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| Entry {
                name: r.get(0),
                is_dir: r.get(1),
            })
            .collect())
    }

    async fn list_after(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        check_key(prefix, true)?;
        let client = self.client().await?;
        let after = after.map(|a| without_nul(a, false));
        let (after, limit) = (
            after.as_deref().unwrap_or(""),
            i64::try_from(limit).unwrap_or(i64::MAX),
        );
        let rows = all(
            &client,
            "(SELECT name, true FROM dirs WHERE parent = $1 AND name > $2 ORDER BY name LIMIT $3)
             UNION
             (SELECT name, false FROM objects WHERE parent = $1 AND name > $2 ORDER BY name LIMIT $3)
             ORDER BY 1, 2 LIMIT $3",
            &[&prefix, &after, &limit],
        )
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| Entry {
                name: r.get(0),
                is_dir: r.get(1),
            })
            .collect())
    }

    async fn dirs_holding(
        &self,
        prefix: &str,
        children: &[&str],
        from: Option<&str>,
        limit: usize,
        descending: bool,
    ) -> Result<Vec<String>> {
        check_key(prefix, true)?;
        // A range scan of the directories' primary key (parent, name) in
        // order, which stops once `limit` parents matched. Paths below `prefix` are the parents in (prefix + "/",
        // prefix + "0"): '0' follows '/' byte-wise.
        let (below, end) = if prefix.is_empty() {
            (String::new(), None)
        } else {
            (format!("{prefix}/"), Some(format!("{prefix}0")))
        };
        let from = from.map(|f| format!("{below}{}", without_nul(f, descending)));
        let (lo, hi) = if descending {
            (below.clone(), from.or(end))
        } else {
            (from.unwrap_or_else(|| below.clone()), end)
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let order = if descending { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT DISTINCT parent FROM dirs
             WHERE parent > $2 AND ($3::text IS NULL OR parent < $3) AND name = ANY($1)
             ORDER BY parent {order} LIMIT $4"
        );
        let client = self.client().await?;
        let rows = all(&client, &sql, &[&children, &lo, &hi, &limit])
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0)[below.len()..].to_owned())
            .collect())
    }

    async fn stage_writer(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>> {
        check_id(id)?;
        if offset == 0 {
            self.new_stage(id).await?;
        } else {
            let (_, actual) = self.stage_row(id).await?.ok_or(StorageError::NotFound)?;
            if actual != offset {
                return Err(StorageError::Offset {
                    expected: offset,
                    actual,
                });
            }
        }
        Ok(self.writer(id, offset))
    }

    async fn stage_writer_cached(&self, id: &str, offset: u64) -> Result<Box<dyn StageWriter>> {
        self.stage_writer(id, offset).await
    }

    async fn stage_from(&self, id: &str, key: &str) -> Result<bool> {
        check_id(id)?;
        check_key(key, false)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // The share lock makes a delete of the source wait until the copied
        // references are committed.
        let Some(row) = opt(
            &tx,
            "SELECT inline, content, size FROM objects WHERE key = $1 FOR SHARE",
            &[&key],
        )
        .await
        .map_err(db)?
        else {
            return Ok(false);
        };
        let size: i64 = row.get(2);
        let inline: Option<Vec<u8>> = row.get(0);
        let source: Option<i64> = row.get(1);
        let (content, released) = Self::replace_stage(&tx, id, size, true).await?;
        let mut written = None;
        match (source, inline) {
            (Some(source), _) => {
                exec(
                    &tx,
                    "INSERT INTO chunks (content, start, len, object, skip)
                     SELECT $1, start, len, object, skip FROM chunks WHERE content = $2",
                    &[&content, &source],
                )
                .await
                .map_err(db)?;
            }
            (None, Some(bytes)) if !bytes.is_empty() => {
                // Small content has no object to share: it gets one.
                let object = self.write_object(Bytes::from(bytes)).await?;
                exec(&tx,
                    "INSERT INTO chunks (content, start, len, object, skip) VALUES ($1, 0, $2, $3, 0)",
                    &[&content, &size, &object],
                )
                .await
                .map_err(db)?;
                written = Some(object);
            }
            (None, _) => {}
        }
        if let Err(e) = tx.commit().await {
            // Perhaps committed after all: the orphan sweep decides.
            drop(written);
            return Err(db(e));
        }
        self.release(released).await;
        Ok(true)
    }

    async fn stage_size(&self, id: &str) -> Result<Option<u64>> {
        check_id(id)?;
        Ok(self.stage_row(id).await?.map(|(_, size)| size))
    }

    async fn stage_read(&self, id: &str, start: u64) -> Result<ByteStream> {
        check_id(id)?;
        let client = self.client().await?;
        let rows = all(
            &client,
            "SELECT s.size, c.start, c.len, c.object, c.skip
             FROM stages s LEFT JOIN chunks c
               ON c.content = s.content AND c.start + c.len > $2
             WHERE s.id = $1 ORDER BY c.start",
            &[&id, &to_i64(start)],
        )
        .await
        .map_err(db)?;
        drop(client);
        let size = to_u64(rows.first().ok_or(StorageError::NotFound)?.get(0));
        let start = start.min(size);
        self.stream_rows(&rows, 1, start, size)
    }

    async fn stage_commit(&self, id: &str, key: &str, size: u64) -> Result<()> {
        check_id(id)?;
        check_key(key, false)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // The content moves with its chunk rows; the modification time is
        // the last write's, as a file system's rename keeps it. Only at
        // the size that was verified: another replica may have appended
        // since (its append is a transaction on the same row).
        let row = opt(
            &tx,
            "DELETE FROM stages WHERE id = $1 AND size = $2 RETURNING content, size, modified",
            &[&id, &to_i64(size)],
        )
        .await
        .map_err(db)?
        .map(|r| Row {
            size: r.get(1),
            modified: Some(r.get(2)),
            inline: None,
            content: Some(r.get(0)),
        });
        let Some(row) = row else {
            drop(tx);
            return Err(self.not_at(id, size).await);
        };
        let released = Self::place(&tx, key, &row).await?;
        tx.commit().await.map_err(db)?;
        self.release(released).await;
        Ok(())
    }

    async fn stage_truncate(&self, id: &str, size: u64, from: Option<u64>) -> Result<()> {
        check_id(id)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let (content, current): (i64, i64) = opt(
            &tx,
            "SELECT content, size FROM stages WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(db)?
        .map(|r| (r.get(0), r.get(1)))
        .ok_or(StorageError::NotFound)?;
        // The row is locked: no append can slip in between this look and
        // the cut.
        if let Some(expected) = from.filter(|&e| to_i64(e) != current) {
            return Err(StorageError::Offset {
                expected,
                actual: to_u64(current),
            });
        }
        let size = to_i64(size);
        if size >= current {
            return Ok(());
        }
        let released: Vec<String> = all(
            &tx,
            "DELETE FROM chunks WHERE content = $1 AND start >= $2 RETURNING object",
            &[&content, &size],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
        Self::doom(&tx, &released).await?;
        exec(&tx,
            "UPDATE chunks SET len = $2 - start WHERE content = $1 AND start < $2 AND start + len > $2",
            &[&content, &size],
        )
        .await
        .map_err(db)?;
        exec(
            &tx,
            "UPDATE stages SET size = $2, modified = berth_now() WHERE id = $1",
            &[&id, &size],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.release(released).await;
        Ok(())
    }

    async fn stage_delete(&self, id: &str) -> Result<()> {
        check_id(id)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let content: Option<i64> = opt(
            &tx,
            "DELETE FROM stages WHERE id = $1 RETURNING content",
            &[&id],
        )
        .await
        .map_err(db)?
        .map(|r| r.get(0));
        let released = Self::drop_contents(&tx, content.as_slice()).await?;
        tx.commit().await.map_err(db)?;
        self.release(released).await;
        Ok(())
    }

    async fn stage_list(&self) -> Result<Vec<(String, SystemTime)>> {
        let client = self.client().await?;
        let rows = all(&client, "SELECT id, modified FROM stages ORDER BY id", &[])
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), micros_to_time(r.get(1))))
            .collect())
    }

    async fn sweep(&self, older_than: Duration, dry_run: bool) -> Result<crate::Swept> {
        // An object is recorded right after it is written, within the
        // bounded waits of `pool` (30 s for a connection, 60 s a statement,
        // 30 s a lock), or the write fails: one older than `older_than`
        // (an hour, from garbage collection) that no chunk row names was
        // left by a replica that died in between, and never will be named.
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut swept = crate::Swept::default();
        // Objects whose last reference went longer ago than `older_than`
        // (readers of the old content had that long to finish).
        let since = to_i64(
            SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH)
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros()
                .try_into()
                .unwrap_or(u64::MAX),
        );
        let client = self.client().await?;
        let gone: Vec<String> = if dry_run {
            all(
                &client,
                "SELECT object FROM doomed d WHERE since < $1
                   AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object = d.object)",
                &[&since],
            )
            .await
        } else {
            // Still named (a pin copied it): not doomed any more; it is
            // doomed again when its last name goes.
            exec(
                &client,
                "DELETE FROM doomed d WHERE since < $1
                   AND EXISTS (SELECT 1 FROM chunks c WHERE c.object = d.object)",
                &[&since],
            )
            .await
            .map_err(db)?;
            all(
                &client,
                "DELETE FROM doomed d WHERE since < $1
                   AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object = d.object)
                 RETURNING object",
                &[&since],
            )
            .await
        }
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
        drop(client);
        for name in gone {
            if !dry_run {
                match self.inner.objects.delete(&self.object_path(&name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(objects_error(e)),
                }
            }
            swept.objects += 1;
        }
        let prefix = self.object_path("chunks");
        let mut old: Vec<(String, u64)> = Vec::new();
        let mut listing = self.inner.objects.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(objects_error)?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let created = name
                .split_once('-')
                .and_then(|(secs, _)| u64::from_str_radix(secs, 16).ok());
            if created.is_some_and(|c| c < cutoff) {
                old.push((format!("chunks/{name}"), meta.size));
            }
        }
        for batch in old.chunks(1000) {
            let names: Vec<String> = batch.iter().map(|(n, _)| n.clone()).collect();
            for name in self.unreferenced(&names).await? {
                let size = batch
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0, |(_, s)| *s);
                if !dry_run {
                    self.inner
                        .objects
                        .delete(&self.object_path(&name))
                        .await
                        .map_err(objects_error)?;
                }
                swept.objects += 1;
                swept.bytes += size;
            }
        }
        Ok(swept)
    }

    async fn exclusive(&self, name: &str) -> Result<crate::Turn> {
        // A session-level advisory lock on a connection of its own, held by
        // the turn. Taken in a task of its own: if the caller stops
        // waiting, a lock granted afterwards is given back at once rather
        // than left on a pooled connection.
        let local = self.inner.local.take(name).await;
        let key = crate::turn_hash(name) as i64;
        let client = self.client().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let taken = exec(&client, "SELECT pg_advisory_lock($1)", &[&key])
                .await
                .map(|_| PgTurn {
                    client: Some(client),
                    key,
                })
                .map_err(db);
            // A turn nobody waits for any more is dropped: unlocked.
            let _ = tx.send(taken);
        });
        let turn = rx.await.map_err(|_| db("the lock task ended"))??;
        Ok(crate::Turn::new((turn, local)))
    }
}

/// A bound of a listing that PostgreSQL can take: text holds no NUL, and
/// no key does either, so "after `abc\0x`" is "after `abc`", and "before
/// `abc\0x`" is "before `abc\u{1}`" (nothing stored lies between).
fn without_nul(bound: &str, descending: bool) -> std::borrow::Cow<'_, str> {
    match bound.split_once('\0') {
        None => bound.into(),
        Some((head, _)) if descending => format!("{head}\u{1}").into(),
        Some((head, _)) => head.into(),
    }
}
