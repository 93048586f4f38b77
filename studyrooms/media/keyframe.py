"""Keyframe detection per codec and keyframe-request throttling.

Detectors take ``(data, payload_offset, payload_end)`` and never raise: out-of-range or
truncated payloads are simply "not a keyframe".
"""

from __future__ import annotations

import math
from typing import Callable

from studyrooms.media.rtp import Buf

KeyframeDetector = Callable[[Buf, int, int], bool]


def vp8_is_keyframe(data: Buf, off: int, end: int) -> bool:
    """RFC 7741: S bit set, partition index 0, and the VP8 payload header P bit clear."""
    if end > len(data):
        end = len(data)
    if off >= end:
        return False
    b0 = data[off]
    if not b0 & 0x10 or b0 & 0x07:  # S must be 1, partition index must be 0
        return False
    pos = off + 1
    if b0 & 0x80:  # X: extended control bits
        if pos >= end:
            return False
        x = data[pos]
        pos += 1
        if x & 0x80:  # I: PictureID
            if pos >= end:
                return False
            pos += 2 if data[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX byte
            pos += 1
    if pos >= end:
        return False
    return not data[pos] & 0x01


def vp9_is_keyframe(data: Buf, off: int, end: int) -> bool:
    """draft-ietf-payload-vp9: not inter-predicted (P=0), start of a frame (B=1), spatial layer 0."""
    if end > len(data):
        end = len(data)
    if off >= end:
        return False
    b0 = data[off]
    if b0 & 0x40 or not b0 & 0x08:  # P set or B clear
        return False
    pos = off + 1
    if b0 & 0x80:  # I: picture id (M bit -> 15 bits)
        if pos >= end:
            return False
        pos += 2 if data[pos] & 0x80 else 1
    if b0 & 0x20:  # L: layer indices, SID in bits 3..1
        if pos >= end:
            return False
        if (data[pos] >> 1) & 0x07:
            return False
    return True


_EPS = 1e-9  # timers scheduled at next_due() must find the request due despite float error

_H264_KEY_NALS = frozenset((5, 7))  # IDR slice, SPS (as mediasoup's H264 handler)


def h264_is_keyframe(data: Buf, off: int, end: int) -> bool:
    """RFC 6184: single NAL of type 5/7, a STAP-A/B holding one, or the start of an FU-A/B of one."""
    if end > len(data):
        end = len(data)
    if off >= end:
        return False
    nal = data[off] & 0x1F
    if nal in _H264_KEY_NALS:
        return True
    if nal == 24 or nal == 25:  # STAP-A / STAP-B (B carries a 2-byte DON first)
        pos = off + (1 if nal == 24 else 3)
        while pos + 2 < end:
            size = (data[pos] << 8) | data[pos + 1]
            pos += 2
            if size == 0 or pos + size > end:
                return False
            if data[pos] & 0x1F in _H264_KEY_NALS:
                return True
            pos += size
        return False
    if nal == 28 or nal == 29:  # FU-A / FU-B: start bit + original type
        if off + 1 >= end:
            return False
        fuh = data[off + 1]
        return bool(fuh & 0x80) and (fuh & 0x1F) in _H264_KEY_NALS
    return False


def _never(data: Buf, off: int, end: int) -> bool:
    return False


_DETECTORS: dict[str, KeyframeDetector] = {
    "vp8": vp8_is_keyframe,
    "vp9": vp9_is_keyframe,
    "h264": h264_is_keyframe,
}


def keyframe_detector(codec: str) -> KeyframeDetector:
    """The detector for a codec name ('vp8', 'VP8', 'video/VP8' ...); codecs without one never
    report keyframes. Resolve once at construction, call per packet."""
    name = codec.lower().rsplit("/", 1)[-1]
    return _DETECTORS.get(name, _never)


def is_keyframe(codec: str, data: Buf, payload_offset: int, payload_end: int) -> bool:
    """True if the RTP payload starts a keyframe of ``codec`` ('vp8' | 'vp9' | 'h264')."""
    fn = _DETECTORS.get(codec)
    if fn is None:
        fn = keyframe_detector(codec)
    return fn(data, payload_offset, payload_end)


class KeyFrameRequestThrottle:
    """At most one keyframe request (PLI/FIR) per ``interval_s``; a request denied while throttled
    is remembered, and :meth:`pending_due` reports when it should be sent, so a request is delayed,
    never lost (as mediasoup's KeyFrameRequestManager delays rather than drops)."""

    __slots__ = ("interval_s", "last_sent", "pending", "requests", "sent", "throttled")

    def __init__(self, interval_s: float) -> None:
        self.interval_s = float(interval_s)
        self.last_sent = -math.inf
        self.pending = False
        self.requests = 0  # calls to allow()
        self.sent = 0  # requests allowed (by allow() or pending_due())
        self.throttled = 0  # requests deferred

    def allow(self, now: float) -> bool:
        """Ask to send a request now: True if it may be sent (the caller sends it)."""
        self.requests += 1
        if now - self.last_sent + _EPS >= self.interval_s:
            self.last_sent = now
            self.pending = False
            self.sent += 1
            return True
        self.pending = True
        self.throttled += 1
        return False

    def pending_due(self, now: float) -> bool:
        """True (once) when a deferred request should now be sent; the caller sends it."""
        if self.pending and now - self.last_sent + _EPS >= self.interval_s:
            self.pending = False
            self.last_sent = now
            self.sent += 1
            return True
        return False

    def next_due(self) -> float | None:
        """Time at which a deferred request becomes due (for a timer), or None if none pending."""
        return self.last_sent + self.interval_s if self.pending else None

    def cancel_pending(self) -> None:
        """Forget a deferred request (e.g. a keyframe arrived meanwhile)."""
        self.pending = False
