#!/usr/bin/env bash
# Makes sure the tools the integration tests need besides PostgreSQL are present, installing Debian's
# packages when they are not: openssl (certificates for the TLS tests) and promtool (from the prometheus
# package; the metrics test validates /metrics with `promtool check metrics`). The Prometheus server that
# comes with promtool is not started.
set -euo pipefail
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
# Keep package scripts from starting the Prometheus service.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
fi
status=0
apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || status=$?
if [ "$created_policy" -eq 1 ]; then
    rm -f "$policy"
fi
[ "$status" -eq 0 ] || exit "$status"
command -v openssl >/dev/null && command -v promtool >/dev/null
