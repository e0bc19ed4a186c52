-- Berth's shared store, version 1: the `Backend` contract kept by
-- PostgreSQL (everything that changes) over an object store (immutable
-- chunks of bytes). Keys compare byte-wise (COLLATE "C"), as on a file system.

-- Now, in microseconds since the Unix epoch, by the database's clock: one
-- clock for every replica.
CREATE FUNCTION berth_now() RETURNS bigint
    LANGUAGE sql VOLATILE
    AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint $$;

-- Content ids: every object or stage that keeps its bytes in chunks owns
-- one content id, never shared (a pin copies the chunk rows, not the id).
CREATE SEQUENCE contents;

-- Objects by key. Small ones hold their bytes (`inline`); the others name
-- their content.
CREATE TABLE objects (
    key      text COLLATE "C" PRIMARY KEY,
    parent   text COLLATE "C" NOT NULL,
    name     text COLLATE "C" NOT NULL,
    size     bigint NOT NULL,
    modified bigint NOT NULL,
    inline   bytea,
    content  bigint,
    CHECK ((inline IS NULL) <> (content IS NULL))
);
CREATE INDEX objects_by_parent ON objects (parent, name);

-- Directories, as a file system keeps them: created with the first key
-- below them, gone with `delete_prefix`.
CREATE TABLE dirs (
    parent text COLLATE "C" NOT NULL,
    name   text COLLATE "C" NOT NULL,
    PRIMARY KEY (parent, name)
);

-- Staged uploads: their size is the sum of their chunks; appends are
-- compare-and-swap on it.
CREATE TABLE stages (
    id       text COLLATE "C" PRIMARY KEY,
    size     bigint NOT NULL,
    modified bigint NOT NULL,
    content  bigint NOT NULL
);

-- The bytes of a content: `len` bytes at `start`, read from `object` (a key
-- of the object store, written once, never changed) from `skip` on.
CREATE TABLE chunks (
    content bigint NOT NULL,
    start   bigint NOT NULL,
    len     bigint NOT NULL,
    object  text COLLATE "C" NOT NULL,
    skip    bigint NOT NULL,
    PRIMARY KEY (content, start)
);
CREATE INDEX chunks_by_object ON chunks (object);
