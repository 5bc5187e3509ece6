-- bigpeer: the durable change log (change data capture).
--
-- One row per committed change of a document's JSON, written by the writing transaction itself,
-- in the statement that takes its sequence numbers (store/txn.rs): a row exists exactly when the
-- change committed. `seq` is the change's position in the commit-ordered sequence of
-- `seq_counter` (the document's `documents.seq`, or for an eviction a number of its own), so a
-- reader that pages `WHERE seq > $cursor ORDER BY seq` sees a gap-free prefix and never a row
-- that commits later with a lower position. Several documents changed by one transaction each
-- have their own `seq` and share `txn`. Positions are not contiguous: a change of the CRDT state
-- that leaves the JSON as it was (a merged tombstone, a value written again) takes a sequence
-- number for sync but writes no row here.
CREATE TABLE IF NOT EXISTS changes (
    seq          bigint      PRIMARY KEY,
    txn          bigint      NOT NULL,
    collection   text        NOT NULL,
    -- bigpeer_schema::DocId::key() of the document, as in `documents.id`.
    id           bytea       NOT NULL,
    -- upsert: the document did not exist (or was deleted) before; update: it existed and still
    -- does; remove: it was deleted (a tombstone, synced); evict: its row was removed without a
    -- tombstone (EVICT; not synced, small peers keep their copies).
    method       text        NOT NULL CHECK (method IN ('upsert', 'update', 'remove', 'evict')),
    -- The materialised JSON (with `_id`) before and after; NULL when absent or deleted.
    old_value    jsonb,
    new_value    jsonb,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A stream of one collection pages `WHERE collection = $1 AND seq > $2 ORDER BY seq`.
CREATE INDEX IF NOT EXISTS changes_collection_seq ON changes (collection, seq);

-- How far the log has been pruned: events with `seq <= pruned_through` may be missing, so a
-- reader whose cursor is below it must re-read the documents (`changes/requery-required`).
-- Changes committed before this migration have no events: the horizon starts at the current
-- sequence number.
CREATE TABLE IF NOT EXISTS changes_horizon (
    id              smallint PRIMARY KEY CHECK (id = 0),
    pruned_through  bigint   NOT NULL
);
INSERT INTO changes_horizon (id, pruned_through)
SELECT 0, v FROM seq_counter WHERE id = 0
ON CONFLICT (id) DO NOTHING;
