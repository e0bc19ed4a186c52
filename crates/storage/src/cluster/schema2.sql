-- Version 2: object-store objects whose last reference went are deleted by
-- a later sweep, not at once: a read that began before (streaming the old
-- content of a replaced key) finishes, and a commit the database loses in a
-- crash takes its deletion with it.
CREATE TABLE doomed (
    object text COLLATE "C" PRIMARY KEY,
    since  bigint NOT NULL
);
