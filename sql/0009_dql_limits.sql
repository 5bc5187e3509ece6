-- bigpeer: DQL helpers that must not fail a statement on the data they meet, and must give what
-- the evaluator gives (bigpeer_dql::eval; dql/tests/differential.rs compares the two).

-- deserialize_json(text): MISSING for text that is not JSON, and for JSON that a DQL value
-- cannot hold, which the evaluator's parser (serde_json) refuses too: a number beyond the float
-- range (`1e999`), or arrays and objects nested 128 deep. Nesting too deep for Postgres' own
-- parser is MISSING as well.
CREATE OR REPLACE FUNCTION dql_deserialize_json(a jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  j jsonb;
BEGIN
  IF a = 'null'::jsonb THEN RETURN 'null'::jsonb; END IF;
  IF jsonb_typeof(a) IS DISTINCT FROM 'string' THEN RETURN NULL; END IF;
  j := (a #>> '{}')::jsonb;
  -- Level 0 is the value itself: a container at level 127 is the 128th one nested.
  IF jsonb_path_exists(j, 'strict $.**{127 to last} ? (@.type() == "array" || @.type() == "object")') THEN
    RETURN NULL;
  END IF;
  -- 2^1024 - 2^970: the smallest magnitude that rounds to an infinite float.
  IF jsonb_path_exists(j, 'strict $.** ? (@.type() == "number" && (@ >= $m || @ <= -$m))',
      jsonb_build_object('m', 179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792::numeric)) THEN
    RETURN NULL;
  END IF;
  RETURN j;
EXCEPTION WHEN invalid_text_representation OR untranslatable_character OR statement_too_complex
  OR program_limit_exceeded THEN
  RETURN NULL;
END
$$;

-- float8 addition as the evaluator's f64 sum: a result beyond the float range is infinite (and
-- stays so), where float8 `+` raises "value out of range". Values are finite.
CREATE OR REPLACE FUNCTION dql_fadd(s float8, x float8) RETURNS float8
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    -- Both below 2^1022: the sum cannot overflow.
    WHEN abs(s) < 4.4942328371557e307 AND abs(x) < 4.4942328371557e307 THEN s + x
    WHEN s IN ('Infinity'::float8, '-Infinity'::float8, 'NaN'::float8) THEN s
    WHEN s::numeric + x::numeric >= 179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792::numeric
      THEN 'Infinity'::float8
    WHEN s::numeric + x::numeric <= -179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792::numeric
      THEN '-Infinity'::float8
    ELSE s + x END
$$;

-- SUM of floats without the overflow error (see dql_fadd).
CREATE OR REPLACE AGGREGATE dql_fsum(float8) (SFUNC = dql_fadd, STYPE = float8, PARALLEL = SAFE);

-- SUM and AVG (0002), with a float sum beyond the float range giving null, as the evaluator.
CREATE OR REPLACE FUNCTION dql_sum_final(isum numeric, fsum float8, n bigint, any_float boolean, avg boolean)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN n IS NULL OR n = 0 THEN NULL
    WHEN coalesce(any_float, false)
      AND fsum IN ('Infinity'::float8, '-Infinity'::float8, 'NaN'::float8) THEN 'null'::jsonb
    WHEN coalesce(any_float, false) AND avg THEN dql_integral_or_float(fsum / n)
    WHEN coalesce(any_float, false) THEN dql_float(fsum)
    WHEN NOT avg AND isum BETWEEN -9223372036854775808 AND 9223372036854775807 THEN to_jsonb(isum)
    WHEN NOT avg THEN dql_float(isum::float8)
    WHEN mod(isum, n) = 0 THEN to_jsonb(div(isum, n))
    ELSE dql_integral_or_float(isum::float8 / n) END
$$;

-- A LIKE pattern as the evaluator reads it: an escape character at the very end, escaping
-- nothing, stands for itself (Postgres refuses such a pattern), so it is doubled.
CREATE OR REPLACE FUNCTION dql_like_pattern(p text, esc text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN esc <> '' AND esc NOT IN ('%', '_')
      AND (length(p) - length(rtrim(p, esc))) % 2 = 1 THEN p || esc
    ELSE p END
$$;

-- LIKE / ILIKE (0007) over dql_like_pattern.
CREATE OR REPLACE FUNCTION dql_like(x jsonb, p jsonb, ci boolean, esc text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN jsonb_typeof(x) = 'string' AND jsonb_typeof(p) = 'string' THEN
      to_jsonb(CASE WHEN ci
        THEN lower(x #>> '{}') LIKE dql_like_pattern(lower(p #>> '{}'), lower(esc)) ESCAPE lower(esc)
        ELSE (x #>> '{}') LIKE dql_like_pattern(p #>> '{}', esc) ESCAPE esc END)
    WHEN (x = 'null'::jsonb AND jsonb_typeof(p) IN ('string', 'null'))
      OR (jsonb_typeof(x) = 'string' AND p = 'null'::jsonb) THEN 'null'::jsonb
    ELSE NULL END
$$;
