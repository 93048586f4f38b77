"""Both load-analysis notebooks execute (nbclient) against the smoke run's results, without a cell
error, and produce their plots."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.mark.parametrize("name, plots", [
    ("capacity", {"capacity_vs_fanout.png", "workers.png", "cpu_per_stream.png", "deployment_10x50.png",
                  "cluster_load.png"}),
    ("latency", {"latency.png", "latency_per_receiver.png", "join_times.png", "loss_jitter.png"}),
])
def test_notebook_executes_against_smoke_results(name, plots, smoke_results, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYROOMS_RESULTS", str(smoke_results))
    monkeypatch.setenv("STUDYROOMS_PLOTS", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()  # raises on a cell error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= len(plots)
    assert plots <= {p.name for p in tmp_path.iterdir()}
