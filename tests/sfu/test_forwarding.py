"""Forwarding through a real Worker over PlainTransports (plain RTP on loopback UDP): what a
consumer receives byte for byte, RTCP both ways, keyframe-request throttling, simulcast layers and
the close cascade seen through events and dump()."""

from __future__ import annotations

import asyncio

import pytest
from support.wait import until

from studyrooms.errors import InvalidStateError, NotFoundError
from studyrooms.media import rtcp as rtcp_bytes
from studyrooms.media.rtp import build_rtp, iter_extensions, parse_rtp
from studyrooms.net.udp import bind_udp
from studyrooms.sfu.channel import WorkerChannel
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.parametrize("forwarding_path", ["python", "compiled"], indirect=True)]

VP8_KEY = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]) + bytes(300)   # S=1, P bit clear: keyframe
VP8_DELTA = bytes([0x10, 0x01]) + bytes(300)                    # P bit set: delta frame
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"


def vp8_producer(ssrc=1111, encodings=None, extensions=None, mid=None):
    params = {
        "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                    "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"},
                                     {"type": "goog-remb"}]}],
        "headerExtensions": extensions or [],
        "encodings": encodings or [{"ssrc": ssrc}],
        "rtcp": {"cname": "plain-sender", "reducedSize": True},
    }
    if mid is not None:
        params["mid"] = mid
    return params


class Endpoint:
    """The remote side of a PlainTransport: a UDP socket that records RTP and RTCP."""

    def __init__(self, sock):
        self.sock = sock
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        sock.on_datagram = self._on
        self.port = sock.local_address[1]

    def _on(self, data, addr):
        (self.rtcp if 192 <= data[1] <= 223 else self.rtp).append(bytes(data))

    def find(self, packet_type, fmt=None):
        """[(packet, offset, length)] of every RTCP packet of that type received so far."""
        return [(p, off, length) for p in self.rtcp for pt, f, off, length in rtcp_bytes.iter_rtcp(p)
                if pt == packet_type and (fmt is None or f == fmt)]

    def rtcp_types(self):
        out = []
        for packet in self.rtcp:
            out.extend((pt, fmt) for pt, fmt, _, _ in rtcp_bytes.iter_rtcp(packet))
        return out


@pytest.fixture
async def env(forwarding_path):
    worker = await Worker.create("w-fwd", WorkerOptions(rtc_min_port=46000, rtc_max_port=46999,
                                                        keyframe_request_interval_s=1.0))
    events: list[tuple[str, dict]] = []
    worker.observer.on("event", lambda n, d: events.append((n, d)))
    channel = WorkerChannel(worker)
    router_id = (await channel.request("create_router", {}))["routerId"]
    sockets = []

    async def endpoint():
        sock = await bind_udp("127.0.0.1", 0)
        sockets.append(sock)
        return Endpoint(sock)

    async def producer_side(params, kind="video", max_bitrate=None):
        data = {"routerId": router_id, "comedia": True}
        transport = await channel.request("create_plain_transport", data)
        if max_bitrate:
            await channel.request("set_max_incoming_bitrate",
                                  {"transportId": transport["id"], "bitrate": max_bitrate})
        producer = await channel.request("produce", {"transportId": transport["id"], "kind": kind,
                                                     "rtpParameters": params})
        sender = await endpoint()
        target = ("127.0.0.1", transport["tuple"]["localPort"])
        return transport, producer, sender, target

    async def consumer_side(producer_id, paused=False):
        transport = await channel.request("create_plain_transport", {"routerId": router_id})
        sink = await endpoint()
        await channel.request("connect_plain_transport",
                              {"transportId": transport["id"], "ip": "127.0.0.1", "port": sink.port})
        caps = (await channel.request("router_rtp_capabilities", {"routerId": router_id}))["rtpCapabilities"]
        consumer = await channel.request("consume", {"transportId": transport["id"], "producerId": producer_id,
                                                     "rtpCapabilities": caps, "paused": True})
        if not paused:
            await channel.request("resume_consumer", {"consumerId": consumer["id"]})
        return transport, consumer, sink

    yield type("Env", (), dict(worker=worker, channel=channel, router_id=router_id, events=events,
                               path=forwarding_path,
                               producer_side=staticmethod(producer_side),
                               consumer_side=staticmethod(consumer_side)))
    for sock in sockets:
        sock.close()
    await worker.close()


