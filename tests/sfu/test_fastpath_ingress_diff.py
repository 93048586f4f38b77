"""Differential test of the compiled receive step (media/ingress.c) against the Python receive path.

Two producers of the same stream on two comedia PlainTransports, one created with the compiled
receive step (recvmmsg, SRTP unprotect, RecvStream's in-order step and normalisation, fan-out in C)
and one without (asyncio reader, Python RecvStream). Each has one compiled consumer; both consumers
get the same SSRC and first sequence number. One sender per producer sends the same packets to each:
in order (the core's case), then loss (NACKs from the producer, the stream handed to Python until
repaired), RTX repair, reordering, a duplicate, seq wraparound, two-byte extensions with unknown
ids, RTP padding, keyframes, an unknown SSRC, RTCP. The sinks must receive the same bytes, the
senders the same NACKs, and the producers and transports must report the same receive statistics.
"""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from studyrooms.media import fastpath, ingress
from studyrooms.media.recv_stream import RecvStream
from studyrooms.media.rtp import build_rtp
from studyrooms.net.srtp import CRYPTO_SUITES, new_session
from studyrooms.net.udp import bind_udp
from studyrooms.sfu.channel import WorkerChannel
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker

pytestmark = pytest.mark.timeout(60)

SSRC = 7000
RTX_SSRC = 7001
MID_ID, ABS_ID, UNKNOWN_ID = 9, 3, 12
SUITE = "AES_CM_128_HMAC_SHA1_80"


def vp8(picture_id: int, key: bool, size: int = 300) -> bytes:
    return bytes([0x90, 0x80, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF,
                  0x00 if key else 0x01, 0x9D, 0x01, 0x2A]) + bytes(size)


