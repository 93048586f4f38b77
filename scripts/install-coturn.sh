#!/usr/bin/env bash
# Installs Debian's coturn (the TURN server the TURN tests start on loopback ports) and the openssl
# command (the TURN tests make a certificate and check HMACs with it), only when missing.
# Idempotent: a second run does nothing. Used by `make coturn` (part of `make test`) and so by CI.
# The package's own service is not used: tests run `turnserver` with their own config file;
# production deployments follow docs/deployment.md.
set -euo pipefail

if command -v turnserver >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
  echo "coturn: already installed ($(dpkg-query -W -f='${Version}' coturn 2>/dev/null || echo present))"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-coturn.sh: not root and no sudo; install it yourself: apt-get install -y coturn openssl" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# The package does not start its service where policy-rc.d or the missing init forbids it; the
# tests never rely on (or stop) a system-wide turnserver.
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends coturn openssl
command -v turnserver openssl
