"""The actor system with stand-in media/room/signaling objects: wiring, hop, errors, notifications."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest
import pytest_asyncio

from actors.app import start_app
from studyrooms.config import Settings

from ray_fakes import FAKES

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(ray_session):
    settings = Settings(server={"host": "127.0.0.1", "port": 0, "num_workers": 2})
    t0 = time.monotonic()
    handle = await start_app(settings, prefix=f"t-{uuid.uuid4().hex[:6]}", health_interval_s=0.5, **FAKES)
    handle.timings["wall_s"] = time.monotonic() - t0
    print("start_app timings", handle.timings)
    yield handle
    await handle.stop()


async def rpc(app, sid, method, data=None, session=None):
    async with aiohttp.ClientSession() as http:
        async with http.post(app.url + "rpc", json={"sid": sid, "method": method, "data": data or {},
                                                    "session": session or {}},
                             timeout=aiohttp.ClientTimeout(total=20)) as resp:
            return await resp.json()


async def get(app, path):
    async with aiohttp.ClientSession() as http:
        async with http.get(app.url + path, timeout=aiohttp.ClientTimeout(total=20)) as resp:
            return resp.status, await resp.json()


async def test_healthz_and_rooms(app):
    assert await get(app, "healthz") == (200, {"status": "ok"})
    status, body = await get(app, "api/rooms")
    assert status == 200 and body == {"rooms": []}


async def test_join_places_router_and_errors_keep_their_code(app):
    joined = await rpc(app, "s1", "join-room", {"roomId": "algebra"})
    assert joined["ok"], joined
    session = joined["session"]
    assert session["roomId"] == "algebra"  # the host's annotation came back across the hop
    # a NotFoundError raised inside the media worker arrives as NotFoundError, code not-found
    res = await rpc(app, "s1", "worker", {"method": "get_router_stats", "data": {"routerId": "nope"}}, session)
    assert res["error"]["type"] == "NotFoundError" and res["error"]["code"] == "not-found"
    # a non-studyrooms exception becomes InternalError
    res = await rpc(app, "s1", "worker", {"method": "boom"}, session)
    assert res["error"]["type"] == "InternalError" and "ZeroDivisionError" in res["error"]["message"]
    # invalid-state before join
    res = await rpc(app, "s9", "worker", {"method": "x"})
    assert res["error"]["code"] == "invalid-state"
    await rpc(app, "s1", "disconnect", session=session)


async def test_worker_events_reach_the_owning_host_and_notifications_reach_signaling(app):
    a = await rpc(app, "a", "join-room", {"roomId": "physics"})
    b = await rpc(app, "b", "join-room", {"roomId": "physics"})
    assert a["data"]["hostId"] == b["data"]["hostId"]
    router_id = a["data"]["routerId"]
    await rpc(app, "a", "worker", {"method": "fake_event", "data": {
        "name": "producer-score", "data": {"routerId": router_id, "producerId": "p", "score": 7}}}, a["session"])
    events = []
    for _ in range(100):
        events = (await rpc(app, "a", "events", session=a["session"]))["data"]
        if events:
            break
        await asyncio.sleep(0.05)
    assert events and events[0][0] == "producer-score" and events[0][1]["score"] == 7
    await rpc(app, "a", "notify", {"event": "hello", "data": {"x": 1}}, a["session"])
    status, body = await get(app, "delivered")
    assert sorted(sid for sid, ev, _ in body if ev == "hello") == ["a", "b"]
    status, rooms = await get(app, "api/rooms")
    assert {"roomId": "physics", "participantCount": 2} in rooms["rooms"]
    await rpc(app, "a", "disconnect", session=a["session"])
    await rpc(app, "b", "disconnect", session=b["session"])
    status, rooms = await get(app, "api/rooms")
    assert rooms["rooms"] == []


async def test_a_dead_media_worker_is_internal_unavailable_and_dropped(app):
    import ray

    a = await rpc(app, "k1", "join-room", {"roomId": "doomed"})
    worker_id = a["data"]["workerId"]
    ray.kill(app.workers[worker_id])
    res = await rpc(app, "k1", "worker", {"method": "get_router_stats", "data": {"routerId": "x"}}, a["session"])
    assert res["error"]["code"] == "internal" and "unavailable" in res["error"]["message"]
    assert res["error"]["type"] == "InternalError"
    for _ in range(200):  # the directory's health check (every 0.5 s) drops it
        status, stats = await get(app, "api/stats")
        if worker_id not in {w["workerId"] for w in stats["workers"]}:
            break
        await asyncio.sleep(0.05)
    assert worker_id not in {w["workerId"] for w in stats["workers"]}
    b = await rpc(app, "k2", "join-room", {"roomId": "survivor"})
    assert b["ok"] and b["data"]["workerId"] != worker_id
    await rpc(app, "k2", "disconnect", session=b["session"])
