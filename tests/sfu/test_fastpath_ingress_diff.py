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
from support.wait import until

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


def vp8(picture_id: int, key: bool, size: int = 300, tid: int = -1) -> bytes:
    if tid < 0:
        return bytes([0x90, 0x80, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF,
                      0x00 if key else 0x01, 0x9D, 0x01, 0x2A]) + bytes(size)
    return bytes([0x90, 0xA0, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF, (tid << 6) | 0x20,
                  0x00 if key else 0x01, 0x9D, 0x01, 0x2A]) + bytes(size + 10 * tid)


def params(temporal: bool = False) -> dict:
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
        "encodings": [{"ssrc": SSRC, "rtx": {"ssrc": RTX_SSRC},
                       **({"scalabilityMode": "L1T3"} if temporal else {})}],
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


@pytest.fixture
async def world():
    worker = await Worker.create("w-ingress", WorkerOptions(rtc_min_port=46000, rtc_max_port=46999))
    channel = WorkerChannel(worker)
    router_id = (await channel.request("create_router", {}))["routerId"]
    caps = (await channel.request("router_rtp_capabilities", {"routerId": router_id}))["rtpCapabilities"]
    sockets = []

    async def pair(compiled_rx: bool, srtp: bool, temporal: bool = False):
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
        p = await channel.request("produce", {"transportId": t["id"], "kind": "video", "rtpParameters": params(temporal)})
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


