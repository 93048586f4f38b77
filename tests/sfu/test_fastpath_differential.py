"""Differential test of the compiled fan-out core against the pure-Python path.

One Worker, one producer, two consumers of it on two PlainTransports: one forwarded in Python
(created while STUDYROOMS_MEDIA_FAST_PATH is off), one by the compiled core (created while it is on).
Both see every ingress packet at the same instant (the same fan-out call), so with the same SSRC and
initial sequence number their sinks must receive the same bytes, in the same order, through a
simulcast switch (VP8 picture id / TL0PICIDX continuity), pause/resume, seq/ts wraparound, NACK
(retransmitted as RTX) and RTX ingress. A second test does the same through SRTP (each sink decrypts
with its transport's key) and checks the compiled core protects with the same libsrtp session.
"""

from __future__ import annotations

import asyncio
import base64
import os

import pytest
from support.wait import until

from studyrooms.media import fastpath
from studyrooms.media.rtp import build_rtp, parse_rtp
from studyrooms.net.srtp import CRYPTO_SUITES, new_session
from studyrooms.net.udp import bind_udp
from studyrooms.sfu.channel import WorkerChannel
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker

pytestmark = pytest.mark.timeout(60)

SSRCS = (5000, 5001, 5002)
RTX_SSRC = 6000


def vp8(picture_id: int, tl0: int, key: bool) -> bytes:
    """RFC 7741 descriptor with a 15-bit picture id and TL0PICIDX, then a VP8 payload header."""
    return bytes([0x90, 0xC0, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF, tl0 & 0xFF,
                  0x00 if key else 0x01, 0x9D, 0x01, 0x2A]) + bytes(200)


def producer_params(layers: int) -> dict:
    return {
        "codecs": [
            {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
             "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}]},
            {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}},
        ],
        "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 9}],
        "encodings": [{"ssrc": SSRCS[0], "rtx": {"ssrc": RTX_SSRC}}] + [{"ssrc": s} for s in SSRCS[1:layers]],
        "rtcp": {"cname": "diff", "reducedSize": True},
        "mid": "0",
    }


class Sink:
    def __init__(self, sock, rx_session=None):
        self.sock = sock
        self.rtp: list[bytes] = []
        self.rx = rx_session
        sock.on_datagram = self._on

    def _on(self, data, addr):
        if 192 <= data[1] <= 223:
            return
        self.rtp.append(self.rx.unprotect(bytes(data)) if self.rx is not None else bytes(data))


@pytest.fixture
async def world():
    worker = await Worker.create("w-diff", WorkerOptions(rtc_min_port=45000, rtc_max_port=45999))
    channel = WorkerChannel(worker)
    router_id = (await channel.request("create_router", {}))["routerId"]
    sockets = []

    async def socket_():
        sock = await bind_udp("127.0.0.1", 0)
        sockets.append(sock)
        return sock

    async def producer(layers):
        t = await channel.request("create_plain_transport", {"routerId": router_id, "comedia": True})
        p = await channel.request("produce", {"transportId": t["id"], "kind": "video",
                                              "rtpParameters": producer_params(layers)})
        return p["id"], await socket_(), ("127.0.0.1", t["tuple"]["localPort"])

    async def consumer(producer_id, path, srtp=False):
        fastpath.configure("on" if path == "compiled" else "off")
        try:
            t = await channel.request("create_plain_transport", {"routerId": router_id, "enableSrtp": srtp})
        finally:
            fastpath.configure()
        sock = await socket_()
        data = {"transportId": t["id"], "ip": "127.0.0.1", "port": sock.local_address[1]}
        rx = None
        if srtp:
            suite = t["srtpParameters"]["cryptoSuite"]
            data["srtpParameters"] = {"cryptoSuite": suite,
                                      "keyBase64": base64.b64encode(os.urandom(30)).decode()}
            rx = new_session(CRYPTO_SUITES[suite][0], base64.b64decode(t["srtpParameters"]["keyBase64"]), True)
        await channel.request("connect_plain_transport", data)
        caps = (await channel.request("router_rtp_capabilities", {"routerId": router_id}))["rtpCapabilities"]
        info = await channel.request("consume", {"transportId": t["id"], "producerId": producer_id,
                                                 "rtpCapabilities": caps, "paused": True})
        await channel.request("resume_consumer", {"consumerId": info["id"]})
        return worker.consumers[info["id"]], Sink(sock, rx)

    def align(py, fast):
        """Same SSRCs and starting sequence numbers: the outputs must then be identical."""
        a, b = py.send_stream, fast.send_stream
        assert not a.packets and not b.packets
        b.ssrc = a.ssrc
        b.rtx_ssrc = a.rtx_ssrc
        b._initial_seq = a._initial_seq
        b._rtx_seq = a._rtx_seq

    yield type("World", (), dict(worker=worker, channel=channel, producer=staticmethod(producer),
                                 consumer=staticmethod(consumer), align=staticmethod(align)))
    for sock in sockets:
        sock.close()
    await worker.close()


