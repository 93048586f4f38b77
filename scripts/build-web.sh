#!/usr/bin/env bash
# Builds the study-room page into web/dist/ (index.html, app.js, style.css): `npm ci` from the
# committed package-lock.json, then esbuild (web/build.mjs). Used by `make web`, `make serve`,
# `make test` and the browser tests' fixture. Pass --dev for an unminified bundle.
set -euo pipefail
cd "$(dirname "$0")/../web"
command -v npm >/dev/null || { echo "build-web.sh: npm (Node >= 18) is required" >&2; exit 1; }
# npm ci only when node_modules does not match the lockfile (saves ~5 s on rebuilds).
if [ ! -f node_modules/.package-lock.json ] || ! cmp -s package-lock.json node_modules/.lock-stamp; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.lock-stamp
fi
node build.mjs "$@"