async def test_consumers_get_their_own_ssrc_pt_mid_and_continuous_seq_across_wraparound(env):
    transport, producer, sender, target = await env.producer_side(vp8_producer())
    consumers = [await env.consumer_side(producer["id"]) for _ in range(3)]
    start_seq, start_ts = 65530, 2**32 - 3000
    for i in range(12):
        payload = VP8_KEY if i == 0 else VP8_DELTA
        sender.sock.sendto(build_rtp(payload_type=96, seq=(start_seq + i) & 0xFFFF,
                                     ts=(start_ts + i * 3000) & 0xFFFFFFFF, ssrc=1111, payload=payload,
                                     marker=True), target)
        await asyncio.sleep(0.005)
    for _, _, sink in consumers:
        await until(lambda sink=sink: len(sink.rtp) >= 12)
    ssrcs = set()
    for _, info, sink in consumers:
        enc = info["rtpParameters"]["encodings"][0]
        pt = info["rtpParameters"]["codecs"][0]["payloadType"]
        parsed = [parse_rtp(p) for p in sink.rtp[:12]]
        assert {p[4] for p in parsed} == {enc["ssrc"]}
        assert {p[0] for p in parsed} == {pt} == {101}
        seqs = [p[2] for p in parsed]
        assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))  # continuous through 65535 -> 0
        tss = [p[3] for p in parsed]
        assert all((b - a) & 0xFFFFFFFF == 3000 for a, b in zip(tss, tss[1:]))  # spacing kept through 2^32
        assert sink.rtp[0].endswith(VP8_KEY) and sink.rtp[5].endswith(VP8_DELTA)
        # the MID header extension carries this consumer's own mid
        mid_id = next(e["id"] for e in info["rtpParameters"]["headerExtensions"] if e["uri"] == MID_URI)
        p0 = parsed[0]
        mids = [bytes(sink.rtp[0][o:o + n]) for i, o, n in iter_extensions(sink.rtp[0], p0[6], p0[7], p0[8])
                if i == mid_id]
        assert mids == [info["rtpParameters"]["mid"].encode()]
        ssrcs.add(enc["ssrc"])
    assert len(ssrcs) == 3


async def test_consumer_waits_for_a_keyframe_and_requests_one_throttled(env):
    transport, producer, sender, target = await env.producer_side(vp8_producer())
    _, consumer, sink = await env.consumer_side(producer["id"])
    for i in range(5):  # delta frames only: nothing may reach the consumer
        sender.sock.sendto(build_rtp(payload_type=96, seq=100 + i, ts=i * 3000, ssrc=1111, payload=VP8_DELTA),
                           target)
    await until(lambda: any(t == (206, 1) for t in sender.rtcp_types()))  # the SFU asked for a keyframe
    await asyncio.sleep(0.2)
    assert sink.rtp == []
    # the consumer's PLIs are forwarded, at most one per second toward the producer
    consumer_transport = env.worker.consumers[consumer["id"]].transport
    before = sum(1 for t in sender.rtcp_types() if t == (206, 1))
    for _ in range(10):
        sink.sock.sendto(rtcp_bytes.build_pli(0x1234, consumer["rtpParameters"]["encodings"][0]["ssrc"]),
                         ("127.0.0.1", consumer_transport.tuple()["localPort"]))
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    after_burst = sum(1 for t in sender.rtcp_types() if t == (206, 1))
    assert after_burst - before <= 1
    await asyncio.sleep(1.0)  # the throttled request is delayed, not lost
    assert sum(1 for t in sender.rtcp_types() if t == (206, 1)) - before >= 1
    sender.sock.sendto(build_rtp(payload_type=96, seq=105, ts=15000, ssrc=1111, payload=VP8_KEY), target)
    sender.sock.sendto(build_rtp(payload_type=96, seq=106, ts=18000, ssrc=1111, payload=VP8_DELTA), target)
    await until(lambda: len(sink.rtp) == 2)
    assert sink.rtp[0].endswith(VP8_KEY)


