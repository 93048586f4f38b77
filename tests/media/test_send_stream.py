import struct

import pytest

from studyrooms.clock import FakeClock
from studyrooms.media import rtcp
from studyrooms.media.recv_stream import RecvStream
from studyrooms.media.rtp import build_rtp, get_extension, iter_extensions, parse_rtp

from ._util import (
    CHROME_VIDEO_SSRC,
    ROUTER_ABS,
    ROUTER_MID,
    ROUTER_OPUS,
    ROUTER_VP8,
    ROUTER_VP8_RTX,
    VP8_DELTA,
    VP8_KEY,
    chrome_audio_recv,
    chrome_video_packet,
    chrome_video_recv,
    send_stream,
)


class Producer:
    """Normalises Chrome packets like the router does and hands them to send streams."""

    def __init__(self, clock, **kw):
        self.clock = clock
        self.rs = chrome_video_recv(clock, **kw)

    def packet(self, seq, ts, key=False, **kw):
        payload = VP8_KEY if key else VP8_DELTA
        buf = self.rs.receive(chrome_video_packet(seq & 0xFFFF, ts & 0xFFFFFFFF, payload, **kw))
        assert buf is not None
        rs = self.rs
        return buf, rs.mid_value_offset, rs.last_seq, rs.last_ts, rs.last_keyframe

    def forward(self, ss, seq, ts, key=False, source=CHROME_VIDEO_SSRC, **kw):
        buf, mvo, s, t, kf = self.packet(seq, ts, key, **kw)
        return ss.send(buf, mvo, s, t, kf, source)


def hdr(pkt):
    p = parse_rtp(pkt)
    return p[0], p[1], p[2], p[3], p[4]


def test_send_rewrites_ssrc_pt_seq_ts_mid_in_place():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock)
    buf, mvo, seq, ts, kf = prod.packet(700, 123456, key=True, marker=True)
    out = ss.send(buf, mvo, seq, ts, kf, CHROME_VIDEO_SSRC)
    assert type(out) is bytes
    assert hdr(out) == (ROUTER_VP8, 1, 1000, 5000, 0xC0C0C0C0)
    assert bytes(buf) == out  # rewritten in place, returned as a snapshot
    assert get_extension(out, parse_rtp(out), ROUTER_MID) == b"1"
    assert get_extension(out, parse_rtp(out), ROUTER_ABS) == b"\x11\x22\x33"
    assert out[parse_rtp(out)[5]:] == VP8_KEY
    out = prod.forward(ss, 701, 123456)
    assert hdr(out) == (ROUTER_VP8, 0, 1001, 5000, 0xC0C0C0C0)
    out = prod.forward(ss, 702, 126456)
    assert hdr(out)[2:4] == (1002, 8000)
    assert (ss.packets, ss.dropped_gated) == (3, 0)


@pytest.mark.parametrize("n", range(1, 9))
def test_mid_of_every_length_fits_the_slot(n):
    clock = FakeClock()
    mid = "abcdefgh"[:n]
    prod = Producer(clock)
    ss = send_stream(clock, mid=mid)
    out = prod.forward(ss, 1, 0, key=True)
    mvo = prod.rs.mid_value_offset
    assert out[mvo - 1] == (ROUTER_MID << 4) | (n - 1)
    assert out[mvo:mvo + n] == mid.encode() and out[mvo + n:mvo + 8] == bytes(8 - n)
    p = parse_rtp(out)
    # the zero bytes after a short MID parse as one-byte-header padding: the next element survives
    assert [(i, bytes(out[o:o + ln])) for i, o, ln in iter_extensions(out, p[6], p[7], p[8])] == [
        (ROUTER_MID, mid.encode()), (ROUTER_ABS, b"\x11\x22\x33")
    ]


