"""PlainTransport over real UDP sockets: comedia, explicit connect, SRTP with SDES-style keys."""

from __future__ import annotations

import asyncio
import struct

import pytest

from studyrooms.errors import InvalidRequestError, InvalidStateError, UnsupportedError
from studyrooms.net.srtp import SrtpPair, generate_key_base64
from studyrooms.net.udp import bind_udp
from studyrooms.sfu.options import PlainTransportOptions, WorkerOptions
from studyrooms.sfu.plain_transport import PlainTransport

WOPTS = WorkerOptions(rtc_min_port=45000, rtc_max_port=45999)


class StubRouter:
    def __init__(self):
        self.closed = []

    def _transport_closed(self, transport):
        self.closed.append(transport)


class Recording(PlainTransport):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.got_rtp, self.got_rtcp = [], []

    def receive_rtp(self, data):
        self.got_rtp.append(bytes(data))

    def receive_rtcp(self, data):
        self.got_rtcp.append(bytes(data))


def rtp(seq, ssrc=0xABCDEF01, size=160):
    return struct.pack("!BBHII", 0x80, 111, seq, seq * 960, ssrc) + bytes(size)


RTCP = struct.pack("!BBHI", 0x80, 201, 1, 0x01020304)


async def until(pred, timeout_s=3.0):
    end = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


class Remote:
    """The other end: a plain UDP socket recording what it gets."""

    def __init__(self, sock):
        self.sock = sock
        self.got = []
        sock.on_datagram = lambda d, a: self.got.append((d, a))

    @classmethod
    async def create(cls):
        return cls(await bind_udp("127.0.0.1"))


@pytest.fixture
async def made():
    items = []
    yield items
    for x in items:
        x.close()


async def make(made, **opts):
    t = await Recording.create(StubRouter(), f"p{len(made)}", options=PlainTransportOptions(**opts), worker_options=WOPTS)
    made.append(t)
    return t


async def remote(made):
    r = await Remote.create()
    made.append(r.sock)
    return r


async def test_comedia_learns_remote_from_first_packet(made):
    t = await make(made, comedia=True)
    tup = t.tuple()
    assert tup["protocol"] == "udp" and 45000 <= tup["localPort"] <= 45999 and tup["localIp"] == "127.0.0.1"
    await t.connect()
    assert not t.media_ready
    r, other = await remote(made), await remote(made)
    dest = ("127.0.0.1", tup["localPort"])
    r.sock.sendto(b"garbage!", dest)  # not RTP: must not become the remote
    r.sock.sendto(rtp(1), dest)
    await until(lambda: t.got_rtp)
    assert t.remote == r.sock.local_address and t.media_ready and t.garbage == 1
    assert t.got_rtp == [rtp(1)]
    other.sock.sendto(rtp(2), dest)  # other sources are ignored once the remote is known
    r.sock.sendto(RTCP, dest)
    await until(lambda: t.got_rtcp)
    assert t.got_rtp == [rtp(1)] and t.wrong_source == 1 and t.got_rtcp == [RTCP]
    t.send_rtp(rtp(3))
    await until(lambda: r.got)
    assert r.got[0] == (rtp(3), ("127.0.0.1", tup["localPort"]))


async def test_explicit_connect_both_ways(made):
    t = await make(made)
    r = await remote(made)
    t.send_rtp(rtp(1))  # no remote yet: dropped, never raises
    assert t.tx_dropped == 1
    await t.connect(ip="127.0.0.1", port=r.sock.local_address[1])
    assert t.media_ready and t.tuple()["remotePort"] == r.sock.local_address[1]
    with pytest.raises(InvalidStateError):
        await t.connect(ip="127.0.0.1", port=1)
    pkts = [rtp(i) for i in range(5)]
    for p in pkts:
        r.sock.sendto(p, ("127.0.0.1", t.tuple()["localPort"]))
    await until(lambda: len(t.got_rtp) == 5)
    assert t.got_rtp == pkts  # identical bytes
    t.send_rtp(rtp(9))
    t.send_rtcp(RTCP)
    await until(lambda: len(r.got) == 2)
    assert [d for d, _ in r.got] == [rtp(9), RTCP]
    assert t.get_stats()["rtpPacketsSent"] == 1


