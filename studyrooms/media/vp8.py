"""VP8 payload descriptor (RFC 7741 section 4.2) parse and pictureId / TL0PICIDX rewriting.

A simulcast consumer switching between encodings must keep PictureID and TL0PICIDX continuous for
the receiver's decoder, as mediasoup's VP8 codec handler does with its sequence managers.
"""

from __future__ import annotations

from studyrooms.media.rtp import Buf


def parse_vp8_descriptor(
    data: Buf, payload_offset: int, payload_end: int
) -> tuple[int, int, int, int, bool, int] | None:
    """``(picture_id or -1, picture_id_bits (7, 15, or 0 if absent), tl0picidx or -1, tid or -1,
    is_keyframe, descriptor_len)``; ``None`` if the descriptor is truncated."""
    end = payload_end if payload_end <= len(data) else len(data)
    off = payload_offset
    if off < 0 or off >= end:
        return None
    b0 = data[off]
    pos = off + 1
    picture_id = -1
    bits = 0
    tl0 = -1
    tid = -1
    if b0 & 0x80:
        if pos >= end:
            return None
        x = data[pos]
        pos += 1
        if x & 0x80:
            if pos >= end:
                return None
            p0 = data[pos]
            if p0 & 0x80:
                if pos + 1 >= end:
                    return None
                picture_id = ((p0 & 0x7F) << 8) | data[pos + 1]
                bits = 15
                pos += 2
            else:
                picture_id = p0
                bits = 7
                pos += 1
        if x & 0x40:
            if pos >= end:
                return None
            tl0 = data[pos]
            pos += 1
        if x & 0x30:
            if pos >= end:
                return None
            if x & 0x20:
                tid = data[pos] >> 6
            pos += 1
    desc_len = pos - off
    keyframe = bool(b0 & 0x10) and not b0 & 0x07 and pos < end and not data[pos] & 0x01
    return picture_id, bits, tl0, tid, keyframe, desc_len


class Vp8PictureRewriter:
    """Keeps PictureID and TL0PICIDX continuous across source changes (simulcast switches).

    Within one source, output = input shifted by a constant; on a source change the next output
    continues from the highest output so far + 1. The 15-bit or 7-bit field is rewritten in place
    at its own width (the descriptor is never resized); packets without the field are left as is.

    The RTP buffer may be shared by several consumers, each with its own rewriter: pass the
    ingress values (``picture_id``/``tl0picidx`` from :func:`parse_vp8_descriptor`) so a rewrite
    never reads a value another consumer already wrote.
    """

    __slots__ = ("_pid_in", "_pid_out", "_max_pid", "_pid_sync", "_tl0_off", "_max_tl0", "_tl0_sync")

    def __init__(self) -> None:
        self._pid_in = -1  # reference input picture id (raw field value)
        self._pid_out = 0  # output (15-bit space) for the reference input
        self._max_pid = -1  # highest picture id sent (15-bit space)
        self._pid_sync = True
        self._tl0_off = 0
        self._max_tl0 = -1
        self._tl0_sync = True

    def skip_picture(self, picture_id: int, bits: int = 15) -> None:
        """A picture of the current source is dropped (temporal layer): the next one continues
        from the last PictureID sent, so the receiver sees no hole."""
        if self._pid_sync or self._pid_in < 0:
            return
        if bits == 15:
            d = ((picture_id - self._pid_in + 0x4000) & 0x7FFF) - 0x4000
        else:
            d = ((picture_id - self._pid_in + 0x40) & 0x7F) - 0x40
        if d > 0:
            self._pid_in = picture_id  # maps onto the output of the last picture sent

    def rewrite(
        self,
        buf: bytearray,
        payload_offset: int,
        payload_end: int,
        source_changed: bool,
        picture_id: int = -1,
        tl0picidx: int = -1,
    ) -> None:
        end = payload_end if payload_end <= len(buf) else len(buf)
        off = payload_offset
        if source_changed:
            self._pid_sync = True
            self._tl0_sync = True
        if off < 0 or off + 1 >= end or not buf[off] & 0x80:
            return
        x = buf[off + 1]
        pos = off + 2
        if x & 0x80:
            if pos >= end:
                return
            m = buf[pos] & 0x80
            if m and pos + 1 >= end:
                return
            if picture_id < 0:
                picture_id = (((buf[pos] & 0x7F) << 8) | buf[pos + 1]) if m else buf[pos]
            if self._pid_sync or self._pid_in < 0:
                out = (self._max_pid + 1) & 0x7FFF if self._max_pid >= 0 else picture_id
                self._pid_in = picture_id
                self._pid_out = out
                self._pid_sync = False
            else:
                if m:
                    d = ((picture_id - self._pid_in + 0x4000) & 0x7FFF) - 0x4000
                else:
                    d = ((picture_id - self._pid_in + 0x40) & 0x7F) - 0x40
                out = (self._pid_out + d) & 0x7FFF
                if d > 0:  # move the reference forward so 7-bit deltas stay small
                    self._pid_in = picture_id
                    self._pid_out = out
            if self._max_pid < 0 or 0 < ((out - self._max_pid) & 0x7FFF) < 0x4000:
                self._max_pid = out
            if m:
                buf[pos] = 0x80 | (out >> 8)
                buf[pos + 1] = out & 0xFF
                pos += 2
            else:
                buf[pos] = out & 0x7F
                pos += 1
        if x & 0x40 and pos < end:
            if tl0picidx < 0:
                tl0picidx = buf[pos]
            if self._tl0_sync:
                self._tl0_off = ((self._max_tl0 + 1) - tl0picidx) & 0xFF if self._max_tl0 >= 0 else 0
                self._tl0_sync = False
            out = (tl0picidx + self._tl0_off) & 0xFF
            if self._max_tl0 < 0 or 0 < ((out - self._max_tl0) & 0xFF) < 0x80:
                self._max_tl0 = out
            buf[pos] = out


def vp8_keyframe_height(data: Buf, payload_offset: int, payload_end: int) -> int | None:
    """The frame height (pixels) a VP8 keyframe's first packet announces (RFC 6386 9.1: frame tag,
    start code 9d 01 2a, 14-bit width and height), or None if the packet does not carry it."""
    desc = parse_vp8_descriptor(data, payload_offset, payload_end)
    if desc is None:
        return None
    pos = payload_offset + desc[5]
    end = payload_end if payload_end <= len(data) else len(data)
    if pos + 10 > end or data[pos] & 0x01 or data[pos + 3] != 0x9D or data[pos + 4] != 0x01 or data[pos + 5] != 0x2A:
        return None
    return (data[pos + 8] | (data[pos + 9] << 8)) & 0x3FFF or None
