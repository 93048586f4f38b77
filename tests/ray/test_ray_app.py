"""The product on the shared test Ray: start_app with the real media workers, room service and
signaling server; HTTP API and Socket.IO through the actor hop (no media: see test_e2e_room.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import pytest
import pytest_asyncio
import socketio

from actors.app import start_app
from actors.hop import call
from studyrooms.config import Settings

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(ray_session):
    settings = Settings(server={"host": "127.0.0.1", "port": 0, "num_workers": 2},
                        rooms={"empty_room_timeout_s": 0.2})
    t0 = time.monotonic()
    handle = await start_app(settings, prefix=f"app-{uuid.uuid4().hex[:6]}", health_interval_s=0.5)
    print(f"start_app (2 workers, real stack): {time.monotonic() - t0:.2f} s {handle.timings}")
    yield handle
    await handle.stop()


async def http(app, method, path, body=None):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.request(method, app.url + path, json=body) as resp:
            return resp.status, await resp.json()


async def connect(app, room, name):
    status, body = await http(app, "POST", "api/token", {"roomId": room, "displayName": name})
    assert status == 200, body
    client = socketio.AsyncClient(reconnection=False)
    events: list = []
    client.on("*", lambda event, data=None: events.append((event, data)))
    await client.connect(app.url, auth={"token": body["token"]}, transports=["websocket"], wait_timeout=10)
    return client, events


async def until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_http_api(app):
    assert await http(app, "GET", "healthz") == (200, {"status": "ok"})
    assert await http(app, "GET", "api/rooms") == (200, {"rooms": []})
    status, stats = await http(app, "GET", "api/stats")
    assert status == 200 and stats["rooms"] == []
    assert sorted(w["workerId"] for w in stats["workers"]) == sorted(app.workers)
    assert all({"pid", "node", "routerCount", "consumerCount", "cpu"} <= set(w) for w in stats["workers"])


async def test_join_notify_errors_and_leave_through_the_actors(app):
    amy, amy_events = await connect(app, "algebra", "Amy")
    bob, _ = await connect(app, "algebra", "Bob")
    try:
        a = await amy.call("join-room", {"roomId": "algebra", "displayName": "Amy"}, timeout=20)
        assert a["ok"], a
        assert a["data"]["roomId"] == "algebra" and a["data"]["rtpCapabilities"]["codecs"]
        b = await bob.call("join-room", {"roomId": "algebra", "displayName": "Bob"}, timeout=20)
        assert b["ok"], b
        # RoomHost -> NotifierPort -> SignalingActor.deliver -> Amy's socket
        assert await until(lambda: _async(any(e == "participant-joined" for e, _ in amy_events)))
        # errors keep their code across the hops (signaling -> room host -> media worker)
        bad = await amy.call("resume-consumer", {"consumerId": "nope"}, timeout=20)
        assert bad == {"ok": False, "error": {"code": "not-found", "message": bad["error"]["message"]}}
        twice = await amy.call("join-room", {"roomId": "other", "displayName": "Amy"}, timeout=20)
        assert twice["error"]["code"] == "invalid-state"
        status, rooms = await http(app, "GET", "api/rooms")
        assert [(r["roomId"], r["participantCount"]) for r in rooms["rooms"]] == [("algebra", 2)]
        stats = await amy.call("get-stats", {}, timeout=20)
        assert stats["ok"] and stats["data"]["participantCount"] == 2
    finally:
        await amy.disconnect()
        await bob.disconnect()

    async def empty():
        status, rooms = await http(app, "GET", "api/rooms")
        return rooms["rooms"] == []

    assert await until(empty)  # disconnect = leave; the empty room closes (0.2 s) on its host

    async def released():
        dump = await call(app.directory.dump.remote())
        return dump["rooms"] == {} and all(w["routers"] == 0 for w in dump["workers"].values())

    assert await until(released)  # its router was closed on the worker and released


async def _async(value):
    return value


async def test_a_dead_media_worker_is_internal_unavailable_and_dropped(app):
    import ray

    amy, _ = await connect(app, "doomed", "Amy")
    try:
        joined = await amy.call("join-room", {"roomId": "doomed", "displayName": "Amy"}, timeout=20)
        assert joined["ok"], joined
        status, stats = await http(app, "GET", "api/stats")
        worker_id = next(r for r in stats["rooms"] if r["roomId"] == "doomed")["workers"][0]["workerId"]
        ray.kill(app.workers[worker_id])
        reply = await amy.call("create-transport", {"direction": "send"}, timeout=30)
        assert reply["ok"] is False and reply["error"]["code"] == "internal"
        assert "unavailable" in reply["error"]["message"]

        async def dropped():
            status, stats = await http(app, "GET", "api/stats")
            return worker_id not in {w["workerId"] for w in stats["workers"]}

        assert await until(dropped)  # the directory's health check (every 0.5 s) drops it
    finally:
        await amy.disconnect()
    bob, _ = await connect(app, "survivor", "Bob")
    try:
        joined = await bob.call("join-room", {"roomId": "survivor", "displayName": "Bob"}, timeout=20)
        assert joined["ok"], joined
        status, stats = await http(app, "GET", "api/stats")
        survivor = next(r for r in stats["rooms"] if r["roomId"] == "survivor")
        assert survivor["workers"][0]["workerId"] != worker_id
        reply = await bob.call("create-transport", {"direction": "send"}, timeout=20)
        assert reply["ok"], reply
    finally:
        await bob.disconnect()
