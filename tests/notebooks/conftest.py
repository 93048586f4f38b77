"""Shares the session's load-generator smoke run (tests/support/smoke.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support.smoke import ROOT, smoke_run

if str(ROOT) not in sys.path:  # the benchmarks package lives in the checkout, not in the install
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> Path:
    return smoke_run(tmp_path_factory)
