"""Bandwidth limits: the per-transport cap (``media.max_incoming_bitrate_bps``) is sent to the
producing client as REMB (seen by the real aiortc sender, whose encoder follows it), counted in the
transport's stats, and get-stats reports per-participant traffic and flags producers over budget."""

from __future__ import annotations

import logging

import pytest
from aiortc.codecs import vpx
from aiortc.rtp import RtcpPsfbPacket, unpack_remb_fci

from studyrooms.config import MediaSettings
from studyrooms.standalone import start_standalone
from support.peer import Peer

from sechelpers import eventually, find, join, settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90), pytest.mark.filterwarnings("ignore:The HMAC key is")]

CAP = 100_000  # below aiortc's VP8 floor (250 kbps): the video producer cannot honour it


def spy_remb(sender) -> list[tuple[int, list[int]]]:
    seen: list[tuple[int, list[int]]] = []
    original = sender._handle_rtcp_packet

    async def spy(packet):
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == 15:
            seen.append(unpack_remb_fci(packet.fci))
        await original(packet)

    sender._handle_rtcp_packet = spy
    return seen


async def test_remb_caps_the_producer_and_stats_report_bandwidth_and_budget(caplog):
    caplog.set_level(logging.WARNING, logger="studyrooms.room")
    app = await start_standalone(settings(media=MediaSettings(max_incoming_bitrate_bps=CAP)), num_workers=1, port=0)
    a = await join(app, "bw", "Alice")
    b = await join(app, "bw", "Bob")
    pa, pb = Peer(a.signal, video=True, audio=True), Peer(b.signal)
    try:
        await pa.load(a.joined["rtpCapabilities"])
        await pb.load(b.joined["rtpCapabilities"])
        ids = await pa.produce(video=True, audio=True)
        sender = pa.producers[ids["video"]].rtpSender
        rembs = spy_remb(sender)
        counter = await pb.consume(ids["video"])
        assert await counter.wait_frames(10, timeout=20) >= 10
        # the client's sender received REMB with exactly the cap, for its SSRC; its encoder follows
        assert await eventually(lambda: bool(rembs), timeout=5)
        bitrate, ssrcs = rembs[-1]
        assert bitrate == CAP and sender._ssrc in ssrcs
        assert sender._RTCRtpSender__encoder.target_bitrate == max(vpx.MIN_BITRATE, CAP)
        # the transport counts what it sent
        stats = find(app, "transport", pa.send_transport.id).get_stats()
        assert stats["rembSent"] >= 1 and stats["maxIncomingBitrate"] == CAP

        await a.signal.call("get-stats")  # a first sample; the next one measures the last interval
        await counter.wait_frames(30, timeout=10)
        reply = await b.signal.call("get-stats")
        by_name = {p["displayName"]: p for p in reply["participants"]}
        alice, bob = by_name["Alice"], by_name["Bob"]
        assert alice["bytesIn"] > 10_000 and alice["bitrateIn"] > CAP and alice["maxIncomingBitrate"] == CAP
        assert bob["bytesOut"] > 10_000 and bob["bitrateOut"] > 0 and bob["bytesIn"] > 0
        producers = {p["kind"]: p for p in alice["producers"]}
        assert producers["video"]["overBudget"] is True and producers["video"]["bitrate"] > CAP * 1.1
        assert producers["audio"]["overBudget"] is False and 0 < producers["audio"]["bitrate"] < CAP
        assert alice["overBudget"] is True and bob["overBudget"] is False and bob["producers"] == []
        warnings = [r for r in caplog.records if "over its budget" in r.getMessage()]
        assert len(warnings) == 1 and ids["video"] in warnings[0].getMessage()
        await b.signal.call("get-stats")  # logged once per producer, not per request
        assert len([r for r in caplog.records if "over its budget" in r.getMessage()]) == 1
    finally:
        await pa.close()
        await pb.close()
        await a.close()
        await b.close()
        await app.stop()
