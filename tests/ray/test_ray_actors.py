"""Single actors on the shared test Ray: they start, answer, keep error kinds, place by load."""

from __future__ import annotations

import uuid

import pytest
import ray

from actors.directory import DirectoryActor
from actors.hop import call
from support.worker_load import add_consumers
from actors.media_worker import MediaWorkerActor
from studyrooms.config import Settings
from studyrooms.errors import InternalError, InvalidRequestError, NotFoundError


pytestmark = pytest.mark.ray


async def test_media_worker_actor_runs_the_real_worker(ray_session):
    media = Settings().media.model_dump()
    worker = MediaWorkerActor.options(name=f"mw-{uuid.uuid4().hex[:6]}").remote("w-real", media, 0)
    try:
        info = await call(worker.start.remote(), timeout_s=60)
        assert info["workerId"] == "w-real" and info["pid"] > 0
        assert info["loop"].startswith("uvloop"), info  # Ray runs async actors on uvloop when installed
        router = await call(worker.request.remote("create_router", {}), timeout_s=20)
        assert router["routerId"] and router["rtpCapabilities"]["codecs"]
        # a NotFoundError raised by the worker arrives as exactly that class, code not-found
        with pytest.raises(NotFoundError) as err:
            await call(worker.request.remote("get_router_stats", {"routerId": "nope"}), timeout_s=20)
        assert err.type is NotFoundError and err.value.code == "not-found"
        with pytest.raises(InvalidRequestError):
            await call(worker.request.remote("no_such_method", {}), timeout_s=20)
        load = await call(worker.load.remote(), timeout_s=20)
        assert load["workerId"] == "w-real" and load["routerCount"] == 1
        assert {"pid", "node", "transportCount", "consumerCount", "cpu"} <= set(load)
        await call(worker.request.remote("close_router", {"routerId": router["routerId"]}), timeout_s=20)
        assert (await call(worker.load.remote()))["routerCount"] == 0
        await call(worker.close.remote(), timeout_s=20)
    finally:
        ray.kill(worker)
    # a dead actor is an InternalError saying "unavailable", not a Ray exception
    with pytest.raises(InternalError, match="unavailable"):
        await call(worker.load.remote(), what="media worker w-real", timeout_s=20)


async def test_directory_places_on_least_loaded_worker_round_robin_on_ties(ray_session):
    name = f"dir-{uuid.uuid4().hex[:6]}"
    directory = DirectoryActor.options(name=name, get_if_exists=True).remote(health_interval_s=0)
    assert DirectoryActor.options(name=name, get_if_exists=True).remote(health_interval_s=0)._actor_id \
        == directory._actor_id  # a named singleton
    workers = {f"w{i}": MediaWorkerActor.remote(f"w{i}", {}, i) for i in range(3)}  # real media workers
    try:
        for wid, handle in workers.items():
            info = await call(handle.start.remote(), timeout_s=60)
            await call(directory.register_worker.remote(wid, handle, info))
        picks = [await call(directory.place_router.remote(f"room{i}")) for i in range(6)]
        assert picks == ["w0", "w1", "w2", "w0", "w1", "w2"]  # ties: round robin
        # real load from the workers: w0 and w2 carry consumers, w1 is the least loaded
        await add_consumers(workers["w0"], 5)
        await add_consumers(workers["w2"], 3)
        await add_consumers(workers["w1"], 0)  # one router each, so only consumers differ
        assert await call(directory.check_health.remote()) == []
        loads = {l["workerId"]: l for l in await call(directory.loads.remote())}
        assert loads["w0"]["consumerCount"] == 5 and loads["w1"]["consumerCount"] == 0
        assert await call(directory.place_router.remote("busy")) == "w1"
        assert await call(directory.place_router.remote("busy2")) == "w1"  # still fewest consumers
        # health: a dead worker is dropped and never chosen again
        ray.kill(workers["w1"])
        dropped = await call(directory.check_health.remote(), timeout_s=30)
        assert dropped == ["w1"]
        assert await call(directory.place_router.remote("after")) == "w2"  # 3 consumers < 5
    finally:
        for handle in [*workers.values(), directory]:
            ray.kill(handle)