def test_shared_buffer_each_consumer_writes_its_own_fields():
    clock = FakeClock()
    prod = Producer(clock)
    a = send_stream(clock, ssrc=0xA, mid="1", initial_seq=10, initial_ts=100)
    b = send_stream(clock, ssrc=0xB, mid=None, payload_type=99, initial_seq=20000, initial_ts=200)
    c = send_stream(clock, ssrc=0xC, mid="123456789", initial_seq=30000)  # too long for the slot
    buf, mvo, seq, ts, kf = prod.packet(1, 9000, key=True)
    out_a = a.send(buf, mvo, seq, ts, kf, CHROME_VIDEO_SSRC)
    out_b = b.send(buf, mvo, seq, ts, kf, CHROME_VIDEO_SSRC)
    out_c = c.send(buf, mvo, seq, ts, kf, CHROME_VIDEO_SSRC)
    out_a2 = a.send(buf, mvo, seq, ts, kf, CHROME_VIDEO_SSRC)  # same packet again: same bytes
    assert out_a == out_a2
    assert hdr(out_a) == (ROUTER_VP8, 0, 10, 100, 0xA) and get_extension(out_a, parse_rtp(out_a), 1) == b"1"
    assert hdr(out_b) == (99, 0, 20000, 200, 0xB)
    assert out_b[mvo - 1] == (ROUTER_MID << 4) | 7 and out_b[mvo:mvo + 8] == bytes(8)  # id kept, value blank
    assert hdr(out_c)[2:] == (30000, 5000, 0xC) and out_c[mvo:mvo + 8] == bytes(8)
    assert out_a[parse_rtp(out_a)[5]:] == out_b[parse_rtp(out_b)[5]:] == VP8_KEY


def test_sequence_and_timestamp_wraparound():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock, initial_seq=65534, initial_ts=2**32 - 1500)
    outs = [prod.forward(ss, 10 + i, 1000 * i, key=(i == 0)) for i in range(4)]
    assert [hdr(o)[2] for o in outs] == [65534, 65535, 0, 1]
    assert [hdr(o)[3] for o in outs] == [2**32 - 1500, 2**32 - 500, 500, 1500]
    assert ss.max_seq == 1 and ss.max_ts == 1500
    # input wraparound is followed too
    ss2 = send_stream(clock, initial_seq=7)
    prod2 = Producer(clock)
    outs = [prod2.forward(ss2, s, 0, key=(s == 65534)) for s in (65534, 65535, 65536, 65537)]
    assert [hdr(o)[2] for o in outs] == [7, 8, 9, 10]


def test_keyframe_gating_video_only():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock)
    buf, mvo, seq, ts, kf = prod.packet(1, 0)
    before = bytes(buf)
    assert ss.send(buf, mvo, seq, ts, kf, CHROME_VIDEO_SSRC) is None
    assert bytes(buf) == before  # a gated packet is not touched
    assert prod.forward(ss, 2, 0) is None
    assert ss.dropped_gated == 2 and ss.packets == 0 and ss.sync_required
    assert hdr(prod.forward(ss, 3, 3000, key=True))[2] == 1000
    assert hdr(prod.forward(ss, 4, 3000))[2] == 1001  # deltas flow after the keyframe
    # audio never gates
    ars = chrome_audio_recv(clock)
    audio = send_stream(clock, kind="audio", codec="opus", payload_type=ROUTER_OPUS, clock_rate=48000,
                        keyframe_gating=True)
    buf = ars.receive(build_rtp(payload_type=111, seq=5, ts=960, ssrc=1, payload=b"x"))
    out = audio.send(buf, ars.mid_value_offset, 5, 960, False, 1)
    assert out is not None and hdr(out)[:3] == (ROUTER_OPUS, 0, 1000)
    assert audio.dropped_gated == 0


