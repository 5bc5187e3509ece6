-- Sync reads one collection's changes in sequence order (initial sync and resumption):
-- `WHERE collection = $1 AND seq > $2 ORDER BY seq LIMIT n`. This index makes that a range
-- scan of the collection instead of a walk of every collection's changes.
CREATE INDEX documents_collection_feed ON documents (collection, seq);