async def test_rtcp_reports_nack_and_remb(env):
    transport, producer, sender, target = await env.producer_side(vp8_producer(), max_bitrate=300_000)
    _, consumer, sink = await env.consumer_side(producer["id"])
    for i in range(30):
        if i == 10:
            continue  # lost on the way in: the SFU must NACK it
        sender.sock.sendto(build_rtp(payload_type=96, seq=500 + i, ts=i * 3000, ssrc=1111,
                                     payload=VP8_KEY if i == 0 else VP8_DELTA), target)
        await asyncio.sleep(0.003)
    await until(lambda: sender.find(205, 1))
    packet, off, length = sender.find(205, 1)[0]
    assert rtcp_bytes.parse_nack(packet, off, length)[1:] == (1111, [510])
    # the consumer asks for one packet again: served from the retransmission buffer, over RTX
    # (negotiated: the consumer's capabilities include video/rtx) with the original seq as OSN
    encoding = consumer["rtpParameters"]["encodings"][0]
    wanted_index = 5
    wanted = parse_rtp(sink.rtp[wanted_index])[2]
    original_payload = sink.rtp[wanted_index][parse_rtp(sink.rtp[wanted_index])[5]:]
    sink.sock.sendto(rtcp_bytes.build_nack(0x99, encoding["ssrc"], [wanted]),
                     ("127.0.0.1", env.worker.consumers[consumer["id"]].transport.tuple()["localPort"]))
    await until(lambda: any(parse_rtp(p)[4] == encoding["rtx"]["ssrc"] for p in sink.rtp))
    rtx = next(p for p in sink.rtp if parse_rtp(p)[4] == encoding["rtx"]["ssrc"])
    rtx_parsed = parse_rtp(rtx)
    assert rtx_parsed[0] == 102  # router's rtx payload type for VP8 101
    assert rtx[rtx_parsed[5]:rtx_parsed[5] + 2] == wanted.to_bytes(2, "big")
    assert rtx[rtx_parsed[5] + 2:] == original_payload
    await until(lambda: sender.find(201), timeout=4)
    await until(lambda: sender.find(206, 15), timeout=4)
    bitrate, ssrcs = rtcp_bytes.parse_remb(*sender.find(206, 15)[0])
    assert ssrcs == [1111] and 290_000 <= bitrate <= 300_000
    await until(lambda: sink.find(200), timeout=4)
    parsed = rtcp_bytes.parse_sr(*sink.find(200)[0])
    assert parsed[0] == consumer["rtpParameters"]["encodings"][0]["ssrc"]
    assert parsed[4] >= 29  # packets sent