def test_request_sync_keeps_continuity():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock)
    for i in range(3):
        prod.forward(ss, 100 + i, 3000 * i, key=(i == 0))
        clock.advance(1 / 30)
    last_seq, last_ts = ss.max_seq, ss.max_ts
    assert (last_seq, last_ts) == (1002, 11000)
    sent_at = clock.now() - 1 / 30
    ss.request_sync()  # e.g. consumer resumed
    for i in range(3, 10):  # the producer moves on; deltas are dropped meanwhile
        assert prod.forward(ss, 100 + i, 3000 * i) is None
        clock.advance(0.05)
    elapsed = clock.now() - sent_at
    out = prod.forward(ss, 200, 3000 * 50, key=True)  # the requested keyframe (input seq jumped)
    assert hdr(out)[2] == last_seq + 1
    assert hdr(out)[3] == last_ts + round(elapsed * 90000)
    out2 = prod.forward(ss, 201, 3000 * 50)  # same frame: same output timestamp
    assert hdr(out2)[2:4] == (last_seq + 2, hdr(out)[3])
    assert ss.dropped_gated == 7 and not ss.sync_required


def test_source_switch_keeps_continuity_and_drops_stragglers():
    clock = FakeClock()
    a = Producer(clock)
    b = Producer(clock)
    ss = send_stream(clock)
    for i in range(3):
        a.forward(ss, 500 + i, 90000 + 3000 * i, key=(i == 0), source=0xAAAA)
        clock.advance(1 / 30)
    clock.advance(0.1)
    # simulcast switch to another encoding with unrelated seq/ts: waits for its keyframe
    assert b.forward(ss, 40000, 7_000_000, source=0xBBBB) is None
    out = b.forward(ss, 40001, 7_003_000, key=True, source=0xBBBB)
    assert hdr(out)[2] == 1003
    assert hdr(out)[3] == 11000 + round((1 / 30 + 0.1) * 90000)
    switched_ts = hdr(out)[3]
    # a late packet of the old source is gated out without disturbing the new one
    assert a.forward(ss, 503, 90000 + 9000, source=0xAAAA) is None
    out = b.forward(ss, 40002, 7_006_000, source=0xBBBB)
    assert hdr(out)[2:4] == (1004, switched_ts + 3000)


def test_audio_source_switch_advances_at_least_one_tick():
    clock = FakeClock()
    ars = chrome_audio_recv(clock)
    audio = send_stream(clock, kind="audio", codec="opus", payload_type=ROUTER_OPUS, clock_rate=48000)
    buf = ars.receive(build_rtp(payload_type=111, seq=1, ts=960, ssrc=1, payload=b"x"))
    first = audio.send(buf, ars.mid_value_offset, 1, 960, False, 1)
    buf = ars.receive(build_rtp(payload_type=111, seq=2, ts=1920, ssrc=1, payload=b"x"))
    out = audio.send(buf, ars.mid_value_offset, 9, 777, False, 2)  # new source, no time elapsed
    assert hdr(out)[2:4] == (hdr(first)[2] + 1, hdr(first)[3] + 1)


def test_nack_plain_retransmission_and_resend_guard():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock, buffer_packets=8)
    sent = [prod.forward(ss, i, 0, key=(i == 0)) for i in range(5)]
    assert ss.on_nack([1001, 1003]) == [sent[1], sent[3]]
    assert ss.on_nack([1001]) == []  # resent less than an RTT ago (100 ms default)
    clock.advance(0.1)
    assert ss.on_nack([1001]) == [sent[1]]
    ss.rtt_ms = 300.0
    clock.advance(0.2)
    assert ss.on_nack([1001]) == []
    assert ss.on_nack([999, 1200]) == []  # never sent
    assert (ss.nacks_received, ss.retransmitted, ss.nack_misses) == (5, 3, 2)
    for i in range(5, 13):  # ring of 8 overwritten
        prod.forward(ss, i, 0)
    assert ss.on_nack([1002]) == [] and ss.get_buffered(1002) is None
    assert ss.get_buffered(1012) is not None


