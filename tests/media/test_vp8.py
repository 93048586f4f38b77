from hypothesis import given, settings
from hypothesis import strategies as st

from studyrooms.media.vp8 import Vp8PictureRewriter, parse_vp8_descriptor


def desc15(pid, tl0=None, tid=None, key=False, start=True):
    x = 0x80 | (0x40 if tl0 is not None else 0) | (0x20 if tid is not None else 0)
    out = bytearray([0x80 | (0x10 if start else 0), x, 0x80 | (pid >> 8), pid & 0xFF])
    if tl0 is not None:
        out.append(tl0)
    if tid is not None:
        out.append((tid << 6) | 0x20)
    out.append(0x00 if key else 0x01)
    out += b"payload"
    return out


def desc7(pid, tl0=None):
    x = 0x80 | (0x40 if tl0 is not None else 0)
    out = bytearray([0x90, x, pid & 0x7F])
    if tl0 is not None:
        out.append(tl0)
    out += b"\x01rest"
    return out


def test_parse_descriptor_fields():
    d = desc15(0x1234, tl0=200, tid=2, key=True)
    assert parse_vp8_descriptor(d, 0, len(d)) == (0x1234, 15, 200, 2, True, 6)
    d = desc7(100)
    assert parse_vp8_descriptor(d, 0, len(d)) == (100, 7, -1, -1, False, 3)
    d = bytes([0x10, 0x00])
    assert parse_vp8_descriptor(d, 0, 2) == (-1, 0, -1, -1, True, 1)
    # K bit only (KEYIDX byte, no TID)
    d = bytes([0x90, 0x10, 0x05, 0x01])
    assert parse_vp8_descriptor(d, 0, 4) == (-1, 0, -1, -1, False, 3)
    # with a header prefix: offsets honoured
    d = b"\x00" * 12 + desc15(7, tl0=1)
    assert parse_vp8_descriptor(d, 12, len(d))[:3] == (7, 15, 1)


def test_parse_truncated_returns_none():
    d = desc15(0x1234, tl0=5)
    for cut in (0, 1, 2, 3, 4):
        assert parse_vp8_descriptor(d, 0, cut) is None
    assert parse_vp8_descriptor(d, -1, len(d)) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=24))
def test_parse_and_rewrite_never_raise(data):
    parse_vp8_descriptor(data, 0, len(data))
    rw = Vp8PictureRewriter()
    buf = bytearray(data)
    rw.rewrite(buf, 0, len(buf), True)
    rw.rewrite(buf, 0, len(buf), False)
    assert len(buf) == len(data)  # never resized


def pid_of(buf):
    return parse_vp8_descriptor(buf, 0, len(buf))[0]


def tl0_of(buf):
    return parse_vp8_descriptor(buf, 0, len(buf))[2]


def test_rewriter_keeps_picture_id_and_tl0_continuous_across_switch():
    rw = Vp8PictureRewriter()
    outs = []
    # source A: pictures 100..102 (two packets for 101), tl0 10..12
    for pid, tl0 in ((100, 10), (101, 11), (101, 11), (102, 12)):
        b = desc15(pid, tl0=tl0)
        rw.rewrite(b, 0, len(b), False)
        outs.append((pid_of(b), tl0_of(b)))
    assert outs == [(100, 10), (101, 11), (101, 11), (102, 12)]  # first source passes through
    # switch to source B with unrelated numbering
    b = desc15(30000, tl0=250, key=True)
    rw.rewrite(b, 0, len(b), True)
    assert (pid_of(b), tl0_of(b)) == (103, 13)
    for pid, tl0, want in ((30001, 251, (104, 14)), (30001, 251, (104, 14)), (30002, 252, (105, 15))):
        b = desc15(pid, tl0=tl0)
        rw.rewrite(b, 0, len(b), False)
        assert (pid_of(b), tl0_of(b)) == want
    # back to A, which moved on meanwhile
    b = desc15(150, tl0=40, key=True)
    rw.rewrite(b, 0, len(b), True)
    assert (pid_of(b), tl0_of(b)) == (106, 16)


def test_rewriter_wraps_15_bit_and_8_bit():
    rw = Vp8PictureRewriter()
    b = desc15(0x7FFE, tl0=254)
    rw.rewrite(b, 0, len(b), False)
    b = desc15(0x7FFF, tl0=255)
    rw.rewrite(b, 0, len(b), False)
    b = desc15(5, tl0=90, key=True)  # switch
    rw.rewrite(b, 0, len(b), True)
    assert (pid_of(b), tl0_of(b)) == (0, 0)
    b = desc15(6, tl0=91)
    rw.rewrite(b, 0, len(b), False)
    assert (pid_of(b), tl0_of(b)) == (1, 1)


def test_rewriter_7_bit_field_wraps_at_128_and_stays_in_place():
    rw = Vp8PictureRewriter()
    for pid in (126, 127, 0, 1):
        b = desc7(pid)
        rw.rewrite(b, 0, len(b), False)
        assert pid_of(b) == pid and len(b) == len(desc7(0))
    b = desc7(50)
    rw.rewrite(b, 0, len(b), True)
    assert pid_of(b) == 2  # continues after 1
    assert parse_vp8_descriptor(b, 0, len(b))[1] == 7  # still a 7-bit field


def test_rewriter_uses_ingress_values_on_a_shared_buffer():
    a, b = Vp8PictureRewriter(), Vp8PictureRewriter()
    for pid in (10, 11):
        buf = desc15(pid)
        a.rewrite(buf, 0, len(buf), False, picture_id=pid)
        b.rewrite(buf, 0, len(buf), False, picture_id=pid)
    buf = desc15(500, key=True)
    a.rewrite(buf, 0, len(buf), True, picture_id=500)  # a switches: writes 12
    assert pid_of(buf) == 12
    b.rewrite(buf, 0, len(buf), False, picture_id=500, tl0picidx=-1)  # b keeps its own mapping
    assert pid_of(buf) == 500 - 0  # b's offset is 0 (first source passed through)


def test_rewriter_without_picture_id_leaves_packet_alone():
    rw = Vp8PictureRewriter()
    buf = bytearray([0x10, 0x00, 0xAB])
    rw.rewrite(buf, 0, 3, True)
    assert buf == bytearray([0x10, 0x00, 0xAB])