async def test_simulcast_consumer_forwards_one_layer_and_switches_on_keyframes(env):
    encodings = [{"rid": "r0", "scalabilityMode": "L1T1"}, {"rid": "r1"}, {"rid": "r2"}]
    ext = [{"uri": MID_URI, "id": 9}, {"uri": RID_URI, "id": 10}]
    transport, producer, sender, target = await env.producer_side(
        vp8_producer(encodings=encodings, extensions=ext, mid="0"))
    _, consumer, sink = await env.consumer_side(producer["id"])
    assert consumer["type"] == "simulcast"
    assert consumer["rtpParameters"]["encodings"][0]["scalabilityMode"] == "L3T1"
    ssrcs = {0: 5000, 1: 5001, 2: 5002}
    seq = {0: 0, 1: 1000, 2: 2000}

    def send_all(key: bool, n: int = 1):
        for _ in range(n):
            for layer in (0, 1, 2):
                seq[layer] += 1
                sender.sock.sendto(build_rtp(payload_type=96, seq=seq[layer], ts=seq[layer] * 3000,
                                             ssrc=ssrcs[layer], payload=VP8_KEY if key else VP8_DELTA,
                                             extensions=[(9, b"0"), (10, f"r{layer}".encode())]), target)

    send_all(key=False, n=3)
    await asyncio.sleep(0.3)
    send_all(key=True)
    send_all(key=False, n=5)
    await until(lambda: len(sink.rtp) >= 6)
    c = env.worker.consumers[consumer["id"]]
    assert c.current_layer == 2
    assert len(sink.rtp) == 6  # one layer only: the keyframe + 5 deltas of r2
    await env.channel.request("set_consumer_preferred_layers", {"consumerId": consumer["id"], "spatialLayer": 0})
    count = len(sink.rtp)
    send_all(key=False, n=3)  # no switch before a keyframe of the target layer
    await asyncio.sleep(0.2)
    assert c.current_layer == 2 and len(sink.rtp) == count + 3
    send_all(key=True)
    send_all(key=False, n=2)
    await until(lambda: c.current_layer == 0)
    await until(lambda: len(sink.rtp) >= count + 6)
    seqs = [parse_rtp(p)[2] for p in sink.rtp]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))  # continuous across the switch
    assert {parse_rtp(p)[4] for p in sink.rtp} == {consumer["rtpParameters"]["encodings"][0]["ssrc"]}
    assert any(n == "consumer-layers-changed" and d["spatialLayer"] == 0 for n, d in env.events)


async def test_close_cascade_through_events_and_dump(env):
    ptransport, producer, sender, target = await env.producer_side(vp8_producer())
    consumers = [await env.consumer_side(producer["id"]) for _ in range(2)]
    dump = await env.channel.request("dump", {})
    assert len(dump["consumerIds"]) == 2 and dump["producerIds"] == [producer["id"]]

    # closing one consumer's transport closes that consumer only
    await env.channel.request("close_transport", {"transportId": consumers[0][0]["id"]})
    assert consumers[0][1]["id"] not in env.worker.consumers
    assert consumers[1][1]["id"] in env.worker.consumers
    with pytest.raises(NotFoundError):
        await env.channel.request("pause_consumer", {"consumerId": consumers[0][1]["id"]})

    # closing the producer's transport closes the producer, which closes its consumers (told why)
    await env.channel.request("close_transport", {"transportId": ptransport["id"]})
    names = [(n, d.get("reason")) for n, d in env.events]
    assert ("producer-closed", "transport-closed") in names
    assert ("consumer-closed", "producer-closed") in names
    dump = await env.channel.request("dump", {})
    assert dump["producerIds"] == [] and dump["consumerIds"] == []
    assert dump["transportIds"] == [consumers[1][0]["id"]]

    # closing the router closes what is left; closing twice is harmless
    await env.channel.request("close_router", {"routerId": env.router_id})
    assert env.worker.transports == {} and env.worker.routers == {}
    with pytest.raises(NotFoundError):
        await env.channel.request("close_router", {"routerId": env.router_id})
    stats = await env.channel.request("get_stats", {})
    assert (stats["routerCount"], stats["transportCount"], stats["producerCount"], stats["consumerCount"]) == (0,) * 4


async def test_worker_close_cascades_and_is_idempotent(env):
    _, producer, _, _ = await env.producer_side(vp8_producer())
    await env.consumer_side(producer["id"])
    router = env.worker.routers[env.router_id]
    await env.worker.close()
    await env.worker.close()
    assert router.closed and env.worker.transports == {} and env.worker.consumers == {}
    with pytest.raises(InvalidStateError):
        env.worker.create_router()


def opus_producer(ssrc):
    return {
        "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
        "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 1}],
        "encodings": [{"ssrc": ssrc}],
        "rtcp": {"cname": f"a{ssrc}"},
    }


