"""The bandwidth allocator ranks the ROOM's active speaker (issue 10 with issue 11): a room spread
over two media workers (two routers), real Socket.IO clients with pymediasoup devices. Cat talks on
the second worker; Ada, on the first, consumes Cat's video but not her audio, so Ada's router never
sees Cat's audio level. Only the room, which merges the levels of all its routers, knows Cat is
the speaker; it tells Ada's worker through the consumer inputs (``speaker``, ``speakerRecency`` on
``consume`` / ``set_consumers_forwarding``), and Ada's ``get-stats`` shows Cat's video in the
allocator's "speaker" group while Bob's (silent, on Ada's own router) is "other"; when Cat mutes,
the group goes back to "other" (her router reports the silence)."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import numpy as np
import pytest
import socketio
from aiortc.mediastreams import AudioStreamTrack

import support.peer as peer_module
from studyrooms.config import Settings
from studyrooms.standalone import start_standalone
from support.peer import Peer, SocketIOSignal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class LoudTrack(AudioStreamTrack):
    """A 440 Hz tone at about -9 dBov: aiortc puts its level in ssrc-audio-level."""

    _phase = 0

    async def recv(self):
        frame = await super().recv()
        n = frame.samples
        t = (np.arange(n) + self._phase) / frame.sample_rate
        self._phase += n
        tone = (0.35 * 32767 * np.sin(2 * math.pi * 440 * t)).astype("<i2")
        frame.planes[0].update(np.repeat(tone, len(frame.layout.channels)).tobytes())
        return frame


@pytest.fixture
async def server():
    settings = Settings(rooms={"max_consumers_per_worker": 2, "empty_room_timeout_s": 0.2})
    app = await start_standalone(settings, num_workers=2, port=0)
    yield app
    await app.stop()


async def join(app, name: str, *, loud: bool = False):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{app.url}/api/token", json={"roomId": "talk", "displayName": name}) as resp:
            token = (await resp.json())["token"]
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(app.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    signal = SocketIOSignal(sio)
    joined = await signal.call("join-room", {"roomId": "talk", "displayName": name})
    peer = Peer(signal, video=True, audio=loud)
    await peer.load(joined["rtpCapabilities"])
    return sio, peer, joined["participantId"]


async def test_the_room_speaker_on_another_router_is_the_allocators_speaker(server, monkeypatch):
    ada_sio, ada, _ = await join(server, "Ada")
    bob_sio, bob, _ = await join(server, "Bob")
    peers, sios = [ada, bob], [ada_sio, bob_sio]
    try:
        ada_video = (await ada.produce(video=True))["video"]
        bob_video = (await bob.produce(video=True))["video"]
        assert await (await bob.consume(ada_video)).wait_frames(3, timeout=20) >= 3
        ada_sees_bob = await ada.consume(bob_video)
        assert await ada_sees_bob.wait_frames(3, timeout=20) >= 3
        home = next(w for w in server.workers if w.routers)
        other = next(w for w in server.workers if w is not home)

        monkeypatch.setattr(peer_module, "AudioStreamTrack", LoudTrack)
        cat_sio, cat, cat_id = await join(server, "Cat", loud=True)
        peers.append(cat)
        sios.append(cat_sio)
        assert len(other.routers) == 1  # Cat's router is on the second worker
        cat_ids = await cat.produce(video=True, audio=True)
        assert cat_ids["audio"] in other.producers
        ada_sees_cat = await ada.consume(cat_ids["video"])  # her video only: no audio piped home
        assert await ada_sees_cat.wait_frames(3, timeout=25) >= 3
        assert cat_ids["audio"] not in home.producers  # Ada's worker never gets Cat's audio

        cat_consumer = next(cid for cid, c in ada.consumers.items() if c.producerId == cat_ids["video"])
        bob_consumer = next(cid for cid, c in ada.consumers.items() if c.producerId == bob_video)
        signal = SocketIOSignal(ada_sio)

        async def groups() -> dict[str, str]:
            stats = await signal.call("get-stats")
            me = next(p for p in stats["participants"] if p.get("videoAllocation"))
            return {a["consumerId"]: a["group"] for a in me["videoAllocation"]}

        # the room's decision, on Ada's worker: speaker now, and first in the speaker order once
        # she has held the floor for rooms.speaker_dwell_s
        inputs = home.consumers[cat_consumer].transport.allocator.inputs(cat_consumer)
        seen: dict[str, str] = {}
        for _ in range(60):
            seen = await groups()
            if seen.get(cat_consumer) == "speaker" and inputs.speaker_recency > 0:
                break
            await asyncio.sleep(0.25)
        assert seen.get(cat_consumer) == "speaker", seen
        assert seen.get(bob_consumer) == "other", seen
        assert inputs.speaker and inputs.speaker_recency > 0
        assert home.consumers[bob_consumer].transport.allocator.inputs(bob_consumer).speaker_recency == 0

        # Cat mutes: her router reports silence, the room's speaker goes, and so does the group
        audio_producer = next(pr for pr in cat.producers.values() if pr.kind == "audio")
        audio_producer.pause()
        await SocketIOSignal(cat_sio).call("pause-producer", {"producerId": audio_producer.id})
        for _ in range(60):
            seen = await groups()
            if seen.get(cat_consumer) == "other":
                break
            await asyncio.sleep(0.25)
        assert seen.get(cat_consumer) == "other", seen
        assert not inputs.speaker and inputs.speaker_recency > 0  # she still spoke last

    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        for sio in sios:
            if sio.connected:
                await sio.disconnect()
