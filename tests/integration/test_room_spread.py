"""A room that outgrows one media worker spreads to another (mediasoup's pipeToRouter under the
room): real Socket.IO clients with pymediasoup devices decode each other across the two workers,
and everything - pipes included - is gone after they leave."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import socketio

from studyrooms.config import Settings
from studyrooms.standalone import start_standalone
from support.peer import Peer, SocketIOSignal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
async def server():
    settings = Settings(rooms={"max_consumers_per_worker": 2, "empty_room_timeout_s": 0.2})
    app = await start_standalone(settings, num_workers=2, port=0)
    yield app
    await app.stop()


async def join(app, name: str):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{app.url}/api/token", json={"roomId": "big", "displayName": name}) as resp:
            token = (await resp.json())["token"]
    sio = socketio.AsyncClient(reconnection=False)
    events: list = []
    for event in ("consumer-closed", "producer-closed", "participant-left", "new-producer"):
        sio.on(event, lambda data, e=event: events.append((e, data)))
    await sio.connect(app.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    signal = SocketIOSignal(sio)
    joined = await signal.call("join-room", {"roomId": "big", "displayName": name})
    peer = Peer(signal, video=True)
    await peer.load(joined["rtpCapabilities"])
    return sio, peer, events


def objects(app) -> list[int]:
    return [len(w.transports) + len(w.producers) + len(w.consumers) + len(w.routers) for w in app.workers]


async def test_room_spreads_to_a_second_worker_and_media_crosses_it(server):
    ada_sio, ada, _ = await join(server, "Ada")
    bob_sio, bob, bob_events = await join(server, "Bob")
    peers, sios = [ada, bob], [ada_sio, bob_sio]
    try:
        ada_video = (await ada.produce(video=True))["video"]
        bob_video = (await bob.produce(video=True))["video"]
        assert await (await bob.consume(ada_video)).wait_frames(5, timeout=20) >= 5
        assert await (await ada.consume(bob_video)).wait_frames(5, timeout=20) >= 5
        home = next(w for w in server.workers if w.routers)
        assert len(home.consumers) == 2  # the home worker is at its (test) limit

        cat_sio, cat, _ = await join(server, "Cat")
        peers.append(cat)
        sios.append(cat_sio)
        other = next(w for w in server.workers if w is not home)
        assert len(other.routers) == 1  # Cat's router is on the second worker
        cat_video = (await cat.produce(video=True))["video"]
        assert cat_video in other.producers
        # Cat consumes Ada and Bob (piped home -> other); Ada consumes Cat (piped other -> home)
        cat_sees = [await cat.consume(ada_video), await cat.consume(bob_video)]
        ada_sees_cat = await ada.consume(cat_video)
        for counter in (*cat_sees, ada_sees_cat):
            assert await counter.wait_frames(10, timeout=25) >= 10
        assert {c.type for c in home.consumers.values()} >= {"pipe"}
        assert ada_video in other.producers and bob_video in other.producers  # the piped producers
        assert cat_video in home.producers
        stats = await SocketIOSignal(cat_sio).call("get-stats")
        assert len(stats["workers"]) == 2

        # Bob leaves: his producer and its pipe go; Cat is told her consumer of Bob closed
        cat_events: list = []
        cat_sio.on("consumer-closed", lambda data: cat_events.append(data))
        await bob_sio.disconnect()
        for _ in range(100):
            if bob_video not in other.producers and cat_events:
                break
            await asyncio.sleep(0.05)
        assert bob_video not in home.producers and bob_video not in other.producers
        assert [e["producerId"] for e in cat_events] == [bob_video]
        # Ada still reaches Cat across the workers
        assert await cat_sees[0].wait_frames(5, timeout=10) >= 15
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        for sio in sios:
            if sio.connected:
                await sio.disconnect()
    for _ in range(100):
        if objects(server) == [0, 0]:
            break
        await asyncio.sleep(0.05)
    assert objects(server) == [0, 0]  # routers, pipes, transports, producers, consumers: all gone


async def test_room_spread_over_two_workers_heals_when_one_dies(server):
    """The worker of a spread room's second router dies: the participant there gets media-reset
    (the producers of the others listed), the others producer-closed / consumer-closed for its
    producers; the pipes to the dead worker are closed on the live one; the participant comes back
    on the live worker, produces again, and is decoded by the others; nothing is left after."""
    ada_sio, ada, ada_events = await join(server, "Ada")
    bob_sio, bob, bob_events = await join(server, "Bob")
    peers, sios = [ada, bob], [ada_sio, bob_sio]
    try:
        ada_video = (await ada.produce(video=True))["video"]
        bob_video = (await bob.produce(video=True))["video"]
        await (await bob.consume(ada_video)).wait_frames(3, timeout=20)
        await (await ada.consume(bob_video)).wait_frames(3, timeout=20)
        home = next(w for w in server.workers if w.routers)
        cat_sio, cat, _ = await join(server, "Cat")
        peers.append(cat)
        sios.append(cat_sio)
        resets: list = []
        cat_sio.on("media-reset", lambda data: resets.append(data))
        other = next(w for w in server.workers if w is not home)
        cat_video = (await cat.produce(video=True))["video"]
        await (await cat.consume(ada_video)).wait_frames(3, timeout=25)  # piped home -> other
        ada_sees_cat = await ada.consume(cat_video)  # piped other -> home
        await ada_sees_cat.wait_frames(3, timeout=25)
        assert any(c.type == "pipe" for c in home.consumers.values()) and home.producers.get(cat_video)

        other.observer.remove_all_listeners()  # a killed process tells nobody anything
        await other.close()  # the worker's process is gone (as after a SIGKILL)
        assert await server.service.worker_lost(other.id, "media worker died (test)") == 1
        for _ in range(100):
            if resets:
                break
            await asyncio.sleep(0.05)
        assert [sorted(p["producerId"] for p in r["producers"]) for r in resets] == [sorted([ada_video, bob_video])]
        for _ in range(100):
            if any(e == "producer-closed" and d["producerId"] == cat_video for e, d in ada_events):
                break
            await asyncio.sleep(0.05)
        assert ("consumer-closed", {"consumerId": ada_sees_cat_id(ada, cat_video), "producerId": cat_video}) in ada_events
        assert cat_video not in home.producers  # the pipe producer went
        assert not [t for t in home.transports.values() if type(t).__name__ == "PipeTransport"]
        assert not [c for c in home.consumers.values() if c.type == "pipe"]

        # Cat does what media-reset asks: new transports (now on the live worker), produce, consume
        await cat.close()
        cat = Peer(SocketIOSignal(cat_sio), video=True)
        peers.append(cat)
        await cat.load(await SocketIOSignal(cat_sio).call("get-rtp-capabilities"))
        new_cat_video = (await cat.produce(video=True))["video"]
        assert new_cat_video in home.producers
        assert await (await cat.consume(bob_video)).wait_frames(5, timeout=20) >= 5
        assert await (await ada.consume(new_cat_video)).wait_frames(5, timeout=20) >= 5
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        for sio in sios:
            if sio.connected:
                await sio.disconnect()
    for _ in range(100):
        if objects(server)[server.workers.index(home)] == 0:
            break
        await asyncio.sleep(0.05)
    assert objects(server)[server.workers.index(home)] == 0


def ada_sees_cat_id(peer: Peer, producer_id: str) -> str:
    return next(cid for cid, c in peer.consumers.items() if c.producerId == producer_id)
