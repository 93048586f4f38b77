"""RTCP byte views: compound walk, builders and parsers (RFC 3550, RFC 4585, RFC 5104, REMB draft).

Parsers take ``(data, offset, length)`` as yielded by :func:`iter_rtcp` and return ``None`` on
malformed input; nothing here raises on garbage.
"""

from __future__ import annotations

import struct
from typing import Iterable, Iterator, Sequence

from studyrooms.media.rtp import Buf

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207
RTPFB_NACK, RTPFB_TWCC = 1, 15
PSFB_PLI, PSFB_SLI, PSFB_RPSI, PSFB_FIR, PSFB_AFB = 1, 2, 3, 4, 15
PSFB_REMB = PSFB_AFB
SDES_CNAME = 1

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01

_HDR = struct.Struct("!BBH")
_FB = struct.Struct("!BBHII")  # header + sender ssrc + media ssrc
_U32 = struct.Struct("!I")
_HH = struct.Struct("!HH")
_FIR_FCI = struct.Struct("!IB3x")
_SR = struct.Struct("!BBHIIIIII")  # header, ssrc, ntp sec, ntp frac, rtp ts, packets, octets
_SR_BODY = struct.Struct("!IIIIII")
_RB = struct.Struct("!IIIIII")  # ssrc, fraction|cumulative, highest, jitter, lsr, dlsr
_RR_HDR = struct.Struct("!BBHI")
_REMB_HEAD = struct.Struct("!4sB")

MAX_RR_BLOCKS = 31


def iter_rtcp(data: Buf) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(packet_type, fmt_or_count, offset, length_bytes)`` for each packet of a compound
    RTCP packet. Stops (without raising) at the first malformed packet."""
    n = len(data)
    pos = 0
    while pos + 4 <= n:
        b0 = data[pos]
        if b0 & 0xC0 != 0x80:
            return
        ln = (((data[pos + 2] << 8) | data[pos + 3]) + 1) << 2
        if pos + ln > n:
            return
        yield data[pos + 1], b0 & 0x1F, pos, ln
        pos += ln


# ---------------------------------------------------------------------------------------------
# NTP helpers


def ntp_from_wall(wall_s: float) -> tuple[int, int]:
    """(seconds since 1900, 32-bit fraction) for a Unix wall-clock time."""
    sec = int(wall_s)
    frac = int((wall_s - sec) * 4294967296.0) & 0xFFFFFFFF
    return (sec + NTP_EPOCH_OFFSET) & 0xFFFFFFFF, frac


def ntp_compact(ntp_sec: int, ntp_frac: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (LSR field)."""
    return ((ntp_sec & 0xFFFF) << 16) | (ntp_frac >> 16)


# ---------------------------------------------------------------------------------------------
# Builders


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """Picture Loss Indication (RFC 4585 6.3.1)."""
    return _FB.pack(0x80 | PSFB_PLI, PSFB, 2, sender_ssrc & 0xFFFFFFFF, media_ssrc & 0xFFFFFFFF)


def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    """Full Intra Request (RFC 5104 4.3.1): media source SSRC 0, one FCI entry."""
    return _FB.pack(0x80 | PSFB_FIR, PSFB, 4, sender_ssrc & 0xFFFFFFFF, 0) + _FIR_FCI.pack(
        media_ssrc & 0xFFFFFFFF, seq_nr & 0xFF
    )


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: Sequence[int]) -> bytes:
    """Generic NACK (RFC 4585 6.2.1) packing ``seqs`` into PID + BLP items. ``b""`` if empty."""
    if not seqs:
        return b""
    first = seqs[0] & 0xFFFF
    # wraparound-aware order: signed distance from the first listed seq
    ordered = sorted({s & 0xFFFF for s in seqs}, key=lambda s: (s - first + 0x8000) & 0xFFFF)
    fci = bytearray()
    pid = -1
    blp = 0
    for s in ordered:
        if pid >= 0:
            d = (s - pid) & 0xFFFF
            if 1 <= d <= 16:
                blp |= 1 << (d - 1)
                continue
            fci += _HH.pack(pid, blp)
        pid = s
        blp = 0
    fci += _HH.pack(pid, blp)
    words = 2 + len(fci) // 4
    head = _FB.pack(0x80 | RTPFB_NACK, RTPFB, words, sender_ssrc & 0xFFFFFFFF, media_ssrc & 0xFFFFFFFF)
    return head + bytes(fci)