async def test_same_bytes_on_the_wire_through_switch_pause_wraparound_nack_and_rtx(world):
    producer_id, sender, target = await world.producer(3)
    py, py_sink = await world.consumer(producer_id, "python")
    fast, fast_sink = await world.consumer(producer_id, "compiled")
    assert type(py).__name__ == "Consumer" and type(fast).__name__ == "FastConsumer"
    world.align(py, fast)
    channel = world.channel
    # layer 2 starts near the seq and timestamp wraparound
    seq = {0: 100, 1: 30000, 2: 65530}
    ts = {0: 1000, 1: 5000, 2: 2**32 - 7000}
    pid = {0: 32700, 1: 50, 2: 9000}  # 15-bit picture ids, layer 0 wraps at 32767
    tl0 = {0: 250, 1: 3, 2: 77}
    held: list[bytes] = []

    def frame(key: bool, layers=(0, 1, 2), hold: int = -1):
        for layer in layers:
            seq[layer] = (seq[layer] + 1) & 0xFFFF
            ts[layer] = (ts[layer] + 3000) & 0xFFFFFFFF
            pid[layer] = (pid[layer] + 1) & 0x7FFF
            tl0[layer] = (tl0[layer] + 1) & 0xFF
            pkt = build_rtp(payload_type=96, seq=seq[layer], ts=ts[layer], ssrc=SSRCS[layer], marker=True,
                            payload=vp8(pid[layer], tl0[layer], key), extensions=[(9, b"0")])
            if layer == hold:
                held.append(pkt)  # lost on the way in, repaired by RTX below
            else:
                sender.sendto(pkt, target)

    async def settle(count):
        await until(lambda: len(py_sink.rtp) >= count and len(fast_sink.rtp) >= count)
        await asyncio.sleep(0.05)

    frame(False)  # gated: no keyframe yet
    await asyncio.sleep(0.2)
    for i in range(8):  # keyframe, then deltas across the seq (65535 -> 0) and ts (2^32) wraps
        frame(i == 0)
        await asyncio.sleep(0.005)
    await settle(8)
    assert py.current_layer == fast.current_layer == 2

    # NACK from the receivers: two buffered packets and one never sent -> RTX retransmissions
    sent = [parse_rtp(p)[2] for p in py_sink.rtp]
    for consumer in (py, fast):
        consumer.on_nack([sent[2], sent[6], (sent[-1] + 100) & 0xFFFF], consumer.ssrc)
    await settle(10)

    # simulcast switch down to layer 0 on its next keyframe: picture ids stay continuous
    for consumer in (py, fast):
        await channel.request("set_consumer_preferred_layers", {"consumerId": consumer.id, "spatialLayer": 0})
    for i in range(6):
        frame(i == 2)
        await asyncio.sleep(0.005)
    await until(lambda: py.current_layer == 0 and fast.current_layer == 0)
    await settle(16)

    # pause / resume: forwarding restarts at the next keyframe, seq/ts continuous
    for consumer in (py, fast):
        await channel.request("pause_consumer", {"consumerId": consumer.id})
    frame(False)
    for consumer in (py, fast):
        await channel.request("resume_consumer", {"consumerId": consumer.id})
    await asyncio.sleep(0.05)
    frame(False)
    frame(False, hold=0)  # this one arrives only as RTX
    frame(True)
    frame(False)
    await asyncio.sleep(0.05)
    orig = held[0]
    p = parse_rtp(orig)
    rtx = build_rtp(payload_type=97, seq=1, ts=p[3], ssrc=RTX_SSRC, marker=True, extensions=[(9, b"0")],
                    payload=orig[2:4] + orig[p[5]:])
    sender.sendto(rtx, target)
    await settle(19)

    assert len(py_sink.rtp) == len(fast_sink.rtp)
    for i, (a, b) in enumerate(zip(py_sink.rtp, fast_sink.rtp)):
        assert a == b, f"packet {i} differs: {a[:24].hex()} != {b[:24].hex()}"
    ssrcs = [parse_rtp(p)[4] for p in py_sink.rtp]
    assert py.rtx_ssrc and ssrcs.count(py.rtx_ssrc) == 2  # the two retransmissions, RTX-wrapped
    pids = [p[parse_rtp(p)[5] + 2:parse_rtp(p)[5] + 4] for p in py_sink.rtp if parse_rtp(p)[4] == py.ssrc]
    steps = [((b[0] & 0x7F) << 8 | b[1]) - ((a[0] & 0x7F) << 8 | a[1]) & 0x7FFF for a, b in zip(pids, pids[1:])]
    assert steps[:13] == [1] * 13  # picture ids continuous across the layer switch (the layers differ)
    a, b = py.send_stream, fast.send_stream
    for name in ("packets", "bytes", "octets", "dropped_gated", "syncs", "max_seq", "max_ts", "retransmitted",
                 "nack_misses"):
        assert getattr(a, name) == getattr(b, name), name
    assert fast.transport.get_stats()["rtpPacketsSent"] == py.transport.get_stats()["rtpPacketsSent"]


