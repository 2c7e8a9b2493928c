#!/usr/bin/env bash
# Makes sure PostgreSQL 15's server binaries are present, installing Debian's package when they are not.
# The package's own "main" cluster is not created: the tests and the demo start their own servers.
set -euo pipefail
bindir=/usr/lib/postgresql/15/bin
if [ -x "$bindir/postgres" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_basebackup" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL 15 is missing from $bindir; install it with: sudo apt-get install postgresql-15" >&2
    exit 1
fi
echo "installing PostgreSQL 15 from Debian's packages" >&2
mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends postgresql-15 postgresql-client-15 >/dev/null
test -x "$bindir/postgres"
