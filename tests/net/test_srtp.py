"""SrtpPair: same bytes as pylibsrtp, counted failures, never raises."""

from __future__ import annotations

import struct

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studyrooms.net.srtp import CRYPTO_SUITES, MAX_RTP_BYTES, SrtpPair, generate_key_base64


def rtp(seq, size=1000, ssrc=0x01020304):
    return struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, ssrc) + bytes((i * 7) & 0xFF for i in range(size))


RTCP = struct.pack("!BBHI", 0x81, 201, 7, 0xCAFE) + struct.pack("!IIIIII", 0x01020304, 0, 0, 0, 0, 0)


def pair(suite="AES_CM_128_HMAC_SHA1_80"):
    a, b = generate_key_base64(suite), generate_key_base64(suite)
    return SrtpPair.from_keys(suite, a, b), SrtpPair.from_keys(suite, b, a)


@pytest.mark.parametrize("suite", sorted(CRYPTO_SUITES))
def test_round_trip_every_suite(suite):
    alice, bob = pair(suite)
    for seq in range(1, 20):
        wire = alice.protect_rtp(rtp(seq))
        assert wire is not None and wire != rtp(seq)
        assert bob.unprotect_rtp(wire) == rtp(seq)
    assert bob.unprotect_rtcp(alice.protect_rtcp(RTCP)) == RTCP
    assert alice.protected == 20 and bob.unprotected == 20


def test_identical_to_pylibsrtp_session():
    # the cffi fast path gives the same bytes as pylibsrtp's Session.protect on the same key
    key_b64 = generate_key_base64("AES_CM_128_HMAC_SHA1_80")
    ours = SrtpPair.from_keys("AES_CM_128_HMAC_SHA1_80", key_b64, key_b64)
    theirs = SrtpPair.from_keys("AES_CM_128_HMAC_SHA1_80", key_b64, key_b64)
    for seq in range(1, 5):
        assert ours.protect_rtp(rtp(seq)) == theirs.tx_session.protect(rtp(seq))


def test_failures_are_counted_not_raised():
    alice, bob = pair()
    wire = alice.protect_rtp(rtp(1))
    tampered = bytearray(wire)
    tampered[40] ^= 1
    assert bob.unprotect_rtp(bytes(tampered)) is None and bob.auth_failures == 1
    assert bob.unprotect_rtp(wire) == rtp(1)
    assert bob.unprotect_rtp(wire) is None and bob.replay_failures == 1
    assert alice.protect_rtp(rtp(2, size=MAX_RTP_BYTES)) is None and alice.too_big == 1
    assert alice.protect_rtp(rtp(3, size=1400)) is not None  # > pylibsrtp's 1356 limit is fine here
    assert alice.protect_rtp(bytearray(rtp(4))) is not None  # bytearray accepted (no bytes() copy)
    assert bob.unprotect_rtp(b"") is None and bob.unprotect_rtcp(b"\x80\xc9") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2100))
def test_random_input_never_raises(data):
    alice, bob = pair()
    for fn in (bob.unprotect_rtp, bob.unprotect_rtcp, alice.protect_rtp, alice.protect_rtcp):
        out = fn(data)
        assert out is None or isinstance(out, bytes)


def test_bad_keys():
    with pytest.raises(ValueError):
        SrtpPair.from_keys("NOPE", "", "")
    with pytest.raises(ValueError):
        SrtpPair.from_keys("AES_CM_128_HMAC_SHA1_80", "c2hvcnQ=", generate_key_base64("AES_CM_128_HMAC_SHA1_80"))
    assert isinstance(pylibsrtp.Error, type)
