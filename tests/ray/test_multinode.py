"""Placement over several nodes (``ray.cluster_utils.Cluster``: head + 2 media nodes)."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import aiohttp
import pytest
import pytest_asyncio

from actors.app import start_app
from actors.hop import call
from studyrooms.config import Settings

from ray_fakes import FAKES

pytestmark = [pytest.mark.multinode, pytest.mark.ray, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(300)]  # the cluster starts inside the first test's time


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(ray_cluster):
    settings = Settings(server={"host": "127.0.0.1", "port": 0})
    t0 = time.monotonic()
    handle = await start_app(settings, prefix=f"mn-{uuid.uuid4().hex[:6]}", health_interval_s=0, **FAKES)
    print(f"start_app on the cluster: {time.monotonic() - t0:.2f} s {handle.timings}")
    yield handle
    await handle.stop()


async def rpc(app, sid, method, data=None, session=None):
    async with aiohttp.ClientSession() as http:
        async with http.post(app.url + "rpc", json={"sid": sid, "method": method, "data": data or {},
                                                    "session": session or {}},
                             timeout=aiohttp.ClientTimeout(total=30)) as resp:
            body = await resp.json()
    assert body["ok"], body
    return body


async def test_one_worker_per_media_slot_spread_over_nodes(app, ray_cluster):
    nodes = ray_cluster.media_nodes
    per_node = Counter(app.worker_nodes.values())
    assert per_node == {nodes["a"]: 2, nodes["b"]: 1}  # media_slots 2 and 1; none on the head
    assert ray_cluster.head_id not in per_node
    signaling = await call(app.signaling.info.remote())
    assert signaling["node"] == ray_cluster.head_id  # the node advertising `signaling`
    hosts = [await call(h.start.remote()) for h in app.hosts.values()]
    assert sorted(h["node"] for h in hosts) == sorted(nodes.values())  # one room host per media node


async def test_rooms_go_to_the_least_loaded_worker(app):
    first = [await rpc(app, f"s{i}", "join-room", {"roomId": f"room{i}"}) for i in range(3)]
    placed = [body["data"]["workerId"] for body in first]
    assert sorted(placed) == sorted(app.workers)  # ties: one room per worker, over both nodes
    hosts = {body["data"]["hostId"] for body in first}
    assert len(hosts) == 2  # rooms spread over the room hosts
    # load two workers with consumers; the next room goes to the third
    busy = placed[:2]
    for n, worker_id in enumerate(busy):
        await call(app.workers[worker_id].request.remote("fake_consumers", {"count": 10 + n}))
    await call(app.directory.check_health.remote(), timeout_s=30)
    nxt = await rpc(app, "s9", "join-room", {"roomId": "room9"})
    assert nxt["data"]["workerId"] == placed[2]
    for i, body in enumerate(first):
        await rpc(app, f"s{i}", "disconnect", session=body["session"])
    await rpc(app, "s9", "disconnect", session=nxt["session"])
    dump = await call(app.directory.dump.remote())
    assert dump["rooms"] == {} and dump["roomRouters"] == {}
