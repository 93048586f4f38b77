import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from studyrooms.clock import FakeClock
from studyrooms.media import rtcp
from studyrooms.media.recv_stream import RecvStream
from studyrooms.media.rtp import build_rtp, get_extension, iter_extensions, parse_rtp, payload_end

from ._util import (
    CHROME_AUDIO_SSRC,
    CHROME_RTX_SSRC,
    CHROME_VIDEO_SSRC,
    ROUTER_ABS,
    ROUTER_AUDIO_LEVEL,
    ROUTER_MID,
    ROUTER_OPUS,
    ROUTER_VP8,
    VP8_DELTA,
    VP8_KEY,
    chrome_audio_recv,
    chrome_video_packet,
    chrome_video_recv,
)

MID_SLOT = bytes([(ROUTER_MID << 4) | 7]) + bytes(8)


# ---------------------------------------------------------------------------------------------
# normalisation with real parameter shapes


def test_chrome_video_normalised_exactly():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    pkt = chrome_video_packet(4242, 90000, VP8_KEY, marker=True)
    out = rs.receive(pkt)
    assert isinstance(out, bytearray)
    expected = (
        struct.pack("!BBHII", 0x90, 0x80 | ROUTER_VP8, 4242, 90000, CHROME_VIDEO_SSRC)
        + b"\xbe\xde\x00\x04"
        + MID_SLOT
        + bytes([(ROUTER_ABS << 4) | 2]) + b"\x11\x22\x33"  # abs-send-time 2 -> 4, value kept
        + b"\x00\x00\x00"  # transport-cc (4) dropped; block padded to 32 bits
        + VP8_KEY
    )
    assert bytes(out) == expected
    assert rs.mid_value_offset == 17 and out[17:25] == bytes(8)
    assert rs.last_payload_offset == 32 and rs.last_payload_end == len(out)
    assert (rs.last_seq, rs.last_ts, rs.last_marker, rs.last_keyframe) == (4242, 90000, True, True)
    assert rs.last_audio_level == -1
    assert (rs.packets, rs.bytes, rs.keyframes) == (1, len(pkt), 1)
    p = parse_rtp(out)
    elements = [(i, ln) for i, _, ln in iter_extensions(out, p[6], p[7], p[8])]
    assert elements == [(ROUTER_MID, 8), (ROUTER_ABS, 3)]
    # the input is untouched and the layout plan is reused for the next packet
    assert pkt == chrome_video_packet(4242, 90000, VP8_KEY, marker=True)
    out2 = rs.receive(chrome_video_packet(4243, 90000, VP8_DELTA, tcc=8))
    assert bytes(out2[:32]) == expected[:1] + bytes([ROUTER_VP8]) + struct.pack("!H", 4243) + expected[4:32]
    assert out2[32:] == VP8_DELTA and not rs.last_keyframe


def test_chrome_audio_level_and_mid_slot():
    clock = FakeClock()
    rs = chrome_audio_recv(clock)
    pkt = build_rtp(payload_type=111, seq=1, ts=960, ssrc=CHROME_AUDIO_SSRC, payload=b"opus",
                    extensions=[(9, b"1"), (14, bytes([0x80 | 42]))])
    out = rs.receive(pkt)
    assert bytes(out) == (
        struct.pack("!BBHII", 0x90, ROUTER_OPUS, 1, 960, CHROME_AUDIO_SSRC)
        + b"\xbe\xde\x00\x03" + MID_SLOT + bytes([ROUTER_AUDIO_LEVEL << 4, 0x80 | 42]) + b"\x00" + b"opus"
    )
    assert rs.last_audio_level == 42  # the V flag is masked off
    assert rs.last_keyframe is False
    out = rs.receive(build_rtp(payload_type=111, seq=2, ts=1920, ssrc=CHROME_AUDIO_SSRC, payload=b"o"))
    assert rs.last_audio_level == -1
    assert bytes(out[12:28]) == b"\xbe\xde\x00\x03" + MID_SLOT + bytes(3)  # slot added even without input ext
    assert rs.mid_value_offset == 17 and out[28:] == b"o"


