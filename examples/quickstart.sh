#!/usr/bin/env bash
# The bigpeer quickstart, as a script that CI runs (so it never rots). It starts the server with
# its embedded Postgres, makes an API key while the server runs, writes over HTTP, syncs two small
# peers, edits the same document on both while they are offline, and shows the merge.
#
#   cargo build --release --bins     # once: builds bigpeer and smallpeer into target/release
#   bash examples/quickstart.sh
#
# BIGPEER_BIN_DIR picks another folder of binaries (CI uses the debug build: target/debug).
# Needs curl, and the PostgreSQL server binaries for the embedded Postgres (see the README).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIGPEER_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
for b in bigpeer smallpeer; do
    if [ ! -x "$bin/$b" ]; then
        echo "quickstart: $bin/$b is missing: run 'cargo build --release --bins' first" >&2
        exit 2
    fi
done
command -v curl >/dev/null || { echo "quickstart: curl is needed" >&2; exit 2; }

# Everything lives in a scratch folder; the postgres user must be able to traverse it when this
# runs as root (the embedded Postgres then runs as that user).
work=$(mktemp -d "${TMPDIR:-/tmp}/bigpeer-quickstart.XXXXXX")
chmod 755 "$work"
server_pid=
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; }
fail() { echo "quickstart: FAILED: $*" >&2; echo "--- server log" >&2; tail -n 30 "$work/server.log" >&2; exit 1; }
# Checks that $1 (a command's output) contains $2.
expect() { case "$1" in *"$2"*) ;; *) fail "expected $2 in: $1" ;; esac; }

step "1. Start the server (embedded Postgres in $work/data, any free port)"
show "bigpeer serve --listen 127.0.0.1:0 --data-dir \$WORK/data"
"$bin/bigpeer" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$work/server.log" 2>&1 &
server_pid=$!
url=
for _ in $(seq 1 600); do
    url=$(sed -n 's/.*bigpeer is ready url=\(http[^ ]*\).*/\1/p' "$work/server.log" | head -n 1)
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited"
    sleep 0.1
done
[ -n "$url" ] || fail "the server was not ready within 60 s"
expect "$(curl -s "$url/readyz")" '"status":"ok"'
ws=${url/http:/ws:}
echo "ready at $url"

step "2. Make an API key while the server runs"
show "KEY=\$(bigpeer keys create --name quickstart --quiet --data-dir \$WORK/data)"
KEY=$("$bin/bigpeer" keys create --name quickstart --quiet --data-dir "$work/data" 2>>"$work/keys.log")
case "$KEY" in bpk_*) echo "KEY=${KEY:0:12}..." ;; *) fail "no key: $(cat "$work/keys.log")" ;; esac

step "3. Write a document over HTTP"
body='{"statement": "INSERT INTO cars DOCUMENTS (:car)", "args": {"car": {"_id": "1", "color": "blue", "seats": 4}}}'
show "curl -s $url/api/v4/store/execute -H \"Authorization: Bearer \$KEY\" -H 'Content-Type: application/json' -d '$body'"
out=$(curl -s "$url/api/v4/store/execute" -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' -d "$body")
echo "$out"
expect "$out" '"mutatedDocumentIds":["1"]'

step "4. Two small peers subscribe and get it"
for peer in a b; do
    show "smallpeer --data \$WORK/$peer --connect $ws --token \$KEY exec \"SELECT * FROM cars\" --subscribe \"SELECT * FROM cars\""
    out=$("$bin/smallpeer" --data "$work/$peer" --connect "$ws" --token "$KEY" \
        exec "SELECT * FROM cars" --subscribe "SELECT * FROM cars" 2>>"$work/peers.log")
    echo "$out"
    expect "$out" '{"_id":"1","color":"blue","seats":4}'
done

step "5. Offline, each peer changes the same car: a repaints it, b adds an owner; both count a trip"
show "smallpeer --data \$WORK/a exec \"UPDATE cars APPLY trips PN_INCREMENT BY 1 SET color = 'red' WHERE _id = '1'\""
"$bin/smallpeer" --data "$work/a" exec "UPDATE cars APPLY trips PN_INCREMENT BY 1 SET color = 'red' WHERE _id = '1'"
show "smallpeer --data \$WORK/b exec \"UPDATE cars APPLY trips PN_INCREMENT BY 1 SET owner = 'bo' WHERE _id = '1'\""
"$bin/smallpeer" --data "$work/b" exec "UPDATE cars APPLY trips PN_INCREMENT BY 1 SET owner = 'bo' WHERE _id = '1'"

step "6. Back online: each pushes its change and pulls the other's"
for peer in a b a; do
    show "smallpeer --data \$WORK/$peer --connect $ws --token \$KEY exec \"SELECT * FROM cars\""
    out=$("$bin/smallpeer" --data "$work/$peer" --connect "$ws" --token "$KEY" \
        exec "SELECT * FROM cars" 2>>"$work/peers.log")
    echo "$out"
done
merged='{"_id":"1","color":"red","owner":"bo","seats":4,"trips":2.0}'
expect "$out" "$merged"
out=$("$bin/smallpeer" --data "$work/b" exec "SELECT * FROM cars")
expect "$out" "$merged"

step "7. The server has the merge too"
out=$(curl -s "$url/api/v4/store/execute" -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' -d '{"statement": "SELECT * FROM cars"}')
echo "$out"
expect "$out" '"color":"red"'
expect "$out" '"owner":"bo"'
expect "$out" '"trips":2'

step "Done: both peers and the server hold the same merged document"