def script(temporal: bool = False) -> list[tuple[bytes, float]]:
    """(packet, pause after it) of the scenario in the module docstring."""
    out: list[tuple[bytes, float]] = []
    seq, ts, pid = 65400, 2**32 - 90000, 100
    ext = [(MID_ID, b"0"), (ABS_ID, b"\x01\x02\x03")]
    held = {}

    def media(key=False, *, two_byte=False, padding=0, extensions=None, ssrc=SSRC, pause=0.002, hold=False):
        nonlocal seq, ts, pid
        seq, ts, pid = (seq + 1) & 0xFFFF, (ts + 3000) & 0xFFFFFFFF, (pid + 1) & 0x7FFF
        tid = (0, 2, 1, 2)[pid % 4] if temporal else -1
        pkt = build_rtp(payload_type=96, seq=seq, ts=ts, ssrc=ssrc, marker=True, payload=vp8(pid, key, tid=tid),
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


@pytest.mark.parametrize("srtp,temporal", [(False, False), (True, False), (False, True)],
                         ids=["plain", "srtp", "plain-L1T3"])
async def test_compiled_receive_step_matches_the_python_receive_path(world, srtp, temporal):
    fast = await world.pair(True, srtp, temporal)
    slow = await world.pair(False, srtp, temporal)
    fprod, sprod = fast[0], slow[0]
    assert fprod.transport.fast_rx is not None and slow[0].transport.fast_rx is None
    assert type(fprod.streams[0]).__name__ == "FastRecvStream" and type(sprod.streams[0]) is RecvStream
    fc, sc = fast[5], slow[5]
    sc.send_stream.ssrc = fc.send_stream.ssrc
    sc.send_stream._initial_seq = fc.send_stream._initial_seq
    sc.send_stream.rtx_ssrc = fc.send_stream.rtx_ssrc

    packets = script(temporal)
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
    if temporal:  # per-TID byte totals (the allocator's rung prices) are the same
        ft_, st_ = fprod._temporal[0], sprod._temporal[0]
        assert list(ft_._totals) == list(st_._totals) and min(ft_._totals) > 0
        assert all(sum(1 for t in m._times if t > 0) >= 2 for m in ft_._meters)  # rate samples taken
    assert fs.handled >= 50, fs.handled  # most of the in-order run before the loss (NACKs then gate it)
    assert ft["udp"]["recvBatches"] > 0 and ft["udp"]["readErrors"] == 0


TWCC_ID = 5


async def test_webrtc_sender_with_transport_cc_same_feedback_state_and_bytes():
    """Two WebRtcTransports receive the same SRTP stream from a synthetic WebRTC client that sends
    transport-wide seqs (as browsers do): the compiled receive step records them in C and the
    transport drains them into its feedback recorder in arrival order, so both recorders hold the
    same arrivals (by seq) and both sinks get the same bytes."""
    import sys
    from pathlib import Path

    from aiortc import RTCCertificate

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.forwarding import ClientPeer

    fastpath.configure("on")
    worker = await Worker.create("w-ingress-rtc", WorkerOptions(rtc_min_port=46000, rtc_max_port=46999,
                                                                listen_ip="127.0.0.1"))
    channel = WorkerChannel(worker)
    loop = asyncio.get_running_loop()
    cert = RTCCertificate.generateCertificate()
    peers, socks = [], []
    try:
        router_id = (await channel.request("create_router", {}))["routerId"]
        caps = (await channel.request("router_rtp_capabilities", {"routerId": router_id}))["rtpCapabilities"]
        sides = []
        for compiled_rx in (True, False):
            ingress.set_enabled(compiled_rx)
            try:
                info = await channel.request("create_webrtc_transport", {"routerId": router_id,
                                                                         "direction": "send"})
            finally:
                ingress.set_enabled(True)
            cand = info["iceCandidates"][0]
            peer = ClientPeer(loop, (cand.get("ip") or cand.get("address"), cand["port"]), info["iceParameters"],
                              cert)
            peers.append(peer)
            await peer.ice_connect()
            await channel.request("connect_webrtc_transport", {"transportId": info["id"], "dtlsParameters": {
                "role": "client", "fingerprints": peer.fingerprints()}})
            await peer.dtls_connect(info["dtlsParameters"]["fingerprints"])
            rtp = params()
            rtp["headerExtensions"].append(
                {"uri": "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01", "id": TWCC_ID})
            p = await channel.request("produce", {"transportId": info["id"], "kind": "video", "rtpParameters": rtp})
            sink_sock = await bind_udp("127.0.0.1", 0)
            socks.append(sink_sock)
            ct = await channel.request("create_plain_transport", {"routerId": router_id})
            await channel.request("connect_plain_transport", {"transportId": ct["id"], "ip": "127.0.0.1",
                                                              "port": sink_sock.local_address[1]})
            c = await channel.request("consume", {"transportId": ct["id"], "producerId": p["id"],
                                                  "rtpCapabilities": caps, "paused": False})
            sides.append((worker.transports[info["id"]], worker.producers[p["id"]], peer, Endpoint(sink_sock),
                          worker.consumers[c["id"]]))
        (ft, fprod, fpeer, fsink, fc), (st, sprod, speer, ssink, sc) = sides
        assert ft.fast_rx is not None and st.fast_rx is None
        assert ft.bwe.recorder.ext_id == st.bwe.recorder.ext_id == TWCC_ID
        sc.send_stream.ssrc = fc.send_stream.ssrc
        sc.send_stream._initial_seq = fc.send_stream._initial_seq
        from studyrooms.media.twcc import TwccRecorder

        calls: dict[int, list] = {}

        class Logged(TwccRecorder):
            __slots__ = ()

            def on_packet(self, seq, now, ssrc):
                calls.setdefault(id(self), []).append((seq, ssrc))
                super().on_packet(seq, now, ssrc)

        for t in (ft, st):
            t.bwe.recorder.__class__ = Logged

        seq, ts = 65500, 1000
        sent = 0
        for i in range(120):
            seq, ts = (seq + 1) & 0xFFFF, (ts + 3000) & 0xFFFFFFFF
            if i in (70, 71):
                continue  # lost: NACKs, the stream goes to Python until repaired or given up
            tw = (65530 + i) & 0xFFFF  # the transport-wide seq wraps too
            if i == 90:
                tw = (65530 + 85) & 0xFFFF  # a reordered transport-wide seq
            pkt = build_rtp(payload_type=96, seq=seq, ts=ts, ssrc=SSRC, marker=True, payload=vp8(i, i == 0),
                            extensions=[(MID_ID, b"0"), (TWCC_ID, tw.to_bytes(2, "big"))])
            for peer in (fpeer, speer):
                peer.sock.send(peer.dtls._tx_srtp.protect(pkt))
            sent += 1
            await asyncio.sleep(0.003)
        await until(lambda: len(fsink.rtp) >= sent and len(ssink.rtp) >= sent)
        await asyncio.sleep(0.1)
        assert fsink.rtp == ssink.rtp
        ft.fast_rx.drain_twcc(ft.bwe.recorder)
        fr, sr = ft.bwe.recorder, st.bwe.recorder
        assert fr.received == sr.received == sent
        assert calls[id(fr)] == calls[id(sr)]  # the same seqs in the same (arrival) order
        assert fr._max_seq_ext == sr._max_seq_ext and fr.media_ssrc == sr.media_ssrc == SSRC
        # the same seqs (arrival times differ between the two transports); feedback may have
        # consumed some already, on each side at its own timer
        assert fr.feedback_sent + len(fr._arrivals) > 0
        assert fprod.streams[0].handled >= 50
        for key in ("rtpPacketsReceived", "bytesReceived", "srtpUnprotected"):
            assert ft.get_stats()[key] == st.get_stats()[key], key
    finally:
        for peer in peers:
            await peer.close()
        for sock in socks:
            sock.close()
        await worker.close()
        fastpath.configure()


def test_malformed_packets_never_crash_the_receive_step():
    """Random, truncated and corrupted packets of a known SSRC (extension blocks in both forms,
    padding, CSRC counts, VP8 descriptors with TIDs) straight into the receive step with its stream
    open and per-TID rates on: nothing crashes, every answer is 0 (taken),
    2 (Python takes it) or 3, and what the core took kept the stream's counters consistent."""
    import math
    import random

    from studyrooms.clock import SystemClock
    from studyrooms.media.ingress import FastTemporalRates, RxSocket, RxTransport

    fastpath.configure("on")
    try:
        rng = random.Random(1313)
        rx = RxSocket(object())
        t = RxTransport(require_srtp=False)
        stream = ingress.FastRecvStream(
            key=0, ssrc=SSRC, kind="video", codec="VP8", clock_rate=90000, payload_type_map={96: 101},
            ext_id_map={MID_ID: 1, ABS_ID: 3, 5: 6}, reserve_mid_ext_id=1, audio_level_ext_id=None,
            clock=SystemClock(), reserve_twcc_ext_id=6)
        assert t.add_stream(stream)
        temporal = FastTemporalRates(3)
        c = stream._c
        c.tl_totals, c.tl_next, c.tl_n = temporal._ctot, temporal._cnext, 3
        for i in range(3):
            temporal._cnext[i] = math.inf
        c.gate = 0
        good = build_rtp(payload_type=96, seq=1, ts=0, ssrc=SSRC, padding=3,
                         extensions=[(MID_ID, b"0"), (5, b"\x00\x07"), (ABS_ID, b"abc")], payload=vp8(1, False, tid=1))
        two = build_rtp(payload_type=96, seq=1, ts=0, ssrc=SSRC, two_byte=True,
                        extensions=[(MID_ID, b"0"), (5, b"\x00\x07"), (200, b"xy")], payload=vp8(1, False, tid=2))
        buf = fastpath.ffi.new("unsigned char[]", 2048)
        taken = 0
        for i in range(4000):
            stream._started = True
            stream._rate_next = math.inf
            base = good if i % 2 else two
            kind = i % 3
            if kind == 0:
                pkt = bytearray(base[:rng.randrange(12, len(base) + 1)])
            else:
                pkt = bytearray(base)
                for _ in range(rng.randrange(1, 8)):
                    pkt[rng.randrange(0, min(len(pkt), 60))] = rng.getrandbits(8)
            pkt[8:12] = SSRC.to_bytes(4, "big")
            seq = (stream._max_seq + 1) & 0xFFFF
            pkt[2:4] = seq.to_bytes(2, "big")
            pkt[0] = 0x80 | (pkt[0] & 0x3F)
            fastpath.ffi.memmove(buf, bytes(pkt), len(pkt))
            before = stream.packets
            r = fastpath.lib.sr_rx_packet(rx.c, t.c, buf, len(pkt), 1000.0 + i * 0.001)
            assert r in (0, 2, 3), r
            if r == 0:
                taken += 1
                assert stream.packets == before + 1 and stream.last_seq == seq
                assert 12 <= stream.last_payload_offset <= stream.last_payload_end <= 1900
        assert taken > 500 and stream.handled == taken
    finally:
        fastpath.configure()
