#!/usr/bin/env bash
# Runs the whole suite the way CI does. Ray stays on loopback (see tests/conftest.py); one local
# Ray instance is shared by the whole session.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
export PYTHONUNBUFFERED=1
.venv/bin/lint-imports
exec .venv/bin/pytest -q -ra --durations=15 "$@"
