-- bigpeer: outgoing webhooks of change data capture (server/src/webhooks, store/webhooks.rs).
CREATE TABLE webhooks (
    id                    text        PRIMARY KEY,      -- "wh_" + 16 hex characters
    url                   text        NOT NULL,
    collections           text[],                       -- NULL: every collection
    filter                text,                         -- DQL expression; NULL: every document
    description           text        NOT NULL DEFAULT '',
    -- The signing secret ("whsec_..."). Kept as it is: each request is signed with it.
    secret                text        NOT NULL,
    enabled               boolean     NOT NULL DEFAULT true,
    disabled_reason       text,
    -- Every change at or below this position of the change sequence has been delivered or
    -- dead-lettered (or predates the webhook).
    position              bigint      NOT NULL,
    consecutive_failures  integer     NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- One request (a batch of events of one webhook) and its attempts. The body is kept as sent, so
-- that a retry or a replay sends the same events under the same `webhook-id`.
CREATE TABLE webhook_deliveries (
    id              text        PRIMARY KEY,            -- "msg_" + ...: the webhook-id header
    webhook_id      text        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    first_seq       bigint      NOT NULL,
    last_seq        bigint      NOT NULL,
    events          integer     NOT NULL,
    -- When the batch's first change committed (delivery latency is measured from it).
    first_committed_at timestamptz NOT NULL DEFAULT now(),
    body            bytea       NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'failed', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,                             -- the receiver's HTTP status
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, first_seq);
CREATE INDEX webhook_deliveries_open ON webhook_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'failed');
