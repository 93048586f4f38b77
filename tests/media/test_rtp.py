import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from studyrooms.media.rtp import (
    build_extension_block,
    build_rtp,
    get_extension,
    is_rtcp,
    is_rtp,
    iter_extensions,
    parse_rtp,
    payload_end,
    seq_diff,
    seq_newer,
    ts_diff,
    ts_newer,
)


def test_parse_minimal_header():
    pkt = build_rtp(payload_type=96, seq=0xABCD, ts=0x12345678, ssrc=0xDEADBEEF, payload=b"hi", marker=True)
    assert parse_rtp(pkt) == (96, 1, 0xABCD, 0x12345678, 0xDEADBEEF, 12, 0, 0, 0)
    assert payload_end(pkt) == len(pkt)


def test_parse_csrcs_one_byte_extension_and_padding():
    pkt = build_rtp(
        payload_type=111, seq=1, ts=2, ssrc=3, payload=b"P" * 10, csrcs=[0x11111111, 0x22222222],
        extensions=[(1, b"a"), (10, b"\x85")], padding=4,
    )
    p = parse_rtp(pkt)
    assert p is not None
    # header 12 + 2 CSRCs 8 = 20; ext header 4; elements 2+2 -> padded to 4
    assert p[5] == 28 and p[6] == 24 and p[7] == 4 and p[8] == 0xBEDE
    assert payload_end(pkt) == len(pkt) - 4
    assert pkt[p[5] : payload_end(pkt)] == b"P" * 10
    assert list(iter_extensions(pkt, p[6], p[7], p[8])) == [(1, 25, 1), (10, 27, 1)]
    assert get_extension(pkt, p, 10) == b"\x85"
    assert get_extension(pkt, (p[6], p[7], p[8]), 1) == b"a"
    assert get_extension(pkt, p, 3) is None


def test_parse_rejects_malformed():
    good = build_rtp(payload_type=96, seq=1, ts=2, ssrc=3, payload=b"xyz")
    assert parse_rtp(good[:11]) is None  # too short
    assert parse_rtp(b"") is None
    assert parse_rtp(bytes([0x40]) + good[1:]) is None  # version 1
    assert parse_rtp(bytes([0x80, 200]) + good[2:]) is None  # RTCP range (RFC 5761)
    assert parse_rtp(bytes([0x83]) + good[1:]) is None  # 3 CSRCs beyond the 15-byte packet
    hdr = struct.pack("!BBHII", 0x90, 96, 1, 2, 3)
    assert parse_rtp(hdr + b"\xbe\xde") is None  # extension header truncated
    assert parse_rtp(hdr + b"\xbe\xde\x00\x02" + b"\x10\x00\x00\x00") is None  # ext length beyond
    pad = struct.pack("!BBHII", 0xA0, 96, 1, 2, 3)
    assert parse_rtp(pad + b"abc\x00") is None  # padding count 0
    assert parse_rtp(pad + b"abc\x09") is None  # padding beyond the packet
    assert parse_rtp(pad + b"abc\x04") is not None  # padding = whole payload is fine
    assert payload_end(pad + b"abc\x04") == 12


def test_one_byte_iteration_padding_and_stop():
    # element, two padding bytes, element, then id 15 (stop) and a would-be element
    elems = bytes([0x10, 0xAA, 0x00, 0x00, 0x21, 0xBB, 0xCC, 0xF0, 0x30, 0xDD, 0x00, 0x00])
    pkt = struct.pack("!BBHII", 0x90, 96, 1, 2, 3) + b"\xbe\xde\x00\x03" + elems + b"pl"
    p = parse_rtp(pkt)
    assert list(iter_extensions(pkt, p[6], p[7], p[8])) == [(1, 17, 1), (2, 21, 2)]


def test_one_byte_iteration_truncated_element_stops():
    elems = bytes([0x10, 0xAA, 0x2F, 0x01])  # id 2 claims 16 bytes
    pkt = struct.pack("!BBHII", 0x90, 96, 1, 2, 3) + b"\xbe\xde\x00\x01" + elems
    p = parse_rtp(pkt)
    assert list(iter_extensions(pkt, p[6], p[7], p[8])) == [(1, 17, 1)]


