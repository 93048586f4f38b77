"""The product on several nodes (``ray.cluster_utils.Cluster``: a head + 2 media nodes with 2 and 1
media slots): the real media workers, room hosts and signaling, placed by Ray resources; rooms
joined over Socket.IO land on the least-loaded worker."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import aiohttp
import pytest
import pytest_asyncio
import socketio

from actors.app import start_app
from actors.hop import call
from studyrooms.config import Settings
from support.worker_load import add_consumers

pytestmark = [pytest.mark.multinode, pytest.mark.ray, pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.timeout(300)]  # the cluster starts inside the first test's time

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(ray_cluster):
    settings = Settings(server={"host": "127.0.0.1", "port": 0}, rooms={"empty_room_timeout_s": 0.2})
    t0 = time.monotonic()
    handle = await start_app(settings, prefix=f"mn-{uuid.uuid4().hex[:6]}", health_interval_s=0.5)
    print(f"start_app on the cluster: {time.monotonic() - t0:.2f} s {handle.timings}")
    yield handle
    await handle.stop()


async def http(app, method, path, body=None):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.request(method, app.url + path, json=body) as resp:
            return resp.status, await resp.json()


async def join(app, room):
    status, body = await http(app, "POST", "api/token", {"roomId": room, "displayName": room})
    assert status == 200, body
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(app.url, auth={"token": body["token"]}, transports=["websocket"], wait_timeout=20)
    reply = await client.call("join-room", {"roomId": room, "displayName": room}, timeout=30)
    assert reply["ok"], reply
    return client


async def room_workers(app) -> dict[str, str]:
    status, stats = await http(app, "GET", "api/stats")
    return {r["roomId"]: r["workers"][0]["workerId"] for r in stats["rooms"] if r["workers"]}


async def test_one_worker_per_media_slot_spread_over_nodes(app, ray_cluster):
    nodes = ray_cluster.media_nodes
    per_node = Counter(app.worker_nodes.values())
    assert per_node == {nodes["a"]: 2, nodes["b"]: 1}  # media_slots 2 and 1; none on the head
    assert ray_cluster.head_id not in per_node
    signaling = await call(app.signaling.info.remote())
    assert signaling["node"] == ray_cluster.head_id  # the node advertising `signaling`
    hosts = [await call(h.start.remote()) for h in app.hosts.values()]
    assert sorted(h["node"] for h in hosts) == sorted(nodes.values())  # one room host per media node
    status, stats = await http(app, "GET", "api/stats")
    assert {w["workerId"]: w["node"] for w in stats["workers"]} == app.worker_nodes


async def test_rooms_go_to_the_least_loaded_worker(app):
    clients = [await join(app, f"room{i}") for i in range(3)]
    extra_routers = []
    try:
        placed = await room_workers(app)
        assert sorted(placed.values()) == sorted(app.workers)  # ties: one room per worker, over both nodes
        # real consumers on two workers; the next room goes to the third
        busy = [placed["room0"], placed["room1"]]
        for n, worker_id in enumerate(busy):
            extra_routers.append((worker_id, await add_consumers(app.workers[worker_id], 3 + n)))
        await call(app.directory.check_health.remote(), timeout_s=30)
        clients.append(await join(app, "room9"))
        assert (await room_workers(app))["room9"] == placed["room2"]
    finally:
        for client in clients:
            await client.disconnect()
        for worker_id, router in extra_routers:
            await call(app.workers[worker_id].request.remote("close_router", {"routerId": router}))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, rooms = await http(app, "GET", "api/rooms")
        if rooms["rooms"] == []:
            break
    assert rooms["rooms"] == []