def build_report_block(
    ssrc: int, fraction_lost: int, cumulative_lost: int, highest_seq: int, jitter: int, lsr: int, dlsr: int
) -> bytes:
    """One 24-byte reception report block (RFC 3550 6.4.1); cumulative lost is clamped to 24 bits."""
    if cumulative_lost > 0x7FFFFF:
        cumulative_lost = 0x7FFFFF
    elif cumulative_lost < -0x800000:
        cumulative_lost = -0x800000
    return _RB.pack(
        ssrc & 0xFFFFFFFF,
        ((fraction_lost & 0xFF) << 24) | (cumulative_lost & 0xFFFFFF),
        highest_seq & 0xFFFFFFFF,
        jitter & 0xFFFFFFFF,
        lsr & 0xFFFFFFFF,
        dlsr & 0xFFFFFFFF,
    )


def build_rr(sender_ssrc: int, report_blocks: Sequence[bytes] = ()) -> bytes:
    """Receiver Report with up to 31 report blocks (each 24 bytes, see build_report_block)."""
    blocks = list(report_blocks)[:MAX_RR_BLOCKS]
    head = _RR_HDR.pack(0x80 | len(blocks), RR, 1 + 6 * len(blocks), sender_ssrc & 0xFFFFFFFF)
    return head + b"".join(blocks)


