-- bigpeer: where each change data capture sink (the NATS JetStream sink, server/src/nats.rs)
-- stands in the change log (store/sinks.rs).
CREATE TABLE cdc_sinks (
    name        text        PRIMARY KEY,                -- "nats"
    -- Every change at or below this position of the change sequence has been published and
    -- acknowledged (or predates the sink). Created at the end of the change log the first time
    -- the sink is configured; a process publishes while it holds this row locked.
    position    bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
