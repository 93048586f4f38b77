"""Pre-encoded RTP sources (no codecs): Opus-sized audio, VP8-shaped video with real payload
descriptors (keyframes the SFU recognises, picture ids), optional simulcast; a send timestamp in
the last 16 bytes of every payload (``STAMP``: magic, sender wall-clock ns, sender packet index).
"""

from __future__ import annotations

import os
import random
import struct
import time
from dataclasses import dataclass, field

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
MID_EXT_ID = 1
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
AUDIO_LEVEL_EXT_ID = 2
SILENCE = 127  # ssrc-audio-level: -dBov, 127 = silence
STAMP = struct.Struct("!4sQI")
MAGIC = b"SRLG"
HDR = struct.Struct("!BBHII")

OPUS = {"mimeType": "audio/opus", "payloadType": 100, "clockRate": 48000, "channels": 2,
        "parameters": {"useinbandfec": 1}, "rtcpFeedback": []}
VP8 = {"mimeType": "video/VP8", "payloadType": 101, "clockRate": 90000, "parameters": {},
       "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"},
                        {"type": "ccm", "parameter": "fir"}]}


def read_stamp(payload: bytes) -> tuple[int, int] | None:
    """``(sent wall-clock ns, sender index)`` from a packet made here, else None."""
    if len(payload) < STAMP.size:
        return None
    magic, sent_ns, index = STAMP.unpack_from(payload, len(payload) - STAMP.size)
    return (sent_ns, index) if magic == MAGIC else None


def _mid_extension(mid: str, level: int | None = None) -> bytes:
    """One-byte header extensions: the MID, and the audio level (RFC 6464, V bit set) if given."""
    body = bytes([(MID_EXT_ID << 4) | (len(mid) - 1)]) + mid.encode()
    if level is not None:
        body += bytes([(AUDIO_LEVEL_EXT_ID << 4), (0x80 if level < SILENCE else 0) | level])
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


@dataclass
class Encoding:
    ssrc: int
    pps: float  # packets per second
    payload_bytes: int
    seq: int = field(default_factory=lambda: random.randrange(1 << 16))
    ts0: int = field(default_factory=lambda: random.randrange(1 << 32))
    sent: int = 0
    picture_id: int = field(default_factory=lambda: random.randrange(1 << 15))


class Source:
    """One producer's packets: ``due(now)`` returns the packets to send at monotonic time ``now``."""

    kind = "audio"
    codec = OPUS

    def __init__(self, source: str, mid: str, encodings: list[Encoding], fps: float) -> None:
        self.source = source
        self.mid = mid
        self.encodings = encodings
        self.fps = fps
        self.ext = _mid_extension(mid)
        self.t0 = time.monotonic()
        self.frames_sent = 0
        self.keyframe_wanted = True
        self.keyframe_interval_s = 3.0
        self._last_key = -1e9
        self.packets_sent = 0
        self.bytes_sent = 0
        self._filler = os.urandom(2048)

    def rtp_parameters(self) -> dict:
        encodings = [{"ssrc": e.ssrc} for e in self.encodings]
        if len(encodings) > 1:
            for i, enc in enumerate(encodings):
                enc["scalabilityMode"] = "L1T1"
                enc["maxBitrate"] = [150_000, 500_000, 1_500_000][min(i, 2)]
        return {"codecs": [dict(self.codec)], "headerExtensions": [
            {"uri": MID_URI, "id": MID_EXT_ID, "encrypt": False, "parameters": {}}],
            "encodings": encodings, "rtcp": {"cname": f"lg-{self.mid}", "reducedSize": True}, "mid": self.mid}

    def request_keyframe(self) -> None:
        self.keyframe_wanted = True

    def due(self, now: float) -> list[bytes]:
        """Whole frames whose time has come (frame n at t0 + n / fps)."""
        out: list[bytes] = []
        while self.t0 + self.frames_sent / self.fps <= now:
            key = self.keyframe_wanted or (now - self._last_key) >= self.keyframe_interval_s
            if key:
                self.keyframe_wanted = False
                self._last_key = now
            out.extend(self._frame(self.frames_sent, key))
            self.frames_sent += 1
            if len(out) > 400:  # far behind (a stalled loop): skip ahead rather than burst
                self.frames_sent = int((now - self.t0) * self.fps) + 1
                break
        return out

    def _frame(self, n: int, key: bool) -> list[bytes]:
        enc = self.encodings[0]
        return [self._packet(enc, n, b"", 1, marker=True)]

    def _packet(self, enc: Encoding, n: int, prefix: bytes, index_in_frame: int, marker: bool) -> bytes:
        clock = self.codec["clockRate"]
        ts = (enc.ts0 + int(n * clock / self.fps)) & 0xFFFFFFFF
        b1 = (0x80 if marker else 0) | self.codec["payloadType"]
        enc.seq = (enc.seq + 1) & 0xFFFF
        header = HDR.pack(0x90, b1, enc.seq, ts, enc.ssrc) + self.ext
        fill = max(0, enc.payload_bytes - len(prefix) - STAMP.size)
        start = (enc.sent * 7) % 1024
        payload = prefix + self._filler[start:start + fill] + STAMP.pack(MAGIC, time.time_ns(), enc.sent)
        enc.sent += 1
        self.packets_sent += 1
        self.bytes_sent += len(header) + len(payload)
        return header + payload


