//! The store replicas share: every mutable fact in PostgreSQL, every byte of
//! content in an object store (S3 or any `object_store` implementation) as
//! immutable chunks.
//!
//! It keeps the whole [`Backend`] contract without anything an object store
//! lacks (no rename, no append, no modification time, no conditional write:
//! Garage, for one, ignores `If-None-Match`):
//! - an object is a row of `objects`; a small one (up to [`INLINE`]) holds its
//!   bytes, a larger one names a *content*, a list of chunk rows, each
//!   `len` bytes of an object-store object written once under a fresh name
//!   and never changed;
//! - `put_if_absent` is an `INSERT .. ON CONFLICT DO NOTHING`, `rename` an
//!   `UPDATE` of the key in a transaction (the chunks stay where they are, so
//!   the modification time, a column, moves with the row), `list` a query on
//!   the parent column plus the `dirs` table (directories persist until
//!   `delete_prefix`, as on a file system);
//! - a staged upload is a row of `stages` with its content; a writer buffers
//!   up to [`PART`] bytes, writes them as one object, then appends the chunk
//!   row in a transaction that moves the stage's size from the offset it
//!   started at (a compare-and-swap, so two writers at one offset cannot
//!   both append). What a writer has flushed is visible to `stage_read` at
//!   once, from any replica; an upload begun on one replica is continued on
//!   another from the stage row;
//! - `stage_commit` moves the content to the object row in one transaction:
//!   nothing is copied, and nothing half-written is ever visible;
//! - `stage_from` (a pin) copies the chunk rows under a new content id while
//!   it holds a share lock on the source row, so a concurrent delete waits
//!   and then finds the objects still referenced;
//! - object-store objects that no chunk row references any longer are deleted
//!   after the transaction that dropped the last reference committed (no
//!   reference can come back once none is left: references are only copied
//!   from other references, under that lock).
//!
//! Object names carry their creation time (`chunks/<secs>-<uuid>`), for a
//! sweep of objects orphaned by a replica that died between writing an
//! object and recording it.

use crate::StorageError;
use crate::{check_id, check_key, Backend, ByteStream, Durability, Entry, Result, StageWriter};
use bytes::{Bytes, BytesMut};
use deadpool_postgres::{GenericClient, Pool};
use futures_util::{StreamExt, TryStreamExt};
pub use object_store;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Objects up to this size keep their bytes in their row.
pub const INLINE: usize = 64 * 1024;
/// A stage writer gathers this much before it writes an object.
pub const PART: usize = 8 * 1024 * 1024;

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_2: &str = include_str!("schema2.sql");
/// The advisory lock that serializes schema migrations across replicas.
const MIGRATION_LOCK: i64 = 0x6265_7274_6801;

fn db(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io(std::io::Error::other(format!("metadata store: {e}")))
}

fn objects_error(e: object_store::Error) -> StorageError {
    StorageError::Io(std::io::Error::other(format!("object store: {e}")))
}

/// How the shared store connects.
#[derive(Clone)]
pub struct ClusterBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    objects: Arc<dyn ObjectStore>,
    /// Prefix of every object-store key (zot's `rootdirectory`), without
    /// slashes at either end; empty for the bucket's root.
    root: String,
    part: usize,
    /// Turns are taken here first, so that at most one waiter per name in
    /// this replica holds a database connection for it.
    local: Arc<crate::LocalTurns>,
}

/// Opens a transaction; a `Lazy` one does not wait for its commit to reach
/// the disk (it is still atomic).
async fn begin(
    client: &mut deadpool_postgres::Object,
    durability: Durability,
) -> Result<deadpool_postgres::Transaction<'_>> {
    let tx = client.transaction().await.map_err(db)?;
    if durability == Durability::Lazy {
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .map_err(db)?;
    }
    Ok(tx)
}

