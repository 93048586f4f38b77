"""Shared builders for the media tests: real parameter shapes of Chrome and aiortc producers."""

from __future__ import annotations

from studyrooms.clock import FakeClock
from studyrooms.media.recv_stream import RecvStream
from studyrooms.media.rtp import build_rtp
from studyrooms.media.send_stream import SendStream

# router ids (mediasoup supportedRtpCapabilities): mid 1, abs-send-time 4, transport-cc 5, audio-level 10
ROUTER_MID, ROUTER_ABS, ROUTER_TCC, ROUTER_AUDIO_LEVEL = 1, 4, 5, 10
ROUTER_VP8, ROUTER_VP8_RTX, ROUTER_OPUS = 101, 102, 100

# Chrome: VP8 96 / rtx 97, opus 111; ext ids mid 9, abs-send-time 2, transport-cc 4, audio-level 14
CHROME_VIDEO_SSRC, CHROME_RTX_SSRC, CHROME_AUDIO_SSRC = 0x1A2B3C4D, 0x5E6F7081, 0x0BADCAFE

VP8_KEY = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A])  # S=1 PID=0, then P=0 (keyframe)
VP8_DELTA = bytes([0x10, 0x01, 0x00])  # P=1


def chrome_video_recv(clock: FakeClock, **kw) -> RecvStream:
    args = dict(
        ssrc=CHROME_VIDEO_SSRC, kind="video", codec="vp8", clock_rate=90000,
        payload_type_map={96: ROUTER_VP8, 97: ROUTER_VP8_RTX},
        ext_id_map={9: ROUTER_MID, 2: ROUTER_ABS},  # transport-cc (4) not mapped: dropped
        reserve_mid_ext_id=ROUTER_MID, audio_level_ext_id=None,
        rtx_ssrc=CHROME_RTX_SSRC, rtx_payload_type=97, rid=None, nack_enabled=True, clock=clock,
    )
    args.update(kw)
    return RecvStream(**args)


def chrome_audio_recv(clock: FakeClock, **kw) -> RecvStream:
    args = dict(
        ssrc=CHROME_AUDIO_SSRC, kind="audio", codec="opus", clock_rate=48000,
        payload_type_map={111: ROUTER_OPUS}, ext_id_map={9: ROUTER_MID, 14: ROUTER_AUDIO_LEVEL},
        reserve_mid_ext_id=ROUTER_MID, audio_level_ext_id=ROUTER_AUDIO_LEVEL, clock=clock,
    )
    args.update(kw)
    return RecvStream(**args)


def chrome_video_packet(seq: int, ts: int, payload: bytes = VP8_DELTA, *, tcc: int = 7, marker: bool = False,
                        padding: int = 0, csrcs=()) -> bytes:
    return build_rtp(
        payload_type=96, seq=seq, ts=ts, ssrc=CHROME_VIDEO_SSRC, payload=payload, marker=marker,
        extensions=[(9, b"0"), (2, b"\x11\x22\x33"), (4, tcc.to_bytes(2, "big"))], padding=padding,
        csrcs=csrcs,
    )


def send_stream(clock: FakeClock, **kw) -> SendStream:
    args = dict(
        ssrc=0xC0C0C0C0, payload_type=ROUTER_VP8, clock_rate=90000, kind="video", codec="vp8", mid="1",
        rtx_ssrc=None, rtx_payload_type=None, buffer_packets=600, keyframe_gating=True, cname="cn",
        clock=clock, initial_seq=1000, initial_ts=5000,
    )
    args.update(kw)
    return SendStream(**args)
