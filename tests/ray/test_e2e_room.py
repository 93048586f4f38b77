"""End to end through the running app: two python-socketio clients driving pymediasoup devices
join a room, produce VP8 + Opus, consume each other and decode frames; after they leave, the
workers hold nothing (stats back to zero)."""

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

peer_mod = pytest.importorskip("support.peer")

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(ray_session):
    settings = Settings(server={"host": "127.0.0.1", "port": 0, "num_workers": 2},
                        rooms={"empty_room_timeout_s": 0.2, "capacity": 3})
    handle = await start_app(settings, prefix=f"e2e-{uuid.uuid4().hex[:6]}", health_interval_s=0.5)
    yield handle
    await handle.stop()


async def http(app, method, path, body=None):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.request(method, app.url + path, json=body) as resp:
            return resp.status, await resp.json()


async def join(app, room, name, events=None):
    status, body = await http(app, "POST", "api/token", {"roomId": room, "displayName": name})
    assert status == 200, body
    sio = socketio.AsyncClient(reconnection=False)
    if events is not None:
        sio.on("*", lambda event, data=None: events.append((event, data)))
    await sio.connect(app.url, auth={"token": body["token"]}, transports=["websocket"], wait_timeout=10)
    signal = peer_mod.SocketIOSignal(sio, timeout=20)
    ack = await signal.call("join-room", {"roomId": room, "displayName": name})
    peer = peer_mod.Peer(signal, video=True, audio=True)
    await peer.load(ack["rtpCapabilities"])
    return sio, peer


async def test_two_peers_exchange_media_through_the_actors(app, aioice_loopback):
    room = f"room-{uuid.uuid4().hex[:4]}"
    amy_events: list = []
    amy_sio, amy = await join(app, room, "Amy", amy_events)
    bob_sio, bob = await join(app, room, "Bob")
    try:
        amy_ids = await asyncio.wait_for(amy.produce(video=True, audio=True), 30)
        bob_ids = await asyncio.wait_for(bob.produce(video=True, audio=True), 30)
        counters = {
            "amy<-bob video": await asyncio.wait_for(amy.consume(bob_ids["video"]), 30),
            "amy<-bob audio": await asyncio.wait_for(amy.consume(bob_ids["audio"]), 30),
            "bob<-amy video": await asyncio.wait_for(bob.consume(amy_ids["video"]), 30),
            "bob<-amy audio": await asyncio.wait_for(bob.consume(amy_ids["audio"]), 30),
        }
        for name, counter in counters.items():  # consumers were resumed by Peer.consume
            frames = await counter.wait_frames(3, timeout=45)
            assert frames > 0, f"{name}: no decoded frames"
        status, stats = await http(app, "GET", "api/stats")
        room_stats = next(r for r in stats["rooms"] if r["roomId"] == room)
        assert room_stats["participantCount"] == 2 and room_stats["consumerCount"] == 4
        assert sum(w["consumerCount"] for w in stats["workers"]) == 4  # as the workers count them
        # Bob leaves: Amy hears it (room host -> signaling actor) and her consumers of Bob close
        await bob_sio.disconnect()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            names = [e for e, _ in amy_events]
            if "participant-left" in names and names.count("consumer-closed") >= 2:
                break
            await asyncio.sleep(0.05)
        names = [e for e, _ in amy_events]
        assert "participant-joined" in names and "new-producer" in names
        assert "participant-left" in names and names.count("consumer-closed") >= 2, names
    finally:
        for peer in (amy, bob):
            await peer.close()
        for sio in (amy_sio, bob_sio):
            if sio.connected:
                await sio.disconnect()

    deadline = time.monotonic() + 20
    totals = None
    while time.monotonic() < deadline:
        loads = [await call(w.load.remote()) for w in app.workers.values()]
        totals = {k: sum(load[k] for load in loads)
                  for k in ("routerCount", "transportCount", "producerCount", "consumerCount")}
        status, rooms = await http(app, "GET", "api/rooms")
        if not any(totals.values()) and rooms["rooms"] == []:
            break
        await asyncio.sleep(0.1)
    assert totals == {"routerCount": 0, "transportCount": 0, "producerCount": 0, "consumerCount": 0}
    assert rooms["rooms"] == []