def params() -> dict:
    return {
        "codecs": [
            {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
             "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}]},
            {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}},
        ],
        "headerExtensions": [
            {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": MID_ID},
            {"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": ABS_ID},
        ],
        "encodings": [{"ssrc": SSRC, "rtx": {"ssrc": RTX_SSRC}}],
        "rtcp": {"cname": "ingress", "reducedSize": True},
        "mid": "0",
    }


class Endpoint:
    """A UDP socket keeping what it receives (RTP decrypted with ``rx`` when given, RTCP apart)."""

    def __init__(self, sock, rx=None):
        self.sock, self.rx = sock, rx
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        sock.on_datagram = self._on

    def _on(self, data, addr):
        if 192 <= data[1] <= 223:
            self.rtcp.append(bytes(data))
        else:
            self.rtp.append(self.rx.unprotect(bytes(data)) if self.rx is not None else bytes(data))


async def until(predicate, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def world():
    worker = await Worker.create("w-ingress", WorkerOptions(rtc_min_port=46000, rtc_max_port=46999))
    channel = WorkerChannel(worker)
    router_id = (await channel.request("create_router", {}))["routerId"]
    caps = (await channel.request("router_rtp_capabilities", {"routerId": router_id}))["rtpCapabilities"]
    sockets = []

    async def pair(compiled_rx: bool, srtp: bool):
        """(producer, its sender (Endpoint, address, tx session), the sink Endpoint, consumer)."""
        fastpath.configure("on")
        ingress.set_enabled(compiled_rx)
        try:
            t = await channel.request("create_plain_transport", {"routerId": router_id, "comedia": True,
                                                                 "enableSrtp": srtp})
        finally:
            ingress.set_enabled(True)
        tx = None
        if srtp:
            key = os.urandom(30)
            await channel.request("connect_plain_transport", {"transportId": t["id"], "srtpParameters": {
                "cryptoSuite": SUITE, "keyBase64": base64.b64encode(key).decode()}})
            tx = new_session(CRYPTO_SUITES[SUITE][0], key, False)
            back = new_session(CRYPTO_SUITES[SUITE][0], base64.b64decode(t["srtpParameters"]["keyBase64"]), True)
        p = await channel.request("produce", {"transportId": t["id"], "kind": "video", "rtpParameters": params()})
        sender_sock = await bind_udp("127.0.0.1", 0)
        sink_sock = await bind_udp("127.0.0.1", 0)
        sockets.extend([sender_sock, sink_sock])
        sender = Endpoint(sender_sock)
        if srtp:
            sender.rtcp_session = back
        ct = await channel.request("create_plain_transport", {"routerId": router_id})
        await channel.request("connect_plain_transport", {"transportId": ct["id"], "ip": "127.0.0.1",
                                                          "port": sink_sock.local_address[1]})
        info = await channel.request("consume", {"transportId": ct["id"], "producerId": p["id"],
                                                 "rtpCapabilities": caps, "paused": False})
        consumer = worker.consumers[info["id"]]
        assert consumer.fast
        return (worker.producers[p["id"]], sender, ("127.0.0.1", t["tuple"]["localPort"]), tx,
                Endpoint(sink_sock), consumer)

    yield type("World", (), dict(worker=worker, pair=staticmethod(pair)))
    fastpath.configure()
    for sock in sockets:
        sock.close()
    await worker.close()


def script() -> list[tuple[bytes, float]]:
    """(packet, pause after it) of the scenario in the module docstring."""
    out: list[tuple[bytes, float]] = []
    seq, ts, pid = 65400, 2**32 - 90000, 100
    ext = [(MID_ID, b"0"), (ABS_ID, b"\x01\x02\x03")]
    held = {}

    def media(key=False, *, two_byte=False, padding=0, extensions=None, ssrc=SSRC, pause=0.002, hold=False):
        nonlocal seq, ts, pid
        seq, ts, pid = (seq + 1) & 0xFFFF, (ts + 3000) & 0xFFFFFFFF, (pid + 1) & 0x7FFF
        pkt = build_rtp(payload_type=96, seq=seq, ts=ts, ssrc=ssrc, marker=True, payload=vp8(pid, key),
                        extensions=ext if extensions is None else extensions, two_byte=two_byte, padding=padding)
        if hold:
            held[seq] = pkt
        else:
            out.append((pkt, pause))

    media(True)
    for _ in range(60):  # in order, across the seq wraparound (65535 -> 0) and the ts wraparound
        media()
    media(two_byte=True, extensions=[(MID_ID, b"0"), (UNKNOWN_ID, b"xyz"), (ABS_ID, b"\x04\x05\x06")])
    media(padding=7)
    media(extensions=[])
    media(ssrc=SSRC + 99)  # unknown SSRC: Python counts it dropped
    for _ in range(3):
        media(hold=True)  # lost on the way in
    for _ in range(5):
        media()  # NACK pending: Python receives these
    first, second, third = sorted(held)
    rtx_seq = 0
    for s in (first, third):  # repaired by RTX; the middle one is never repaired
        p = held[s]
        rtx_seq += 1
        out.append((build_rtp(payload_type=97, seq=rtx_seq, ts=int.from_bytes(p[4:8], "big"), ssrc=RTX_SSRC,
                              marker=True, extensions=ext, payload=p[2:4] + p[12 + 4 + 8:]), 0.002))
    late = out[-3][0]
    out.append((late, 0.002))  # a duplicate
    for i in range(40):
        media(key=i == 20, pause=0.004)
    out.append((bytes([0x81, 0xC9, 0x00, 0x01]) + SSRC.to_bytes(4, "big"), 0.002))  # an RTCP RR
    for _ in range(20):
        media(pause=0.004)
    return out


@pytest.mark.parametrize("srtp", [False, True], ids=["plain", "srtp"])
async def test_compiled_receive_step_matches_the_python_receive_path(world, srtp):
    fast = await world.pair(True, srtp)
    slow = await world.pair(False, srtp)
    fprod, sprod = fast[0], slow[0]
    assert fprod.transport.fast_rx is not None and slow[0].transport.fast_rx is None
    assert type(fprod.streams[0]).__name__ == "FastRecvStream" and type(sprod.streams[0]) is RecvStream
    fc, sc = fast[5], slow[5]
    sc.send_stream.ssrc = fc.send_stream.ssrc
    sc.send_stream._initial_seq = fc.send_stream._initial_seq
    sc.send_stream.rtx_ssrc = fc.send_stream.rtx_ssrc

    packets = script()
    for pkt, pause in packets:
        for _prod, sender, target, tx, _sink, _c in (fast, slow):
            data = pkt
            if tx is not None:
                data = tx.protect_rtcp(pkt) if 192 <= pkt[1] <= 223 else tx.protect(pkt)
            sender.sock.sendto(data, target)
        await asyncio.sleep(pause)
    # every media packet once (the duplicate dropped) plus the two RTX repairs
    expected = sum(1 for p, _ in packets if int.from_bytes(p[8:12], "big") == SSRC) - 1 + 2
    await until(lambda: len(fast[4].rtp) >= expected and len(slow[4].rtp) >= expected)
    await asyncio.sleep(0.3)  # NACK retries for the packet never repaired

    assert len(fast[4].rtp) == len(slow[4].rtp)
    for i, (a, b) in enumerate(zip(fast[4].rtp, slow[4].rtp)):
        assert a == b, f"forwarded packet {i} differs: {a[:32].hex()} != {b[:32].hex()}"
    nacks = [[p for p in end[1].rtcp if p[1] == 205] for end in (fast, slow)]
    assert nacks[0] and len(nacks[0]) == len(nacks[1])  # the same NACK rounds toward each sender

    def recv_stats(producer):
        (stats,) = producer.get_stats()
        for key in ("timestamp", "bitrate", "jitter", "producerId", "fractionLost", "score"):  # timing
            stats.pop(key)
        return stats

    assert recv_stats(fprod) == recv_stats(sprod)
    assert recv_stats(fprod)["packetsLost"] == 1 and recv_stats(fprod)["packetsRepaired"] == 2
    fs, ss = fprod.streams[0], sprod.streams[0]
    for name in ("last_seq", "last_ts", "highest_ext_seq", "expected_packets", "packets_lost", "keyframes",
                 "duplicates", "last_payload_offset", "last_payload_end", "mid_value_offset"):
        assert getattr(fs, name) == getattr(ss, name), name
    assert fs.jitter > 0
    ft, st = fprod.transport.get_stats(), sprod.transport.get_stats()
    for key in ("rtpPacketsReceived", "rtcpPacketsReceived", "bytesReceived", "packetsDropped"):
        assert ft[key] == st[key], key
    assert ft["udp"]["packetsReceived"] == st["udp"]["packetsReceived"] == len(packets)
    if srtp:
        assert ft["srtpUnprotected"] == st["srtpUnprotected"] == len(packets) - 1
        assert ft["srtpReplayFailures"] == st["srtpReplayFailures"] == 1  # the duplicate
    assert fc.send_stream.packets == sc.send_stream.packets == len(fast[4].rtp)
    # the core took the common case end to end; Python the rest
    assert fs.handled >= 50, fs.handled  # most of the in-order run before the loss (NACKs then gate it)
    assert fprod.transport.socket.fast_rx.c.batches > 0
