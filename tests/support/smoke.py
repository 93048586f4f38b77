"""The load-generator smoke run (2 rooms x 3 participants, 5 s, standalone server), made once per
test session and shared by tests/loadgen and tests/notebooks (same folder under the session's base
temp)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def smoke_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.getbasetemp() / "loadgen-smoke"
    runs = sorted(p.parent for p in out.glob("*/summary.json"))
    if runs:
        return runs[-1]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--smoke", "--no-progress", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=150,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    runs = sorted(p.parent for p in out.glob("*/summary.json"))
    assert proc.returncode == 0 and runs, (proc.stdout[-3000:], proc.stderr[-3000:])
    return runs[-1]
