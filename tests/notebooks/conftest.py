"""Notebook tests read the load-generator smoke results (2 rooms x 3 participants, 5 s), run once per
session by whichever of tests/loadgen and tests/notebooks needs them first (same folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the benchmarks package lives in the checkout, not in the install
    sys.path.insert(0, str(ROOT))


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


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> Path:
    return smoke_run(tmp_path_factory)
