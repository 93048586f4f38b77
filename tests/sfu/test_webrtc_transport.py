"""WebRtcTransport over real sockets: ICE-lite + real DTLS handshakes + SRTP both ways.

The client side is independent code (studyrooms.net.loopback_peer: a controlling ICE client and
aiortc's RTCDtlsTransport used directly), plus a real pymediasoup client for the formats.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from studyrooms.clock import FakeClock, SystemClock
from studyrooms.errors import InvalidRequestError, InvalidStateError
from studyrooms.net.dtls import make_certificate
from studyrooms.net.loopback_peer import LoopbackPeer
from studyrooms.sfu.options import WebRtcTransportOptions, WorkerOptions
from studyrooms.sfu.webrtc_server import WebRtcServer
from studyrooms.sfu.webrtc_transport import WebRtcTransport

CERT = make_certificate(365)


class StubRouter:
    """Stand-in for Router: only what Transport.close needs."""

    def __init__(self):
        self.closed = []

    def _transport_closed(self, transport):
        self.closed.append(transport)


class RecordingTransport(WebRtcTransport):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.got_rtp: list[bytes] = []
        self.got_rtcp: list[bytes] = []

    def receive_rtp(self, data):
        self.got_rtp.append(bytes(data))

    def receive_rtcp(self, data):
        self.got_rtcp.append(bytes(data))


def rtp(seq: int, ssrc: int = 0x11223344, size: int = 200, pt: int = 100) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 960, ssrc) + bytes((seq + i) & 0xFF for i in range(size))


RTCP_RR = struct.pack("!BBHI", 0x80, 201, 1, 0xCAFEBABE)


async def wait_for(predicate, timeout_s=5.0):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture(params=["shared", "per-transport"])
async def make_transport(request):
    server = None
    made: list[WebRtcTransport] = []
    if request.param == "shared":
        server = await WebRtcServer.create("127.0.0.1", port_range=(46000, 46999))

    async def make(clock=None, **worker_kw):
        wopts = WorkerOptions(
            listen_ip="127.0.0.1",
            port_mode=request.param,
            rtc_min_port=46000,
            rtc_max_port=46999,
            **worker_kw,
        )
        t = await RecordingTransport.create(
            StubRouter(),
            f"t{len(made)}",
            options=WebRtcTransportOptions(direction="send"),
            worker_options=wopts,
            certificate=CERT,
            webrtc_server=server,
            clock=clock or SystemClock(),
        )
        made.append(t)
        return t

    make.mode = request.param
    yield make
    for t in made:
        t.close()
        await t.wait_closed()
    if server is not None:
        server.close()


@pytest.fixture
async def peer():
    p = await LoopbackPeer.create()
    yield p
    await p.close()


async def handshake(t: WebRtcTransport, peer: LoopbackPeer, remote_role: str, *, before_connect=False):
    params = t.parameters()
    resp = await peer.ice_connect(params["iceParameters"], params["iceCandidates"][0])
    assert resp is not None and resp.attributes.get("XOR-MAPPED-ADDRESS") == peer.local_address
    assert t.ice_state == "completed"
    peer_role = "client" if remote_role == "client" else "server"  # remote auto/server -> we are client
    peer_task = asyncio.ensure_future(peer.dtls_connect(params["dtlsParameters"]["fingerprints"], peer_role))
    if before_connect:
        await asyncio.sleep(0.3)  # the ClientHello arrives before connect(): must be buffered
        assert t.dtls.received >= 1 and t.dtls_state == "new"
    await t.connect({"role": remote_role, "fingerprints": peer.fingerprints()})
    assert await asyncio.wait_for(peer_task, 10) == "connected"
    await wait_for(lambda: t.dtls_state == "connected")
    assert t.media_ready


def test_parameters_shape_is_mediasoup():
    async def run():
        t = await RecordingTransport.create(
            StubRouter(), "x", options=WebRtcTransportOptions(), worker_options=WorkerOptions(rtc_min_port=46000, rtc_max_port=46999),
            certificate=CERT, webrtc_server=None,
        )
        p = t.parameters()
        t.close()
        return p

    p = asyncio.run(run())
    assert set(p) == {"id", "iceParameters", "iceCandidates", "dtlsParameters"}
    assert p["iceParameters"]["iceLite"] is True and len(p["iceParameters"]["usernameFragment"]) == 16
    assert p["dtlsParameters"]["role"] == "auto"
    assert [f["algorithm"] for f in p["dtlsParameters"]["fingerprints"]] == ["sha-256", "sha-384", "sha-512"]
    c = p["iceCandidates"][0]
    assert c["ip"] == c["address"] == "127.0.0.1" and 46000 <= c["port"] <= 46999 and c["type"] == "host"


@pytest.mark.parametrize("remote_role", ["client", "server", "auto"])
async def test_handshake_both_roles_and_srtp_both_ways(make_transport, peer, remote_role):
    t = await make_transport()
    await handshake(t, peer, remote_role)
    assert t.dtls.role == ("server" if remote_role == "client" else "client")
    # client -> SFU: receive_rtp gets the plaintext, RTCP demuxed (RFC 5761)
    sent = [rtp(i) for i in range(1, 6)]
    for pkt in sent:
        peer.send_rtp(pkt)
    peer.send_rtcp(RTCP_RR)
    await wait_for(lambda: len(t.got_rtp) == 5 and len(t.got_rtcp) == 1)
    assert t.got_rtp == sent and t.got_rtcp == [RTCP_RR]
    # SFU -> client
    t.send_rtp(rtp(7, ssrc=0x55667788))
    t.send_rtcp(RTCP_RR)
    assert await asyncio.wait_for(peer.rtp.get(), 2) == rtp(7, ssrc=0x55667788)
    assert await asyncio.wait_for(peer.rtcp.get(), 2) == RTCP_RR
    stats = t.get_stats()
    assert stats["dtlsState"] == "connected" and stats["iceState"] == "completed"
    assert stats["iceSelectedTuple"]["remotePort"] == peer.local_address[1]
    assert stats["rtpPacketsSent"] == 1 and stats["rtcpPacketsSent"] == 1
    assert t.dump()["srtpProfile"]


async def test_dtls_before_connect_is_buffered(make_transport, peer):
    t = await make_transport()
    await handshake(t, peer, "client", before_connect=True)
    peer.send_rtp(rtp(1))
    await wait_for(lambda: t.got_rtp == [rtp(1)])


async def test_tampered_and_early_srtp_dropped_and_counted(make_transport, peer):
    t = await make_transport()
    params = t.parameters()
    await peer.ice_connect(params["iceParameters"], params["iceCandidates"][0])
    peer.send_raw(b"\x80" + bytes(40))  # SRTP-looking before DTLS: never reaches receive_rtp
    await wait_for(lambda: t.srtp_dropped_early == 1)
    t.send_rtp(rtp(1))  # nothing unencrypted goes out before DTLS
    assert t.tx_dropped == 1
    await t.connect({"role": "client", "fingerprints": peer.fingerprints()})
    assert await peer.dtls_connect(params["dtlsParameters"]["fingerprints"], "client") == "connected"
    await wait_for(lambda: t.dtls_state == "connected")
    good = peer.dtls._tx_srtp.protect(rtp(1))
    bad = bytearray(peer.dtls._tx_srtp.protect(rtp(2)))
    bad[30] ^= 0xFF
    peer.send_raw(bytes(bad))
    peer.send_raw(good)
    peer.send_raw(good)  # replay
    await wait_for(lambda: len(t.got_rtp) == 1)
    await asyncio.sleep(0.05)
    assert t.got_rtp == [rtp(1)]
    s = t.get_stats()
    assert s["srtpAuthFailures"] == 1 and s["srtpReplayFailures"] == 1


async def test_fingerprint_mismatch_fails_and_closes(make_transport, peer):
    t = await make_transport()
    params = t.parameters()
    await peer.ice_connect(params["iceParameters"], params["iceCandidates"][0])
    other = make_certificate(1)
    wrong = [{"algorithm": f.algorithm, "value": f.value} for f in other.getFingerprints()]
    peer_task = asyncio.ensure_future(peer.dtls_connect(params["dtlsParameters"]["fingerprints"], "client"))
    await t.connect({"role": "client", "fingerprints": wrong})
    await wait_for(lambda: t.closed)
    assert t.closed_reason == "dtls-failed" and t.dtls_state == "failed"
    assert t.dtls.failure_reason == "fingerprint"
    assert t.router.closed == [t]
    await asyncio.wait_for(peer_task, 10)


async def test_dtls_timeout_closes(make_transport, peer):
    t = await make_transport(dtls_timeout_s=0.3)
    await t.connect({"role": "server", "fingerprints": peer.fingerprints()})  # ICE never comes
    await wait_for(lambda: t.closed, 3)
    assert t.closed_reason == "dtls-failed" and t.dtls.failure_reason == "timeout"


async def test_connect_validation_and_second_connect(make_transport, peer):
    t = await make_transport()
    for bad in (None, {}, {"fingerprints": []}, {"role": "boss", "fingerprints": peer.fingerprints()},
                {"fingerprints": [{"algorithm": "md5", "value": "AA"}]}, {"fingerprints": [{"algorithm": "sha-256"}]}):
        with pytest.raises(InvalidRequestError):
            await t.connect(bad)
    await t.connect({"role": "client", "fingerprints": peer.fingerprints()})
    with pytest.raises(InvalidStateError):
        await t.connect({"role": "client", "fingerprints": peer.fingerprints()})


async def test_consent_timeout_closes_transport(make_transport, peer):
    clock = FakeClock()
    t = await make_transport(clock=clock, consent_timeout_s=30.0)
    await handshake(t, peer, "client")
    clock.advance(31)
    clock.advance(10)
    assert t.closed and t.closed_reason == "ice-timeout"
    assert t.ice_state == "closed" and t.dtls_state == "closed"


async def test_restart_ice_keeps_dtls(make_transport, peer):
    t = await make_transport()
    await handshake(t, peer, "client")
    old = t.parameters()["iceParameters"]
    new = t.restart_ice()
    assert new["usernameFragment"] != old["usernameFragment"]
    assert await peer.request(peer.build_check(old), peer.remote, timeout_s=0.3) is None
    resp = await peer.request(peer.build_check(new), peer.remote)
    assert resp.check_message_integrity(new["password"].encode())
    peer.send_rtp(rtp(9))
    await wait_for(lambda: t.got_rtp == [rtp(9)])
    assert t.dtls_state == "connected"


async def test_close_frees_everything_and_peer_sees_close_notify(make_transport, peer):
    t = await make_transport()
    await handshake(t, peer, "server")
    t.close()
    await t.wait_closed()
    assert t.closed and t.closed_reason == "closed"
    await wait_for(lambda: peer.dtls.state == "closed", 3)  # close_notify reached the peer
    t.send_rtp(rtp(1))  # never raises after close
    assert t.dtls._dtls._task is None and t.dtls._start_task is None
    assert not [x for x in asyncio.all_tasks() if "DtlsEndpoint" in repr(x) or "_run_dtls" in repr(x)]


async def test_webrtc_server_close_closes_transports():
    server = await WebRtcServer.create("127.0.0.1")
    t = await RecordingTransport.create(
        StubRouter(), "a", options=WebRtcTransportOptions(), worker_options=WorkerOptions(),
        certificate=CERT, webrtc_server=server,
    )
    assert server.ice_server.connection_count == 1
    server.close()
    assert t.closed and t.closed_reason == "webrtc-server-closed"
    with pytest.raises(InvalidStateError):
        await RecordingTransport.create(
            StubRouter(), "b", options=WebRtcTransportOptions(), worker_options=WorkerOptions(),
            certificate=CERT, webrtc_server=server,
        )


# ---------------------------------------------------------------------- a real pymediasoup client

ROUTER_CAPS = {
    "codecs": [
        {"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2,
         "preferredPayloadType": 100, "parameters": {}, "rtcpFeedback": []},
        {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000, "preferredPayloadType": 101,
         "parameters": {}, "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"}]},
    ],
    "headerExtensions": [
        {"kind": "audio", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1,
         "preferredEncrypt": False, "direction": "sendrecv"},
    ],
}


@pytest.mark.slow
async def test_pymediasoup_client_connects_ice_and_dtls(make_transport, monkeypatch):
    import aioice.ice
    from aiortc import AudioStreamTrack
    from pymediasoup import AiortcHandler, Device
    from pymediasoup.rtp_parameters import RtpCapabilities

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    t = await make_transport()
    params = t.parameters()
    track = AudioStreamTrack()
    device = Device(handlerFactory=AiortcHandler.createFactory(tracks=[track]))
    await device.load(RtpCapabilities(**ROUTER_CAPS))
    send = device.createSendTransport(
        id=params["id"], iceParameters=params["iceParameters"], iceCandidates=params["iceCandidates"],
        dtlsParameters=params["dtlsParameters"], sctpParameters=None, iceServers=[],
    )
    states = []

    @send.on("connect")
    async def on_connect(dtlsParameters):
        await t.connect(dtlsParameters.model_dump(exclude_none=True))

    @send.on("produce")
    async def on_produce(kind, rtpParameters, appData):
        return "producer-1"

    send.on("connectionstatechange", states.append)
    producer = await send.produce(track=track, stopTracks=False)
    try:
        await wait_for(lambda: t.dtls_state == "connected", 15)
        assert t.dtls.role == "client"  # pymediasoup's send transport declares role 'server'
        await wait_for(lambda: len(t.got_rtp) >= 3, 10)  # real SRTP from aiortc, decrypted
        ssrc = producer.rtpParameters.encodings[0].ssrc
        assert all(struct.unpack_from("!I", p, 8)[0] == ssrc for p in t.got_rtp)
        await wait_for(lambda: "connected" in states, 5)
    finally:
        await producer.close()
        await send.close()
        track.stop()


def test_handshake_and_srtp_under_uvloop():
    """The media worker may run on uvloop: same handshake and fast path there."""
    import uvloop

    async def scenario():
        server = await WebRtcServer.create("127.0.0.1")
        t = await RecordingTransport.create(
            StubRouter(), "u", options=WebRtcTransportOptions(), worker_options=WorkerOptions(),
            certificate=CERT, webrtc_server=server,
        )
        peer = await LoopbackPeer.create()
        try:
            await handshake(t, peer, "client")
            peer.send_rtp(rtp(1))
            await wait_for(lambda: t.got_rtp == [rtp(1)])
            t.send_rtp(rtp(2))
            assert await asyncio.wait_for(peer.rtp.get(), 2) == rtp(2)
        finally:
            t.close()
            await t.wait_closed()
            await peer.close()
            server.close()

    uvloop.run(scenario())


async def test_peer_close_notify_closes_transport(make_transport, peer):
    t = await make_transport()
    await handshake(t, peer, "client")
    await peer.dtls.stop()  # sends close_notify
    await wait_for(lambda: t.closed, 3)
    assert t.closed_reason == "dtls-closed"


async def test_random_datagrams_after_connect_do_not_break_it(make_transport, peer):
    import random

    rnd = random.Random(7)
    t = await make_transport()
    await handshake(t, peer, "server")
    for i in range(300):
        first = rnd.choice([0, 1, 2, 20, 22, 23, 63, 64, 127, 128, 150, 191, 192, 255])
        peer.send_raw(bytes([first]) + rnd.randbytes(rnd.randrange(0, 300)))
        if i % 50 == 0:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert not t.closed and t.dtls_state == "connected"
    peer.send_rtp(rtp(1))
    await wait_for(lambda: rtp(1) in t.got_rtp)
    s = t.get_stats()
    assert s["srtpAuthFailures"] + s["srtpOtherFailures"] + s["srtpReplayFailures"] > 0