def build_sr(
    ssrc: int,
    ntp_sec: int,
    ntp_frac: int,
    rtp_ts: int,
    packet_count: int,
    octet_count: int,
    report_blocks: Sequence[bytes] = (),
) -> bytes:
    """Sender Report (RFC 3550 6.4.1)."""
    blocks = list(report_blocks)[:MAX_RR_BLOCKS]
    return _SR.pack(
        0x80 | len(blocks),
        SR,
        6 + 6 * len(blocks),
        ssrc & 0xFFFFFFFF,
        ntp_sec & 0xFFFFFFFF,
        ntp_frac & 0xFFFFFFFF,
        rtp_ts & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF,
        octet_count & 0xFFFFFFFF,
    ) + b"".join(blocks)


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    """SDES with one chunk holding a CNAME item (null-terminated, padded to 32 bits)."""
    text = cname.encode("utf-8")[:255]
    chunk = _U32.pack(ssrc & 0xFFFFFFFF) + bytes((SDES_CNAME, len(text))) + text
    chunk += b"\x00" * (4 - len(chunk) % 4)  # at least one null octet ends the item list
    return _HDR.pack(0x81, SDES, len(chunk) // 4) + chunk


def build_bye(ssrcs: Iterable[int]) -> bytes:
    """BYE for up to 31 SSRCs, no reason."""
    lst = list(ssrcs)[:31]
    return _HDR.pack(0x80 | len(lst), BYE, len(lst)) + b"".join(_U32.pack(s & 0xFFFFFFFF) for s in lst)


def build_remb(sender_ssrc: int, bitrate_bps: int, ssrcs: Sequence[int]) -> bytes:
    """Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb, PSFB fmt 15)."""
    lst = list(ssrcs)[:255]
    mantissa = max(0, int(bitrate_bps))
    exp = 0
    while mantissa > 0x3FFFF and exp < 63:
        mantissa >>= 1
        exp += 1
    if mantissa > 0x3FFFF:
        mantissa = 0x3FFFF
    words = 2 + 2 + len(lst)
    return (
        _FB.pack(0x80 | PSFB_AFB, PSFB, words, sender_ssrc & 0xFFFFFFFF, 0)
        + _REMB_HEAD.pack(b"REMB", len(lst))
        + bytes(((exp << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF, mantissa & 0xFF))
        + b"".join(_U32.pack(s & 0xFFFFFFFF) for s in lst)
    )


# ---------------------------------------------------------------------------------------------
# Parsers


def _valid(data: Buf, offset: int, length: int, min_len: int) -> bool:
    return offset >= 0 and length >= min_len and offset + length <= len(data) and data[offset] & 0xC0 == 0x80


def parse_fb_ssrcs(data: Buf, offset: int, length: int) -> tuple[int, int] | None:
    """``(sender_ssrc, media_ssrc)`` of an RTPFB/PSFB packet."""
    if not _valid(data, offset, length, 12):
        return None
    return _U32.unpack_from(data, offset + 4)[0], _U32.unpack_from(data, offset + 8)[0]


def parse_nack(
    data: Buf, offset: int, length: int
) -> tuple[int, int, list[int]] | None:
    """``(sender_ssrc, media_ssrc, lost_seqs)`` of a generic NACK (RTPFB fmt 1)."""
    if not _valid(data, offset, length, 12) or data[offset + 1] != RTPFB or data[offset] & 0x1F != RTPFB_NACK:
        return None
    sender = _U32.unpack_from(data, offset + 4)[0]
    media = _U32.unpack_from(data, offset + 8)[0]
    lost: list[int] = []
    end = offset + length
    p = offset + 12
    while p + 4 <= end:
        pid, blp = _HH.unpack_from(data, p)
        lost.append(pid)
        d = 1
        while blp:
            if blp & 1:
                lost.append((pid + d) & 0xFFFF)
            blp >>= 1
            d += 1
        p += 4
    return sender, media, lost


def parse_pli(data: Buf, offset: int, length: int) -> int | None:
    """Media SSRC of a PLI (PSFB fmt 1)."""
    if not _valid(data, offset, length, 12) or data[offset + 1] != PSFB or data[offset] & 0x1F != PSFB_PLI:
        return None
    return _U32.unpack_from(data, offset + 8)[0]


def parse_fir_entries(
    data: Buf, offset: int, length: int
) -> list[tuple[int, int]] | None:
    """``[(media_ssrc, seq_nr), ...]`` of a FIR (PSFB fmt 4)."""
    if not _valid(data, offset, length, 12) or data[offset + 1] != PSFB or data[offset] & 0x1F != PSFB_FIR:
        return None
    out = []
    end = offset + length
    p = offset + 12
    while p + 8 <= end:
        out.append(_FIR_FCI.unpack_from(data, p))
        p += 8
    return out


def parse_fir(data: Buf, offset: int, length: int) -> list[int] | None:
    """Media SSRCs named by a FIR (PSFB fmt 4)."""
    entries = parse_fir_entries(data, offset, length)
    if entries is None:
        return None
    return [e[0] for e in entries]


def _report_blocks(
    data: Buf, pos: int, count: int, end: int
) -> list[tuple[int, int, int, int, int, int, int]] | None:
    if pos + 24 * count > end:
        return None
    blocks = []
    for _ in range(count):
        ssrc, fl, highest, jitter, lsr, dlsr = _RB.unpack_from(data, pos)
        cum = fl & 0xFFFFFF
        if cum & 0x800000:
            cum -= 0x1000000
        blocks.append((ssrc, fl >> 24, cum, highest, jitter, lsr, dlsr))
        pos += 24
    return blocks


def parse_rr_blocks(
    data: Buf, offset: int, length: int
) -> list[tuple[int, int, int, int, int, int, int]] | None:
    """Report blocks of an RR or SR: ``[(ssrc, fraction_lost, cumulative_lost, highest_seq, jitter,
    lsr, dlsr), ...]``."""
    if not _valid(data, offset, length, 8):
        return None
    pt = data[offset + 1]
    if pt == RR:
        start = offset + 8
    elif pt == SR:
        start = offset + 28
    else:
        return None
    return _report_blocks(data, start, data[offset] & 0x1F, offset + length)


def parse_rr(
    data: Buf, offset: int, length: int
) -> tuple[int, list[tuple[int, int, int, int, int, int, int]]] | None:
    """``(sender_ssrc, report_blocks)`` of an RR."""
    if not _valid(data, offset, length, 8) or data[offset + 1] != RR:
        return None
    blocks = _report_blocks(data, offset + 8, data[offset] & 0x1F, offset + length)
    if blocks is None:
        return None
    return _U32.unpack_from(data, offset + 4)[0], blocks


def parse_sr(
    data: Buf, offset: int, length: int
) -> tuple[int, int, int, int, int, int, list[tuple[int, int, int, int, int, int, int]]] | None:
    """``(ssrc, ntp_sec, ntp_frac, rtp_ts, packet_count, octet_count, report_blocks)`` of an SR."""
    if not _valid(data, offset, length, 28) or data[offset + 1] != SR:
        return None
    ssrc, ntp_sec, ntp_frac, rtp_ts, packets, octets = _SR_BODY.unpack_from(data, offset + 4)
    blocks = _report_blocks(data, offset + 28, data[offset] & 0x1F, offset + length)
    if blocks is None:
        return None
    return ssrc, ntp_sec, ntp_frac, rtp_ts, packets, octets, blocks


def parse_remb(data: Buf, offset: int, length: int) -> tuple[int, list[int]] | None:
    """``(bitrate_bps, ssrcs)`` of a REMB packet, ``None`` if it is not a (valid) REMB."""
    if not _valid(data, offset, length, 20) or data[offset + 1] != PSFB or data[offset] & 0x1F != PSFB_AFB:
        return None
    if bytes(data[offset + 12 : offset + 16]) != b"REMB":
        return None
    num = data[offset + 16]
    if offset + 20 + 4 * num > offset + length:
        return None
    b = data[offset + 17]
    exp = b >> 2
    mantissa = ((b & 0x03) << 16) | (data[offset + 18] << 8) | data[offset + 19]
    ssrcs = [_U32.unpack_from(data, offset + 20 + 4 * i)[0] for i in range(num)]
    return mantissa << exp, ssrcs


def parse_sdes_cnames(data: Buf, offset: int, length: int) -> list[tuple[int, str]] | None:
    """``[(ssrc, cname), ...]`` from an SDES packet (other items skipped)."""
    if not _valid(data, offset, length, 4) or data[offset + 1] != SDES:
        return None
    out = []
    end = offset + length
    pos = offset + 4
    for _ in range(data[offset] & 0x1F):
        if pos + 4 > end:
            return None
        ssrc = _U32.unpack_from(data, pos)[0]
        pos += 4
        while pos < end and data[pos] != 0:
            if pos + 2 > end:
                return None
            item, ln = data[pos], data[pos + 1]
            if pos + 2 + ln > end:
                return None
            if item == SDES_CNAME:
                out.append((ssrc, bytes(data[pos + 2 : pos + 2 + ln]).decode("utf-8", "replace")))
            pos += 2 + ln
        pos = (pos + 4) & ~3  # skip the terminating null(s) to the next 32-bit boundary
    return out


def parse_bye(data: Buf, offset: int, length: int) -> list[int] | None:
    """SSRCs leaving, from a BYE packet."""
    if not _valid(data, offset, length, 4) or data[offset + 1] != BYE:
        return None
    count = data[offset] & 0x1F
    if 4 + 4 * count > length:
        return None
    return [_U32.unpack_from(data, offset + 4 + 4 * i)[0] for i in range(count)]
