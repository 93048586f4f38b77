"""The forwarding benchmark tool works end to end (a correctness test of the TOOL, not a timed
performance assertion): `python -m benchmarks.forwarding --smoke` runs both modes against the real
Worker and the minimal loop, writes results.csv + summary.json with the documented schema, and every
cell forwarded packets with a delivery ratio above 0.9."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSV_COLUMNS = {
    "mode", "impl", "fanout", "rep", "pps", "window_s", "sent_in", "expected_fwd", "sink_rtp", "sink_drops",
    "delivery", "delivery_received", "cpu_s", "idle_cpu_ms_per_s", "cpu_util_pct", "us_per_fwd_pkt",
    "us_per_fwd_pkt_idle_corr", "us_per_in_pkt", "fwd_pkts_per_core_s", "setup_s",
}
SUMMARY_KEYS = {"schema", "timestamp", "machine", "parameters", "medians", "errors", "results_csv"}
MACHINE_KEYS = {"cpu_model", "cores", "python", "packages"}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_forwarding_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.forwarding", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=200,
    )
    runs = os.listdir(tmp_path)
    assert len(runs) == 1, (runs, proc.stdout[-3000:], proc.stderr[-3000:])
    run_dir = tmp_path / runs[0]
    assert (run_dir / "results.csv").is_file() and (run_dir / "summary.json").is_file(), proc.stderr[-3000:]

    with open(run_dir / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert CSV_COLUMNS <= set(reader.fieldnames or [])
        rows = list(reader)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert MACHINE_KEYS <= set(summary["machine"])
    assert summary["errors"] == [], summary["errors"]

    cells = {(r["mode"], r["impl"], int(r["fanout"])) for r in rows}
    want = {(m, i, n) for m in ("plain", "srtp") for i in ("minimal", "studyrooms") for n in (1, 10)}
    assert want <= cells, (want - cells, proc.stderr[-3000:])
    for r in rows:
        assert int(r["sink_rtp"]) > 0, r
        assert float(r["delivery"]) > 0.9, r
        assert float(r["us_per_fwd_pkt"]) > 0, r
    for cell in summary["medians"]:
        assert {"mode", "fanout", "minimal", "studyrooms", "ratio_us_per_fwd_pkt"} <= set(cell)
        assert cell["studyrooms"]["us_per_fwd_pkt"] > 0 and cell["minimal"]["us_per_fwd_pkt"] > 0
    assert proc.returncode == 0, proc.stderr[-3000:]
