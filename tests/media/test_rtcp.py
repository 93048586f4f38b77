import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from studyrooms.media import rtcp


def _one(data):
    items = list(rtcp.iter_rtcp(data))
    assert len(items) == 1
    return items[0]


def test_pli_round_trip():
    pkt = rtcp.build_pli(0x11111111, 0x22222222)
    assert len(pkt) == 12
    pt, fmt, off, ln = _one(pkt)
    assert (pt, fmt, off, ln) == (rtcp.PSFB, rtcp.PSFB_PLI, 0, 12)
    assert rtcp.parse_pli(pkt, off, ln) == 0x22222222
    assert rtcp.parse_fb_ssrcs(pkt, off, ln) == (0x11111111, 0x22222222)
    assert rtcp.parse_fir(pkt, off, ln) is None  # not a FIR


def test_fir_round_trip():
    pkt = rtcp.build_fir(1, 0xABCDEF01, 300)
    pt, fmt, off, ln = _one(pkt)
    assert (pt, fmt, ln) == (rtcp.PSFB, rtcp.PSFB_FIR, 20)
    assert struct.unpack_from("!I", pkt, 8)[0] == 0  # media source field unused (RFC 5104)
    assert rtcp.parse_fir(pkt, off, ln) == [0xABCDEF01]
    assert rtcp.parse_fir_entries(pkt, off, ln) == [(0xABCDEF01, 300 & 0xFF)]
    assert rtcp.parse_pli(pkt, off, ln) is None


def test_nack_packs_pid_and_blp():
    seqs = [100, 101, 116, 117, 200]
    pkt = rtcp.build_nack(7, 8, seqs)
    # 100 + BLP{101 (bit0), 116 (bit15)}; 117 alone; 200 alone -> 3 FCI items
    assert len(pkt) == 12 + 3 * 4
    assert struct.unpack_from("!HHHHHH", pkt, 12) == (100, 0x8001, 117, 0, 200, 0)
    pt, fmt, off, ln = _one(pkt)
    assert (pt, fmt) == (rtcp.RTPFB, rtcp.RTPFB_NACK)
    assert rtcp.parse_nack(pkt, off, ln) == (7, 8, seqs)


def test_nack_wraparound_and_unsorted_input():
    pkt = rtcp.build_nack(1, 2, [1, 65534, 0, 65535, 1])
    assert len(pkt) == 16  # one item: PID 65534 + BLP bits for 65535, 0, 1
    assert struct.unpack_from("!HH", pkt, 12) == (65534, 0b111)
    assert rtcp.parse_nack(pkt, 0, len(pkt))[2] == [65534, 65535, 0, 1]
    assert rtcp.build_nack(1, 2, []) == b""


def test_rr_round_trip_with_negative_cumulative_loss():
    b1 = rtcp.build_report_block(0xAAAA0001, 25, 1234, 0x0001FFFF, 77, 0x12345678, 65536)
    b2 = rtcp.build_report_block(0xAAAA0002, 0, -3, 70000, 0, 0, 0)
    pkt = rtcp.build_rr(0x99, [b1, b2])
    pt, count, off, ln = _one(pkt)
    assert (pt, count, ln) == (rtcp.RR, 2, 8 + 48)
    assert rtcp.parse_rr_blocks(pkt, off, ln) == [
        (0xAAAA0001, 25, 1234, 0x0001FFFF, 77, 0x12345678, 65536),
        (0xAAAA0002, 0, -3, 70000, 0, 0, 0),
    ]
    assert rtcp.parse_rr(pkt, off, ln)[0] == 0x99
    # clamping of the 24-bit cumulative loss
    blk = rtcp.build_report_block(1, 0, 10**9, 0, 0, 0, 0)
    assert rtcp.parse_rr_blocks(rtcp.build_rr(1, [blk]), 0, 32)[0][2] == 0x7FFFFF


def test_empty_rr():
    pkt = rtcp.build_rr(5)
    assert pkt == bytes([0x80, 201, 0, 1, 0, 0, 0, 5])
    assert rtcp.parse_rr_blocks(pkt, 0, 8) == []


def test_sr_round_trip_and_compound_with_sdes():
    blk = rtcp.build_report_block(3, 1, 2, 3, 4, 5, 6)
    sr = rtcp.build_sr(0xCAFEBABE, 0xE0000001, 0x80000000, 123456, 1000, 900000, [blk])
    sdes = rtcp.build_sdes_cname(0xCAFEBABE, "user@example")
    compound = sr + sdes + rtcp.build_pli(1, 2)
    items = list(rtcp.iter_rtcp(compound))
    assert [(i[0], i[1]) for i in items] == [(rtcp.SR, 1), (rtcp.SDES, 1), (rtcp.PSFB, rtcp.PSFB_PLI)]
    pt, count, off, ln = items[0]
    assert rtcp.parse_sr(compound, off, ln) == (
        0xCAFEBABE, 0xE0000001, 0x80000000, 123456, 1000, 900000, [(3, 1, 2, 3, 4, 5, 6)]
    )
    assert rtcp.parse_rr_blocks(compound, off, ln) == [(3, 1, 2, 3, 4, 5, 6)]
    _, _, off2, ln2 = items[1]
    assert ln2 % 4 == 0
    assert rtcp.parse_sdes_cnames(compound, off2, ln2) == [(0xCAFEBABE, "user@example")]


