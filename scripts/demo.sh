#!/usr/bin/env bash
# Runs pg-status against a local PostgreSQL primary and two streaming replicas (PostgreSQL 15 is installed
# from Debian's packages when missing). With an argument, sends that command to the running demo:
#   scripts/demo.sh            start everything; Ctrl-C stops it
#   scripts/demo.sh failover   stop the master, promote a replica
#   scripts/demo.sh lag        pause replay on a replica while the master writes
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
    cargo build -q --release -p pg-status-demo
    exec target/release/pg-status-demo "$@"
fi
scripts/install-postgres.sh
cargo build --release -p pg-status -p pg-status-demo
PG_STATUS_BIN="$PWD/target/release/pg-status" exec target/release/pg-status-demo