def test_two_byte_iteration_including_zero_length_and_long_values():
    pkt = build_rtp(
        payload_type=96, seq=1, ts=2, ssrc=3, payload=b"x",
        extensions=[(1, b""), (200, b"\x01" * 20), (3, b"ab")], two_byte=True,
    )
    p = parse_rtp(pkt)
    assert p[8] == 0x1000
    got = list(iter_extensions(pkt, p[6], p[7], p[8]))
    assert [(i, ln) for i, _, ln in got] == [(1, 0), (200, 20), (3, 2)]
    assert get_extension(pkt, p, 200) == b"\x01" * 20
    assert get_extension(pkt, p, 1) == b""
    assert get_extension(pkt, p, 3) == b"ab"


def test_unknown_profile_yields_nothing():
    pkt = struct.pack("!BBHII", 0x90, 96, 1, 2, 3) + b"\x12\x34\x00\x01" + b"\x10\xaa\x00\x00"
    p = parse_rtp(pkt)
    assert p[8] == 0x1234
    assert list(iter_extensions(pkt, p[6], p[7], p[8])) == []
    assert get_extension(pkt, p, 1) is None


def test_build_extension_block_layout():
    blk = build_extension_block([(1, b"0"), (4, b"\x01\x02\x03")])
    assert blk[:4] == b"\xbe\xde\x00\x02"
    assert blk[4:10] == bytes([0x10, 0x30, 0x42, 1, 2, 3])
    assert blk[10:] == b"\x00\x00"


def test_rtcp_demux():
    assert is_rtcp(bytes([0x80, 200, 0, 6]))
    assert is_rtcp(bytes([0x81, 206, 0, 2]))
    assert is_rtcp(bytes([0x80, 223, 0, 0]))
    assert not is_rtcp(bytes([0x80, 96, 0, 0]))
    assert not is_rtcp(bytes([0x80, 0xE0, 0, 0]))  # PT 96 with marker = 224
    assert not is_rtcp(b"\x80")
    assert is_rtp(build_rtp(payload_type=96, seq=1, ts=1, ssrc=1))
    assert not is_rtp(bytes([0x80, 201]) + bytes(10))


def test_seq_helpers_wraparound():
    assert seq_newer(1, 0) and not seq_newer(0, 1)
    assert seq_newer(0, 65535) and not seq_newer(65535, 0)
    assert seq_newer(100, 65000)
    assert not seq_newer(5, 5)
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(10, 65530) == 16
    assert seq_diff(32767, 0) == 32767
    assert seq_diff(32768, 0) == -32768


def test_ts_helpers_wraparound():
    assert ts_newer(10, 0xFFFFFFF0)
    assert not ts_newer(0xFFFFFFF0, 10)
    assert ts_diff(10, 0xFFFFFFF0) == 26
    assert ts_diff(0xFFFFFFF0, 10) == -26
    assert ts_diff(3000, 0) == 3000


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_never_raise(data):
    p = parse_rtp(data)
    is_rtcp(data)
    is_rtp(data)
    if p is not None:
        assert 12 <= p[5] <= len(data)
        assert p[5] <= payload_end(data) <= len(data)
        for xid, off, ln in iter_extensions(data, p[6], p[7], p[8]):
            assert p[6] <= off and off + ln <= p[6] + p[7]
        get_extension(data, p, 1)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=12, max_size=60), st.integers(0, 80), st.integers(0, 80), st.integers(0, 0xFFFF))
def test_iter_extensions_arbitrary_offsets_never_raise(data, off, ln, profile):
    for prof in (profile, 0xBEDE, 0x1000):
        for ext_id, value_off, value_len in iter_extensions(data, off, ln, prof):
            # every element yielded lies inside the block and the packet, with a valid id
            assert 0 <= ext_id < 256 and value_len >= 0
            assert off <= value_off and value_off + value_len <= min(off + ln, len(data))


def test_temporal_rates_meter_each_tid_and_add_up_lower_layers():
    from studyrooms.media.rate import TemporalRates

    rates = TemporalRates(3)
    t = 0.0
    for frame in range(60):  # 2 s at 30 fps, TIDs 0,2,1,2: 1000-byte frames
        rates.add((0, 2, 1, 2)[frame % 4], 1000, t)
        t += 1 / 30
    cumulative = rates.cumulative_bps(t)
    assert len(cumulative) == 3 and cumulative[0] < cumulative[1] < cumulative[2]
    full = cumulative[2]
    assert 200_000 < full < 280_000  # 30 x 1000 bytes per second = 240 kbps
    assert abs(cumulative[0] / full - 0.25) < 0.06 and abs(cumulative[1] / full - 0.5) < 0.06
    rates.add(7, 1000, t)  # a TID beyond the stream's layers is ignored
    assert rates.cumulative_bps(t)[2] == full
