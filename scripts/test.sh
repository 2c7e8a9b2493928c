#!/usr/bin/env bash
# Runs the whole test suite: unit and property tests, the fuzz-corpus replay, the simulation and the
# integration tests against real PostgreSQL 15 servers (installed from Debian's packages when missing), and the
# deployment tests (scripts/install-tools.sh installs what they and the TLS and metrics tests use).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-postgres.sh
scripts/install-tools.sh
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --no-fail-fast "$@"
