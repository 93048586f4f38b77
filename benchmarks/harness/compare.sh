#!/usr/bin/env bash
# One interleaved run of the shared plain-RTP harness (/work/shared/bench-harness) over several SFUs:
# StudyRooms with the compiled fan-out core, StudyRooms on the pure-Python path, the bare Python
# blocking loop and Janus (Debian's package; started here on loopback, stopped at the end), plus
# optionally a second StudyRooms tree (BEFORE=path: e.g. a checkout of the commit before the core).
#   benchmarks/harness/compare.sh OUT_DIR [REPS] [DURATION_S]
# Repetition r runs every SFU over the whole (pps x N) matrix, the SFU order rotating per repetition.
# Results: OUT_DIR/results.jsonl (bench.py's schema) and OUT_DIR/summary.md (summarize.py medians).
# LABELS="a b": the StudyRooms/bare-loop labels to run (default all three; Janus unless NO_JANUS).
# LOCK=file: each repetition holds `flock LOCK` (a shared machine: heavy runs take turns).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(realpath -m "$1"); REPS=${2:-3}; DUR=${3:-10}
HARNESS=${HARNESS:-/work/shared/bench-harness}
PY=$PWD/.venv/bin/python
mkdir -p "$OUT"
M="--consumers ${CONSUMERS:-1,10,50} --pps ${PPS:-100,1000} --duration $DUR --warmup 2 --idle 2 --sink-port ${SINK_PORT:-50131}"
M="$M --out $OUT/results.jsonl"

JANUS_DIR=$OUT/janus
if [ -z "${NO_JANUS:-}" ]; then
  DIR=$JANUS_DIR bash "$HARNESS/janus/start_janus.sh" > "$OUT/janus-start.log"
  trap 'kill "$(cat "$JANUS_DIR/janus.pid")" 2>/dev/null || true' EXIT INT TERM
  JPID=$(cat "$JANUS_DIR/janus.pid")
fi

run() {  # label, adapter command...
  local label=$1; shift
  (cd "$HARNESS" && python3 bench.py --label "$label" $M -- "$@") >> "$OUT/bench.log" 2>&1 \
    || echo "bench $label failed (see bench.log)" >&2
}
labels=(studyrooms-compiled studyrooms-python pyfwd-blocking)
[ -n "${LABELS:-}" ] && read -r -a labels <<< "$LABELS"  # e.g. LABELS="studyrooms-compiled pyfwd-blocking"
[ -z "${NO_JANUS:-}" ] && labels+=(janus)
[ -n "${BEFORE:-}" ] && labels+=(studyrooms-before)
one_rep() {
  local r=$1 n=${#labels[@]}
  for ((k = 0; k < n; k++)); do
    label=${labels[$(( (k + r) % n ))]}
    echo "rep $r: $label $(date -u +%T)" >&2
    case $label in
      studyrooms-compiled) STUDYROOMS_MEDIA_FAST_PATH=on run "$label" "$PY" "$PWD/benchmarks/harness/studyrooms_adapter.py" ;;
      studyrooms-python) STUDYROOMS_MEDIA_FAST_PATH=off run "$label" "$PY" "$PWD/benchmarks/harness/studyrooms_adapter.py" ;;
      studyrooms-before) run "$label" "$PY" "$BEFORE/benchmarks/harness/studyrooms_adapter.py" ;;
      pyfwd-blocking) run "$label" python3 "$HARNESS/adapters/pyfwd_adapter.py" --mode blocking ;;
      janus) run "$label" python3 "$HARNESS/adapters/janus_adapter.py" --janus-pid "$JPID" ;;
    esac
  done
}
for ((r = 0; r < REPS; r++)); do
  if [ -n "${LOCK:-}" ]; then
    exec 9>"$LOCK"; flock 9; one_rep "$r"; flock -u 9; exec 9>&-
  else
    one_rep "$r"
  fi
done
python3 "$HARNESS/summarize.py" "$OUT/results.jsonl" > "$OUT/summary.md"
cat "$OUT/summary.md"
