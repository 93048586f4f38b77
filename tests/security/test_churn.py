"""Churn with real clients: join / produce / consume / leave cycles, many of them cut abruptly
mid-handshake (the websocket dropped right after create-transport, before DTLS completes, right
after produce, right after consume). Afterwards the workers hold no transports, producers,
consumers or routers, the service no rooms, participants, sessions or rate limiters; RSS stays
within a bounded slack after warm-up; every closed consumer freed its outbound SRTP stream
(WebRtcTransport.forget_tx_ssrc)."""

from __future__ import annotations

import asyncio
import gc

import psutil
import pytest

from studyrooms.sfu.webrtc_transport import WebRtcTransport
from studyrooms.standalone import start_standalone
from support.peer import Peer

from sechelpers import eventually, join, settings, worker_counts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:The HMAC key is")]

FP = {"algorithm": "sha-256", "value": ":".join(["AB"] * 32)}
OPUS = {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}


async def drop(client) -> None:
    """Abrupt: the websocket goes away without a Socket.IO/Engine.IO goodbye."""
    ws = getattr(client.sio.eio, "ws", None)
    if ws is not None:
        await ws.close()
    await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(client.sio.disconnect(), 2)
    except Exception:  # noqa: BLE001 - already gone
        pass


async def cycle_signaling(app, room: str, i: int, cut: str, producer_id: str | None) -> None:
    c = await join(app, room, f"S{i}")
    send = (await c.signal.call("create-transport", {"direction": "send"}))["id"]
    if cut == "after-create-transport":
        return await drop(c)
    await c.signal.call("connect-transport", {"transportId": send, "dtlsParameters": {"role": "server",
                                                                                      "fingerprints": [FP]}})
    if cut == "before-dtls-completes":  # DTLS is waiting for a client that never comes
        return await drop(c)
    await c.signal.call("produce", {"transportId": send, "kind": "audio",
                                    "rtpParameters": {"codecs": [OPUS], "encodings": [{"ssrc": 7000 + i}]}})
    if cut == "after-produce":
        return await drop(c)
    recv = (await c.signal.call("create-transport", {"direction": "recv"}))["id"]
    if producer_id:
        reply = await c.signal.call("consume", {"transportId": recv, "producerId": producer_id,
                                                "rtpCapabilities": c.joined["rtpCapabilities"]})
        await c.signal.call("resume-consumer", {"consumerId": reply["id"]})
    if cut == "after-consume":
        return await drop(c)
    await c.signal.call("leave-room")
    await c.close()


async def cycle_media(app, room: str, i: int, abrupt: bool, consumer_ssrcs: list[int]) -> None:
    a = await join(app, room, f"A{i}")
    b = await join(app, room, f"B{i}")
    pa, pb = Peer(a.signal, video=True), Peer(b.signal)
    try:
        await pa.load(a.joined["rtpCapabilities"])
        await pb.load(b.joined["rtpCapabilities"])
        pid = (await pa.produce(video=True))["video"]
        counter = await pb.consume(pid)
        consumer_ssrcs.append(next(iter(pb.consumers.values())).rtpParameters.encodings[0].ssrc)
        if not abrupt:
            assert await counter.wait_frames(3, timeout=20) >= 3
    finally:
        if abrupt:  # both sockets vanish mid-media
            await drop(a)
            await drop(b)
        else:
            await b.signal.call("leave-room")
            await a.close()
            await b.close()
        await pa.close()
        await pb.close()


async def settle(app) -> bool:
    def clean() -> bool:
        svc = app.service
        return (worker_counts(app) == {"routers": 0, "transports": 0, "producers": 0, "consumers": 0}
                and not svc.rooms and not svc._by_sid and not svc._limiters and not app.signaling._sessions)
    return await eventually(clean, timeout=15)


async def test_churn_leaves_nothing_behind(monkeypatch):
    forgotten: list[int] = []
    original = WebRtcTransport.forget_tx_ssrc

    def spy(self, ssrc):
        forgotten.append(ssrc)
        return original(self, ssrc)

    monkeypatch.setattr(WebRtcTransport, "forget_tx_ssrc", spy)
    app = await start_standalone(settings(), num_workers=2, port=0)
    proc = psutil.Process()
    consumer_ssrcs: list[int] = []
    cuts = ["after-create-transport", "before-dtls-completes", "after-produce", "after-consume", "clean"]
    cycles = 0
    try:
        # a long-lived producer so that signaling cycles also consume
        host = await join(app, "churn", "Host")
        await host.signal.call("create-transport", {"direction": "send"})
        hp = Peer(host.signal, video=True)
        await hp.load(host.joined["rtpCapabilities"])
        host_pid = (await hp.produce(video=True))["video"]

        async def round_(n: int, offset: int) -> None:
            nonlocal cycles
            for i in range(n):
                k = offset + i
                # sockets 0 and 3 share the host's room (and consume its video), 1 and 2 have their own
                await asyncio.gather(*(cycle_signaling(app, "churn" if j % 3 == 0 else f"churn{j}", k * 10 + j,
                                                       cuts[(k + j) % len(cuts)], host_pid if j % 3 == 0 else None)
                                       for j in range(4)))
                cycles += 4
                if k % 2 == 0:
                    await cycle_media(app, f"media{k}", k, abrupt=(k % 4 == 2), consumer_ssrcs=consumer_ssrcs)
                    cycles += 1

        await round_(3, 0)  # warm-up
        gc.collect()
        await asyncio.sleep(0.5)
        rss0 = proc.memory_info().rss
        await round_(6, 3)
        await hp.close()
        await host.close()
        assert await settle(app), (worker_counts(app), list(app.service.rooms), app.signaling._sessions)
        gc.collect()
        rss1 = proc.memory_info().rss
        print(f"churn: {cycles} cycles, RSS {rss0 / 1e6:.1f} -> {rss1 / 1e6:.1f} MB, "
              f"{len(consumer_ssrcs)} media consumers, {len(forgotten)} SRTP streams forgotten")
        assert cycles >= 30
        assert rss1 - rss0 < 60 * 1024 * 1024, f"RSS grew by {(rss1 - rss0) / 1e6:.1f} MB"
        # every consumer the clients saw had its outbound SRTP stream freed when it closed
        assert consumer_ssrcs and set(consumer_ssrcs) <= set(forgotten)
    finally:
        await app.stop()
