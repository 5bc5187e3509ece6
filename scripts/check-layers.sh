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