class AudioSource(Source):
    """Opus-like: 50 packets/s (20 ms frames) of ~100 bytes (``scale`` multiplies the rate). With
    ``levels``, every packet carries ssrc-audio-level: ``level`` (0 loudest .. 127 silence), which
    the caller changes to make the participant talk or fall silent."""

    def __init__(self, mid: str, ssrc: int, payload_bytes: int = 100, *, scale: float = 1.0,
                 levels: bool = False) -> None:
        super().__init__("mic", mid, [Encoding(ssrc, 50.0 * scale, payload_bytes)], fps=50.0 * scale)
        self.levels = levels
        self.level = SILENCE
        self._level_exts = {}

    def set_level(self, level: int) -> None:
        self.level = max(0, min(SILENCE, int(level)))

    def rtp_parameters(self) -> dict:
        params = super().rtp_parameters()
        if self.levels:
            params["headerExtensions"].append(
                {"uri": AUDIO_LEVEL_URI, "id": AUDIO_LEVEL_EXT_ID, "encrypt": False, "parameters": {}})
        return params

    def _packet(self, enc: Encoding, n: int, prefix: bytes, index_in_frame: int, marker: bool) -> bytes:
        if self.levels:
            ext = self._level_exts.get(self.level)
            if ext is None:
                ext = self._level_exts[self.level] = _mid_extension(self.mid, self.level)
            self.ext = ext
        return super()._packet(enc, n, prefix, index_in_frame, marker)


class VideoSource(Source):
    """VP8-shaped frames at ``fps``: ``pps / fps`` packets per frame of ``payload_bytes`` each, per
    encoding; keyframes every 3 s and on request (PLI/FIR); RFC 7741 descriptors with picture ids."""

    kind = "video"
    codec = VP8

    def __init__(self, source: str, mid: str, encodings: list[Encoding], fps: float = 30.0) -> None:
        super().__init__(source, mid, encodings, fps)
        self.keyframe_interval_s = 3.0 if source == "camera" else 5.0

    def _frame(self, n: int, key: bool) -> list[bytes]:
        out = []
        for enc in self.encodings:
            per_frame = max(1, round(enc.pps / self.fps))
            if key:  # keyframes are bigger: twice the packets
                per_frame *= 2
            enc.picture_id = (enc.picture_id + 1) & 0x7FFF
            pid = enc.picture_id
            for i in range(per_frame):
                first = i == 0
                desc = bytes([0x90 if first else 0x80, 0x80, 0x80 | (pid >> 8), pid & 0xFF])
                if first:
                    tag = 0x10 if key else 0x11  # P bit: 0 = keyframe
                    desc += bytes([tag, 0x02, 0x00]) + (b"\x9d\x01\x2a\x80\x02\xe0\x01" if key else b"")
                out.append(self._packet(enc, n, desc, i, marker=i == per_frame - 1))
        return out


def camera(mid: str, ssrcs: list[int], simulcast: bool = False, scale: float = 1.0) -> VideoSource:
    """~100 packets/s of ~1100 bytes (30 fps); simulcast adds ~15 and ~35 packets/s layers below.
    ``scale`` multiplies frame and packet rates (reduced-rate runs of big rooms)."""
    if simulcast:
        encodings = [Encoding(ssrcs[0], 15.0 * scale, 700), Encoding(ssrcs[1], 35.0 * scale, 1000),
                     Encoding(ssrcs[2], 100.0 * scale, 1100)]
    else:
        encodings = [Encoding(ssrcs[0], 100.0 * scale, 1100)]
    return VideoSource("camera", mid, encodings, fps=30.0 * scale)


def screen(mid: str, ssrc: int) -> VideoSource:
    """Screen share: 5 fps, bursty (~6 packets per frame of ~1100 bytes, ~30 packets/s)."""
    return VideoSource("screen", mid, [Encoding(ssrc, 30.0, 1100)], fps=5.0)
