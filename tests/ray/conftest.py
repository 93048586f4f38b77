"""tests/ray: load the stand-ins module under a stable name (tests/ray is deliberately not a
package: with ``pythonpath = ["tests"]`` a ``tests/ray/__init__.py`` would shadow the real ``ray``)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

if "ray_fakes" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("ray_fakes", pathlib.Path(__file__).with_name("ray_fakes.py"))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["ray_fakes"] = _module
    _spec.loader.exec_module(_module)
