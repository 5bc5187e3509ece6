-- bigpeer: helper functions for DQL compiled to SQL (bigpeer_dql::sql).
--
-- Every DQL value is a jsonb value; SQL NULL stands for MISSING and the jsonb literal 'null' for
-- DQL's NULL. Integers and floats are told apart by the scale of the jsonb number (1 vs 1.0),
-- which jsonb keeps. These functions reproduce the semantics of the in-memory evaluator
-- (bigpeer_dql::eval); a differential test runs every query through both.

-- Type rank for ORDER BY: boolean < number < string < array < object < null < missing.
CREATE OR REPLACE FUNCTION dql_rank(v jsonb) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE jsonb_typeof(v)
    WHEN 'boolean' THEN 0 WHEN 'number' THEN 1 WHEN 'string' THEN 3
    WHEN 'array' THEN 4 WHEN 'object' THEN 5 WHEN 'null' THEN 6 ELSE 7 END
$$;

-- A float result, written so that it stays a float (8.0, not 8); non-finite gives MISSING.
CREATE OR REPLACE FUNCTION dql_float(x float8) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN x IS NULL OR x IN ('Infinity'::float8, '-Infinity'::float8, 'NaN'::float8) THEN NULL
    WHEN x = trunc(x) AND abs(x) < 1e16 THEN (trunc(x)::numeric::text || '.0')::jsonb
    ELSE (x::text)::jsonb END
$$;

-- An integer result of arithmetic: a jsonb integer while it fits in i64/u64, else MISSING.
CREATE OR REPLACE FUNCTION dql_int(n numeric) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN n BETWEEN -9223372036854775808 AND 18446744073709551615 THEN to_jsonb(n) END
$$;

-- A mean: an integer when it is integral, else a float.
CREATE OR REPLACE FUNCTION dql_integral_or_float(x float8) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN x = trunc(x) AND abs(x) < 9.2e18 THEN to_jsonb(trunc(x)::numeric) ELSE dql_float(x) END
$$;

