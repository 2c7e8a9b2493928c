#!/usr/bin/env bash
# The starting topology: each proxy in front of its own server (postgres-1 is the primary).
set -euo pipefail
cd "$(dirname "$0")"
for i in 1 2 3; do ./switch.sh "proxy-$i" "postgres-$i"; done
