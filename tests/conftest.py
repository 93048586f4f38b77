"""Shared fixtures for the whole suite.

Ray stays on loopback and in a private temp dir (design/ray.md P1, P2, P5): the variables are set
at import time, before anything can import Ray. Only tests that use ``ray_session`` start Ray (one
local instance per session, or the cluster in ``RAY_ADDRESS`` when CI started one); mark them
``@pytest.mark.ray``. Unit tests never start Ray.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # P1: every Ray listener on 127.0.0.1
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # P2: same on a fresh and a used machine
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if "RAY_TMPDIR" not in os.environ:  # P5: never attach to another cluster through /tmp/ray
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="sr-ray-")  # short: Ray puts unix sockets there
    _PRIVATE_RAY_TMPDIR: str | None = os.environ["RAY_TMPDIR"]
else:
    _PRIVATE_RAY_TMPDIR = None


def _init_test_ray() -> None:
    import ray

    address = os.environ.get("RAY_ADDRESS")
    ray.init(
        address=address or "local",
        num_cpus=None if address else 2,
        include_dashboard=None if address else False,
        log_to_driver=False,
        namespace="tests",
    )


@pytest.fixture(scope="session")
def ray_session():
    """One Ray for the test session: a local loopback instance, or ``RAY_ADDRESS`` if set.

    Started by the first test that asks; shut down at the end of the session."""
    import ray

    owner = not ray.is_initialized()
    if owner:
        _init_test_ray()
    yield ray
    if owner:
        ray.shutdown()


def pytest_collection_modifyitems(session, config, items):
    """Multi-node tests last: the driver leaves the session Ray for their cluster (a driver talks to
    one cluster at a time), and no test after them needs the session Ray again."""
    items.sort(key=lambda item: item.get_closest_marker("multinode") is not None)


@pytest.fixture(scope="module")
def ray_cluster():
    """A simulated multi-node cluster for one module (support/cluster.py): the head (``num_cpus=0``
    + ``signaling``) and two media nodes with ``media_slots`` 2 and 1."""
    from support.cluster import simulated_cluster

    with simulated_cluster("tests-multinode", {"a": dict(num_cpus=2, resources={"media_slots": 2}),
                                               "b": dict(num_cpus=1, resources={"media_slots": 1})}) as cluster:
        cluster.media_nodes = {name: cluster.ids[name] for name in ("a", "b")}
        cluster.head_id = cluster.ids["head"]
        yield cluster


def pytest_sessionfinish(session, exitstatus):
    if _PRIVATE_RAY_TMPDIR:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            return
        shutil.rmtree(_PRIVATE_RAY_TMPDIR, ignore_errors=True)


def loopback_ice(monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Make aioice (pymediasoup/aiortc clients) gather 127.0.0.1 host candidates only."""
    import aioice.ice

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"]

    if monkeypatch is not None:
        monkeypatch.setattr(aioice.ice, "get_host_addresses", get_host_addresses)
    else:
        aioice.ice.get_host_addresses = get_host_addresses


@pytest.fixture
def aioice_loopback(monkeypatch):
    """Fixture form of :func:`loopback_ice` (undone after the test)."""
    loopback_ice(monkeypatch)


@pytest.fixture
def forwarding_path(request):
    """Run a forwarding test on one path: ``python`` (pure Python) or ``compiled`` (the fan-out core,
    studyrooms.media.fastpath). Parametrize the test or an enclosing fixture with those names.
    The compiled path must be built (`make setup`): a missing build fails, it does not skip."""
    from studyrooms.media import fastpath

    path = request.param
    fastpath.configure("on" if path == "compiled" else "off")
    fastpath.set_webrtc(path == "compiled")
    yield path
    fastpath.set_webrtc(True)
    fastpath.configure()
