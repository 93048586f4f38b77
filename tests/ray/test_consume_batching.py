"""Batched consume path through the real actor app (issue 15, the consume storm).

A page consumes every producer at once (web/src/roomClient.js ``Promise.all``); the front carries a
socket's concurrent consume / resume-consumer requests to the room host in one Ray call, and the room
host its worker calls in one ``request_many`` (actors/call_batch.py, studyrooms/rooms/op_batch.py).
What a user sees must not change: every request gets its own ack (one bad consume fails alone, with
its own error code), a lone participant's requests work as before, media flows, nothing is left.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import aiohttp
import pytest
import pytest_asyncio
import socketio

from actors.app import start_app
from actors.hop import call
from studyrooms.config import Settings

from support.smoke import ROOT

if str(ROOT) not in sys.path:  # the benchmarks package lives in the checkout
    sys.path.insert(0, str(ROOT))

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(ray_session):
    settings = Settings(server={"host": "127.0.0.1", "port": 0, "num_workers": 1},
                        rooms={"empty_room_timeout_s": 0.2})
    handle = await start_app(settings, prefix=f"cb-{uuid.uuid4().hex[:6]}", health_interval_s=0.5)
    yield handle
    await handle.stop()


async def _socket(app, room: str, name: str) -> socketio.AsyncClient:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        async with http.post(app.url + "api/token", json={"roomId": room, "displayName": name}) as resp:
            token = (await resp.json())["token"]
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(app.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    return client


async def _batches(app) -> tuple[dict, dict]:
    """(front -> room host, room host -> worker): summed {calls, items} of the batched paths."""
    out = []
    for handles in (app.fronts, app.hosts):
        calls = items = 0
        for handle in handles.values():
            for st in (await call(handle.batch_stats.remote())).values():
                calls, items = calls + st["calls"], items + st["items"]
        out.append({"calls": calls, "items": items})
    return out[0], out[1]


async def test_concurrent_consumes_are_batched_and_each_gets_its_own_answer(app):
    from benchmarks.loadgen.participant import Participant, Profile

    # two senders (real ICE, DTLS, SRTP, Opus-shaped RTP) who consume each other, as the page does
    people = [Participant(app.url, "batch", f"s{i}", Profile(audio=True, video=False)) for i in range(2)]
    cy = None
    try:
        for p in people:
            await p.join()
        # the senders' own consumes (all at once, batched) carry media
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                any(st.packets > 20 for st in p.streams.values()) for p in people):
            await asyncio.sleep(0.2)
        for p in people:
            assert p.result.consume_errors == [], p.result.consume_errors
            assert [st.packets > 20 for st in p.streams.values()] == [True], p.name
        front0, host0 = await _batches(app)
        cy = await _socket(app, "batch", "Cy")
        joined = await cy.call("join-room", {"roomId": "batch", "displayName": "Cy"}, timeout=20)
        assert joined["ok"], joined
        caps = joined["data"]["rtpCapabilities"]
        producers = [pr["producerId"] for pr in joined["data"]["producers"]]
        assert len(producers) == 2
        recv = await cy.call("create-transport", {"direction": "recv"}, timeout=20)
        assert recv["ok"], recv
        tid = recv["data"]["id"]

        def consume(producer_id: str, transport_id: str = tid) -> dict:
            return {"transportId": transport_id, "producerId": producer_id, "rtpCapabilities": caps}

        # one socket, six requests at once: two good consumes among four bad ones
        replies = await asyncio.gather(
            cy.call("consume", consume(producers[0]), timeout=20),
            cy.call("consume", consume("no-such-producer"), timeout=20),
            cy.call("consume", consume(producers[1], people[0].recv_transport_id), timeout=20),  # not Cy's
            cy.call("resume-consumer", {"consumerId": "no-such-consumer"}, timeout=20),
            cy.call("consume", consume(producers[1]), timeout=20),
            cy.call("pause-consumer", {"consumerId": "no-such-consumer"}, timeout=20),
        )
        codes = [r["ok"] or r["error"]["code"] for r in replies]
        assert codes == [True, "not-found", "forbidden", "not-found", True, "not-found"], replies
        assert "producer" in replies[1]["error"]["message"] and "another participant" in replies[2]["error"]["message"]
        good = [replies[0]["data"], replies[4]["data"]]
        assert {c["producerId"] for c in good} == set(producers) and all(c["kind"] == "audio" for c in good)
        resumed = await asyncio.gather(*(cy.call("resume-consumer", {"consumerId": c["id"]}, timeout=20)
                                         for c in good))
        assert all(r == {"ok": True, "data": {}} for r in resumed), resumed

        front1, host1 = await _batches(app)
        # the eight batched requests reached the room host in fewer Ray calls than requests, and the
        # room host's worker calls too (each of the senders' and Cy's consumes and resumes)
        assert front1["items"] - front0["items"] == 8
        assert front1["calls"] - front0["calls"] < 8, (front0, front1)
        assert host1["items"] - host0["items"] >= 4  # Cy's 2 consumes + 2 resumes reached the worker
        assert host1["calls"] - host0["calls"] < host1["items"] - host0["items"], (host0, host1)

        stats = await call(next(iter(app.workers.values())).get_stats.remote())
        assert stats["consumerCount"] == 2 + 2  # each sender consumes the other; Cy consumes both
    finally:
        if cy is not None:
            await cy.disconnect()
        await asyncio.gather(*(p.close() for p in people), return_exceptions=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = await call(next(iter(app.workers.values())).get_stats.remote())
        if stats["consumerCount"] == stats["producerCount"] == stats["transportCount"] == 0:
            break
        await asyncio.sleep(0.25)
    assert (stats["consumerCount"], stats["producerCount"], stats["transportCount"]) == (0, 0, 0)


async def test_a_lone_participant_is_served_as_before(app):
    """Nothing else in flight: a single consume and resume go as plain calls (batches of one) and
    the participant's errors and acks are those of the contract."""
    from benchmarks.loadgen.participant import Participant, Profile

    sender = Participant(app.url, "solo", "sender", Profile(audio=True, video=False, consume=False))
    solo = None
    try:
        await sender.join()
        solo = await _socket(app, "solo", "Solo")
        joined = await solo.call("join-room", {"roomId": "solo", "displayName": "Solo"}, timeout=20)
        (producer,) = [pr["producerId"] for pr in joined["data"]["producers"]]
        recv = await solo.call("create-transport", {"direction": "recv"}, timeout=20)
        before = await _batches(app)
        c = await solo.call("consume", {"transportId": recv["data"]["id"], "producerId": producer,
                                        "rtpCapabilities": joined["data"]["rtpCapabilities"]}, timeout=20)
        assert c["ok"] and c["data"]["producerId"] == producer, c
        r = await solo.call("resume-consumer", {"consumerId": c["data"]["id"]}, timeout=20)
        assert r == {"ok": True, "data": {}}
        twice = await solo.call("consume", {"transportId": "nope", "producerId": producer,
                                            "rtpCapabilities": joined["data"]["rtpCapabilities"]}, timeout=20)
        assert twice["ok"] is False and twice["error"]["code"] == "not-found"
        after = await _batches(app)
        for b, a in zip(before, after):  # three requests, three calls: nothing waited for company
            assert (a["items"] - b["items"], a["calls"] - b["calls"]) in ((3, 3), (2, 2)), (before, after)
    finally:
        if solo is not None:
            await solo.disconnect()
        await sender.close()