def test_rtx_wrap_and_unwrap_round_trip():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock, rtx_ssrc=0xD0D0D0D0, rtx_payload_type=ROUTER_VP8_RTX, mid="7")
    sent = [prod.forward(ss, 50 + i, 3000 * (i // 2), key=(i == 0), marker=(i % 2 == 1)) for i in range(4)]
    # the consumer side (a browser) as a RecvStream on the consumer's parameters
    def browser():
        return RecvStream(
            ssrc=0xC0C0C0C0, kind="video", codec="vp8", clock_rate=90000,
            payload_type_map={ROUTER_VP8: ROUTER_VP8},
            ext_id_map={ROUTER_MID: ROUTER_MID, ROUTER_ABS: ROUTER_ABS}, reserve_mid_ext_id=None,
            audio_level_ext_id=None, rtx_ssrc=0xD0D0D0D0, rtx_payload_type=ROUTER_VP8_RTX, clock=clock,
        )
    rx = browser()
    for i in (0, 1, 3):
        assert rx.receive(sent[i]) is not None
    assert rx.nack_due(clock.now()) == [1002]
    nack = rx.build_nack(1, clock.now() + 1)
    _, _, off, ln = next(rtcp.iter_rtcp(nack))
    retrans = ss.on_nack(rtcp.parse_nack(nack, off, ln)[2])
    assert len(retrans) == 1
    rtx = retrans[0]
    p = parse_rtp(rtx)
    assert (p[0], p[4]) == (ROUTER_VP8_RTX, 0xD0D0D0D0)
    assert rtx[p[5]:p[5] + 2] == struct.pack("!H", 1002)  # OSN
    assert rtx[p[5] + 2:] == VP8_DELTA
    assert p[3] == parse_rtp(sent[2])[3]  # timestamp kept
    assert get_extension(rtx, p, ROUTER_MID) == b"7"
    restored = rx.receive_rtx(rtx)
    reference = browser().receive(sent[2])  # what the original would have looked like
    assert restored == reference
    assert hdr(restored) == hdr(sent[2])
    assert rx.packets_repaired == 1 and rx.packets_lost == 0 and rx.rtx_packets == 1
    # RTX sequence numbers are their own counter
    clock.advance(1)
    rtx2 = ss.on_nack([1002])[0]
    assert parse_rtp(rtx2)[2] == (p[2] + 1) & 0xFFFF
    assert rx.receive_rtx(rtx2) is None and rx.duplicates == 1


def test_rtx_wrap_drops_original_padding():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock, rtx_ssrc=5, rtx_payload_type=ROUTER_VP8_RTX)
    sent = prod.forward(ss, 1, 0, key=True, padding=7)
    rtx = ss.on_nack([1000])[0]
    assert rtx[0] & 0x20 == 0
    assert rtx[parse_rtp(rtx)[5]:] == struct.pack("!H", 1000) + VP8_KEY
    assert len(rtx) == len(sent) - 7 + 2


def test_sender_report_values():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock, cname="alice-cname")
    assert ss.build_sr(clock.wall(), clock.now()) is None
    payload_octets = 0
    for i in range(10):
        out = prod.forward(ss, i, 3000 * i, key=(i == 0))
        payload_octets += len(out) - parse_rtp(out)[5]
        clock.advance(1 / 30)
    clock.advance(0.2)
    elapsed = clock.now() - (clock.now() - 0.2 - 1 / 30)
    sr = ss.build_sr(clock.wall(), clock.now())
    items = list(rtcp.iter_rtcp(sr))
    assert [i[0] for i in items] == [rtcp.SR, rtcp.SDES]
    ssrc, ntp_sec, ntp_frac, rtp_ts, packets, octets, blocks = rtcp.parse_sr(sr, items[0][2], items[0][3])
    assert ssrc == 0xC0C0C0C0 and blocks == []
    assert (ntp_sec, ntp_frac) == rtcp.ntp_from_wall(clock.wall())
    assert rtp_ts == (5000 + 27000 + round(elapsed * 90000)) & 0xFFFFFFFF
    assert packets == 10 and octets == payload_octets
    assert rtcp.parse_sdes_cnames(sr, items[1][2], items[1][3]) == [(0xC0C0C0C0, "alice-cname")]


def test_receiver_report_rtt_loss_and_score():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock)
    for i in range(100):
        prod.forward(ss, i, 0, key=(i == 0))
    sr = ss.build_sr(clock.wall(), clock.now())
    _, ntp_sec, ntp_frac, *_ = rtcp.parse_sr(sr, 0, 28)
    lsr = rtcp.ntp_compact(ntp_sec, ntp_frac)
    clock.advance(0.3)
    ss.on_receiver_report(0, 0, 1099, 10, lsr, int(0.1 * 65536), clock.now())
    assert ss.rtt_ms == pytest.approx(200.0, abs=0.1)
    assert ss.score == 10
    # next interval: 100 more expected, 25 lost
    ss.on_receiver_report(64, 25, 1199, 12, 0, 0, clock.now())
    assert ss.rtt_ms == pytest.approx(200.0, abs=0.1)  # unchanged without LSR
    assert (ss.fraction_lost, ss.packets_lost, ss.jitter) == (64, 25, 12)
    # interval score round(0.75 ** 4 * 10) = 3; weighted history [10, 3]: (10 + 2 * 3) / 3 -> 5
    assert ss.score == 5


