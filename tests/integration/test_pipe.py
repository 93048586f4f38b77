"""A room spread over two media workers: a producer on worker A is piped to a router on worker B
(PipeTransports over loopback UDP, mediasoup's pipeToRouter), where real pymediasoup consumers
decode it; the pipe follows the origin producer's pause, resume and close."""

from __future__ import annotations

import asyncio

import pytest

from studyrooms.sfu.channel import WorkerChannel
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker
from support.peer import ChannelSignal, Peer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture
async def workers():
    a = await Worker.create("wa", WorkerOptions(rtc_min_port=44000, rtc_max_port=44499))
    b = await Worker.create("wb", WorkerOptions(rtc_min_port=44500, rtc_max_port=44999))
    events = []
    b.observer.on("event", lambda n, d: events.append((n, d)))
    b.events = events
    yield a, b
    await a.close()
    await b.close()


async def test_consumers_on_another_worker_decode_a_piped_producer(workers):
    a, b = workers
    chan_a, chan_b = WorkerChannel(a), WorkerChannel(b)
    router_a = (await chan_a.request("create_router", {}))["routerId"]
    router_b = (await chan_b.request("create_router", {}))["routerId"]
    sender = Peer(ChannelSignal(chan_a, router_a), video=True, audio=True)
    receivers = [Peer(ChannelSignal(chan_b, router_b)) for _ in range(2)]
    try:
        await sender.load()
        ids = await sender.produce(video=True, audio=True)
        for kind in ("video", "audio"):
            result = await a.routers[router_a].pipe_to_router(ids[kind], b.routers[router_b])
            assert result["pipeProducerId"] == ids[kind]  # same id across workers
        video = []
        for peer in receivers:
            await peer.load()
            video.append(await peer.consume(ids["video"]))
            await peer.consume(ids["audio"])
        for counter in video:
            assert await counter.wait_frames(15, timeout=20) >= 15
        # worker A sends one copy per kind over the pipe; worker B fans out to the consumers
        assert len(a.consumers) == 2 and len(b.consumers) == 4
        for consumer in a.consumers.values():
            assert consumer.type == "pipe" and consumer.send_stream.packets > 0

        # pausing the origin pauses the pipe producer, so B's consumers stop
        await chan_a.request("pause_producer", {"producerId": ids["video"]})
        assert b.producers[ids["video"]].paused
        await asyncio.sleep(0.5)
        frozen = [c.frames for c in video]
        await asyncio.sleep(1.0)
        assert [c.frames for c in video] == frozen
        await chan_a.request("resume_producer", {"producerId": ids["video"]})
        for counter, before in zip(video, frozen):
            assert await counter.wait_frames(10, timeout=15) >= before + 10

        # closing the origin closes the pipe and every consumer on B (told why)
        await chan_a.request("close_producer", {"producerId": ids["video"]})
        assert ids["video"] not in b.producers
        closed = [d for n, d in b.events if n == "consumer-closed" and d["producerId"] == ids["video"]]
        assert len(closed) == 2 and all(d["reason"] == "producer-closed" for d in closed)
        assert len(a.consumers) == 1 and len(b.consumers) == 2  # the audio pipe and its consumers remain
    finally:
        await asyncio.gather(sender.close(), *(p.close() for p in receivers), return_exceptions=True)


async def test_pipe_within_one_worker_gets_a_fresh_producer_id(workers):
    a, _ = workers
    chan = WorkerChannel(a)
    r1 = (await chan.request("create_router", {}))["routerId"]
    r2 = (await chan.request("create_router", {}))["routerId"]
    transport = await chan.request("create_plain_transport", {"routerId": r1, "comedia": True})
    producer = await chan.request("produce", {"transportId": transport["id"], "kind": "video", "rtpParameters": {
        "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}],
        "encodings": [{"ssrc": 4242}], "rtcp": {"cname": "c"}}})
    result = await chan.request("pipe_to_router", {"routerId": r1, "targetRouterId": r2,
                                                   "producerId": producer["id"]})
    assert result["pipeProducerId"] != producer["id"]
    assert result["pipeProducerId"] in a.routers[r2].producers
    await chan.request("close_producer", {"producerId": producer["id"]})
    assert result["pipeProducerId"] not in a.producers
    assert result["localTransportId"] not in a.transports and result["remoteTransportId"] not in a.transports
