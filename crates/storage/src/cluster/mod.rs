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
//!   A writer at offset 0 creates the stage or takes one that holds
//!   nothing; a stage with bytes is never replaced;
//! - `stage_commit` moves the content to the object row in one transaction,
//!   only if the stage still holds the size that was verified: nothing is
//!   copied, and nothing half-written is ever visible;
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
mod backend;
#[cfg(test)]
mod tests;
mod tls;
mod turn;
mod writer;

use turn::PgTurn;
use writer::ClusterStageWriter;

pub use object_store;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Objects up to this size keep their bytes in their row.
pub const INLINE: usize = 64 * 1024;
/// A stage writer gathers this much before it writes an object.
pub const PART: usize = 8 * 1024 * 1024;

/// The schema's versions, applied in order, each once.
const SCHEMA: [&str; 2] = [include_str!("schema.sql"), include_str!("schema2.sql")];
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
    /// lock is waited for at most 30 s. With `sslmode` `require`,
    /// `verify-ca` or `verify-full` every connection is TLS (rustls) and
    /// the server's certificate is verified, chain and host name, against
    /// `sslrootcert` (a PEM file of CAs) or else the system's roots: Berth
    /// never sends the database password over a connection it has not
    /// verified. Any other `sslmode` (`prefer`, the default, `disable`) is
    /// plain TCP.
    pub fn pool(url: &str, max_size: usize) -> Result<Pool> {
        let (url, tls) = tls::split(url)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(db)?;
        config.connect_timeout(Duration::from_secs(10));
        config.options("-c statement_timeout=60000 -c lock_timeout=30000 -c idle_in_transaction_session_timeout=60000");
        let manager_config = deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(roots) => deadpool_postgres::Manager::from_config(
                config,
                tokio_postgres_rustls::MakeRustlsConnect::new(tls::client(roots.as_deref())?),
                manager_config,
            ),
            None => deadpool_postgres::Manager::from_config(
                config,
                tokio_postgres::NoTls,
                manager_config,
            ),
        };
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
        for (version, sql) in (1..).zip(SCHEMA) {
            if done.unwrap_or(0) < version {
                tx.batch_execute(sql).await.map_err(db)?;
                exec(
                    &tx,
                    "INSERT INTO berth_schema (version) VALUES ($1)",
                    &[&version],
                )
                .await
                .map_err(db)?;
            }
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

    /// Why a write conditioned on a stage holding `expected` bytes found
    /// none to change: it holds another size, or is gone.
    async fn not_at(&self, id: &str, expected: u64) -> StorageError {
        match self.stage_row(id).await {
            Ok(Some((_, actual))) => StorageError::Offset { expected, actual },
            Ok(None) => StorageError::NotFound,
            Err(e) => e,
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

    /// Creates a stage with a fresh content, or takes one that holds
    /// nothing (a stage with bytes is another writer's); returns the
    /// content id.
    async fn new_stage(&self, id: &str) -> Result<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let (content, released) = Self::replace_stage(&tx, id, 0, false).await?;
        tx.commit().await.map_err(db)?;
        self.release(released).await;
        Ok(content)
    }

    /// Makes `id` a stage of `size` bytes with a fresh content id (its
    /// chunk rows are the caller's to add); returns that id and the objects
    /// the stage it replaces used. Without `over_bytes`, a stage that holds
    /// bytes is not replaced: [`StorageError::Offset`].
    async fn replace_stage(
        tx: &impl GenericClient,
        id: &str,
        size: i64,
        over_bytes: bool,
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
        let row = one(
            tx,
            "SELECT content, size FROM stages WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .map_err(db)?;
        let (old, held): (i64, i64) = (row.get(0), row.get(1));
        if held > 0 && !over_bytes {
            return Err(StorageError::Offset {
                expected: 0,
                actual: to_u64(held),
            });
        }
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
            return Err(self.not_at(id, start).await);
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
