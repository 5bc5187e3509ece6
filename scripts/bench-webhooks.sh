#!/usr/bin/env bash
# Webhook delivery under write load, next to the raw Postgres baseline measured in the same run.
#
# Usage: PG_BENCH_DIR=<folder with the raw Postgres baseline scripts> scripts/bench-webhooks.sh
# Env: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), CONNECTIONS (32), SECONDS (10),
#      CARGO_TARGET_DIR.
#
# 1. The raw baseline: pgbench's one-document upsert plus change row (the shared kit).
# 2. bigpeer's insert load (scripts/bench-http.sh's generator) with no webhook.
# 3. The same load with one webhook to a local receiver (Python, loopback) that answers 200 at
#    once: the write rate beside it, the events delivered per second while the load runs, how
#    long the backlog takes to drain afterwards, and the latency from a batch's first commit to
#    its first attempt (bigpeer's own histogram, bigpeer_webhook_delivery_latency_seconds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${PG_BENCH_DIR:?set PG_BENCH_DIR to the folder of the raw Postgres baseline scripts}"
PG_BENCH_DIR=$(cd "$PG_BENCH_DIR" && pwd)
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
CONNECTIONS=${CONNECTIONS:-32}; SECONDS_EACH=${SECONDS:-10}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bigpeer-target}"
work=$(mktemp -d); raw_db="bench_raw_$$"; bp_db="bench_wh_$$"; port=$((20000 + $$ % 20000))
admin="bench-admin-0123456789abcdef"
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  [ -n "${receiver_pid:-}" ] && kill "$receiver_pid" 2>/dev/null && wait "$receiver_pid" 2>/dev/null || true
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $raw_db WITH (FORCE)" -c "DROP DATABASE IF EXISTS $bp_db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p bigpeer -p integration-tests --bins
bin="$CARGO_TARGET_DIR/release"
psql -X -q -d postgres -c "CREATE DATABASE $raw_db" -c "CREATE DATABASE $bp_db"
PGDATABASE=$raw_db psql -X -q -f "$PG_BENCH_DIR/schema.sql" 2>/dev/null

# A receiver that answers 200 at once (threads, HTTP/1.1 keep-alive).
cat >"$work/receiver.py" <<'EOF'
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
s = S(("127.0.0.1", 0), H); print(s.server_address[1], flush=True); s.serve_forever()
EOF
python3 "$work/receiver.py" >"$work/receiver.port" &
receiver_pid=$!
for _ in $(seq 1 50); do [ -s "$work/receiver.port" ] && break; sleep 0.1; done
receiver_port=$(head -n 1 "$work/receiver.port")

"$bin/bigpeer" serve --listen "127.0.0.1:$port" --database-url "postgres://$PGUSER@$PGHOST:$PGPORT/$bp_db" \
  --playground --admin-key "$admin" --webhook-allow-private --log-level warn > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done

raw() {
  (cd "$work" && PGDATABASE=$raw_db DURATION=$SECONDS_EACH QUIET_WAIT=${QUIET_WAIT:-10} RESULTS="$work/results" \
     bash "$PG_BENCH_DIR/run_pgbench.sh" a_upsert1 "$PG_BENCH_DIR/pg_a_upsert1.sql" "$CONNECTIONS" 2>/dev/null | tail -1 | awk '{print $3}')
}
load() {
  "$bin/bigpeer-load" --url "http://127.0.0.1:$port" --connections "$CONNECTIONS" --seconds "$SECONDS_EACH" \
    --scenario insert --docs 1000 | tail -1
}
rps() { sed -n 's/.*req\/s=\([0-9]*\).*/\1/p' <<<"$1"; }
metric() { # the sum of a metric's samples
  curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d", s }'
}

raw_upsert=$(raw); echo "raw (a) 1-doc upsert + change row: $raw_upsert tx/s"
plain=$(load); echo "insert, no webhook: $plain"

curl -sf "http://127.0.0.1:$port/api/v4/admin/webhooks" -H "Authorization: Bearer $admin" \
  -H 'Content-Type: application/json' -d "{\"url\": \"http://127.0.0.1:$receiver_port/hook\"}" >/dev/null
before=$(metric bigpeer_webhook_events_delivered_total)
start=$(date +%s.%N)
hooked=$(load); end=$(date +%s.%N); echo "insert, one webhook: $hooked"
during=$(( $(metric bigpeer_webhook_events_delivered_total) - before ))
requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$hooked")
errors=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$hooked")
inserted=$(( ${requests:-0} - ${errors:-0} ))
drained=""
for i in $(seq 1 600); do
  delivered=$(( $(metric bigpeer_webhook_events_delivered_total) - before ))
  if [ "$delivered" -ge "$inserted" ]; then drained=$(awk -v a="$(date +%s.%N)" -v b="$end" 'BEGIN { printf "%.1f", a - b }'); break; fi
  sleep 0.1
done
raw_upsert2=$(raw); echo "raw (a) again: $raw_upsert2 tx/s"

# p50 and p99 from the histogram's cumulative buckets (the upper bound of the bucket).
curl -s "http://127.0.0.1:$port/metrics" | awk '
  /^bigpeer_webhook_delivery_latency_seconds_bucket/ { match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); n++; bound[n] = le; count[n] = $2 }
  /^bigpeer_webhook_delivery_latency_seconds_count/ { total = $2 }
  END {
    for (q = 1; q <= 2; q++) { p = (q == 1) ? 0.5 : 0.99
      for (i = 1; i <= n; i++) if (count[i] >= p * total) { printf "latency commit -> first attempt: p%d <= %s s (batches: %d)\n", p * 100, bound[i], total; break } }
  }'
awk -v ri="$raw_upsert" -v ri2="$raw_upsert2" -v p="$(rps "$plain")" -v h="$(rps "$hooked")" \
    -v during="$during" -v inserted="$inserted" -v secs="$(awk -v a="$end" -v b="$start" 'BEGIN { print a - b }')" \
    -v drained="${drained:-not within 60 s}" 'BEGIN {
  r = (ri + ri2) / 2
  printf "summary: insert %d req/s = %.2fx raw upsert (%.0f tx/s); with a webhook %d req/s = %.2fx; delivered %d of %d events during the load (%.0f events/s); the rest %s s after\n",
    p, p / r, r, h, h / r, during, inserted, during / secs, drained }'