async def test_guide_client_late_joiner_room_full_and_bad_payloads(app, aioice_loopback):
    """A client written from the original guide (emit, then wait for the reply event) produces; a
    participant joining late gets the existing producers in its join ack and decodes them; the 4th
    is refused with room-full; bad payloads get invalid-request - all through the actors."""
    room = f"guide-{uuid.uuid4().hex[:4]}"
    status, body = await http(app, "POST", "api/token", {"roomId": room, "displayName": "Gil"})
    gil_sio = socketio.AsyncClient(reconnection=False)
    await gil_sio.connect(app.url, auth={"token": body["token"]}, transports=["websocket"], wait_timeout=10)
    guide = peer_mod.GuideSignal(gil_sio, timeout=20)
    sios, peers = [gil_sio], []
    try:
        await guide.call("join-room", {"roomId": room, "displayName": "Gil"})
        gil = peer_mod.Peer(guide, video=True, audio=True)
        peers.append(gil)
        await gil.load()  # get-rtp-capabilities -> rtp-capabilities event
        gil_ids = await asyncio.wait_for(gil.produce(video=True, audio=True), 30)  # transport-created/-connected, produced

        ann_sio, ann = await join(app, room, "Ann")
        sios.append(ann_sio)
        peers.append(ann)
        ann_ids = await asyncio.wait_for(ann.produce(video=True, audio=False), 30)
        gil_sees_ann = await asyncio.wait_for(gil.consume(ann_ids["video"]), 30)  # consumed event

        status, body = await http(app, "POST", "api/token", {"roomId": room, "displayName": "Lou"})
        lou_sio = socketio.AsyncClient(reconnection=False)
        await lou_sio.connect(app.url, auth={"token": body["token"]}, transports=["websocket"], wait_timeout=10)
        sios.append(lou_sio)
        lou_signal = peer_mod.SocketIOSignal(lou_sio, timeout=20)
        ack = await lou_signal.call("join-room", {"roomId": room, "displayName": "Lou"})
        existing = {(p["producerId"], p["kind"], p["source"]) for p in ack["producers"]}
        assert existing == {(gil_ids["video"], "video", "camera"), (gil_ids["audio"], "audio", "mic"),
                            (ann_ids["video"], "video", "camera")}
        assert {p["displayName"] for p in ack["participants"]} == {"Gil", "Ann"}
        lou = peer_mod.Peer(lou_signal)
        peers.append(lou)
        await lou.load(ack["rtpCapabilities"])
        lou_counters = [await asyncio.wait_for(lou.consume(pid), 30) for pid, _, _ in sorted(existing)]
        for counter in [*lou_counters, gil_sees_ann]:
            assert await counter.wait_frames(3, timeout=45) > 0

        # capacity 3: the fourth is refused, with the stable code
        status, body = await http(app, "POST", "api/token", {"roomId": room, "displayName": "Max"})
        max_sio = socketio.AsyncClient(reconnection=False)
        await max_sio.connect(app.url, auth={"token": body["token"]}, transports=["websocket"], wait_timeout=10)
        sios.append(max_sio)
        full = await max_sio.call("join-room", {"roomId": room, "displayName": "Max"}, timeout=20)
        assert full["ok"] is False and full["error"]["code"] == "room-full"
        # bad payloads: invalid-request naming the field, and the guide client gets an error event
        bad = await lou_sio.call("consume", {"transportId": 7, "producerId": "x", "rtpCapabilities": {}},
                                 timeout=20)
        assert bad["ok"] is False and bad["error"]["code"] == "invalid-request"
        assert "transportId" in bad["error"]["message"]
        with pytest.raises(peer_mod.SignalError) as err:
            await guide.call("create-transport", {"direction": "sideways"})
        assert err.value.code == "invalid-request"
    finally:
        for peer in peers:
            await peer.close()
        for sio in sios:
            if sio.connected:
                await sio.disconnect()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        loads = [await call(w.load.remote()) for w in app.workers.values()]
        if not any(load[k] for load in loads for k in ("transportCount", "producerCount", "consumerCount")):
            break
        await asyncio.sleep(0.1)
    assert not any(load[k] for load in loads for k in ("transportCount", "producerCount", "consumerCount"))
