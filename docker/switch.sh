#!/usr/bin/env bash
# Points a proxy at one PostgreSQL server: ./switch.sh proxy-1 postgres-2
# Existing connections through the proxy are cut, so pg-status reconnects and sees the new backend.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 proxy-1|proxy-2|proxy-3 postgres-1|postgres-2|postgres-3" >&2
    exit 2
fi
proxy=$1 server=$2
case $proxy in proxy-1) port=9991 ;; proxy-2) port=9992 ;; proxy-3) port=9993 ;; *) echo "unknown proxy $proxy" >&2; exit 2 ;; esac
case $server in postgres-1|postgres-2|postgres-3) ;; *) echo "unknown server $server" >&2; exit 2 ;; esac
admin() {
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    echo "$1" >&3
    cat <&3
    exec 3>&-
}
for s in postgres-1 postgres-2 postgres-3; do
    if [ "$s" = "$server" ]; then
        admin "enable server target/$s"
    else
        admin "disable server target/$s"
        admin "shutdown sessions server target/$s"
    fi
done
echo "$proxy now forwards to $server"
