"""Differential test of the compiled core on WebRtcTransports: transport-wide seqs and VP8
temporal-layer dropping.

One Worker; a VP8 L1T3 camera and an Opus microphone arrive on comedia PlainTransports. Two receivers
(a synthetic WebRTC client: ICE-lite check, aiortc DTLS, SRTP) each consume both over their own
WebRtcTransport and negotiate transport-wide-cc: one transport created with the core off (Python
path), one with it on. Both see every ingress packet in the same fan-out call, so after decryption
their plaintexts must be identical byte for byte — the transport-wide seq in every packet (media the
core sends, audio too, RTX answers, RTX probes and probe padding Python sends, all from one counter) and the
temporal-layer dropping (TID above the kept layer dropped at frame starts, seq and PictureID
continuous) — and both transports' send records (what the estimator joins feedback with) must hold
the same sizes and probe clusters.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from aiortc import RTCCertificate

from studyrooms.media import fastpath
from studyrooms.media.rtp import build_rtp, iter_extensions, parse_rtp
from studyrooms.media.twcc import TwccStamper
from studyrooms.net.udp import bind_udp
from studyrooms.sfu.channel import WorkerChannel
from studyrooms.sfu.options import WorkerOptions
from studyrooms.sfu.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.modules.pop("benchmarks", None)
from benchmarks.forwarding import ClientPeer  # noqa: E402

pytestmark = pytest.mark.timeout(60)

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
TIDS = (0, 2, 1, 2)


class Receiver(ClientPeer):
    """Decrypts every SRTP packet it gets and keeps the plaintexts in arrival order."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.rtp: list[bytes] = []

    def _readable(self) -> None:
        for _ in range(256):
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                return
            b0 = data[0] if data else 255
            if 127 < b0 < 192 and self.dtls.state == "connected":
                if not 191 < data[1] < 224:
                    self.rtp.append(self.dtls._rx_srtp.unprotect(data))
            elif b0 < 4 or 19 < b0 < 64:
                self._stun_or_dtls(data)

    def _stun_or_dtls(self, data: bytes) -> None:
        from aioice import stun

        if data[0] < 4:
            msg = stun.parse_message(data)
            fut = self.pending.pop(msg.transaction_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        else:
            self.queue.put_nowait(data)


def vp8(tid: int, picture_id: int, key: bool, start: bool) -> bytes:
    # X=1 S=start | I=1 L=1 T=1 | 15-bit picture id | TL0PICIDX | TID<<6 | VP8 payload header
    desc = bytes([0x90 if start else 0x80, 0xE0, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF,
                  (picture_id // 4) & 0xFF, (tid << 6) | 0x20])
    return desc + (bytes([0x00, 0x00, 0x00, 0x9D, 0x01, 0x2A]) if key else bytes([0x01])) + bytes(150)


def tw_seq(plain: bytes) -> int:
    p = parse_rtp(plain)
    for xid, off, ln in iter_extensions(plain, p[6], p[7], p[8]):
        if xid == 5 and ln == 2:
            return (plain[off] << 8) | plain[off + 1]
    return -1


async def until(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_webrtc_core_and_python_send_the_same_bytes_tw_seq_and_temporal_dropping():
    loop = asyncio.get_running_loop()
    worker = await Worker.create("w-diff-rtc", WorkerOptions(rtc_min_port=45500, rtc_max_port=45999))
    channel = WorkerChannel(worker)
    sender = await bind_udp("127.0.0.1", 0)
    receivers: list[Receiver] = []
    try:
        router_id = (await channel.request("create_router", {}))["routerId"]
        caps = (await channel.request("router_rtp_capabilities", {"routerId": router_id}))["rtpCapabilities"]
        vt = await channel.request("create_plain_transport", {"routerId": router_id, "comedia": True})
        camera = await channel.request("produce", {"transportId": vt["id"], "kind": "video", "rtpParameters": {
            "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                        "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"}]},
                       {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}}],
            "headerExtensions": [{"uri": MID_URI, "id": 9}],
            "encodings": [{"ssrc": 4000, "rtx": {"ssrc": 4001}, "scalabilityMode": "L1T3"}],
            "rtcp": {"cname": "cam"}, "mid": "0"}})
        at = await channel.request("create_plain_transport", {"routerId": router_id, "comedia": True})
        mic = await channel.request("produce", {"transportId": at["id"], "kind": "audio", "rtpParameters": {
            "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": 4100}], "rtcp": {"cname": "mic"}}})
        video_target = ("127.0.0.1", vt["tuple"]["localPort"])
        audio_target = ("127.0.0.1", at["tuple"]["localPort"])

        sides = {}
        for path in ("python", "compiled"):
            fastpath.configure("on" if path == "compiled" else "off")
            try:
                info = await channel.request("create_webrtc_transport", {"routerId": router_id, "direction": "recv"})
            finally:
                fastpath.configure()
            cand = info["iceCandidates"][0]
            rx = Receiver(loop, (cand.get("ip") or cand.get("address"), cand["port"]), info["iceParameters"],
                          RTCCertificate.generateCertificate())
            receivers.append(rx)
            await rx.ice_connect()
            await channel.request("connect_webrtc_transport", {"transportId": info["id"], "dtlsParameters": {
                "role": "client", "fingerprints": rx.fingerprints()}})
            await rx.dtls_connect(info["dtlsParameters"]["fingerprints"])
            transport = worker.transports[info["id"]]
            consumers = []
            for prod in (camera, mic):
                c = await channel.request("consume", {"transportId": info["id"], "producerId": prod["id"],
                                                      "rtpCapabilities": caps, "paused": True})
                assert any(e["uri"].endswith("transport-wide-cc-extensions-01")
                           for e in c["rtpParameters"]["headerExtensions"])
                consumers.append(worker.consumers[c["id"]])
            # the allocator would decide layers from each transport's own (timing-dependent)
            # estimate: this test gives both consumers the same decisions itself
            transport.allocator.close()
            transport.allocator = None
            sides[path] = (transport, consumers, rx)

        (pt, (pv, pa), prx), (ft, (fv, fa), frx) = sides["python"], sides["compiled"]
        assert type(pv).__name__ == "Consumer" and type(fv).__name__ == "FastConsumer"
        assert type(fa).__name__ == "FastConsumer"
        assert isinstance(pt.bwe.stamper, TwccStamper) and isinstance(ft.bwe.stamper, fastpath.CellStamper)
        for a, b in ((pv, fv), (pa, fa)):  # same SSRCs and starting seqs: the outputs must be identical
            b.send_stream.ssrc, b.send_stream.rtx_ssrc = a.send_stream.ssrc, a.send_stream.rtx_ssrc
            b.ssrc, b.rtx_ssrc = a.ssrc, a.rtx_ssrc
            b.send_stream._initial_seq, b.send_stream._rtx_seq = a.send_stream._initial_seq, a.send_stream._rtx_seq
            b.send_stream._initial_ts = a.send_stream._initial_ts
        for c in (pv, fv, pa, fa):
            await channel.request("resume_consumer", {"consumerId": c.id})

        state = {"seq": 100, "frame": 0, "aseq": 7}

        def frame(packets=2):
            f = state["frame"]
            state["frame"] += 1
            key = f % 16 == 0
            tid = 0 if key else TIDS[f % 4]
            for k in range(packets):
                state["seq"] = (state["seq"] + 1) & 0xFFFF
                sender.sendto(build_rtp(payload_type=96, seq=state["seq"], ts=3000 * f, ssrc=4000,
                                        marker=k == packets - 1, payload=vp8(tid, f & 0x7FFF, key, k == 0),
                                        extensions=[(9, b"0")]), video_target)
            state["aseq"] += 1
            sender.sendto(build_rtp(payload_type=111, seq=state["aseq"], ts=960 * f, ssrc=4100,
                                    payload=bytes(60)), audio_target)

        async def frames(n):
            for _ in range(n):
                frame()
                await asyncio.sleep(0.004)

        def settled(count):
            return lambda: len(prx.rtp) >= count and len(frx.rtp) == len(prx.rtp)

        await frames(8)  # all temporal layers
        await until(settled(24))
        # the allocator's choice: keep TL0 only, then TL0+TL1, then everything
        for c in (pv, fv):
            c.apply_allocation(0, 0, "test")
        await frames(9)
        # RTX answers and probe padding are sent by Python, from the same transport-wide counter
        for c in (pv, fv):
            sent = [parse_rtp(p)[2] for p in (prx if c is pv else frx).rtp if parse_rtp(p)[4] == c.ssrc]
            c.on_nack([sent[1], sent[5]], c.ssrc)
        for t, c in ((pt, pv), (ft, fv)):
            t.bwe.stamper.cluster = 3
            t.send_rtp(c.send_stream.build_rtx_padding(255))
            probe = c.send_stream.build_rtx_probe(2, 2000)  # RTX of a recent packet (the C ring's on the core)
            assert probe is not None
            t.send_rtp(probe)
            t.bwe.stamper.cluster = -1
        for c in (pv, fv):
            c.apply_allocation(0, 1, "test")
        await frames(8)
        for c in (pv, fv):
            c.apply_allocation(0, 2, "test")
        await frames(8)
        await until(settled(len(prx.rtp)))
        await asyncio.sleep(0.1)

        assert len(prx.rtp) == len(frx.rtp) > 60
        for i, (a, b) in enumerate(zip(prx.rtp, frx.rtp)):
            assert a == b, f"packet {i} differs: {a[:32].hex()} != {b[:32].hex()}"
        seqs = [tw_seq(p) for p in frx.rtp]
        assert seqs == list(range(1, len(seqs) + 1))  # every packet stamped, one counter, in order
        assert fv.tl_dropped == pv.tl_dropped > 0 and fv.current_temporal == pv.current_temporal == -1
        video = [p for p in frx.rtp if parse_rtp(p)[4] == fv.ssrc]
        vseqs = [parse_rtp(p)[2] for p in video]
        assert vseqs == list(range(vseqs[0], vseqs[0] + len(vseqs)))  # no seq gap where frames were dropped
        pids = []
        for p in video:
            off = parse_rtp(p)[5]
            if p[off] & 0x10:
                pids.append(((p[off + 2] & 0x7F) << 8) | p[off + 3])
        assert pids == list(range(pids[0], pids[0] + len(pids)))  # PictureID continuous too
        assert sum(1 for p in frx.rtp if parse_rtp(p)[4] == fv.rtx_ssrc) == 4  # 2 RTX answers + 1 padding + 1 RTX probe
        # the estimator's send records: same plaintext size and probe cluster for every seq
        for s, plain in zip(seqs, frx.rtp):
            a, b = pt.bwe.stamper.lookup(s), ft.bwe.stamper.lookup(s)
            assert a is not None and b is not None and a[1:] == b[1:] == (len(plain), a[2]), s
            assert abs(a[0] - b[0]) < 0.5
        assert sum(1 for s in seqs if ft.bwe.stamper.lookup(s)[2] == 3) == 2
        assert ft.bwe.stamper.stamped == pt.bwe.stamper.stamped == len(seqs)
        assert ft.get_stats()["twccStamped"] == len(seqs)
    finally:
        for rx in receivers:
            await rx.close()
        sender.close()
        await worker.close()