def test_counters_bitrate_and_stats():
    clock = FakeClock()
    prod = Producer(clock)
    ss = send_stream(clock)
    total = 0
    for i in range(200):
        out = prod.forward(ss, i, 900 * i, key=(i == 0))
        total += len(out)
        clock.advance(0.01)
    ss.on_pli()
    ss.on_fir()
    ss.on_nack([1000])
    stats = ss.to_stats(clock.now())
    assert stats["type"] == "outbound-rtp" and stats["ssrc"] == 0xC0C0C0C0
    assert stats["packetCount"] == 200 and stats["byteCount"] == total
    counts = (stats["pliCount"], stats["firCount"], stats["nackCount"], stats["packetsRetransmitted"])
    assert counts == (1, 1, 1, 1)
    assert abs(stats["bitrate"] - total * 8 / 2) / (total * 8 / 2) < 0.05
    assert stats["score"] == 10 and stats["mimeType"] == "video/vp8"


def test_shared_snapshot_history_retransmits_each_consumers_own_packet():
    """Two consumers keep (snapshot, seq, ts, mid offset) entries over ONE shared copy of each
    ingress packet; a NACK rebuilds exactly the bytes that consumer sent."""
    clock = FakeClock()
    prod = Producer(clock)
    a = send_stream(clock, ssrc=0xAAAA0001, mid="1", initial_seq=100)
    b = send_stream(clock, ssrc=0xBBBB0002, mid="12", initial_seq=40000)
    sent = {a: [], b: []}
    for i in range(20):
        buf, mvo, seq, ts, kf = prod.packet(500 + i, 9000 * i, key=(i == 0))
        snapshot = bytes(buf)  # taken once, before any consumer rewrites the shared buffer
        for ss in (a, b):
            sent[ss].append(ss.send(buf, mvo, seq, ts, kf, CHROME_VIDEO_SSRC, snapshot=snapshot))
    for ss in (a, b):
        entry = ss._ring[parse_rtp(sent[ss][7])[2] % ss._n]
        assert type(entry) is tuple and entry[0] is not sent[ss][7]  # the shared copy, not ours
        want = [parse_rtp(sent[ss][i])[2] for i in (3, 7, 19)]
        assert [ss.get_buffered(q) for q in want] == [sent[ss][i] for i in (3, 7, 19)]
    # both consumers' entries reference the same snapshot object
    ea = a._ring[parse_rtp(sent[a][5])[2] % a._n]
    eb = b._ring[parse_rtp(sent[b][5])[2] % b._n]
    assert ea[0] is eb[0]
