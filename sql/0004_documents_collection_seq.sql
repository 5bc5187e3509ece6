-- bigpeer: a collection's documents in change-sequence order.
--
-- Sync reads a subscription's initial and resumed pages as
--   WHERE collection = $1 AND seq > $2 ORDER BY seq LIMIT n
-- With only the global `documents_feed (seq)` index, the planner's generic plan for that query
-- (sqlx prepares it) ANDs two bitmaps and sorts every remaining row of the collection for each
-- page, about 30 ms per page of 1,000 at 100k documents, worse as the collection grows and when
-- other collections share the sequence. This index serves each page as one ordered range scan.
-- The global feed (`WHERE seq > $1 ORDER BY seq`) keeps using `documents_feed`.
CREATE INDEX IF NOT EXISTS documents_collection_seq ON documents (collection, seq);
