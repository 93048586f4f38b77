"""Security suite: helpers live in sechelpers.py beside this file (importable under any import mode)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sechelpers import LoopErrors  # noqa: E402


@pytest.fixture
def loop_errors():
    errors = LoopErrors()
    errors.install()
    yield errors
    errors.uninstall()
