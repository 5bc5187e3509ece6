-- bigpeer: documents, the commit-ordered change sequence and transaction ids.

-- One row per document. `value` is the materialised JSON (with `_id`) that DQL queries run on;
-- `meta` is the encoded CRDT state (bigpeer_schema::Doc::encode), the source of truth for merges.
CREATE TABLE documents (
    collection  text        NOT NULL,
    -- bigpeer_schema::DocId::key(): an order-preserving encoding of `_id`, so that ORDER BY id
    -- gives Ditto's storage order and object ids compare regardless of key order.
    id          bytea       NOT NULL,
    value       jsonb,                  -- NULL when deleted
    meta        bytea       NOT NULL,
    deleted     boolean     NOT NULL DEFAULT false,
    -- Commit-ordered sequence number of the last change (see seq_counter).
    seq         bigint      NOT NULL,
    -- Transaction id of the last change.
    txn         bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, id)
);

CREATE INDEX documents_feed ON documents (seq);
CREATE INDEX documents_value ON documents USING gin (value jsonb_path_ops);

-- The change sequence. A plain Postgres sequence can hand a lower number to a transaction that
-- commits later, so a reader that moved its cursor past it would skip the row. Every writing
-- transaction instead takes its numbers from this single row as its last statement before
-- commit; the row lock is held until commit, so commit order equals sequence order and readers
-- always see a gap-free prefix. `epoch` changes when the sequence space is recreated (restore),
-- so that cursors from another epoch can be recognised as expired.
CREATE TABLE seq_counter (
    id     smallint PRIMARY KEY CHECK (id = 0),
    v      bigint   NOT NULL,
    epoch  text     NOT NULL
);
INSERT INTO seq_counter (id, v, epoch) VALUES (0, 0, md5(random()::text || clock_timestamp()::text));
