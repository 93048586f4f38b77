"""The full stack in one process (studyrooms.standalone): real Socket.IO clients driving real
pymediasoup devices through rooms and a media worker; frames decoded both ways."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import socketio

from studyrooms.config import Settings
from studyrooms.standalone import start_standalone
from support.peer import Peer, SocketIOSignal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
async def server():
    app = await start_standalone(Settings(), num_workers=2, port=0)
    yield app
    await app.stop()


async def _join(app, room: str, name: str):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{app.url}/api/token", json={"roomId": room, "displayName": name}) as resp:
            token = (await resp.json())["token"]
    sio = socketio.AsyncClient(reconnection=False)
    events: list[tuple[str, dict]] = []
    for name_ in ("participant-joined", "participant-left", "new-producer", "producer-closed", "consumer-closed"):
        sio.on(name_, lambda data, n=name_: events.append((n, data)))
    await sio.connect(app.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    signal = SocketIOSignal(sio)
    joined = await signal.call("join-room", {"roomId": room, "displayName": name})
    return sio, signal, joined, events


async def test_two_participants_see_each_other_and_leave_cleanly(server):
    sio_a, sig_a, joined_a, events_a = await _join(server, "maths", "Ada")
    sio_b, sig_b, joined_b, events_b = await _join(server, "maths", "Bob")
    peer_a, peer_b = Peer(sig_a, video=True, audio=True), Peer(sig_b, video=True, audio=True)
    try:
        assert [p["displayName"] for p in joined_b["participants"]] == ["Ada"]
        await peer_a.load(joined_a["rtpCapabilities"])
        await peer_b.load(joined_b["rtpCapabilities"])
        ids_a = await peer_a.produce(video=True, audio=True)
        ids_b = await peer_b.produce(video=True, audio=True)
        a_sees_b = await peer_a.consume(ids_b["video"])
        b_sees_a = await peer_b.consume(ids_a["video"])
        b_hears_a = await peer_b.consume(ids_a["audio"])
        assert await a_sees_b.wait_frames(10, timeout=20) >= 10
        assert await b_sees_a.wait_frames(10, timeout=20) >= 10
        assert await b_hears_a.wait_frames(10, timeout=10) >= 10
        assert {d["producerId"] for n, d in events_a if n == "new-producer"} == set(ids_b.values())

        stats = await sig_a.call("get-stats")
        assert stats["participantCount"] == 2 and stats["producerCount"] == 4 and stats["consumerCount"] == 3

        await sio_b.disconnect()
        for _ in range(50):
            if any(n == "participant-left" for n, _ in events_a):
                break
            await asyncio.sleep(0.1)
        assert ("participant-left", {"participantId": joined_b["participantId"], "displayName": "Bob"}) in events_a
        closed = {d["producerId"] for n, d in events_a if n == "producer-closed"}
        assert closed == set(ids_b.values())
        stats = await sig_a.call("get-stats")
        assert stats["participantCount"] == 1 and stats["producerCount"] == 2 and stats["consumerCount"] == 0
        await sio_a.disconnect()
        for _ in range(50):
            if sum(len(w.transports) for w in server.workers) == 0:
                break
            await asyncio.sleep(0.1)
        assert [len(w.transports) + len(w.producers) + len(w.consumers) for w in server.workers] == [0, 0]
    finally:
        await asyncio.gather(peer_a.close(), peer_b.close(), return_exceptions=True)
        for sio in (sio_a, sio_b):
            if sio.connected:
                await sio.disconnect()
