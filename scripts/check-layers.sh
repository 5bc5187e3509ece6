#!/usr/bin/env bash
# Layering checks that the compiler cannot make (docs/architecture notes in the README):
# - SQL lives in server/src/store only: no other server module names sqlx (tests and the test
#   database helper excepted; mentions in comments and string literals do not count).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

leaks=$(grep -rnE "sqlx::|use sqlx|sqlx\s*::" server/src --include=*.rs \
    | grep -v "^server/src/store/" \
    | grep -vE "^server/src/([^:]*/)?(tests?\.rs|tests/|testdb\.rs)" \
    | grep -vE "^[^:]+:[0-9]+:\s*//" \
    | grep -vE "\"[^\"]*sqlx[^\"]*\"" || true)
if [[ -n "$leaks" ]]; then
    echo "scripts/check-layers: sqlx used outside server/src/store (SQL belongs in the store):" >&2
    echo "$leaks" >&2
    exit 1
fi
echo "check-layers: OK: sqlx only in server/src/store"

# Protocol logic lives in sync-core only: the crate depends on nothing but bigpeer-schema (no
# async runtime, no IO), and the server's sync shell never builds or reads a protocol message
# itself (wire::Msg): it moves frames and runs the store's answers to the core's requests.
deps=$(awk '/^\[dependencies\]/{on=1; next} /^\[/{on=0} on && /^[a-zA-Z0-9_-]+/{print $1}' \
    sync-core/Cargo.toml | grep -v "^bigpeer-schema" || true)
if [[ -n "$deps" ]]; then
    echo "scripts/check-layers: sync-core depends on more than bigpeer-schema:" >&2
    echo "$deps" >&2
    exit 1
fi
shell=$(grep -rnE "\bMsg\b" server/src/sync --include=*.rs \
    | grep -vE "^server/src/sync/([^:]*/)?tests?\.rs" \
    | grep -vE "^[^:]+:[0-9]+:\s*//" || true)
if [[ -n "$shell" ]]; then
    echo "scripts/check-layers: protocol messages handled outside sync-core (server/src/sync is a shell):" >&2
    echo "$shell" >&2
    exit 1
fi
echo "check-layers: OK: protocol logic only in sync-core"