-- An integer is a jsonb number without a fractional part that fits Ditto's integers (i64 or
-- u64); a larger one can only come from a float written with an exponent (1e300).
CREATE OR REPLACE FUNCTION dql_is_int(v jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT jsonb_typeof(v) = 'number' AND scale(v::numeric) = 0
    AND v::numeric BETWEEN -9223372036854775808 AND 18446744073709551615
$$;

-- The total order of ORDER BY, MIN/MAX: -1, 0 or 1. Strings compare bytewise.
CREATE OR REPLACE FUNCTION dql_cmp(a jsonb, b jsonb) RETURNS int
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  ra int := dql_rank(a);
  rb int := dql_rank(b);
  c int;
  la int;
  lb int;
  ka text[];
  kb text[];
BEGIN
  IF ra <> rb THEN RETURN sign(ra - rb); END IF;
  IF ra = 0 THEN RETURN sign(a::boolean::int - b::boolean::int); END IF;
  IF ra = 1 THEN RETURN sign(a::numeric - b::numeric); END IF;
  IF ra = 3 THEN
    IF (a #>> '{}') COLLATE "C" < (b #>> '{}') COLLATE "C" THEN RETURN -1; END IF;
    IF (a #>> '{}') = (b #>> '{}') THEN RETURN 0; END IF;
    RETURN 1;
  END IF;
  IF ra = 4 THEN
    la := jsonb_array_length(a);
    lb := jsonb_array_length(b);
    FOR i IN 0 .. least(la, lb) - 1 LOOP
      c := dql_cmp(a -> i, b -> i);
      IF c <> 0 THEN RETURN c; END IF;
    END LOOP;
    RETURN sign(la - lb);
  END IF;
  IF ra = 5 THEN
    ka := ARRAY(SELECT k FROM jsonb_object_keys(a) AS k ORDER BY k COLLATE "C");
    kb := ARRAY(SELECT k FROM jsonb_object_keys(b) AS k ORDER BY k COLLATE "C");
    la := coalesce(array_length(ka, 1), 0);
    lb := coalesce(array_length(kb, 1), 0);
    FOR i IN 1 .. least(la, lb) LOOP
      IF ka[i] COLLATE "C" < kb[i] COLLATE "C" THEN RETURN -1; END IF;
      IF ka[i] <> kb[i] THEN RETURN 1; END IF;
      c := dql_cmp(a -> ka[i], b -> kb[i]);
      IF c <> 0 THEN RETURN c; END IF;
    END LOOP;
    RETURN sign(la - lb);
  END IF;
  RETURN 0;
END
$$;

-- An order-preserving byte encoding (arrays, objects and booleans in ORDER BY).
CREATE OR REPLACE FUNCTION dql_sort_bytes(v jsonb) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  r int := dql_rank(v);
  out bytea := set_byte('\x00'::bytea, 0, r + 1);
  f bytea;
  k text;
BEGIN
  IF r = 0 THEN RETURN out || CASE WHEN v::boolean THEN '\x01'::bytea ELSE '\x00'::bytea END; END IF;
  IF r = 1 THEN
    f := float8send(v::numeric::float8);
    IF get_bit(f, 7) = 1 THEN
      -- negative: invert every bit
      FOR i IN 0 .. 7 LOOP f := set_byte(f, i, 255 - get_byte(f, i)); END LOOP;
    ELSE
      f := set_byte(f, 0, get_byte(f, 0) # 128);
    END IF;
    RETURN out || f;
  END IF;
  IF r = 3 THEN RETURN out || convert_to(v #>> '{}', 'UTF8') || '\x00'::bytea; END IF;
  IF r = 4 THEN
    FOR i IN 0 .. jsonb_array_length(v) - 1 LOOP out := out || dql_sort_bytes(v -> i); END LOOP;
    RETURN out || '\x00'::bytea;
  END IF;
  IF r = 5 THEN
    FOR k IN SELECT x FROM jsonb_object_keys(v) AS x ORDER BY x COLLATE "C" LOOP
      out := out || '\x01'::bytea || convert_to(k, 'UTF8') || '\x00'::bytea || dql_sort_bytes(v -> k);
    END LOOP;
    RETURN out || '\x00'::bytea;
  END IF;
  RETURN out;
END
$$;

-- a <op> b with op 0 '=', 1 '!=', 2 '<', 3 '<=', 4 '>', 5 '>='. MISSING when either side is
-- missing or the types differ, NULL when either is null; objects only compare for equality.
CREATE OR REPLACE FUNCTION dql_compare(op int, a jsonb, b jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  ta text := jsonb_typeof(a);
  tb text := jsonb_typeof(b);
  c int;
BEGIN
  IF a IS NULL OR b IS NULL THEN RETURN NULL; END IF;
  IF ta = 'null' OR tb = 'null' THEN RETURN 'null'::jsonb; END IF;
  IF ta <> tb THEN RETURN NULL; END IF;
  IF ta = 'number' THEN
    c := sign(a::numeric - b::numeric);
  ELSIF ta = 'string' THEN
    IF (a #>> '{}') = (b #>> '{}') THEN c := 0;
    ELSIF (a #>> '{}') COLLATE "C" < (b #>> '{}') COLLATE "C" THEN c := -1;
    ELSE c := 1; END IF;
  ELSE
    c := dql_cmp(a, b);
  END IF;
    IF op = 0 THEN RETURN to_jsonb(c = 0); END IF;
  IF op = 1 THEN RETURN to_jsonb(c <> 0); END IF;
  IF ta = 'array' THEN
    -- The first pair of elements that differ decides, with this comparison's semantics.
    FOR i IN 0 .. least(jsonb_array_length(a), jsonb_array_length(b)) - 1 LOOP
      IF jsonb_typeof(a -> i) = 'null' OR dql_rank(a -> i) <> dql_rank(b -> i) OR dql_cmp(a -> i, b -> i) <> 0 THEN
        RETURN dql_compare(op, a -> i, b -> i);
      END IF;
    END LOOP;
    RETURN dql_compare(op, to_jsonb(jsonb_array_length(a)), to_jsonb(jsonb_array_length(b)));
  END IF;
  IF ta = 'object' THEN RETURN 'false'::jsonb; END IF;
  RETURN to_jsonb(CASE op WHEN 2 THEN c < 0 WHEN 3 THEN c <= 0 WHEN 4 THEN c > 0 ELSE c >= 0 END);
END
$$;

-- Three-valued logic with MISSING (anything that is not a boolean or null is MISSING).
CREATE OR REPLACE FUNCTION dql_and(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN a = 'false'::jsonb OR b = 'false'::jsonb THEN 'false'::jsonb
    WHEN a IS NULL OR b IS NULL OR jsonb_typeof(a) NOT IN ('boolean', 'null')
      OR jsonb_typeof(b) NOT IN ('boolean', 'null') THEN NULL
    WHEN a = 'null'::jsonb OR b = 'null'::jsonb THEN 'null'::jsonb
    ELSE 'true'::jsonb END
$$;

CREATE OR REPLACE FUNCTION dql_or(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN a = 'true'::jsonb OR b = 'true'::jsonb THEN 'true'::jsonb
    WHEN a IS NULL OR b IS NULL OR jsonb_typeof(a) NOT IN ('boolean', 'null')
      OR jsonb_typeof(b) NOT IN ('boolean', 'null') THEN NULL
    WHEN a = 'null'::jsonb OR b = 'null'::jsonb THEN 'null'::jsonb
    ELSE 'false'::jsonb END
$$;

CREATE OR REPLACE FUNCTION dql_not(a jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN a = 'true'::jsonb THEN 'false'::jsonb WHEN a = 'false'::jsonb THEN 'true'::jsonb
    WHEN a = 'null'::jsonb THEN 'null'::jsonb ELSE NULL END
$$;

-- + - * / % || as op 0..5. Integer division truncates; int with float gives a float; division by
-- zero and type errors give MISSING; null gives null.
CREATE OR REPLACE FUNCTION dql_arith(op int, a jsonb, b jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  ta text := jsonb_typeof(a);
  tb text := jsonb_typeof(b);
  x numeric;
  y numeric;
  fx float8;
  fy float8;
BEGIN
  IF a IS NULL OR b IS NULL THEN RETURN NULL; END IF;
  IF op = 5 THEN
    IF ta = 'string' AND tb = 'string' THEN RETURN to_jsonb((a #>> '{}') || (b #>> '{}')); END IF;
    IF (ta = 'null' AND tb IN ('string', 'null')) OR (ta = 'string' AND tb = 'null') THEN
      RETURN 'null'::jsonb;
    END IF;
    RETURN NULL;
  END IF;
  IF ta = 'null' OR tb = 'null' THEN
    IF ta IN ('null', 'number') AND tb IN ('null', 'number') THEN RETURN 'null'::jsonb; END IF;
    RETURN NULL;
  END IF;
  IF ta <> 'number' OR tb <> 'number' THEN RETURN NULL; END IF;
  x := a::numeric;
  y := b::numeric;
    IF dql_is_int(a) AND dql_is_int(b) THEN
    IF op = 0 THEN RETURN dql_int(x + y); END IF;
    IF op = 1 THEN RETURN dql_int(x - y); END IF;
    IF op = 2 THEN RETURN dql_int(x * y); END IF;
    IF y = 0 THEN RETURN NULL; END IF;
    IF op = 3 THEN RETURN dql_int(div(x, y)); END IF;
    RETURN dql_int(mod(x, y));
  END IF;
    fx := x::float8;
  fy := y::float8;
  -- A float result out of range is null (float8 arithmetic would raise an error).
  IF op <> 4 AND (op <> 3 OR y <> 0) AND abs(CASE op WHEN 0 THEN x + y WHEN 1 THEN x - y WHEN 2 THEN x * y
      ELSE x / y END) > 1.7976931348623157e308 THEN
    RETURN 'null'::jsonb;
  END IF;
  IF op = 0 THEN RETURN dql_float(fx + fy); END IF;
  IF op = 1 THEN RETURN dql_float(fx - fy); END IF;
  IF op = 2 THEN RETURN dql_float(fx * fy); END IF;
  IF fy = 0 THEN RETURN NULL; END IF;
  IF op = 3 THEN RETURN dql_float(fx / fy); END IF;
  RETURN dql_float(mod(x, y)::float8);
END
$$;

CREATE OR REPLACE FUNCTION dql_neg(a jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN a = 'null'::jsonb THEN 'null'::jsonb
    WHEN dql_is_int(a) THEN dql_int(-(a::numeric))
    WHEN jsonb_typeof(a) = 'number' THEN dql_float(-(a::numeric::float8))
    ELSE NULL END
$$;

-- LIKE / ILIKE with % _ and \ escapes.
CREATE OR REPLACE FUNCTION dql_like(x jsonb, p jsonb, ci boolean) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN jsonb_typeof(x) = 'string' AND jsonb_typeof(p) = 'string' THEN
      to_jsonb(CASE WHEN ci THEN lower(x #>> '{}') LIKE lower(p #>> '{}') ELSE (x #>> '{}') LIKE (p #>> '{}') END)
    WHEN (x = 'null'::jsonb AND jsonb_typeof(p) IN ('string', 'null'))
      OR (jsonb_typeof(x) = 'string' AND p = 'null'::jsonb) THEN 'null'::jsonb
    ELSE NULL END
$$;

-- x IN <array value>.
CREATE OR REPLACE FUNCTION dql_in(x jsonb, arr jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  acc jsonb := 'false'::jsonb;
  e jsonb;
BEGIN
  IF arr = 'null'::jsonb THEN RETURN 'null'::jsonb; END IF;
  IF jsonb_typeof(arr) IS DISTINCT FROM 'array' THEN RETURN NULL; END IF;
  FOR e IN SELECT jsonb_array_elements(arr) LOOP
    acc := dql_or(acc, dql_compare(0, x, e));
  END LOOP;
  RETURN acc;
END
$$;

-- base[index]: an array element by integer position.
CREATE OR REPLACE FUNCTION dql_index(b jsonb, i jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN jsonb_typeof(b) = 'array' AND jsonb_typeof(i) = 'number'
      AND i::numeric >= 0 AND i::numeric = trunc(i::numeric) AND i::numeric < 2147483647
    THEN b -> (i::numeric::int) END
$$;

-- Adds a key to an object unless the value is MISSING.
CREATE OR REPLACE FUNCTION dql_obj_set(o jsonb, k text, v jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN v IS NULL THEN o ELSE o || jsonb_build_object(k, v) END
$$;

CREATE OR REPLACE FUNCTION dql_type(v jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT to_jsonb(CASE jsonb_typeof(v)
        WHEN 'number' THEN CASE WHEN dql_is_int(v) THEN 'integer' ELSE 'float' END
    WHEN NULL THEN 'missing'
    ELSE coalesce(jsonb_typeof(v), 'missing') END)
$$;

-- String functions of two arguments: 0 contains, 1 starts_with, 2 ends_with.
CREATE OR REPLACE FUNCTION dql_str2(op int, a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN a IS NULL OR b IS NULL THEN NULL
    WHEN jsonb_typeof(a) = 'string' AND jsonb_typeof(b) = 'string' THEN to_jsonb(CASE op
      WHEN 0 THEN strpos(a #>> '{}', b #>> '{}') > 0
      WHEN 1 THEN left(a #>> '{}', char_length(b #>> '{}')) = (b #>> '{}')
      ELSE right(a #>> '{}', char_length(b #>> '{}')) = (b #>> '{}') END)
    WHEN jsonb_typeof(a) = 'null' AND jsonb_typeof(b) IN ('string', 'null') THEN 'null'::jsonb
    WHEN jsonb_typeof(a) = 'string' AND jsonb_typeof(b) = 'null' THEN 'null'::jsonb
    ELSE NULL END
$$;

-- String functions of one argument: 0 byte_length, 1 char_length, 2 upper, 3 lower.
CREATE OR REPLACE FUNCTION dql_str1(op int, a jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN jsonb_typeof(a) = 'string' THEN CASE op
      WHEN 0 THEN to_jsonb(octet_length(a #>> '{}'))
      WHEN 1 THEN to_jsonb(char_length(a #>> '{}'))
      WHEN 2 THEN to_jsonb(upper(a #>> '{}'))
      ELSE to_jsonb(lower(a #>> '{}')) END
    WHEN a = 'null'::jsonb THEN 'null'::jsonb
    ELSE NULL END
$$;

CREATE OR REPLACE FUNCTION dql_concat(VARIADIC args jsonb[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  out text := '';
  is_null boolean := false;
  e jsonb;
BEGIN
  FOREACH e IN ARRAY args LOOP
    IF e IS NULL THEN RETURN NULL; END IF;
    IF jsonb_typeof(e) = 'string' THEN out := out || (e #>> '{}');
    ELSIF jsonb_typeof(e) = 'null' THEN is_null := true;
    ELSE RETURN NULL; END IF;
  END LOOP;
  IF is_null THEN RETURN 'null'::jsonb; END IF;
  RETURN to_jsonb(out);
END
$$;

CREATE OR REPLACE FUNCTION dql_coalesce(VARIADIC args jsonb[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  saw_null boolean := false;
  e jsonb;
BEGIN
  FOREACH e IN ARRAY args LOOP
    IF e = 'null'::jsonb THEN saw_null := true;
    ELSIF e IS NOT NULL THEN RETURN e; END IF;
  END LOOP;
  IF saw_null THEN RETURN 'null'::jsonb; END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION dql_decode(VARIADIC args jsonb[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  n int := coalesce(array_length(args, 1), 0);
  i int := 2;
BEGIN
  IF args[1] IS NULL THEN RETURN NULL; END IF;
  WHILE i + 1 <= n LOOP
    IF dql_compare(0, args[1], args[i]) = 'true'::jsonb THEN RETURN args[i + 1]; END IF;
    i := i + 2;
  END LOOP;
  IF i = n THEN RETURN args[n]; END IF;
  RETURN 'null'::jsonb;
END
$$;

-- Collection functions: 0 array_contains_null, 1 array_length, 2 object_length,
-- 3 object_keys, 4 object_values.
CREATE OR REPLACE FUNCTION dql_coll(op int, a jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN a = 'null'::jsonb THEN 'null'::jsonb
    WHEN op = 0 AND jsonb_typeof(a) = 'array' THEN to_jsonb(a @> '[null]'::jsonb)
    WHEN op = 1 AND jsonb_typeof(a) = 'array' THEN to_jsonb(jsonb_array_length(a))
    WHEN op = 2 AND jsonb_typeof(a) = 'object' THEN
      (SELECT to_jsonb(count(*)) FROM jsonb_object_keys(a))
    WHEN op = 3 AND jsonb_typeof(a) = 'object' THEN
      (SELECT coalesce(jsonb_agg(to_jsonb(k) ORDER BY k COLLATE "C"), '[]'::jsonb) FROM jsonb_object_keys(a) AS k)
    WHEN op = 4 AND jsonb_typeof(a) = 'object' THEN
      (SELECT coalesce(jsonb_agg(e.value ORDER BY e.key COLLATE "C"), '[]'::jsonb) FROM jsonb_each(a) AS e)
    ELSE NULL END
$$;

CREATE OR REPLACE FUNCTION dql_array_contains(a jsonb, x jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN a = 'null'::jsonb THEN 'null'::jsonb
    WHEN jsonb_typeof(a) = 'array' AND x IS NOT NULL THEN dql_in(x, a)
    ELSE NULL END
$$;

-- Numeric functions: 0 abs, 1 ceil, 2 floor.
CREATE OR REPLACE FUNCTION dql_math(op int, a jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN a = 'null'::jsonb THEN 'null'::jsonb
    WHEN dql_is_int(a) THEN CASE WHEN op = 0 THEN dql_int(abs(a::numeric)) ELSE a END
    WHEN jsonb_typeof(a) = 'number' THEN dql_float(CASE op
      WHEN 0 THEN abs(a::numeric::float8) WHEN 1 THEN ceil(a::numeric::float8)
      ELSE floor(a::numeric::float8) END)
    ELSE NULL END
$$;

CREATE OR REPLACE FUNCTION dql_deserialize_json(a jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN jsonb_typeof(a) = 'string' THEN (a #>> '{}')::jsonb
    WHEN a = 'null'::jsonb THEN 'null'::jsonb ELSE NULL END
$$;

-- SUM and AVG from the sums of the numeric values: integers stay integers (AVG too when the
-- division is exact), any float makes the result a float.
CREATE OR REPLACE FUNCTION dql_sum_final(isum numeric, fsum float8, n bigint, any_float boolean, avg boolean)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN n IS NULL OR n = 0 THEN NULL
        WHEN coalesce(any_float, false) AND avg THEN dql_integral_or_float(fsum / n)
    WHEN coalesce(any_float, false) THEN dql_float(fsum)
    WHEN NOT avg AND isum BETWEEN -9223372036854775808 AND 9223372036854775807 THEN to_jsonb(isum)
    WHEN NOT avg THEN dql_float(isum::float8)
    WHEN mod(isum, n) = 0 THEN to_jsonb(div(isum, n))
    ELSE dql_integral_or_float(isum::float8 / n) END
$$;

CREATE OR REPLACE FUNCTION dql_least(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE WHEN dql_cmp(b, a) < 0 THEN b ELSE a END
$$;

CREATE OR REPLACE FUNCTION dql_greatest(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE WHEN dql_cmp(b, a) >= 0 THEN b ELSE a END
$$;

-- MIN / MAX in DQL's cross-type order; MISSING values are skipped, null counts.
CREATE OR REPLACE AGGREGATE dql_min(jsonb) (SFUNC = dql_least, STYPE = jsonb, PARALLEL = SAFE);
CREATE OR REPLACE AGGREGATE dql_max(jsonb) (SFUNC = dql_greatest, STYPE = jsonb, PARALLEL = SAFE);