def test_aiortc_shapes():
    clock = FakeClock()
    video = RecvStream(
        ssrc=1253863376, kind="video", codec="vp8", clock_rate=90000, payload_type_map={97: 101, 98: 102},
        ext_id_map={1: 1, 3: 4}, reserve_mid_ext_id=1, audio_level_ext_id=None, rtx_ssrc=1525690116,
        rtx_payload_type=98, clock=clock,
    )
    pkt = build_rtp(payload_type=97, seq=7, ts=3000, ssrc=1253863376, payload=VP8_KEY,
                    extensions=[(1, b"0"), (3, b"\xaa\xbb\xcc")])
    out = video.receive(pkt)
    assert out[1] == 101
    p = parse_rtp(out)
    assert [(i, bytes(out[o:o + ln])) for i, o, ln in iter_extensions(out, p[6], p[7], p[8])] == [
        (1, bytes(8)), (4, b"\xaa\xbb\xcc")
    ]
    assert video.last_keyframe
    audio = RecvStream(
        ssrc=99, kind="audio", codec="opus", clock_rate=48000, payload_type_map={96: 100},
        ext_id_map={1: 1, 2: 10}, reserve_mid_ext_id=1, audio_level_ext_id=10, clock=clock,
    )
    out = audio.receive(build_rtp(payload_type=96, seq=1, ts=0, ssrc=99, payload=b"x",
                                  extensions=[(1, b"1"), (2, bytes([0x7F]))]))
    assert out[1] == 100 and audio.last_audio_level == 127
    assert get_extension(out, parse_rtp(out), 10) == bytes([0x7F])


def test_two_byte_input_becomes_one_byte():
    clock = FakeClock()
    rs = chrome_video_recv(clock, ext_id_map={9: 1, 2: 4, 5: 6, 7: 8})
    pkt = build_rtp(payload_type=96, seq=1, ts=0, ssrc=CHROME_VIDEO_SSRC, payload=VP8_DELTA, two_byte=True,
                    extensions=[(2, b"\x01\x02\x03"), (5, b""), (7, b"z" * 20), (9, b"mid")])
    out = rs.receive(pkt)
    p = parse_rtp(out)
    assert p[8] == 0xBEDE
    # zero-length and >16-byte values cannot be expressed in one-byte form: dropped; client MID
    # replaced by the reserved slot
    assert [(i, bytes(out[o:o + ln])) for i, o, ln in iter_extensions(out, p[6], p[7], p[8])] == [
        (1, bytes(8)), (4, b"\x01\x02\x03")
    ]
    assert out[rs.last_payload_offset:rs.last_payload_end] == VP8_DELTA


def test_no_extensions_kept_clears_x_bit():
    clock = FakeClock()
    rs = chrome_video_recv(clock, ext_id_map={}, reserve_mid_ext_id=None)
    pkt = chrome_video_packet(1, 0)
    out = rs.receive(pkt)
    assert out[0] & 0x10 == 0
    assert bytes(out) == bytes([0x80, ROUTER_VP8]) + pkt[2:12] + VP8_DELTA
    assert rs.mid_value_offset == -1 and rs.last_payload_offset == 12
    # no extension at all in and none wanted: the packet is copied, only the PT changes
    plain = build_rtp(payload_type=96, seq=2, ts=0, ssrc=CHROME_VIDEO_SSRC, payload=b"abc")
    out = rs.receive(plain)
    assert bytes(out) == plain[:1] + bytes([ROUTER_VP8]) + plain[2:]


def test_csrcs_and_padding_preserved():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    pkt = chrome_video_packet(1, 0, VP8_KEY, padding=5, csrcs=[0xAAAAAAAA, 0xBBBBBBBB])
    out = rs.receive(pkt)
    assert out[0] & 0x2F == 0x22  # P bit and CSRC count kept
    assert out[12:20] == bytes.fromhex("aaaaaaaabbbbbbbb")
    assert rs.mid_value_offset == 20 + 5
    assert rs.last_payload_offset == 20 + 4 + 16  # CSRCs, ext header, MID slot + abs-send-time
    assert rs.last_payload_end == len(out) - 5 == payload_end(out)
    assert out[-5:] == pkt[-5:]
    assert out[rs.last_payload_offset:rs.last_payload_end] == VP8_KEY
    assert rs.last_keyframe


