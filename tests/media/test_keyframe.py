from hypothesis import given, settings
from hypothesis import strategies as st

from studyrooms.clock import FakeClock
from studyrooms.media.keyframe import (
    KeyFrameRequestThrottle,
    h264_is_keyframe,
    is_keyframe,
    keyframe_detector,
    vp8_is_keyframe,
    vp9_is_keyframe,
)


def kf(codec, payload, prefix=b"\x80" * 12):
    data = prefix + payload
    return is_keyframe(codec, data, len(prefix), len(data))


def test_vp8_basic_descriptor():
    assert kf("vp8", bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]))  # S=1, PID=0, P=0
    assert not kf("vp8", bytes([0x10, 0x01]))  # P=1: interframe
    assert not kf("vp8", bytes([0x00, 0x00]))  # S=0: not a partition start
    assert not kf("vp8", bytes([0x11, 0x00]))  # partition index 1
    assert not kf("vp8", bytes([0x10]))  # no payload header byte
    assert kf("vp8", bytes([0x18, 0x00]))  # reserved bit ignored


def test_vp8_extended_descriptor():
    # X | S; I (15-bit pictureId) L T K; TL0PICIDX; TID/Y/KEYIDX; payload header P=0
    assert kf("vp8", bytes([0x90, 0xF0, 0x81, 0x23, 0x05, 0x40, 0x00]))
    assert not kf("vp8", bytes([0x90, 0xF0, 0x81, 0x23, 0x05, 0x40, 0x01]))
    # 7-bit pictureId only
    assert kf("vp8", bytes([0x90, 0x80, 0x12, 0x00]))
    # truncated inside the extension
    assert not kf("vp8", bytes([0x90, 0xF0, 0x81]))
    assert not kf("vp8", bytes([0x90]))


def test_vp9():
    assert kf("vp9", bytes([0x08, 0xAA]))  # B=1, P=0
    assert not kf("vp9", bytes([0x48, 0xAA]))  # P=1
    assert not kf("vp9", bytes([0x00, 0xAA]))  # B=0
    # I (15-bit pid) + L: TID 0, SID 0 -> key; SID 1 -> not (spatial layer above base)
    assert kf("vp9", bytes([0xA8, 0x80, 0x01, 0x00, 0x00]))
    assert not kf("vp9", bytes([0xA8, 0x80, 0x01, 0x02, 0x00]))
    assert not kf("vp9", bytes([0xA8, 0x80]))  # truncated


def test_h264():
    assert kf("h264", bytes([0x65, 0x88]))  # IDR (5)
    assert kf("h264", bytes([0x67, 0x42]))  # SPS (7)
    assert not kf("h264", bytes([0x41, 0x9A]))  # non-IDR slice (1)
    assert not kf("h264", bytes([0x68, 0xCE]))  # PPS (8) alone
    # STAP-A: SPS(3 bytes) + PPS(2 bytes)
    assert kf("h264", bytes([0x78, 0x00, 0x03, 0x67, 0x42, 0x00, 0x00, 0x02, 0x68, 0xCE]))
    # STAP-A of two non-IDR slices
    assert not kf("h264", bytes([0x78, 0x00, 0x02, 0x41, 0x00, 0x00, 0x02, 0x41, 0x00]))
    # STAP-A with a size running past the end
    assert not kf("h264", bytes([0x78, 0x00, 0x30, 0x67]))
    # FU-A: start of IDR, middle of IDR, start of non-IDR
    assert kf("h264", bytes([0x7C, 0x85, 0x00]))
    assert not kf("h264", bytes([0x7C, 0x05, 0x00]))
    assert not kf("h264", bytes([0x7C, 0x81, 0x00]))
    assert not kf("h264", bytes([0x7C]))


def test_codec_names_and_unknown():
    key = bytes([0x10, 0x00])
    assert kf("VP8", key) and kf("video/VP8", key)
    assert not kf("opus", key)
    assert not kf("av1", key)
    assert keyframe_detector("video/H264") is h264_is_keyframe
    assert keyframe_detector("vp9") is vp9_is_keyframe
    assert keyframe_detector("vp8") is vp8_is_keyframe


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(-5, 45), st.integers(-5, 60))
def test_detectors_never_raise(data, off, end):
    for fn in (vp8_is_keyframe, vp9_is_keyframe, h264_is_keyframe):
        if off >= 0:
            assert fn(data, off, end) in (True, False)


def test_throttle_allows_one_per_interval_and_remembers_pending():
    clock = FakeClock()
    t = KeyFrameRequestThrottle(1.0)
    assert t.allow(clock.now())  # first request goes out
    assert not t.pending_due(clock.now())
    clock.advance(0.3)
    assert not t.allow(clock.now())  # throttled: remembered
    assert abs(t.next_due() - (clock.now() + 0.7)) < 1e-9
    clock.advance(0.3)
    assert not t.allow(clock.now())  # still one pending, not two
    assert not t.pending_due(clock.now())  # not yet due
    clock.advance(0.4)  # 1.0 s after the first send
    assert t.pending_due(clock.now())  # the deferred request is sent now
    assert not t.pending_due(clock.now())  # ... once
    assert t.next_due() is None
    clock.advance(0.5)
    assert not t.allow(clock.now())  # the deferred send restarted the interval
    clock.advance(0.5)
    assert t.pending_due(clock.now())
    assert (t.requests, t.sent, t.throttled) == (4, 3, 3)


def test_throttle_allow_after_interval_clears_pending():
    clock = FakeClock()
    t = KeyFrameRequestThrottle(0.5)
    assert t.allow(clock.now())
    clock.advance(0.1)
    assert not t.allow(clock.now())
    clock.advance(0.6)
    assert t.allow(clock.now())  # a fresh request covers the pending one
    assert not t.pending_due(clock.now() + 10)
    t.allow(clock.now())
    t.cancel_pending()
    assert not t.pending_due(clock.now() + 10)
