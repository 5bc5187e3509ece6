#!/usr/bin/env bash
# HTTP load benchmark of bigpeer next to the raw Postgres baseline, measured in one run so that
# the figures can be compared as ratios on a noisy machine.
#
# Usage: PG_BENCH_DIR=<folder with the raw Postgres baseline scripts> scripts/bench-http.sh
#   PG_BENCH_DIR holds run_pgbench.sh, schema.sql, gen_docs.py, reset_and_copy.sh,
#   pg_a_upsert1.sql, pg_c_get.sql (the project's shared benchmark kit).
# Env: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), CONNECTIONS (32), SECONDS (10),
#      DOCS (100000), CARGO_TARGET_DIR.
# Output: one line per measurement, then a summary with the ratios.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${PG_BENCH_DIR:?set PG_BENCH_DIR to the folder of the raw Postgres baseline scripts}"
PG_BENCH_DIR=$(cd "$PG_BENCH_DIR" && pwd)  # the runs below change folders
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
CONNECTIONS=${CONNECTIONS:-32}; SECONDS_EACH=${SECONDS:-10}; DOCS=${DOCS:-100000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bigpeer-target}"
work=$(mktemp -d); raw_db="bench_raw_$$"; bp_db="bench_bp_$$"; port=$((20000 + $$ % 20000))
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $raw_db WITH (FORCE)" -c "DROP DATABASE IF EXISTS $bp_db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p bigpeer -p integration-tests --bins
bin="$CARGO_TARGET_DIR/release"

psql -X -q -d postgres -c "CREATE DATABASE $raw_db" -c "CREATE DATABASE $bp_db"
PGDATABASE=$raw_db psql -X -q -f "$PG_BENCH_DIR/schema.sql" 2>/dev/null
python3 "$PG_BENCH_DIR/gen_docs.py" "$DOCS" > "$work/docs.tsv"
(cd "$work" && PGDATABASE=$raw_db DOCS_TSV="$work/docs.tsv" RESULTS="$work/results" bash "$PG_BENCH_DIR/reset_and_copy.sh" copy >/dev/null)

"$bin/bigpeer" serve --listen "127.0.0.1:$port" --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$bp_db" \
  --playground --log-level warn > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done

raw() { # name script
  (cd "$work" && PGDATABASE=$raw_db DURATION=$SECONDS_EACH QUIET_WAIT=${QUIET_WAIT:-10} RESULTS="$work/results" \
     bash "$PG_BENCH_DIR/run_pgbench.sh" "$1" "$PG_BENCH_DIR/$2" "$CONNECTIONS" 2>/dev/null | tail -1 | awk '{print $3}')
}
load() { # scenario [flags]
  "$bin/bigpeer-load" --url "http://127.0.0.1:$port" --connections "$CONNECTIONS" --seconds "$SECONDS_EACH" \
    --scenario "$@" --docs "$DOCS" | tee -a "$work/load.txt" | tail -1
}

raw_upsert=$(raw a_upsert1 pg_a_upsert1.sql); echo "raw (a) 1-doc upsert + change row: $raw_upsert tx/s"
ins=$(load insert); echo "$ins"
raw_get=$(raw c_get pg_c_get.sql); echo "raw (c) primary-key read: $raw_get reads/s"
get=$(load get); echo "$get"
# As the raw baseline does after its COPY: settle the GIN index's pending list and the statistics.
PGDATABASE=$bp_db psql -X -q -c "VACUUM ANALYZE documents"
filter=$(load filter --skip-load); echo "$filter"
raw_upsert2=$(raw a_upsert1 pg_a_upsert1.sql); echo "raw (a) again: $raw_upsert2 tx/s"

rps() { sed -n 's/.*req\/s=\([0-9]*\).*/\1/p' <<<"$1"; }
awk -v ri="$raw_upsert" -v ri2="$raw_upsert2" -v bi="$(rps "$ins")" -v rg="$raw_get" -v bg="$(rps "$get")" 'BEGIN {
  r = (ri + ri2) / 2
  printf "summary: insert %d req/s = %.2fx raw upsert (%.0f tx/s); point get %d req/s = %.2fx raw pk read (%.0f/s)\n", bi, bi / r, r, bg, bg / rg, rg }'
