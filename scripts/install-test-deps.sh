#!/usr/bin/env bash
# Installs what the test suite drives: real OCI clients (skopeo, podman),
# Garage (a real S3 server, built with cargo),
# Chromium, Prometheus, PostgreSQL and CNCF distribution (a pull-through upstream) from Debian, the oras SDK from PyPI, and from npm a real OpenID
# provider (oidc-provider), the browser driver (playwright-core, which
# uses Debian's Chromium and downloads nothing) and axe-core (accessibility
# checks run inside that browser). Idempotent; quick when all
# is present.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
# PostgreSQL: the shared metadata store's tests start their own servers.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import oras' >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check oras==0.2.43 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages oras==0.2.43
fi

fixtures=crates/server/tests/idp
if [ ! -d "$fixtures/node_modules/oidc-provider" ] || [ ! -d "$fixtures/node_modules/playwright-core" ] \
   || [ ! -d "$fixtures/node_modules/axe-core" ]; then
  (cd "$fixtures" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Garage, the real S3 server the shared store's tests start: built once per
# machine from crates.io (about 11 minutes on 2 cores), kept outside the clone.
tools="$HOME/.cache/berth/tools"
if [ ! -x "$tools/bin/garage" ]; then
  cargo install garage --version 2.5.0 --locked --root "$tools" --quiet
fi
