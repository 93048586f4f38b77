#!/usr/bin/env bash
# Installs what `make setup` needs to compile the fan-out core (studyrooms/media/fanout.c): a C
# compiler and the headers of the Python that builds .venv. Only when missing; idempotent.
# On Debian/Ubuntu: gcc + libc6-dev + python3-dev (the headers of the distribution's python3;
# a pyenv/python.org build ships its own headers). Anything else: install gcc yourself.
set -euo pipefail
PY=${1:-python3}

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$inc/Python.h" ] || need+=(python3-dev)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-build-deps.sh: missing ${need[*]} and no apt-get; install them yourself" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-build-deps.sh: not root and no sudo; install them yourself: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y "${need[@]}"