async def test_active_speaker_follows_the_audio_levels(env):
    _, loud, loud_sender, loud_target = await env.producer_side(opus_producer(7001), kind="audio")
    _, quiet, quiet_sender, quiet_target = await env.producer_side(opus_producer(7002), kind="audio")

    async def talk(levels: dict, seconds: float, start: int) -> int:
        n = start
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            for (sender, target, ssrc), level in levels.items():
                sender.sock.sendto(build_rtp(payload_type=111, seq=n, ts=n * 960, ssrc=ssrc, payload=bytes(60),
                                             extensions=[(1, bytes([0x80 | level]))]), target)
            n += 1
            await asyncio.sleep(0.02)
        return n

    a = (loud_sender, loud_target, 7001)
    b = (quiet_sender, quiet_target, 7002)
    speakers = lambda: [d["producerId"] for n, d in env.events if n == "active-speaker"]  # noqa: E731
    n = await talk({a: 20, b: 90}, 1.0, 1)  # a at -20 dBov, b at -90 (below the -70 threshold)
    assert speakers() == [loud["id"]]
    n = await talk({a: 127, b: 25}, 1.5, n)  # a falls silent, b speaks up
    assert speakers()[-1] == quiet["id"]
    await env.channel.request("close_producer", {"producerId": quiet["id"]})
    assert speakers()[-1] is None  # the speaker left; a is silent


async def test_simulcast_consumer_resumed_before_any_media_asks_for_a_keyframe_again(env):
    """Resumed while the producer's RID-only streams are still unknown (its first keyframe request
    has nowhere to go): the RTCP tick re-evaluates the layer and asks again, so media starts."""
    encodings = [{"rid": "r0"}, {"rid": "r1"}]
    ext = [{"uri": MID_URI, "id": 9}, {"uri": RID_URI, "id": 10}]
    transport, producer, sender, target = await env.producer_side(
        vp8_producer(encodings=encodings, extensions=ext, mid="0"))
    _, consumer, sink = await env.consumer_side(producer["id"])  # resumed: no stream known yet
    ssrcs = {0: 6000, 1: 6001}

    def send(layer: int, seq: int, key: bool) -> None:
        sender.sock.sendto(build_rtp(payload_type=96, seq=seq, ts=seq * 3000, ssrc=ssrcs[layer],
                                     payload=VP8_KEY if key else VP8_DELTA,
                                     extensions=[(9, b"0"), (10, f"r{layer}".encode())]), target)

    seq = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + 6
    while loop.time() < end and not sender.find(206, 1):  # deltas only, until the SFU asks
        seq += 1
        for layer in (0, 1):
            send(layer, seq, key=False)
        await asyncio.sleep(0.03)
    plis = sender.find(206, 1)
    assert plis, "no keyframe request reached the producer"
    asked = rtcp_bytes.parse_pli(*plis[-1])
    layer = next(i for i, s in ssrcs.items() if s == asked)
    seq += 1
    send(layer, seq, key=True)
    send(layer, seq + 1, key=False)
    await until(lambda: len(sink.rtp) >= 2)
    assert sink.rtp[0].endswith(VP8_KEY)


