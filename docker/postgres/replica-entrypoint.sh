#!/bin/bash
# Clones the primary on first start, then runs as a streaming replica.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until pg_isready -h "$PRIMARY_HOST" -U postgres -q; do sleep 1; done
    export PGPASSWORD="$REPLICATION_PASSWORD"
    pg_basebackup -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" -R -X stream --checkpoint=fast
    chmod 0700 "$PGDATA"
fi
exec postgres
