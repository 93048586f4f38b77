#!/usr/bin/env bash
# Installs Debian's iproute2 (`ip` and `tc`) for the shaped-link browser test
# (tests/browser/test_bandwidth_netns.py makes its own network namespace and shapes it with tc tbf),
# only when missing. Idempotent. Used by `make netns-tools` (part of `make test`) and so by CI.
# Without root the test skips with its reason; nothing else needs these tools.
set -euo pipefail

if command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1; then
  echo "iproute2: already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-netns-tools.sh: not root and no sudo; the shaped-link test will skip (apt-get install -y iproute2)" >&2
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends iproute2
command -v ip tc
