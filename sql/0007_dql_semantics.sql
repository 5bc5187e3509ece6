-- bigpeer: DQL helpers corrected to what Ditto's engine answers (fixtures probe-functions and
-- probe-logic in dql/tests/fixtures/oracle). Same conventions as 0002: SQL NULL is MISSING.

-- OR over a whole chain, left to right: TRUE outranks a non-boolean value, which outranks
-- null, then MISSING, then false (`1 OR null` and `false OR 1 OR null` are MISSING;
-- `missing OR null` is null).
CREATE OR REPLACE FUNCTION dql_or_all(args jsonb[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  e jsonb;
  saw_other boolean := false;
  saw_null boolean := false;
  saw_missing boolean := false;
BEGIN
  FOREACH e IN ARRAY args LOOP
    IF e = 'true'::jsonb THEN RETURN 'true'::jsonb;
    ELSIF e IS NULL THEN saw_missing := true;
    ELSIF e = 'null'::jsonb THEN saw_null := true;
    ELSIF jsonb_typeof(e) <> 'boolean' THEN saw_other := true;
    END IF;
  END LOOP;
  IF saw_other THEN RETURN NULL; END IF;
  IF saw_null THEN RETURN 'null'::jsonb; END IF;
  IF saw_missing THEN RETURN NULL; END IF;
  RETURN 'false'::jsonb;
END
$$;

-- The first value that is neither null nor MISSING; null when there is none.
CREATE OR REPLACE FUNCTION dql_coalesce(VARIADIC args jsonb[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  e jsonb;
BEGIN
  FOREACH e IN ARRAY args LOOP
    IF e IS NOT NULL AND e <> 'null'::jsonb THEN RETURN e; END IF;
  END LOOP;
  RETURN 'null'::jsonb;
END
$$;

-- decode(x, search, result, ..., [default]): a null search value matches a null x.
CREATE OR REPLACE FUNCTION dql_decode(VARIADIC args jsonb[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  n int := coalesce(array_length(args, 1), 0);
  i int := 2;
BEGIN
  IF args[1] IS NULL THEN RETURN NULL; END IF;
  WHILE i + 1 <= n LOOP
    IF dql_compare(0, args[1], args[i]) = 'true'::jsonb
      OR (args[1] = 'null'::jsonb AND args[i] = 'null'::jsonb) THEN
      RETURN args[i + 1];
    END IF;
    i := i + 2;
  END LOOP;
  IF i = n THEN RETURN args[n]; END IF;
  RETURN 'null'::jsonb;
END
$$;

-- array_contains(a, x): found or not (null elements do not make it null); a null array or a
-- null x gives null.
CREATE OR REPLACE FUNCTION dql_array_contains(a jsonb, x jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN a = 'null'::jsonb THEN 'null'::jsonb
    WHEN jsonb_typeof(a) = 'array' AND x = 'null'::jsonb THEN 'null'::jsonb
    WHEN jsonb_typeof(a) = 'array' AND x IS NOT NULL THEN to_jsonb(EXISTS (
      SELECT 1 FROM jsonb_array_elements(a) AS e(v) WHERE dql_compare(0, x, e.v) = 'true'::jsonb))
    ELSE NULL END
$$;

-- deserialize_json(text): text that is not JSON is MISSING.
CREATE OR REPLACE FUNCTION dql_deserialize_json(a jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  IF a = 'null'::jsonb THEN RETURN 'null'::jsonb; END IF;
  IF jsonb_typeof(a) IS DISTINCT FROM 'string' THEN RETURN NULL; END IF;
  RETURN (a #>> '{}')::jsonb;
EXCEPTION WHEN invalid_text_representation OR untranslatable_character THEN
  RETURN NULL;
END
$$;

-- LIKE / ILIKE with % and _; `esc` is the ESCAPE character ('' for none: DQL has no default
-- escape, a `\%` in the statement's text is already `%` in the string).
CREATE OR REPLACE FUNCTION dql_like(x jsonb, p jsonb, ci boolean, esc text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN jsonb_typeof(x) = 'string' AND jsonb_typeof(p) = 'string' THEN
      to_jsonb(CASE WHEN ci THEN lower(x #>> '{}') LIKE lower(p #>> '{}') ESCAPE lower(esc)
        ELSE (x #>> '{}') LIKE (p #>> '{}') ESCAPE esc END)
    WHEN (x = 'null'::jsonb AND jsonb_typeof(p) IN ('string', 'null'))
      OR (jsonb_typeof(x) = 'string' AND p = 'null'::jsonb) THEN 'null'::jsonb
    ELSE NULL END
$$;

-- A float result, written so that it stays a float: integral values of any size get a '.0'
-- (jsonb keeps the scale; '9.2e18' alone would read back as an integer), from the shortest
-- text that reads back as the same float (float8::numeric keeps only 15 digits); non-finite
-- gives MISSING.
CREATE OR REPLACE FUNCTION dql_float(x float8) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN x IS NULL OR x IN ('Infinity'::float8, '-Infinity'::float8, 'NaN'::float8) THEN NULL
    WHEN x = trunc(x) THEN ((x::text)::numeric::text || '.0')::jsonb
    ELSE (x::text)::jsonb END
$$;

-- byte_length, char_length, upper, lower (ops 0..3). upper also maps the characters whose
-- capital is two letters (ß → SS and the Latin ligatures), as Unicode and Ditto do.
CREATE OR REPLACE FUNCTION dql_str1(op int, a jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN jsonb_typeof(a) = 'string' THEN CASE op
      WHEN 0 THEN to_jsonb(octet_length(a #>> '{}'))
      WHEN 1 THEN to_jsonb(char_length(a #>> '{}'))
      WHEN 2 THEN to_jsonb(upper(
        replace(replace(replace(replace(replace(replace(replace(replace(a #>> '{}',
          'ß', 'SS'), 'ﬀ', 'FF'), 'ﬁ', 'FI'), 'ﬂ', 'FL'), 'ﬃ', 'FFI'), 'ﬄ', 'FFL'), 'ﬅ', 'ST'),
          'ﬆ', 'ST')))
      ELSE to_jsonb(lower(a #>> '{}')) END
    WHEN a = 'null'::jsonb THEN 'null'::jsonb
    ELSE NULL END
$$;
