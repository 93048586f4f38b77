#!/usr/bin/env bash
# perf (kernel + native) and py-spy (Python frames) profiles of the StudyRooms harness adapter under
# the shared harness's load (N consumers, PPS packets/s in), for one or two trees:
#   benchmarks/harness/profile.sh OUT_DIR [BEFORE_TREE] [N] [PPS]
# Writes OUT_DIR/perf-{before,after}-by-dso.txt, perf-*-top.txt, pyspy-after-n$N.raw.txt and the
# runs' bench.py lines (profile-runs.jsonl). Run it under the heavy-run lock on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(realpath -m "$1"); BEFORE=${2:-}; N=${3:-10}; PPS=${4:-1000}
HARNESS=${HARNESS:-/work/shared/bench-harness}
PY=$PWD/.venv/bin/python
mkdir -p "$OUT"
profile() {  # label adapter
  local label=$1 ad=$2 p="" b
  (cd "$HARNESS" && STUDYROOMS_MEDIA_FAST_PATH=on python3 bench.py --label "prof-$label" --consumers "$N" \
     --pps "$PPS" --duration 8 --warmup 2 --idle 1 --sink-port 50179 --out "$OUT/profile-runs.jsonl" \
     -- "$PY" "$ad" > "$OUT/bench-$label.log" 2>&1) &
  b=$!
  for _ in $(seq 1 80); do p=$(pgrep -f "^$PY $ad" | head -1 || true); [ -n "$p" ] && break; sleep 0.25; done
  sleep 4
  if [ "$3" = perf ]; then
    perf record -F 4000 -g -p "$p" -o "$OUT/perf-$label.data" -- sleep 5 > /dev/null 2>&1
    perf report -i "$OUT/perf-$label.data" --no-children --sort dso --stdio 2>/dev/null \
      | grep "%" | grep -v "^#" | grep -v -- "--" | head -15 > "$OUT/perf-$label-by-dso.txt"
    perf report -i "$OUT/perf-$label.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null \
      | grep "%" | grep -v "^#" | head -40 > "$OUT/perf-$label-top.txt"
    rm -f "$OUT/perf-$label.data"
  else
    "$PWD/.venv/bin/py-spy" record -r 1000 -d 5 -p "$p" --format raw -o "$OUT/pyspy-$label-n$N.raw.txt" > /dev/null 2>&1
  fi
  wait "$b"
}
[ -n "$BEFORE" ] && profile before "$BEFORE/benchmarks/harness/studyrooms_adapter.py" perf
profile after "$PWD/benchmarks/harness/studyrooms_adapter.py" perf
profile after "$PWD/benchmarks/harness/studyrooms_adapter.py" pyspy