def test_unknown_payload_type_and_malformed_are_rejected():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    assert rs.receive(build_rtp(payload_type=100, seq=1, ts=0, ssrc=CHROME_VIDEO_SSRC)) is None
    assert rs.unknown_payload_type == 1
    # the RTX PT is never treated as media even if it appears in the PT map
    rtx_pt_packet = build_rtp(payload_type=97, seq=1, ts=0, ssrc=CHROME_VIDEO_SSRC, payload=b"\x00\x01")
    assert rs.receive(rtx_pt_packet) is None
    assert rs.unknown_payload_type == 2
    assert rs.receive(b"\x80\x60\x00") is None
    assert rs.receive(struct.pack("!BBHII", 0x90, 96, 1, 2, 3) + b"\xbe\xde\x00\x09") is None
    assert rs.receive(struct.pack("!BBHII", 0xA0, 96, 1, 2, 3) + b"ab\x00") is None
    assert rs.invalid == 3
    assert rs.packets == 0 and rs.last_seq == -1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_raise(data):
    rs = chrome_video_recv(FakeClock())
    for d in (data, bytes([0x80, 96]) + data, bytes([0x90, 96]) + data[:10] + b"\xbe\xde" + data[10:],
              bytes([0xB0, 97]) + data):
        out = rs.receive(d)
        if out is not None:
            assert rs.last_payload_offset <= rs.last_payload_end <= len(out)
        rs.receive_rtx(d)


# ---------------------------------------------------------------------------------------------
# sequence tracking, loss, jitter, reports


def _feed(rs, clock, seqs, ts_step=3000, dt=1 / 30):
    outs = []
    for s in seqs:
        outs.append(rs.receive(chrome_video_packet(s & 0xFFFF, (s * ts_step) & 0xFFFFFFFF)))
        clock.advance(dt)
    return outs


def test_sequence_wraparound_counts_cycles():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    _feed(rs, clock, [65534, 65535, 65536, 65537])
    assert rs.highest_ext_seq == 65537
    assert rs.expected_packets == 4 and rs.packets_lost == 0
    assert rs.last_seq == 1 and rs.last_ext_seq == 65537


def test_loss_jitter_and_report_block_on_crafted_sequence():
    clock = FakeClock()
    rs = chrome_video_recv(clock, nack_enabled=False)
    # 20 ms spacing, timestamps match arrival exactly (1800 units at 90 kHz) except that packet 4
    # arrives 10 ms (900 units) late; packets 3 and 7 are lost
    for s in range(10):
        if s in (3, 7):
            clock.advance(0.02)
            continue
        if s == 4:
            clock.advance(0.01)
        rs.receive(chrome_video_packet(100 + s, s * 1800))
        clock.advance(0.01 if s == 4 else 0.02)
        if s == 4:
            assert rs.jitter == 56  # 900 / 16
        if s == 5:
            assert rs.jitter == 109  # 56.25 + (900 - 56.25) / 16 = 108.98 (integer form of A.8)
    # transit changes: +900 at packet 4, -900 at packet 5: J = 900/16 = 56.25, then
    # 56.25 + (900 - 56.25)/16 = 108.98; packets 6, 8, 9 on time: J *= 15/16 three times -> 89.8,
    # reported as the integer 89 (RFC 3550 A.8)
    assert rs.jitter == 89
    assert rs.packets == 8 and rs.expected_packets == 10 and rs.packets_lost == 2
    rs.on_sender_report(0x12345678, 0x9ABCDEF0, 5000, clock.now())
    clock.advance(0.5)
    block = rs.report_block(clock.now())
    assert len(block) == 24
    rr = rtcp.build_rr(1, [block])
    ssrc, fraction, cumulative, highest, jitter, lsr, dlsr = rtcp.parse_rr_blocks(rr, 0, 32)[0]
    assert ssrc == CHROME_VIDEO_SSRC
    assert fraction == (2 * 256) // 10 == rs.fraction_lost
    assert cumulative == 2
    assert highest == 109
    assert jitter == 89
    assert lsr == 0x56789ABC
    assert dlsr == 32768  # 0.5 s in 1/65536 s
    # next interval: 10 more packets, none lost -> fraction 0, cumulative unchanged
    for s in range(10, 20):
        rs.receive(chrome_video_packet(100 + s, s * 1800))
    block = rs.report_block(clock.now())
    assert struct.unpack_from("!I", block, 4)[0] == 2  # fraction 0, cumulative 2
    assert rs.fraction_lost == 0


def test_score_from_loss():
    clock = FakeClock()
    rs = chrome_video_recv(clock, nack_enabled=False)
    assert rs.score == 0  # nothing received yet
    _feed(rs, clock, [s for s in range(10) if s not in (2, 5)])  # 8 of 10: 20% loss
    assert rs.score == 10
    rs.report_block(clock.now())
    assert rs.score == 4  # round(0.8 ** 4 * 10)
    _feed(rs, clock, range(10, 20))
    rs.report_block(clock.now())
    assert rs.score == 8  # weighted (4*1 + 10*2) / 3