async def test_srtp_round_trip_with_keys(made):
    t = await make(made, enable_srtp=True)
    local = t.parameters()["srtpParameters"]
    assert local["cryptoSuite"] == "AES_CM_128_HMAC_SHA1_80"
    r = await remote(made)
    remote_key = generate_key_base64("AES_CM_128_HMAC_SHA1_80")
    # the remote protects with its key and unprotects with ours
    peer = SrtpPair.from_keys("AES_CM_128_HMAC_SHA1_80", remote_key, local["keyBase64"])
    with pytest.raises(InvalidRequestError):
        await t.connect(ip="127.0.0.1", port=r.sock.local_address[1])  # keys missing
    await t.connect(
        ip="127.0.0.1",
        port=r.sock.local_address[1],
        srtp_parameters={"cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": remote_key},
    )
    dest = ("127.0.0.1", t.tuple()["localPort"])
    r.sock.sendto(peer.protect_rtp(rtp(1)), dest)
    r.sock.sendto(rtp(2), dest)  # plaintext on an SRTP transport: dropped
    r.sock.sendto(peer.protect_rtcp(RTCP), dest)
    await until(lambda: t.got_rtp and t.got_rtcp)
    await asyncio.sleep(0.05)
    assert t.got_rtp == [rtp(1)] and t.got_rtcp == [RTCP] and t.garbage == 1
    t.send_rtp(rtp(5))
    await until(lambda: r.got)
    wire = r.got[0][0]
    assert wire != rtp(5) and peer.unprotect_rtp(wire) == rtp(5)


async def test_validation(made):
    with pytest.raises(UnsupportedError):
        await make(made, rtcp_mux=False)
    t = await make(made)
    with pytest.raises(InvalidRequestError):
        await t.connect()
    c = await make(made, comedia=True)
    with pytest.raises(InvalidRequestError):
        await c.connect(ip="127.0.0.1", port=5000)
    s = await make(made, enable_srtp=True)
    with pytest.raises(InvalidRequestError):
        await s.connect(ip="127.0.0.1", port=5000, srtp_parameters={"cryptoSuite": "AES_CM_128_HMAC_SHA1_80", "keyBase64": "short"})


async def test_close_releases_port(made):
    t = await make(made)
    port = t.tuple()["localPort"]
    t.close()
    assert t.closed and t.closed_reason == "closed" and t.router.closed == [t]
    await asyncio.sleep(0)
    again = await bind_udp("127.0.0.1", port)  # the port is free again
    again.close()


# ---------------------------------------------------------------------- PipeTransport


@pytest.mark.parametrize("srtp", [False, True])
async def test_pipe_transports_connected_both_ways(made, srtp):
    from studyrooms.sfu.pipe_transport import PipeTransport

    class Pipe(PipeTransport):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.got_rtp = []

        def receive_rtp(self, data):
            self.got_rtp.append(bytes(data))

    a = await Pipe.create_pipe(StubRouter(), "pa", worker_options=WOPTS, enable_srtp=srtp)
    b = await Pipe.create_pipe(StubRouter(), "pb", worker_options=WOPTS, enable_srtp=srtp)
    made.extend([a, b])
    pa, pb = a.parameters(), b.parameters()
    assert a.kind == "pipe" and ("srtpParameters" in pa) is srtp
    await a.connect(pb["tuple"]["localIp"], pb["tuple"]["localPort"], pb.get("srtpParameters"))
    await b.connect(pa["tuple"]["localIp"], pa["tuple"]["localPort"], pa.get("srtpParameters"))
    assert a.media_ready and b.media_ready
    for i in range(3):
        a.send_rtp(rtp(i, ssrc=1))
        b.send_rtp(rtp(i, ssrc=2))
    await until(lambda: len(a.got_rtp) == 3 and len(b.got_rtp) == 3)
    assert b.got_rtp == [rtp(i, ssrc=1) for i in range(3)]
    assert a.got_rtp == [rtp(i, ssrc=2) for i in range(3)]
    assert a.dump()["type"] == "pipe"
