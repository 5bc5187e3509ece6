-- bigpeer: HTTP API keys. The secret itself is never stored: only its SHA-256.
CREATE TABLE api_keys (
    id           text        PRIMARY KEY,          -- "key_" + 16 hex characters, public
    name         text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    secret_hash  bytea       NOT NULL UNIQUE,      -- sha256(secret)
    prefix       text        NOT NULL,             -- first characters of the secret, to recognise it
    permissions  jsonb       NOT NULL,             -- {read, write, remoteQuery}
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz
);
