-- bigpeer: the typed state of documents, for DQL strict mode.
--
-- A field can hold several CRDT types at once (a register beside a map, a counter beside a
-- register). `value` shows every field's newest one; a strict-mode query instead sees, at each
-- field, only the type it declares (REGISTER when it declares none). `shape` keeps what `value`
-- cannot tell (bigpeer_schema::Doc::shape): NULL when every field has one type, objects being
-- maps and other values registers (every document written in the default mode without
-- counters); otherwise the root map's fields, each {"r": value, "m": {fields}, "c": int,
-- "p": float, "a": token} with its live types.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS shape jsonb;

-- Work the server finishes after migrating: here, computing `shape` of the documents written
-- before this migration from their CRDT state (`meta`), which SQL cannot decode.
CREATE TABLE IF NOT EXISTS pending_backfills (name text PRIMARY KEY);
INSERT INTO pending_backfills (name)
  SELECT 'documents_shape' WHERE EXISTS (SELECT 1 FROM documents WHERE NOT deleted)
  ON CONFLICT DO NOTHING;

-- A declaration `decl` is {field: {"t": "r"|"m"|"c"|"p"|"a", "f": {declarations inside a map}}}
-- for the declared fields only (bigpeer_schema::TypeView::to_json).

-- The view of a map level of `value` when the document has no shape: an object is a map, any
-- other value a register.
CREATE OR REPLACE FUNCTION dql_view_plain(v jsonb, decl jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  RETURN (SELECT coalesce(jsonb_object_agg(e.key, CASE WHEN jsonb_typeof(e.value) = 'object'
        THEN dql_view_plain(e.value, coalesce(decl -> e.key -> 'f', '{}'::jsonb))
        ELSE e.value END), '{}'::jsonb)
    FROM jsonb_each(v) AS e
    WHERE coalesce(decl -> e.key ->> 't', 'r')
      = CASE WHEN jsonb_typeof(e.value) = 'object' THEN 'm' ELSE 'r' END);
END
$$;

-- The view of a map level of `shape`: each field's component of the declared type, if live.
CREATE OR REPLACE FUNCTION dql_view_typed(m jsonb, decl jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  RETURN (SELECT coalesce(jsonb_object_agg(e.key, CASE WHEN w.t = 'm'
        THEN dql_view_typed(e.value -> 'm', coalesce(decl -> e.key -> 'f', '{}'::jsonb))
        ELSE e.value -> w.t END), '{}'::jsonb)
    FROM jsonb_each(m) AS e
    CROSS JOIN LATERAL (SELECT coalesce(decl -> e.key ->> 't', 'r') AS t) AS w
    WHERE e.value ? w.t);
END
$$;

-- The document (with `_id`) as a strict-mode query declaring `decl` sees it; NULL when deleted.
CREATE OR REPLACE FUNCTION dql_view(value jsonb, shape jsonb, decl jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN value IS NULL THEN NULL
    WHEN shape IS NULL THEN dql_view_plain(value - '_id', decl) || jsonb_build_object('_id', value -> '_id')
    ELSE dql_view_typed(shape, decl) || jsonb_build_object('_id', value -> '_id') END
$$;