async def test_srtp_same_plaintext_and_compiled_core_protects_with_libsrtp(world):
    producer_id, sender, target = await world.producer(1)
    py, py_sink = await world.consumer(producer_id, "python", srtp=True)
    fast, fast_sink = await world.consumer(producer_id, "compiled", srtp=True)
    world.align(py, fast)
    for i in range(20):
        pkt = build_rtp(payload_type=96, seq=(65525 + i) & 0xFFFF, ts=(2**32 - 9000 + 3000 * i) & 0xFFFFFFFF,
                        ssrc=SSRCS[0], payload=vp8(i, i, i == 0), marker=True, extensions=[(9, b"0")])
        sender.sendto(pkt, target)
        await asyncio.sleep(0.003)
    await until(lambda: len(py_sink.rtp) >= 20 and len(fast_sink.rtp) >= 20)
    assert py_sink.rtp == fast_sink.rtp  # decrypted with each transport's own key
    stats = fast.transport.get_stats()
    assert stats["srtpProtected"] >= 20 and fast.transport.fast_cell.c.srtp_protected == 20


async def test_a_packet_too_big_for_the_core_is_forwarded_by_the_python_twin(world):
    producer_id, sender, target = await world.producer(1)
    py, py_sink = await world.consumer(producer_id, "python")
    fast, fast_sink = await world.consumer(producer_id, "compiled")
    world.align(py, fast)
    for i, size in enumerate((200, 1950, 300)):  # plain RTP on loopback may exceed the core's 1900 bytes
        sender.sendto(build_rtp(payload_type=96, seq=10 + i, ts=3000 * i, ssrc=SSRCS[0], marker=True,
                                payload=vp8(i, i, i == 0)[:9] + bytes(size), extensions=[(9, b"0")]), target)
        await asyncio.sleep(0.01)
    await until(lambda: len(py_sink.rtp) >= 3 and len(fast_sink.rtp) >= 3)
    assert py_sink.rtp == fast_sink.rtp and len(fast_sink.rtp[1]) > 1950
    assert fast.send_stream.packets == 3