def test_sdes_cname_padding_lengths():
    for name in ("", "a", "ab", "abc", "abcd", "x" * 300):
        pkt = rtcp.build_sdes_cname(1, name)
        assert len(pkt) % 4 == 0
        assert rtcp.parse_sdes_cnames(pkt, 0, len(pkt)) == [(1, name[:255])]


def test_remb_round_trip():
    pkt = rtcp.build_remb(0x42, 1_500_000, [0x1001, 0x1002])
    pt, fmt, off, ln = _one(pkt)
    assert (pt, fmt, ln) == (rtcp.PSFB, rtcp.PSFB_REMB, 28)
    assert rtcp.parse_remb(pkt, off, ln) == (1_500_000, [0x1001, 0x1002])
    # mantissa is 18 bits: large values lose only low bits
    br, _ = rtcp.parse_remb(*(lambda p: (p, 0, len(p)))(rtcp.build_remb(1, 123_456_789, [5])))
    assert br <= 123_456_789 and (123_456_789 - br) / 123_456_789 < 1e-4
    assert rtcp.parse_remb(rtcp.build_pli(1, 2), 0, 12) is None
    afb = rtcp.build_remb(1, 1000, [1])[:12] + b"XXXX" + bytes(8)
    assert rtcp.parse_remb(afb, 0, len(afb)) is None  # AFB but not REMB


def test_bye_round_trip():
    pkt = rtcp.build_bye([1, 2, 3])
    pt, count, off, ln = _one(pkt)
    assert (pt, count) == (rtcp.BYE, 3)
    assert rtcp.parse_bye(pkt, off, ln) == [1, 2, 3]


def test_iter_rtcp_stops_at_garbage():
    good = rtcp.build_pli(1, 2)
    assert [i[0] for i in rtcp.iter_rtcp(good + b"\x00\x01\x02\x03")] == [rtcp.PSFB]  # bad version
    assert [i[0] for i in rtcp.iter_rtcp(good + good[:8])] == [rtcp.PSFB]  # truncated second
    assert list(rtcp.iter_rtcp(b"\x80\xc9")) == []


def test_parsers_reject_short_or_wrong_type():
    pli = rtcp.build_pli(1, 2)
    assert rtcp.parse_nack(pli, 0, 12) is None
    assert rtcp.parse_pli(pli, 0, 8) is None
    assert rtcp.parse_pli(pli, 4, 12) is None  # beyond the buffer
    assert rtcp.parse_sr(rtcp.build_rr(1), 0, 8) is None
    assert rtcp.parse_rr(pli, 0, 12) is None
    rr = rtcp.build_rr(1, [rtcp.build_report_block(1, 0, 0, 0, 0, 0, 0)])
    assert rtcp.parse_rr_blocks(rr, 0, 20) is None  # count says 1 block, length says none


def test_ntp_helpers():
    sec, frac = rtcp.ntp_from_wall(1_700_000_000.5)
    assert sec == 1_700_000_000 + rtcp.NTP_EPOCH_OFFSET
    assert frac == 0x80000000
    assert rtcp.ntp_compact(0x12345678, 0x9ABCDEF0) == 0x56789ABC


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data):
    parsers = (
        rtcp.parse_nack, rtcp.parse_pli, rtcp.parse_fir, rtcp.parse_sr, rtcp.parse_rr, rtcp.parse_rr_blocks,
        rtcp.parse_remb, rtcp.parse_sdes_cnames, rtcp.parse_bye, rtcp.parse_fb_ssrcs,
    )
    for pt, fmt, off, ln in rtcp.iter_rtcp(data):
        assert off + ln <= len(data)
        for parse in parsers:
            parse(data, off, ln)
    for parse in parsers:
        parse(data, 0, len(data))
        parse(data, 3, 1000)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=60))
def test_nack_round_trip_property(seqs):
    # any set of losses within half the sequence space survives build -> parse
    base = seqs[0]
    window = [(base + (s % 5000)) & 0xFFFF for s in seqs]
    pkt = rtcp.build_nack(1, 2, window)
    got = rtcp.parse_nack(pkt, 0, len(pkt))[2]
    assert sorted(got) == sorted(set(window))
