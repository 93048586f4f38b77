"""The media worker end to end with real clients: pymediasoup (aiortc) peers over loopback UDP doing
ICE-lite, DTLS and SRTP against a Worker, decoding the frames the SFU forwards."""

from __future__ import annotations

import asyncio

import pytest

from studyrooms.sfu.channel import WorkerChannel
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker
from support.peer import ChannelSignal, Peer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture(params=[("shared", "compiled"), ("per-transport", "compiled"), ("shared", "python")],
                ids=["shared", "per-transport", "shared-python-path"])
async def worker(request):
    from studyrooms.media import fastpath

    port_mode, path = request.param
    fastpath.configure("on" if path == "compiled" else "off")
    fastpath.set_webrtc(path == "compiled")  # these clients are WebRTC (pymediasoup)
    request.addfinalizer(fastpath.configure)
    request.addfinalizer(lambda: fastpath.set_webrtc(True))
    options = WorkerOptions(port_mode=port_mode, rtc_min_port=42000, rtc_max_port=42999)
    worker = await Worker.create("w-test", options)
    events: list[tuple[str, dict]] = []
    worker.observer.on("event", lambda name, data: events.append((name, data)))
    worker.events = events
    yield worker
    await worker.close()


@pytest.fixture
async def shared_worker():
    worker = await Worker.create("w-test", WorkerOptions(rtc_min_port=43000, rtc_max_port=43999))
    events: list[tuple[str, dict]] = []
    worker.observer.on("event", lambda name, data: events.append((name, data)))
    worker.events = events
    yield worker
    await worker.close()


async def _room(worker):
    channel = WorkerChannel(worker)
    router_id = (await channel.request("create_router", {}))["routerId"]
    return channel, ChannelSignal(channel, router_id)


async def _close_all(*peers):
    await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)


async def test_three_consumers_decode_video_and_audio(worker):
    channel, signal = await _room(worker)
    sender = Peer(signal, video=True, audio=True)
    await sender.load()
    ids = await sender.produce(video=True, audio=True)
    receivers = [Peer(signal) for _ in range(3)]
    try:
        video, audio = [], []
        for peer in receivers:
            await peer.load()
            video.append(await peer.consume(ids["video"]))
            audio.append(await peer.consume(ids["audio"]))
        for counter in video:
            assert await counter.wait_frames(15, timeout=20) >= 15
            assert counter.sizes == {(320, 240)}
        for counter in audio:
            assert await counter.wait_frames(15, timeout=10) >= 15
        stats = await channel.request("get_stats", {})
        assert stats["consumerCount"] == 6 and stats["producerCount"] == 2
        # every transport is ICE + DTLS connected and nothing went out unencrypted
        for transport in worker.transports.values():
            assert transport.media_ready
    finally:
        await _close_all(sender, *receivers)


async def test_pause_stops_frames_and_resume_restarts_from_keyframe(shared_worker):
    channel, signal = await _room(shared_worker)
    sender, receiver = Peer(signal, video=True), Peer(signal)
    try:
        await sender.load()
        ids = await sender.produce(video=True)
        await receiver.load()
        counter = await receiver.consume(ids["video"])
        assert await counter.wait_frames(10, timeout=20) >= 10
        consumer_id = next(iter(receiver.consumers))
        consumer = shared_worker.consumers[consumer_id]

        await channel.request("pause_consumer", {"consumerId": consumer_id})
        await asyncio.sleep(0.5)  # frames already in flight / in aiortc's jitter buffer
        sent_at_pause = consumer.send_stream.packets
        frames_at_pause = counter.frames
        await asyncio.sleep(1.5)
        assert consumer.send_stream.packets == sent_at_pause, "packets forwarded while paused"
        assert counter.frames - frames_at_pause <= 1

        requests_before = consumer.producer.keyframe_requests_sent
        await channel.request("resume_consumer", {"consumerId": consumer_id})
        assert await counter.wait_frames(10, timeout=15) >= frames_at_pause + 10
        # resume asked the producer for a keyframe, and forwarding restarted on one
        assert consumer.producer.keyframe_requests_sent > requests_before
        assert consumer.send_stream.packets > sent_at_pause
    finally:
        await _close_all(sender, receiver)


