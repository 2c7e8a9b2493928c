#!/usr/bin/env bash
# Runs the pg-status benchmark in one command: installs what it needs (wrk, nginx, taskset and strace from Debian's
# packages, PostgreSQL 15 for the real cluster, oha from crates.io for the fixed-rate point), builds the
# release binary and the benchmark driver, and prints the Markdown report (also written to
# target/bench-report.md). Arguments go to the driver:
#   bench/run.sh             full run (about 15 minutes on 2 cores)
#   bench/run.sh --quick     short validation run (3 s per point, about 3 minutes)
#   bench/run.sh --only http,footprint --duration 5
# The machine should be otherwise idle: pg-status and nginx take core 0, the load generators core 1.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(nproc)" -lt 2 ]; then
    echo "the benchmark pins the server and the load generator to two different cores; this machine has $(nproc)" >&2
    exit 1
fi

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v taskset >/dev/null || missing+=(util-linux)
command -v strace >/dev/null || missing+=(strace)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "installing ${missing[*]} from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # The package's post-install script cannot start a system nginx here; the benchmark runs its own.
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
scripts/install-postgres.sh

# oha (crates.io) drives the fixed-rate point; without it that point is skipped and the report says so.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
    echo "installing oha from crates.io (cargo install --locked oha; it took 45 minutes on a busy 2-core machine)" >&2
    if ! timeout 3600 cargo install --locked --quiet oha; then
        echo "WARNING: oha could not be installed; the fixed-rate 20,000 req/s point will be skipped" >&2
    fi
fi

cargo build --release -p pg-status
# The driver itself is not measured: a debug build saves the release profile's long link-time optimisation.
cargo build -p pg-status-bench
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
exec "$target_dir/debug/pg-status-bench" --pg-status "$target_dir/release/pg-status" \
    --out "$target_dir/bench-report.md" "$@"