def test_duplicates_reorder_and_repair():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    _feed(rs, clock, [10, 11, 13])
    assert rs.receive(chrome_video_packet(13, 0)) is None  # duplicate of the highest
    assert rs.receive(chrome_video_packet(11, 0)) is None  # duplicate of an older one
    assert rs.duplicates == 2
    out = rs.receive(chrome_video_packet(12, 0))  # late (reordered) packet is forwarded
    assert out is not None and rs.last_seq == 12
    assert rs.packets_repaired == 1 and rs.nack_list_size == 0
    assert rs.packets_lost == 0 and rs.highest_ext_seq == 13


def test_large_jump_is_discarded_then_accepted_as_restart():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    _feed(rs, clock, [100, 101])
    assert rs.receive(chrome_video_packet(30000, 0)) is None
    assert rs.discarded == 1
    assert rs.receive(chrome_video_packet(30001, 0)) is not None  # the stream restarted
    assert rs.restarts == 1 and rs.highest_ext_seq == 30001
    assert rs.packets_lost == 0 and rs.nack_list_size == 0


def test_bitrate_and_stats():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    pkt_len = len(chrome_video_packet(0, 0, b"\x10\x01" + bytes(998)))
    for s in range(200):  # 100 packets/s for 2 s
        rs.receive(chrome_video_packet(s, s * 900, b"\x10\x01" + bytes(998)))
        clock.advance(0.01)
    bps = rs.bitrate_bps(clock.now())
    assert abs(bps - pkt_len * 8 * 100) / (pkt_len * 8 * 100) < 0.05
    assert rs.bitrate_bps(clock.now() + 5) == 0
    stats = rs.to_stats(clock.now())
    assert stats["type"] == "inbound-rtp" and stats["ssrc"] == CHROME_VIDEO_SSRC
    assert stats["rtxSsrc"] == CHROME_RTX_SSRC and stats["mimeType"] == "video/vp8"
    assert stats["packetCount"] == 200 and stats["byteCount"] == 200 * pkt_len
    assert stats["packetsLost"] == 0 and stats["score"] == 10 and stats["bitrate"] == bps


# ---------------------------------------------------------------------------------------------
# NACK generation


def test_nack_on_detection_then_retries_every_rtt_then_gives_up():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    _feed(rs, clock, [1, 2, 5], dt=0)  # 3 and 4 missing
    assert rs.nack_list_size == 2
    now = clock.now()
    assert rs.nack_due(now) == [3, 4]  # at once on detection
    assert rs.nack_due(now) == []
    assert rs.nack_due(now + 0.05) == []  # default RTT 100 ms
    assert rs.nack_due(now + 0.1) == [3, 4]
    rs.receive(chrome_video_packet(3, 0))  # recovered: no longer requested
    assert rs.nack_due(now + 0.2) == [4]
    for k in range(3, 11):
        due = rs.nack_due(now + 0.1 * k)
        assert due == ([4] if k < 10 else [])  # 10 requests in all, then given up
    assert rs.nack_list_size == 0 and rs.nack_give_ups == 1
    assert rs.nacks_sent == 10 and rs.nack_packets_requested == 12  # seq 3 twice, seq 4 ten times


def test_nack_interval_follows_rtt_with_20ms_floor():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    rs.rtt_ms = 5.0
    _feed(rs, clock, [1, 3], dt=0)
    t = clock.now()
    assert rs.nack_due(t) == [2]
    assert rs.nack_due(t + 0.015) == []
    assert rs.nack_due(t + 0.02) == [2]
    rs.rtt_ms = 300.0
    assert rs.nack_due(t + 0.2) == []
    assert rs.nack_due(t + 0.32) == [2]


def test_nack_forgets_losses_older_than_max_age():
    clock = FakeClock()
    rs = chrome_video_recv(clock, max_nack_age=1000)
    _feed(rs, clock, [1, 3], dt=0)
    _feed(rs, clock, range(4, 1100), dt=0)
    assert rs.nack_due(clock.now()) == []  # seq 2 is > 1000 packets old
    assert rs.nack_list_size == 0
    # a gap bigger than the age keeps only the newest max_age losses
    rs2 = chrome_video_recv(clock, max_nack_age=100)
    _feed(rs2, clock, [1, 500], dt=0)
    due = rs2.nack_due(clock.now())
    assert due == list(range(400, 500))