async def test_closing_the_producer_closes_every_consumer(shared_worker):
    channel, signal = await _room(shared_worker)
    sender = Peer(signal, video=True)
    receivers = [Peer(signal) for _ in range(3)]
    try:
        await sender.load()
        ids = await sender.produce(video=True)
        counters = []
        for peer in receivers:
            await peer.load()
            counters.append(await peer.consume(ids["video"]))
        for counter in counters:
            assert await counter.wait_frames(5, timeout=20) >= 5
        consumer_ids = {cid for peer in receivers for cid in peer.consumers}

        await channel.request("close_producer", {"producerId": ids["video"]})

        closed = {d["consumerId"] for name, d in shared_worker.events if name == "consumer-closed"}
        assert closed == consumer_ids
        assert all(d["reason"] == "producer-closed" for n, d in shared_worker.events if n == "consumer-closed")
        assert shared_worker.consumers == {} and shared_worker.producers == {}
        dump = await channel.request("dump", {})
        assert dump["consumerIds"] == [] and dump["producerIds"] == []
        # media stops: nothing more reaches the receivers
        await asyncio.sleep(0.5)
        frozen = [c.frames for c in counters]
        await asyncio.sleep(1.0)
        assert [c.frames for c in counters] == frozen
        with pytest.raises(Exception) as err:
            await channel.request("resume_consumer", {"consumerId": next(iter(consumer_ids))})
        assert getattr(err.value, "code", None) == "not-found"
    finally:
        await _close_all(sender, *receivers)


@pytest.mark.parametrize("forwarding_path", ["python"], indirect=True)
async def test_nack_retransmission_keeps_consumer_decoding_under_loss(forwarding_path, shared_worker):
    """Every 15th packet toward the consumer is lost on the way out; the consumer's NACKs are
    answered from the retransmission buffer and decoding goes on at the source rate.
    Python path only: the loss is injected by wrapping transport.send_rtp, which the compiled core
    does not call (its NACK answers: tests/sfu/test_fastpath_differential.py, same bytes as here)."""
    channel, signal = await _room(shared_worker)
    sender, receiver = Peer(signal, video=True), Peer(signal)
    try:
        await sender.load()
        ids = await sender.produce(video=True)
        await receiver.load()
        counter = await receiver.consume(ids["video"])
        assert await counter.wait_frames(5, timeout=20) >= 5
        consumer = shared_worker.consumers[next(iter(receiver.consumers))]
        transport = consumer.transport
        original_send = transport.send_rtp
        state = {"n": 0, "dropped": 0}
        first_transmissions = {"seen": set()}

        def lossy_send(data: bytes) -> None:
            seq = int.from_bytes(data[2:4], "big")
            if seq not in first_transmissions["seen"]:
                first_transmissions["seen"].add(seq)
                state["n"] += 1
                if state["n"] % 15 == 0:
                    state["dropped"] += 1
                    return
            original_send(data)

        transport.send_rtp = lossy_send
        start = counter.frames
        await asyncio.sleep(4.0)
        decoded = counter.frames - start
        assert state["dropped"] >= 3
        assert consumer.send_stream.nacks_received > 0
        assert consumer.send_stream.retransmitted >= state["dropped"] // 2
        assert decoded >= 60, f"only {decoded} frames in 4 s under 1/15 loss"
    finally:
        await _close_all(sender, receiver)


async def test_ingress_loss_is_nacked_toward_the_producer(shared_worker):
    channel, signal = await _room(shared_worker)
    sender, receiver = Peer(signal, video=True), Peer(signal)
    try:
        await sender.load()
        ids = await sender.produce(video=True)
        await receiver.load()
        counter = await receiver.consume(ids["video"])
        assert await counter.wait_frames(5, timeout=20) >= 5
        producer = shared_worker.producers[ids["video"]]
        transport = producer.transport
        original = transport.receive_rtp
        state = {"n": 0}
        media_ssrc = producer.streams[0].ssrc

        def lossy_receive(data: bytes) -> None:
            if int.from_bytes(data[8:12], "big") == media_ssrc:
                state["n"] += 1
                if state["n"] % 20 == 0:
                    return  # lose some media packets on the way in (RTX repairs are let through)
            original(data)

        transport.receive_rtp = lossy_receive
        start = counter.frames
        await asyncio.sleep(4.0)
        stream = producer.streams[0]
        assert stream.nacks_sent > 0
        assert stream.rtx_packets > 0  # aiortc answered over RTX and the SFU unwrapped it
        assert counter.frames - start >= 60
    finally:
        await _close_all(sender, receiver)


async def test_late_consumer_starts_on_a_keyframe(shared_worker):
    channel, signal = await _room(shared_worker)
    sender, late = Peer(signal, video=True), Peer(signal)
    try:
        await sender.load()
        ids = await sender.produce(video=True)
        await asyncio.sleep(2.5)  # the stream is well past its first keyframe
        producer = shared_worker.producers[ids["video"]]
        assert producer.streams[0].packets > 50
        requests_before = producer.keyframe_requests_sent
        await late.load()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        counter = await late.consume(ids["video"])
        assert await counter.wait_frames(1, timeout=10) >= 1
        assert loop.time() - t0 < 5.0
        assert producer.keyframe_requests_sent > requests_before
        consumer = shared_worker.consumers[next(iter(late.consumers))]
        assert await counter.wait_frames(20, timeout=10) >= 21
        assert consumer.send_stream.packets > 0
    finally:
        await _close_all(sender, late)
