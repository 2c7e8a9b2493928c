#!/usr/bin/env bash
# Simulates a master change without stopping PostgreSQL: proxy-1 now reaches a replica and proxy-2 the
# primary, so pg-status must report proxy-2 as the master within one poll. Run again with "back" to undo.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = "back" ]; then
    ./switch.sh proxy-1 postgres-1
    ./switch.sh proxy-2 postgres-2
else
    ./switch.sh proxy-1 postgres-2
    ./switch.sh proxy-2 postgres-1
fi