async def test_a_consumer_waiting_for_its_layer_asks_again_with_an_allocator(env):
    """With a bandwidth allocator (WebRTC receivers) the RTCP tick does not re-request keyframes: a
    consumer whose first request went nowhere (resumed before its layer's stream existed, or a
    request the sender ignored) asks again while it waits, at most once per throttle interval, so
    its media starts (the page-healing flake: a consumer that never got a packet)."""
    encodings = [{"rid": "r0"}, {"rid": "r1"}]
    ext = [{"uri": MID_URI, "id": 9}, {"uri": RID_URI, "id": 10}]
    transport, producer, sender, target = await env.producer_side(
        vp8_producer(encodings=encodings, extensions=ext, mid="0"))
    consumer_transport, consumer, sink = await env.consumer_side(producer["id"], paused=True)
    c = env.worker.consumers[consumer["id"]]
    c.transport.allocator = type("Allocator", (), {"schedule": lambda self, delay=0.0: None})()
    await env.channel.request("resume_consumer", {"consumerId": consumer["id"]})  # no stream known yet
    assert c.target_layer == 1
    ssrcs = {0: 6100, 1: 6101}
    seq = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while loop.time() - t0 < 2.3:  # deltas only: the sender ignores every keyframe request
        seq += 1
        for layer in (0, 1):
            sender.sock.sendto(build_rtp(payload_type=96, seq=seq, ts=seq * 3000, ssrc=ssrcs[layer],
                                         payload=VP8_DELTA, extensions=[(9, b"0"), (10, f"r{layer}".encode())]),
                               target)
        await asyncio.sleep(0.03)
    asked = [rtcp_bytes.parse_pli(*p) for p in sender.find(206, 1)]
    assert asked.count(ssrcs[1]) >= 2, asked  # asked again while waiting ...
    assert asked.count(ssrcs[1]) <= 4, asked  # ... throttled (1 s interval)
    assert not sink.rtp  # nothing before the keyframe
    del c.transport.allocator


def _vp8_tl(picture_id: int, tid: int, key: bool = False) -> bytes:
    # X=1 S=1 | I=1 T=1 | 15-bit PictureID | TID<<6 (Y=1) | VP8 payload header (P clear = keyframe)
    return bytes([0x90, 0xA0, 0x80 | (picture_id >> 8), picture_id & 0xFF, (tid << 6) | 0x20,
                  0x00 if key else 0x01, 0x9D, 0x01, 0x2A]) + bytes(200)


async def test_temporal_layer_dropping_keeps_seq_and_picture_id_continuous(env):
    """The allocator's temporal choice (Consumer.apply_allocation) on an L1T3 stream: only TID 0
    leaves, with gap-free sequence numbers and PictureIDs; back to all layers at the next TL0 frame."""
    params = vp8_producer(encodings=[{"ssrc": 1111, "scalabilityMode": "L1T3"}])
    transport, producer, sender, target = await env.producer_side(params)
    _, consumer, sink = await env.consumer_side(producer["id"])
    c = env.worker.consumers[consumer["id"]]
    assert c.temporal_layer_count == 3
    assert type(c).__name__ == ("FastConsumer" if env.path == "compiled" else "Consumer")
    tids = [0, 2, 1, 2]
    seq = 0

    def send_frames(first: int, count: int) -> None:
        nonlocal seq
        for f in range(first, first + count):
            seq += 1
            sender.sock.sendto(build_rtp(payload_type=96, seq=seq, ts=f * 3000, ssrc=1111, marker=True,
                                         payload=_vp8_tl(f, 0 if f == 0 else tids[f % 4], key=f == 0)), target)

    send_frames(0, 4)
    await until(lambda: len(sink.rtp) == 4)
    c.apply_allocation(0, 0, "bandwidth")  # keep TL0 only
    send_frames(4, 12)  # frames 4, 8, 12 are TL0
    await asyncio.sleep(0.3)
    got = sink.rtp[4:]
    assert len(got) == 3, [parse_rtp(p)[2] for p in got]
    parsed = [parse_rtp(p) for p in sink.rtp]
    seqs = [p[2] for p in parsed]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))  # no hole for the receiver
    pids = [((p[q[5] + 2] & 0x7F) << 8) | p[q[5] + 3] for p, q in zip(sink.rtp, parsed)]
    assert all((b - a) & 0x7FFF == 1 for a, b in zip(pids, pids[1:])), pids
    assert all(p[q[5] + 4] >> 6 == 0 for p, q in zip(got, parsed[4:]))
    assert c.tl_dropped == 9 and c.allocation()["targetTemporalLayer"] == 0
    c.apply_allocation(0, 2, "best-layer")  # all layers again, from the next TL0 frame on
    send_frames(16, 4)
    await until(lambda: len(sink.rtp) == 11)
    seqs = [parse_rtp(p)[2] for p in sink.rtp]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))
