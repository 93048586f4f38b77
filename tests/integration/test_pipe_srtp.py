"""Pipes between a room's workers carry SRTP where they leave a node: with ``media.pipe_srtp =
"always"`` (in one process every pipe stays on one node, so the default would keep plain RTP) the
bytes captured on the pipe are SRTP under the keys the two ends exchanged, never plain RTP, and
the peers on the two workers still decode each other; with the default the in-process pipe is plain."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import socketio

from studyrooms.config import Settings
from studyrooms.standalone import start_standalone
from support.peer import Peer, SocketIOSignal
from support.wire import capture_or_skip, check_srtp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def join(app, name: str):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{app.url}/api/token", json={"roomId": "big", "displayName": name}) as resp:
            token = (await resp.json())["token"]
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(app.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    signal = SocketIOSignal(sio)
    joined = await signal.call("join-room", {"roomId": "big", "displayName": name})
    peer = Peer(signal, video=True)
    await peer.load(joined["rtpCapabilities"])
    return sio, peer


def objects(app) -> list[int]:
    return [len(w.transports) + len(w.producers) + len(w.consumers) + len(w.routers) for w in app.workers]


@pytest.mark.parametrize("mode", ["always", "inter-node"])
async def test_spread_room_pipe_is_srtp_on_the_wire_and_peers_decode(mode):
    settings = Settings(rooms={"max_consumers_per_worker": 1, "empty_room_timeout_s": 0.2},
                        media={"pipe_srtp": mode})
    app = await start_standalone(settings, num_workers=2, port=0)
    peers, sios = [], []
    capture = capture_or_skip()
    try:
        with capture:
            for name in ("Ada", "Bob"):
                sio, peer = await join(app, name)
                sios.append(sio)
                peers.append(peer)
            ada, bob = peers
            ada_video = (await ada.produce(video=True))["video"]
            sees = await bob.consume(ada_video)  # Ada's worker now carries one consumer: the limit
            assert await sees.wait_frames(3, timeout=20) >= 3
            cat_sio, cat = await join(app, "Cat")  # spreads to the second worker
            sios.append(cat_sio)
            peers.append(cat)
            cat_video = (await cat.produce(video=True))["video"]
            cat_sees_ada = await cat.consume(ada_video)  # piped home -> other
            ada_sees_cat = await ada.consume(cat_video)  # piped other -> home
            for counter in (cat_sees_ada, ada_sees_cat):
                assert await counter.wait_frames(10, timeout=25) >= 10

            pipes = app.service.rooms["big"].dump()["pipes"]
            assert len(pipes) == 2 and {p["srtp"] for p in pipes} == {mode == "always"}
            for pipe in pipes:
                local, remote = pipe["local"], pipe["remote"]
                wire = await asyncio.to_thread(capture.wait_for, local["tuple"]["localPort"],
                                               remote["tuple"]["localPort"], 20, 10)
                assert len(wire) >= 20, f"no traffic captured on the pipe {pipe['from']} -> {pipe['to']}"
                if mode == "always":
                    assert check_srtp(wire, local["srtpParameters"], remote["srtpParameters"]) >= 20
                else:
                    assert "srtpParameters" not in local
                    assert all(d[0] & 0xC0 == 0x80 for d in wire)
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        for sio in sios:
            if sio.connected:
                await sio.disconnect()
        for _ in range(100):
            if objects(app) == [0, 0]:
                break
            await asyncio.sleep(0.05)
        leftover = objects(app)
        await app.stop()
    assert leftover == [0, 0]
