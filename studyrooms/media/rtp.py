"""RTP byte views (RFC 3550, RFC 8285 header extensions, RFC 5761 demux).

Everything works on ``bytes``/``bytearray`` with precomputed ``struct.Struct`` objects; no packet
objects. Parsers never raise on malformed input: they return ``None`` (or stop iterating).
"""

from __future__ import annotations

import struct
from typing import Iterator, Sequence, Union

Buf = Union[bytes, bytearray, memoryview]  # any buffer the parsers accept

HDR = struct.Struct("!BBHII")  # v/p/x/cc, m/pt, seq, ts, ssrc
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
HH = struct.Struct("!HH")
PT_SEQ_TS_SSRC = struct.Struct("!BHII")  # at offset 1: m/pt, seq, ts, ssrc

ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000  # 0x100X: the low 4 bits are "appbits"

# indexes into the tuple returned by parse_rtp
PT, MARKER, SEQ, TS, SSRC, PAYLOAD_OFFSET, EXT_OFFSET, EXT_LENGTH, EXT_PROFILE = range(9)


def parse_rtp(data: Buf) -> tuple[int, int, int, int, int, int, int, int, int] | None:
    """Parse an RTP header.

    Returns ``(payload_type, marker, seq, timestamp, ssrc, payload_offset, ext_offset, ext_length,
    ext_profile)``: ``ext_offset``/``ext_length`` locate the extension *elements* (after the 4-byte
    extension header); all three are 0 when there is no extension. Use :func:`payload_end` for the
    end of the payload (padding excluded). ``None`` if the packet is not a valid RTP packet (version
    != 2, RTCP payload type range, too short, CSRC/extension/padding beyond the packet).
    """
    n = len(data)
    if n < 12:
        return None
    b0, b1, seq, ts, ssrc = HDR.unpack_from(data, 0)
    if b0 & 0xC0 != 0x80 or 192 <= b1 <= 223:
        return None
    pos = 12 + ((b0 & 0x0F) << 2)
    ext_offset = ext_length = ext_profile = 0
    if b0 & 0x10:
        if pos + 4 > n:
            return None
        ext_profile, words = HH.unpack_from(data, pos)
        ext_offset = pos + 4
        ext_length = words << 2
        pos = ext_offset + ext_length
    if pos > n:
        return None
    if b0 & 0x20:
        pad = data[n - 1]
        if pad == 0 or pos + pad > n:
            return None
    return (b1 & 0x7F, b1 >> 7, seq, ts, ssrc, pos, ext_offset, ext_length, ext_profile)


def payload_end(data: Buf) -> int:
    """End offset of the payload (padding excluded) of a packet :func:`parse_rtp` accepted."""
    n = len(data)
    if n and data[0] & 0x20:
        return n - data[n - 1]
    return n


def is_rtcp(data: Buf) -> bool:
    """RFC 5761 demultiplexing: RTP version 2 and second byte in 192..223 means RTCP."""
    return len(data) >= 4 and data[0] & 0xC0 == 0x80 and 192 <= data[1] <= 223


def is_rtp(data: Buf) -> bool:
    """RFC 5761 counterpart of :func:`is_rtcp` (cheap check, no full parse)."""
    return len(data) >= 12 and data[0] & 0xC0 == 0x80 and not 192 <= data[1] <= 223


# ---------------------------------------------------------------------------------------------
# Header extensions (RFC 8285)


def iter_extensions(
    data: Buf, ext_offset: int, ext_length: int, ext_profile: int
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(id, value_offset, value_length)`` for each element of a one-byte (0xBEDE) or
    two-byte (0x100X) extension block; other profiles yield nothing. Stops at malformed data."""
    end = ext_offset + ext_length
    if end > len(data) or ext_offset < 0:
        return
    pos = ext_offset
    if ext_profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            if b == 0:  # padding
                pos += 1
                continue
            xid = b >> 4
            if xid == 15:  # reserved: stop processing
                return
            ln = (b & 0x0F) + 1
            if pos + 1 + ln > end:
                return
            yield xid, pos + 1, ln
            pos += 1 + ln
    elif ext_profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while pos < end:
            xid = data[pos]
            if xid == 0:  # padding
                pos += 1
                continue
            if pos + 2 > end:
                return
            ln = data[pos + 1]
            if pos + 2 + ln > end:
                return
            yield xid, pos + 2, ln
            pos += 2 + ln


def get_extension(
    data: Buf, parsed: Sequence[int], ext_id: int
) -> bytes | None:
    """Value of extension ``ext_id``; ``parsed`` is the tuple from :func:`parse_rtp` or
    ``(ext_offset, ext_length, ext_profile)``. ``None`` if absent."""
    if len(parsed) >= 9:
        ext_offset, ext_length, ext_profile = parsed[6], parsed[7], parsed[8]
    else:
        ext_offset, ext_length, ext_profile = parsed[0], parsed[1], parsed[2]
    if not ext_profile:
        return None
    for xid, off, ln in iter_extensions(data, ext_offset, ext_length, ext_profile):
        if xid == ext_id:
            return bytes(data[off : off + ln])
    return None


def build_extension_block(elements: Sequence[tuple[int, bytes]], two_byte: bool = False) -> bytes:
    """The 4-byte extension header plus elements, zero-padded to 32 bits (for tests and tools).

    One-byte form needs ids 1..14 and values of 1..16 bytes; two-byte form ids 1..255, 0..255 bytes.
    """
    body = bytearray()
    for xid, value in elements:
        if two_byte:
            body.append(xid & 0xFF)
            body.append(len(value) & 0xFF)
        else:
            if not 1 <= len(value) <= 16 or not 1 <= xid <= 14:
                raise ValueError("one-byte extension needs id 1..14 and 1..16 value bytes")
            body.append((xid << 4) | (len(value) - 1))
        body += value
    body += b"\x00" * (-len(body) % 4)
    profile = TWO_BYTE_PROFILE if two_byte else ONE_BYTE_PROFILE
    return HH.pack(profile, len(body) // 4) + bytes(body)


def build_rtp(
    *,
    payload_type: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes = b"",
    marker: bool = False,
    csrcs: Sequence[int] = (),
    extensions: Sequence[tuple[int, bytes]] = (),
    two_byte: bool = False,
    padding: int = 0,
) -> bytes:
    """Build an RTP packet (tests, tools, synthetic producers). Not for the hot path."""
    b0 = 0x80 | (len(csrcs) & 0x0F)
    ext = b""
    if extensions or two_byte:
        b0 |= 0x10
        ext = build_extension_block(extensions, two_byte)
    if padding:
        b0 |= 0x20
    out = bytearray(HDR.pack(b0, (0x80 if marker else 0) | (payload_type & 0x7F), seq & 0xFFFF,
                             ts & 0xFFFFFFFF, ssrc & 0xFFFFFFFF))
    for c in csrcs:
        out += U32.pack(c)
    out += ext
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Sequence number and timestamp arithmetic


def seq_newer(a: int, b: int) -> bool:
    """True if 16-bit sequence number ``a`` is newer than ``b`` (wraparound aware)."""
    d = (a - b) & 0xFFFF
    return 0 < d < 0x8000


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` of 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_newer(a: int, b: int) -> bool:
    """True if 32-bit RTP timestamp ``a`` is newer than ``b`` (wraparound aware)."""
    d = (a - b) & 0xFFFFFFFF
    return 0 < d < 0x80000000


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` of 32-bit timestamps, in [-2**31, 2**31 - 1]."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000
