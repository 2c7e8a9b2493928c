#!/usr/bin/env bash
# Profiles pg-status where the benchmark's targets are tight, with valgrind (which counts instructions and
# heap bytes exactly, also on virtual machines without hardware performance counters):
#   bench/profile.sh idle      heap by allocation site with 2,000 idle keep-alive connections (massif)
#   bench/profile.sh polling   heap by allocation site while polling 1,000 fake hosts every second (massif)
#   bench/profile.sh http      instructions by function while serving /master and the application mix (callgrind)
# Output goes to target/profile/; the summaries are printed. Run bench/run.sh once first (it installs wrk and
# builds the binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-}"
case "$what" in idle|polling|http) ;; *) echo "usage: bench/profile.sh idle|polling|http" >&2; exit 2 ;; esac
command -v valgrind >/dev/null || {
    echo "installing valgrind from Debian's packages" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends valgrind >/dev/null
}
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build -q --release -p pg-status
cargo build -q -p pg-status-bench
bench="$target_dir/debug/pg-status-bench"
out="$target_dir/profile"
mkdir -p "$out"
port=18777
export pg_status__http_host=127.0.0.1 pg_status__http_port=$port pg_status__sleep_ms=1000 \
    pg_status__query_timeout_ms=1000 pg_status__connect_timeout=1

fake_pid=""
pg_pid=""
cleanup() {
    [ -n "$pg_pid" ] && kill "$pg_pid" 2>/dev/null || true
    [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null || true
}
trap cleanup EXIT

# Starts N fake PostgreSQL servers for SECS seconds and sets pg_status__hosts.
fake_hosts() {
    "$bench" fake-servers "$1" "$2" > "$out/hosts.txt" &
    fake_pid=$!
    for _ in $(seq 100); do [ -s "$out/hosts.txt" ] && break; sleep 0.1; done
    export pg_status__hosts="$(cat "$out/hosts.txt")"
}

wait_ready() {
    for _ in $(seq 600); do
        curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "pg-status did not become ready" >&2
    exit 1
}

# pg-status under massif, its profile named for the case ($1), until stop_massif prints it.
start_massif() {
    valgrind --tool=massif --detailed-freq=1 --threshold=0.5 --massif-out-file="$out/massif-$1.out" \
        "$target_dir/release/pg-status" >/dev/null 2>&1 &
    pg_pid=$!
    wait_ready
}

stop_massif() {
    kill -TERM "$pg_pid"; wait "$pg_pid" || true; pg_pid=""
    ms_print --threshold=2 "$out/massif-$1.out" > "$out/massif-$1.txt"
}

case "$what" in
idle)
    fake_hosts 3 120
    start_massif idle
    "$bench" idle-clients "127.0.0.1:$port" 2000 5
    stop_massif idle
    echo "heap at the peak (2,000 idle connections), by allocation site: $out/massif-idle.txt"
    grep -A40 "(peak)" "$out/massif-idle.txt" | head -5 || true
    ;;
polling)
    fake_hosts 1000 120
    start_massif polling
    sleep 20
    stop_massif polling
    echo "heap while polling 1,000 hosts, by allocation site: $out/massif-polling.txt"
    ;;
http)
    fake_hosts 3 300
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind-http.out" \
        "$target_dir/release/pg-status" >/dev/null 2>&1 &
    pg_pid=$!
    wait_ready
    wrk -t1 -c16 -d20s "http://127.0.0.1:$port/master" | grep -E "Requests/sec"
    wrk -t1 -c16 -d20s -s bench/lua/mix.lua "http://127.0.0.1:$port" -- 0/3000060 | grep -E "Requests/sec"
    kill -TERM "$pg_pid"; wait "$pg_pid" || true; pg_pid=""
    callgrind_annotate --inclusive=no "$out/callgrind-http.out" 2>/dev/null | head -60 > "$out/callgrind-http.txt"
    cat "$out/callgrind-http.txt"
    ;;
esac
