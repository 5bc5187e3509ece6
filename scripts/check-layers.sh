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
# async runtime, no IO), and the sync shells (the server's, the small peer's) never build or read
# a protocol message themselves (wire::Msg): they move frames and run the store's answers to the
# core's requests.
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
# The small peer's sync session is a shell too: small-peer/src/sync (each file up to its test
# module) neither builds nor reads a protocol message, and imports no wire glob that would.
peer=$(find small-peer/src/sync -name '*.rs' | sort | while read -r f; do
        awk -v f="$f" '/^#\[cfg\(test\)\]/ { exit } { print f ":" NR ":" $0 }' "$f"
    done \
    | grep -E "\bMsg\b|wire::\*" \
    | grep -vE "^[^:]+:[0-9]+:\s*//" || true)
if [[ -n "$peer" ]]; then
    echo "scripts/check-layers: protocol messages handled outside sync-core (small-peer/src/sync is a shell):" >&2
    echo "$peer" >&2
    exit 1
fi
echo "check-layers: OK: protocol logic only in sync-core"

# The server's module graph (non-test code): which top-level modules each one imports through
# `crate::`. It must have no circle; the rules below are the code map of docs/architecture.md.
cd server/src
deps() {
    local m=$1 files=()
    [[ -d $m ]] && files+=("$m")
    [[ -f $m.rs ]] && files+=("$m.rs")
    # Each file up to its test module (`#[cfg(test)]`, last by convention); test files skipped.
    find "${files[@]}" -name '*.rs' | grep -vE '(^|/)(tests?\.rs|tests/|testdb\.rs)' \
        | while read -r f; do awk '/^#\[cfg\(test\)\]/ { exit } { print }' "$f"; done \
        | grep -vE '^\s*//' \
        | perl -0777 -ne 'print "$1\n" while /crate::([a-z_]+)/g;
            # grouped imports: use crate::{a, b::{c, d}};
            while (/crate::\{([^;]*)\}/g) { my $g = $1; 1 while $g =~ s/\{[^{}]*\}//g;
              for (split /,/, $g) { print "$1\n" if /^\s*([a-z_]+)/ } }' \
        | sort -u | grep -vx "$m" | tr '\n' ' ' || true
}
# module: what it must never import
rules=(
    "store:http sync service state app auth config"
    "service:http sync state app"
    "sync:http state app"
    "auth:http sync service state app"
    "state:http app"
    "http:app"
    "config:http sync service state app"
    "pg:http sync service state app store"
    "webhooks:http sync state app"
    "nats:http sync state app"
)
bad=0
for rule in "${rules[@]}"; do
    m=${rule%%:*}
    uses=" $(deps "$m") "
    echo "check-layers: $m -> $uses"
    for forbidden in ${rule#*:}; do
        if [[ $uses == *" $forbidden "* ]]; then
            echo "scripts/check-layers: server/src/$m imports crate::$forbidden, which it must never do" >&2
            bad=1
        fi
    done
done
if [[ $bad -ne 0 ]]; then
    exit 1
fi
echo "check-layers: OK: the module graph follows docs/architecture.md (no circle)"
