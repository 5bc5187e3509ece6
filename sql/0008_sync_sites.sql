-- bigpeer: which identity each site id belongs to. A sync session writes stamps of its own
-- site only, and a site belongs to one peer identity (an API key, a webhook user) or to one
-- bigpeer process, for good: a peer that claims another's site id (the server's included) is
-- refused at hello, so it can neither forge another writer's stamps nor shadow its changes.
CREATE TABLE IF NOT EXISTS sync_sites (
  site bytea PRIMARY KEY,
  owner text NOT NULL,
  first_seen timestamptz NOT NULL DEFAULT now(),
  last_seen timestamptz NOT NULL DEFAULT now()
);
