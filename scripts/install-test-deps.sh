#!/usr/bin/env bash
# Installs what the test suite drives: real OCI clients (skopeo, podman) from
# Debian and the oras SDK from PyPI. Idempotent and quick when all is present.
set -euo pipefail

need_apt=()
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import oras' >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check oras==0.2.43 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages oras==0.2.43
fi
