"""The cluster load tool works end to end (a check of the TOOL, not a timed performance assertion):
`python -m benchmarks.cluster_load --smoke` (a subprocess, plain environment) starts a simulated
3-node cluster with two signaling fronts, joins 2 rooms x 5 synthetic participants through both
fronts, and writes cluster.json with join percentiles, per-actor memory/CPU, no errors and nothing
left after everyone left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.multinode, pytest.mark.timeout(300)]


def test_cluster_load_smoke(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # its own private Ray
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cluster_load", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280, env={**env, "PYTHONPATH": str(ROOT)})
    runs = sorted(p.parent for p in tmp_path.glob("*/cluster.json"))
    assert proc.returncode == 0 and runs, (proc.stdout[-3000:], proc.stderr[-3000:])
    result = json.loads((runs[-1] / "cluster.json").read_text())
    assert result["participants"] == result["participants_ok"] == 10 and result["errors"] == []
    assert result["parameters"]["fronts"] == 2
    assert result["join_ack_s"]["n"] == 10 and 0 < result["join_ack_s"]["p50"] <= result["join_ack_s"]["p99"]
    assert result["time_until_all_joined_s"] > 0
    # everyone consumes every other mic (the server's audio selection decides what flows)
    assert result["streams_consumed_per_participant"]["p50"] == 4 == result["streams_consumed_per_participant"]["max"]
    assert "load average" in result["uptime_before"] and "load average" in result["uptime_after"]
    kinds = {a["kind"] for a in result["actors"]}
    assert {"Directory", "Signaling", "RoomHost", "MediaWorker"} <= kinds
    workers = [a for a in result["actors"] if a["kind"] == "MediaWorker"]
    assert len(workers) == 2 and all(a["rss_idle_mb"] > 0 and a["cpu_s_media_window"] > 0 for a in workers)
    assert result["leftovers_after_leave"] == {"routerCount": 0, "transportCount": 0, "producerCount": 0,
                                               "consumerCount": 0, "roomsListed": 0, "roomsReserved": 0}
    assert (runs[-1] / "participants.csv").is_file() and (runs[-1] / "summary.json").is_file()