def test_nack_overflow_requests_keyframe():
    clock = FakeClock()
    rs = chrome_video_recv(clock, max_nack_age=10000)
    _feed(rs, clock, [0, 900, 1800], dt=0)  # 1798 losses > 1000
    assert rs.keyframe_required and rs.nack_list_size == 0
    # with a keyframe after the older losses, only those older than it are dropped
    rs = chrome_video_recv(clock, max_nack_age=10000)
    _feed(rs, clock, [0, 600], dt=0)
    rs.receive(chrome_video_packet(601, 0, VP8_KEY))
    _feed(rs, clock, [1200], dt=0)
    assert not rs.keyframe_required
    assert rs.nack_list_size == 598  # 602..1199


def test_build_nack_packet():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    assert rs.build_nack(0x1234, clock.now()) is None
    _feed(rs, clock, [10, 12, 13, 40], dt=0)
    pkt = rs.build_nack(0x1234, clock.now())
    (pt, fmt, off, ln), = list(rtcp.iter_rtcp(pkt))
    assert rtcp.parse_nack(pkt, off, ln) == (0x1234, CHROME_VIDEO_SSRC, [11] + list(range(14, 40)))


def test_nack_disabled():
    clock = FakeClock()
    rs = chrome_video_recv(clock, nack_enabled=False)
    _feed(rs, clock, [1, 5], dt=0)
    assert rs.nack_due(clock.now()) == [] and rs.build_nack(1, clock.now()) is None


# ---------------------------------------------------------------------------------------------
# RTX


def _rtx(osn: int, rtx_seq: int, payload: bytes, padding: int = 0) -> bytes:
    return build_rtp(payload_type=97, seq=rtx_seq, ts=777, ssrc=CHROME_RTX_SSRC,
                     payload=struct.pack("!H", osn) + payload, padding=padding,
                     extensions=[(9, b"0"), (2, b"\x11\x22\x33")])


def test_receive_rtx_unwraps_and_repairs():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    _feed(rs, clock, [20, 21, 23], dt=0)
    assert rs.nack_due(clock.now()) == [22]
    out = rs.receive_rtx(_rtx(22, 5000, VP8_DELTA, padding=3))
    assert out is not None
    assert parse_rtp(out)[:5] == (ROUTER_VP8, 0, 22, 777, CHROME_VIDEO_SSRC)
    assert out[0] & 0x20 == 0  # RTX padding is not carried into the original
    assert out[rs.last_payload_offset:rs.last_payload_end] == VP8_DELTA == out[rs.last_payload_offset:]
    assert rs.rtx_packets == 1 and rs.packets_repaired == 1 and rs.nack_list_size == 0
    assert rs.packets_lost == 0
    # the same retransmission again is a duplicate
    assert rs.receive_rtx(_rtx(22, 5001, VP8_DELTA)) is None
    assert rs.duplicates == 1 and rs.rtx_packets == 2


def test_receive_rtx_rejects_wrong_pt_ssrc_and_padding_only():
    clock = FakeClock()
    rs = chrome_video_recv(clock)
    _feed(rs, clock, [1, 3], dt=0)
    assert rs.receive_rtx(chrome_video_packet(2, 0)) is None  # media PT on the RTX path
    wrong_ssrc = bytearray(_rtx(2, 1, b"x"))
    wrong_ssrc[8:12] = b"\x00\x00\x00\x01"
    assert rs.receive_rtx(bytes(wrong_ssrc)) is None
    probe = build_rtp(payload_type=97, seq=9, ts=0, ssrc=CHROME_RTX_SSRC, padding=200)
    assert rs.receive_rtx(probe) is None and rs.rtx_padding_packets == 1
    assert rs.nack_list_size == 1


def test_unknown_extension_profile_is_stripped():
    clock = FakeClock()
    rs = chrome_video_recv(clock, reserve_mid_ext_id=None)
    for profile in (0x0000, 0x1234):
        pkt = struct.pack("!BBHII", 0x90, 96, 5 + profile % 7, 0, CHROME_VIDEO_SSRC)
        pkt += struct.pack("!HH", profile, 1) + b"\x10\xaa\x00\x00" + VP8_DELTA
        out = rs.receive(pkt)
        assert out[0] & 0x10 == 0 and out[12:] == VP8_DELTA and rs.last_payload_offset == 12
