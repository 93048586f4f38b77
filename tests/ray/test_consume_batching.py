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
from support.smoke import ROOT

from actors.app import start_app
from actors.hop import call
from studyrooms.config import Settings

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
        assert front1["items"] - front0["items"] == 8  # all eight went the batched way
        assert host1["items"] - host0["items"] == 4  # Cy's 2 consumes + 2 resumes reached the worker

        # one batch as a front sends it (RoomHost.request_many): good and bad requests of three
        # participants in one Ray call, each answered on its own; the room runs them in one hold of
        # its lock (each participant's in order) and the three good consumes reach the worker in one call
        (host,) = app.hosts.values()
        cy_s, s0, s1 = ({"sid": sio.get_sid("/"), "route": app.route} for sio in (cy, people[0].sio, people[1].sio))
        theirs = [{"transportId": p.recv_transport_id, "rtpCapabilities": p.rtp_capabilities} for p in people]
        outcomes = await call(host.request_many.remote([
            (cy_s, "consume", consume(producers[0])),  # a second consumer of a producer is allowed
            (cy_s, "consume", consume("no-such-producer")),
            (s0, "consume", {**theirs[0], "producerId": producers[1]}),
            (s1, "resume-consumer", {"consumerId": "no-such-consumer"}),
            (s1, "consume", {**theirs[1], "producerId": producers[0]}),
        ]))
        kinds = [(kind, type(value).__name__ if kind == "err" else value[0]["producerId"]) for kind, value in outcomes]
        assert kinds == [("ok", producers[0]), ("err", "NotFoundError"), ("ok", producers[1]),
                         ("err", "NotFoundError"), ("ok", producers[0])], outcomes
        host2 = (await _batches(app))[1]
        assert (host2["items"] - host1["items"], host2["calls"] - host1["calls"]) == (3, 1), (host1, host2)

        # a media worker's batch: one bad call fails alone, the others around it take effect
        (worker,) = app.workers.values()
        mine = [value[0]["id"] for kind, value in outcomes if kind == "ok"][:2]
        answers = await call(worker.request_many.remote([
            ("resume_consumer", {"consumerId": mine[0]}), ("pause_consumer", {"consumerId": "no-such-consumer"}),
            ("resume_consumer", {"consumerId": mine[1]})]))
        assert [kind for kind, _ in answers] == ["ok", "err", "ok"] and answers[1][1].code == "not-found"
        dump = await call(worker.get_stats.remote())
        assert dump["consumerCount"] == 2 + 2 + 3  # the senders' 2, Cy's 2, the batch's 3

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
