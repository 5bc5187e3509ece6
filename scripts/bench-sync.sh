#!/usr/bin/env bash
# Sync benchmarks: a release `bigpeer serve` on a fresh database and `bigpeer-sync-bench` against
# it on loopback, one scenario after another. All peers connect from 127.0.0.1, so the server runs
# without its per-address connection cap (--max-connections-per-ip 0).
#
# Usage: scripts/bench-sync.sh [scenario...]   (default: idle fanout initial latency)
# Env: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), IDLE_PEERS (1000), FANOUT_PEERS (100),
#      RATE (1000 changes/s), FANOUT_SECONDS (10), DOCS (100000, initial sync), SAMPLES (1000, latency),
#      BUILD (1; 0 uses the release binaries already built), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
IDLE_PEERS=${IDLE_PEERS:-1000}; FANOUT_PEERS=${FANOUT_PEERS:-100}; RATE=${RATE:-1000}; SECONDS_EACH=${FANOUT_SECONDS:-10}
DOCS=${DOCS:-100000}; SAMPLES=${SAMPLES:-1000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bigpeer-target}"
scenarios=("$@"); [ ${#scenarios[@]} -eq 0 ] && scenarios=(idle fanout initial latency)
work=$(mktemp -d); db="bench_sync_$$"; port=$((20000 + $$ % 20000))
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 16384 2>/dev/null || true

[ "${BUILD:-1}" = 0 ] || cargo build --release -q -p bigpeer -p integration-tests --bins
bin="$CARGO_TARGET_DIR/release"
url="postgres://$PGUSER@$PGHOST:$PGPORT/$db"
psql -X -q -d postgres -c "CREATE DATABASE $db"
"$bin/bigpeer" migrate --database-url "$url" --log-level warn >/dev/null
token=$("$bin/bigpeer" keys create --database-url "$url" --log-level warn --name bench 2>/dev/null | sed -n 's/.*"key":"\(bpk_[A-Za-z0-9_-]*\)".*/\1/p' | head -1)
[ -n "$token" ] || { echo "could not create an API key" >&2; exit 1; }

"$bin/bigpeer" serve --listen "127.0.0.1:$port" --database-url "$url" --log-level warn --max-connections-per-ip 0 > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for s in "${scenarios[@]}"; do
  case "$s" in
    idle) "$bin/bigpeer-sync-bench" --url "http://127.0.0.1:$port" --token "$token" --scenario idle \
            --peers "$IDLE_PEERS" --server-pid "$server_pid" ;;
    fanout) "$bin/bigpeer-sync-bench" --url "http://127.0.0.1:$port" --token "$token" --scenario fanout \
            --peers "$FANOUT_PEERS" --rate "$RATE" --seconds "$SECONDS_EACH" ;;
    initial) "$bin/bigpeer-sync-bench" --url "http://127.0.0.1:$port" --token "$token" --scenario initial \
            --docs "$DOCS" ;;
    latency) "$bin/bigpeer-sync-bench" --url "http://127.0.0.1:$port" --token "$token" --scenario latency \
            --samples "$SAMPLES" ;;
    *) echo "unknown scenario $s (idle, fanout, initial, latency)" >&2; exit 2 ;;
  esac
done
