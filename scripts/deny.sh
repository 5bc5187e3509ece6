#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml): advisories, licenses, bans, sources.
# scripts/test runs it.
#
# cargo-deny is installed when missing (`cargo install --locked`, once: it stays in
# ~/.cargo/bin). Where it cannot be installed (no crates.io), the checks are skipped with a
# loud warning rather than failing: every other check still runs.
#
# The advisory database (RustSec) is a git repository that cargo-deny clones from GitHub. When
# it cannot be fetched, licenses, bans and sources are still checked (they need only Cargo.lock
# and crates.io), and a loud warning says that advisories were NOT checked.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DENY_VERSION=0.20.2

banner() {
    echo "################################################################################" >&2
    printf 'scripts/deny.sh: %s\n' "$@" >&2
    echo "################################################################################" >&2
}

if ! cargo deny --version >/dev/null 2>&1; then
    echo "scripts/deny.sh: installing cargo-deny $CARGO_DENY_VERSION (once; it stays in ~/.cargo/bin)"
    # Cargo's own temporary build folder, not the project's: nothing is left behind.
    if ! env -u CARGO_TARGET_DIR cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"; then
        banner "SKIPPING cargo deny: cargo-deny is not installed and could not be installed" \
            "  (cargo install --locked cargo-deny); advisories, licenses, bans and sources" \
            "  were NOT checked"
        exit 0
    fi
fi

# `fetch db` clones or updates the advisory database (in ~/.cargo/advisory-dbs), bounded in time
# so that an unreachable host cannot stall the run.
if timeout 300 cargo deny --log-level error fetch db >/dev/null 2>&1; then
    set -x
    cargo deny --locked check advisories licenses bans sources
else
    set -x
    cargo deny --locked check licenses bans sources
    set +x
    banner "advisories were NOT checked: the RustSec advisory database could not be fetched" \
        "  (cargo deny fetch db); licenses, bans and sources were checked"
fi