/// Statements are prepared once per connection (deadpool keeps them), so
/// each query is one round trip.
async fn opt<C: GenericClient>(
    c: &C,
    sql: &str,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<Option<tokio_postgres::Row>, tokio_postgres::Error> {
    let st = c.prepare_cached(sql).await?;
    c.query_opt(&st, p).await
}

async fn one<C: GenericClient>(
    c: &C,
    sql: &str,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<tokio_postgres::Row, tokio_postgres::Error> {
    let st = c.prepare_cached(sql).await?;
    c.query_one(&st, p).await
}

async fn all<C: GenericClient>(
    c: &C,
    sql: &str,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let st = c.prepare_cached(sql).await?;
    c.query(&st, p).await
}

async fn exec<C: GenericClient>(
    c: &C,
    sql: &str,
    p: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> std::result::Result<u64, tokio_postgres::Error> {
    let st = c.prepare_cached(sql).await?;
    c.execute(&st, p).await
}

/// `parent` and `name` of a key (`""` parent at the root).
fn split(key: &str) -> (&str, &str) {
    key.rsplit_once('/').unwrap_or(("", key))
}

/// Every (parent, name) directory pair above a key.
fn ancestors(key: &str) -> (Vec<String>, Vec<String>) {
    let (mut parents, mut names) = (Vec::new(), Vec::new());
    let mut start = 0;
    while let Some(i) = key[start..].find('/') {
        let dir = &key[..start + i];
        let (p, n) = split(dir);
        parents.push(p.to_owned());
        names.push(n.to_owned());
        start += i + 1;
    }
    (parents, names)
}

/// The smallest key above every key under `prefix/` (`/` is followed by `0`).
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}0")
}

fn micros_to_time(m: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(m).unwrap_or(0))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// An object row's fields.
struct Row {
    size: i64,
    /// `None`: now.
    modified: Option<i64>,
    inline: Option<Vec<u8>>,
    content: Option<i64>,
}

/// A chunk row.
#[derive(Debug, Clone)]
struct Chunk {
    start: u64,
    len: u64,
    object: String,
    skip: u64,
}

impl ClusterBackend {
    /// Connects to PostgreSQL (applying the schema if it is missing) over
    /// an object store.
    pub async fn connect(
        pool: Pool,
        objects: Arc<dyn ObjectStore>,
        root: &str,
    ) -> Result<ClusterBackend> {
        let store = ClusterBackend {
            inner: Arc::new(Inner {
                pool,
                objects,
                root: root.trim_matches('/').to_owned(),
                part: PART,
                local: Arc::default(),
            }),
        };
        store.migrate().await?;
        store.probe().await?;
        Ok(store)
    }

    /// The same store with another part size (tests use small ones to
    /// exercise reads across many chunks).
    pub fn with_part_size(self, part: usize) -> ClusterBackend {
        let inner = Inner {
            pool: self.inner.pool.clone(),
            objects: self.inner.objects.clone(),
            root: self.inner.root.clone(),
            part: part.max(1),
            local: self.inner.local.clone(),
        };
        ClusterBackend {
            inner: Arc::new(inner),
        }
    }

    /// A pool for a `postgres://` URL, with bounded waits everywhere: a
    /// connection is made within 10 s, a statement runs at most 60 s, a
    /// lock is waited for at most 30 s.
    pub fn pool(url: &str, max_size: usize) -> Result<Pool> {
        let mut config: tokio_postgres::Config = url.parse().map_err(db)?;
        config.connect_timeout(Duration::from_secs(10));
        config.options("-c statement_timeout=60000 -c lock_timeout=30000 -c idle_in_transaction_session_timeout=60000");
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(max_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(db)
    }

    /// The row a query by key finds, if any.
    async fn object_row(&self, sql: &str, key: &str) -> Result<Option<tokio_postgres::Row>> {
        check_key(key, false)?;
        let client = self.client().await?;
        opt(&client, sql, &[&key]).await.map_err(db)
    }

    /// Whether a URL insists on TLS (`sslmode=require`), which this build's
    /// connections do not speak (`prefer`, the default, falls back).
    pub fn wants_tls(url: &str) -> bool {
        url.parse::<tokio_postgres::Config>()
            .is_ok_and(|c| c.get_ssl_mode() == tokio_postgres::config::SslMode::Require)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.inner.pool.get().await.map_err(db)
    }

    /// Asks the object store for an object that is never written: "not
    /// found" shows the bucket is reachable with these credentials.
    async fn probe(&self) -> Result<()> {
        match self.inner.objects.head(&self.object_path("probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(objects_error(e)),
        }
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        exec(&tx, "SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS berth_schema (version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db)?;
        let done: Option<i32> = one(&tx, "SELECT max(version) FROM berth_schema", &[])
            .await
            .map_err(db)?
            .get(0);
        if done.unwrap_or(0) < 1 {
            tx.batch_execute(SCHEMA).await.map_err(db)?;
            exec(&tx, "INSERT INTO berth_schema (version) VALUES (1)", &[])
                .await
                .map_err(db)?;
        }
        if done.unwrap_or(0) < 2 {
            tx.batch_execute(SCHEMA_2).await.map_err(db)?;
            exec(&tx, "INSERT INTO berth_schema (version) VALUES (2)", &[])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    fn object_path(&self, name: &str) -> ObjectPath {
        if self.inner.root.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.inner.root))
        }
    }

    /// Writes bytes as a new object; returns its name.
    async fn write_object(&self, data: Bytes) -> Result<String> {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let name = format!("chunks/{secs:x}-{}", uuid::Uuid::new_v4().simple());
        self.inner
            .objects
            .put(&self.object_path(&name), PutPayload::from_bytes(data))
            .await
            .map_err(objects_error)?;
        Ok(name)
    }

    /// The objects of this list that no chunk row names and that are not
    /// doomed (those go by their own grace).
    async fn unreferenced(&self, objects: &[String]) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = all(
            &client,
            "SELECT o FROM unnest($1::text[]) AS t(o)
             WHERE NOT EXISTS (SELECT 1 FROM chunks WHERE chunks.object = t.o)
               AND NOT EXISTS (SELECT 1 FROM doomed WHERE doomed.object = t.o)",
            &[&objects],
        )
        .await
        .map_err(db)?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// What a transaction's dropped references leave to do: nothing now.
    /// Their objects were doomed in that transaction and go with the next
    /// sweep once the grace has passed.
    async fn release(&self, _objects: Vec<String>) {}

    /// Deletes objects this process wrote and certainly never recorded (the
    /// transaction that would have named them was refused or rolled back).
    async fn discard(&self, objects: Vec<String>) {
        for name in objects {
            if let Err(e) = self.inner.objects.delete(&self.object_path(&name)).await {
                tracing::warn!(object = %name, error = %e, "could not delete an unrecorded chunk; a sweep will");
            }
        }
    }

    /// Drops the chunk rows of contents; returns the objects they named.
    async fn drop_contents(tx: &impl GenericClient, contents: &[i64]) -> Result<Vec<String>> {
        if contents.is_empty() {
            return Ok(Vec::new());
        }
        let rows = all(
            tx,
            "DELETE FROM chunks WHERE content = ANY($1) RETURNING object",
            &[&contents],
        )
        .await
        .map_err(db)?;
        let objects: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        // Deleted later by `sweep`, if nothing names them by then; in this
        // transaction, so a lost commit loses the deletion too.
        Self::doom(tx, &objects).await?;
        Ok(objects)
    }

    /// Marks objects for deletion by a later sweep (see `schema2.sql`).
    async fn doom(tx: &impl GenericClient, objects: &[String]) -> Result<()> {
        exec(
            tx,
            "INSERT INTO doomed (object, since) SELECT unnest($1::text[]), berth_now()
             ON CONFLICT (object) DO UPDATE SET since = excluded.since",
            &[&objects],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn add_dirs(tx: &impl GenericClient, key: &str) -> Result<()> {
        let (parents, names) = ancestors(key);
        if parents.is_empty() {
            return Ok(());
        }
        exec(
            tx,
            "INSERT INTO dirs (parent, name) SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT (parent, name) DO UPDATE SET name = excluded.name",
            &[&parents, &names],
        )
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Streams `from..to` from query rows whose columns from `at` on are a
    /// chunk's (start, len, object, skip), ordered by start; refuses chunks
    /// that do not cover the range (the content changed under the read).
    fn stream_rows(
        &self,
        rows: &[tokio_postgres::Row],
        at: usize,
        from: u64,
        to: u64,
    ) -> Result<ByteStream> {
        if from >= to {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let chunks: Vec<Chunk> = rows
            .iter()
            .filter(|r| r.get::<_, Option<i64>>(at).is_some())
            .map(|r| Chunk {
                start: to_u64(r.get(at)),
                len: to_u64(r.get(at + 1)),
                object: r.get(at + 2),
                skip: to_u64(r.get(at + 3)),
            })
            .collect();
        let mut covered = from;
        for c in &chunks {
            if c.start > covered {
                break;
            }
            covered = covered.max(c.start + c.len);
        }
        if covered < to {
            return Err(StorageError::Io(std::io::Error::other(
                "content changed while it was read; read again",
            )));
        }
        Ok(self.stream_chunks(chunks, from, to))
    }

    /// A stream of bytes `from..to` of chunks (ordered, covering the range).
    fn stream_chunks(&self, chunks: Vec<Chunk>, from: u64, to: u64) -> ByteStream {
        let me = self.clone();
        // The next chunk's request is sent while this one streams (two in
        // flight at most: memory stays bounded by what the sockets hold).
        let parts = futures_util::stream::iter(chunks).map(move |c| {
            let me = me.clone();
            async move {
                let a = from.max(c.start) - c.start + c.skip;
                let b = to.min(c.start + c.len) - c.start + c.skip;
                let opts = GetOptions {
                    range: Some(GetRange::Bounded(a..b)),
                    ..GetOptions::default()
                };
                let got = me
                    .inner
                    .objects
                    .get_opts(&me.object_path(&c.object), opts)
                    .await
                    .map_err(|e| std::io::Error::other(format!("object store: {e}")))?;
                Ok::<_, std::io::Error>(
                    got.into_stream()
                        .map_err(|e| std::io::Error::other(format!("object store: {e}"))),
                )
            }
        });
        Box::pin(parts.buffered(2).try_flatten())
    }

    /// Inserts or replaces an object row in a transaction; returns the
    /// objects the replaced content used.
    async fn upsert(
        &self,
        key: &str,
        size: u64,
        inline: Option<&[u8]>,
        object: Option<&str>,
        durability: Durability,
        only_if_absent: bool,
    ) -> Result<(bool, Vec<String>)> {
        let mut client = self.client().await?;
        let tx = begin(&mut client, durability).await?;
        let content: Option<i64> = match object {
            Some(_) => Some(
                one(&tx, "SELECT nextval('contents')", &[])
                    .await
                    .map_err(db)?
                    .get(0),
            ),
            None => None,
        };
        let row = Row {
            size: to_i64(size),
            modified: None,
            inline: inline.map(<[u8]>::to_vec),
            content,
        };
        let (written, released) = if only_if_absent {
            (Self::insert(&tx, key, &row).await?, Vec::new())
        } else {
            (true, Self::place(&tx, key, &row).await?)
        };
        if written {
            if let (Some(content), Some(object)) = (content, object) {
                exec(&tx,
                    "INSERT INTO chunks (content, start, len, object, skip) VALUES ($1, 0, $2, $3, 0)",
                    &[&content, &to_i64(size), &object],
                )
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok((written, released))
    }

    /// Removes the row at `key` with its chunk rows; `None` if there was
    /// none, else the objects those rows named.
    async fn remove(tx: &impl GenericClient, key: &str) -> Result<Option<Vec<String>>> {
        let Some(r) = opt(
            tx,
            "DELETE FROM objects WHERE key = $1 RETURNING content",
            &[&key],
        )
        .await
        .map_err(db)?
        else {
            return Ok(None);
        };
        let content: Option<i64> = r.get(0);
        Self::drop_contents(tx, content.as_slice()).await.map(Some)
    }

    /// Inserts a row at `key` unless one is there; returns whether it did.
    async fn insert(tx: &impl GenericClient, key: &str, row: &Row) -> Result<bool> {
        let (parent, name) = split(key);
        let n = exec(
            tx,
            "INSERT INTO objects (key, parent, name, size, modified, inline, content)
                 VALUES ($1, $2, $3, $4, coalesce($5, berth_now()), $6, $7)
                 ON CONFLICT (key) DO NOTHING",
            &[
                &key,
                &parent,
                &name,
                &row.size,
                &row.modified,
                &row.inline,
                &row.content,
            ],
        )
        .await
        .map_err(db)?;
        if n == 1 {
            Self::add_dirs(tx, key).await?;
        }
        Ok(n == 1)
    }

    /// Puts a row at `key`, replacing what is there (a row another
    /// transaction inserts meanwhile is replaced too); returns the objects
    /// the replaced rows named.
    async fn place(tx: &impl GenericClient, key: &str, row: &Row) -> Result<Vec<String>> {
        let mut released = Vec::new();
        for _ in 0..16 {
            released.extend(Self::remove(tx, key).await?.unwrap_or_default());
            if Self::insert(tx, key, row).await? {
                return Ok(released);
            }
        }
        Err(db(format!("{key}: too many concurrent writers")))
    }

    async fn put_inner(
        &self,
        key: &str,
        data: Bytes,
        durability: Durability,
        only_if_absent: bool,
    ) -> Result<bool> {
        check_key(key, false)?;
        let size = data.len() as u64;
        if data.len() <= INLINE {
            let (written, released) = self
                .upsert(key, size, Some(&data), None, durability, only_if_absent)
                .await?;
            self.release(released).await;
            return Ok(written);
        }
        let object = self.write_object(data).await?;
        let result = self
            .upsert(key, size, None, Some(&object), durability, only_if_absent)
            .await;
        match result {
            Ok((true, released)) => {
                self.release(released).await;
                Ok(true)
            }
            Ok((false, _)) => {
                self.discard(vec![object]).await;
                Ok(false)
            }
            // Perhaps committed after all (a lost answer): the orphan
            // sweep decides, by whether a chunk row names it.
            Err(e) => Err(e),
        }
    }

    /// The stage's content id and size, if it exists.
    async fn stage_row(&self, id: &str) -> Result<Option<(i64, u64)>> {
        let client = self.client().await?;
        Ok(opt(
            &client,
            "SELECT content, size FROM stages WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(db)?
        .map(|r| (r.get(0), to_u64(r.get(1)))))
    }

    /// Creates (or replaces) a stage with a fresh content; returns the
    /// content id.
    async fn new_stage(&self, id: &str) -> Result<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let (content, released) = Self::replace_stage(&tx, id, 0).await?;
        tx.commit().await.map_err(db)?;
        self.release(released).await;
        Ok(content)
    }

    /// Makes `id` a stage of `size` bytes with a fresh content id (its
    /// chunk rows are the caller's to add); returns that id and the objects
    /// the stage it replaces used.
    async fn replace_stage(
        tx: &impl GenericClient,
        id: &str,
        size: i64,
    ) -> Result<(i64, Vec<String>)> {
        // Insert if absent; otherwise lock the row that is there, so that
        // a concurrent replacement cannot slip its content past us.
        if let Some(r) = opt(
            tx,
            "INSERT INTO stages (id, size, modified, content)
             VALUES ($1, $2, berth_now(), nextval('contents'))
             ON CONFLICT (id) DO NOTHING RETURNING content",
            &[&id, &size],
        )
        .await
        .map_err(db)?
        {
            return Ok((r.get(0), Vec::new()));
        }
        let old: i64 = one(
            tx,
            "SELECT content FROM stages WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(db)?
        .get(0);
        let released = Self::drop_contents(tx, &[old]).await?;
        let content: i64 = one(
            tx,
            "UPDATE stages SET size = $2, modified = berth_now(), content = nextval('contents')
             WHERE id = $1 RETURNING content",
            &[&id, &size],
        )
        .await
        .map_err(db)?
        .get(0);
        Ok((content, released))
    }

    fn writer(&self, id: &str, offset: u64) -> Box<dyn StageWriter> {
        Box::new(ClusterStageWriter {
            store: self.clone(),
            id: id.to_owned(),
            offset,
            buf: BytesMut::new(),
            flushing: None,
        })
    }

    /// Records a written object as the stage's next chunk, if the stage is
    /// still `start` bytes long.
    async fn append_chunk(&self, id: &str, start: u64, len: u64, object: &str) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let row = opt(
            &tx,
            "UPDATE stages SET size = size + $3, modified = berth_now()
                 WHERE id = $1 AND size = $2 RETURNING content",
            &[&id, &to_i64(start), &to_i64(len)],
        )
        .await
        .map_err(db)?;
        let Some(row) = row else {
            drop(tx);
            return match self.stage_row(id).await? {
                Some((_, actual)) => Err(StorageError::Offset {
                    expected: start,
                    actual,
                }),
                None => Err(StorageError::NotFound),
            };
        };
        let content: i64 = row.get(0);
        exec(
            &tx,
            "INSERT INTO chunks (content, start, len, object, skip) VALUES ($1, $2, $3, $4, 0)",
            &[&content, &to_i64(start), &to_i64(len), &object],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }
}

/// An advisory lock held on a pooled connection.
struct PgTurn {
    client: Option<deadpool_postgres::Object>,
    key: i64,
}

impl Drop for PgTurn {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime left: closing the connection releases the lock.
            drop(deadpool_postgres::Object::take(client));
            return;
        };
        let key = self.key;
        rt.spawn(async move {
            match one(&client, "SELECT pg_advisory_unlock($1)", &[&key]).await {
                Ok(r) if r.get::<_, bool>(0) => {} // back to the pool
                // Not released (or not knowable): the connection closes,
                // which releases every lock it held.
                _ => drop(deadpool_postgres::Object::take(client)),
            }
        });
    }
}

/// Appends to a stage: gathers [`PART`] bytes, writes them as one object
/// while the next part gathers, and records each in order.
struct ClusterStageWriter {
    store: ClusterBackend,
    id: String,
    /// The stage's size once everything handed to `flushing` is recorded.
    offset: u64,
    buf: BytesMut,
    flushing: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl ClusterStageWriter {
    async fn wait(&mut self) -> Result<()> {
        if let Some(task) = self.flushing.take() {
            task.await
                .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        }
        Ok(())
    }

    /// Hands `data` to a task that writes and records it, after the one
    /// before it finished.
    async fn flush(&mut self, data: Bytes) -> Result<()> {
        self.wait().await?;
        let (store, id, start) = (self.store.clone(), self.id.clone(), self.offset);
        let len = data.len() as u64;
        self.offset += len;
        self.flushing = Some(tokio::spawn(async move {
            let object = store.write_object(data).await?;
            let recorded = store.append_chunk(&id, start, len, &object).await;
            if let Err(StorageError::Offset { .. } | StorageError::NotFound) = recorded {
                // Refused before anything was committed.
                store.discard(vec![object]).await;
            }
            recorded
        }));
        Ok(())
    }
}

#[async_trait::async_trait]
impl StageWriter for ClusterStageWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let part = self.store.inner.part;
        if self.buf.is_empty() && data.len() == part {
            return self.flush(data).await;
        }
        self.buf.extend_from_slice(&data);
        while self.buf.len() >= part {
            let piece = self.buf.split_to(part).freeze();
            self.flush(piece).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf).freeze();
            self.flush(rest).await?;
        }
        self.wait().await?;
        Ok(self.offset)
    }
}

impl Drop for ClusterStageWriter {
    fn drop(&mut self) {
        // A flush under way finishes on its own (what it recorded stays, as
        // on a file system); nothing else is held.
        let _ = self.flushing.take();
    }
}

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
        let (after, limit) = (
            after.unwrap_or(""),
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
        let (content, released) = Self::replace_stage(&tx, id, size).await?;
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

    async fn stage_commit(&self, id: &str, key: &str) -> Result<()> {
        check_id(id)?;
        check_key(key, false)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // The content moves with its chunk rows; the modification time is
        // the last write's, as a file system's rename keeps it.
        let row = opt(
            &tx,
            "DELETE FROM stages WHERE id = $1 RETURNING content, size, modified",
            &[&id],
        )
        .await
        .map_err(db)?
        .map(|r| Row {
            size: r.get(1),
            modified: Some(r.get(2)),
            inline: None,
            content: Some(r.get(0)),
        })
        .ok_or(StorageError::NotFound)?;
        let released = Self::place(&tx, key, &row).await?;
        tx.commit().await.map_err(db)?;
        self.release(released).await;
        Ok(())
    }

    async fn stage_truncate(&self, id: &str, size: u64) -> Result<()> {
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

#[cfg(test)]
mod tests {
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
        replicas[1].stage_commit("up", "blobs/up").await.unwrap();
        assert_eq!(replicas[0].stat("blobs/up").await.unwrap(), Some(270_000));
        assert_eq!(leaks(&replicas[0]).await, (vec![], vec![]));
    }
}
