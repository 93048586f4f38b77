#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (tests/browser), only when it is missing.
# Idempotent: a second run does nothing. Used by `make chromium` (part of `make test`) and so by CI.
# See docs in /work/shared/design/browser-e2e.md: Debian's package works with Playwright for Python
# through `executable_path`; `playwright install` is not needed.
set -euo pipefail

if [ -x /usr/bin/chromium ] || [ -x /usr/lib/chromium/chromium ]; then
  echo "chromium: already installed ($(/usr/lib/chromium/chromium --version 2>/dev/null || echo present))"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-chromium.sh: not root and no sudo; install it yourself: apt-get install -y chromium" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium
/usr/lib/chromium/chromium --version
