"""DtlsEndpoint over IceLiteServer + a real UDP socket, against aiortc's RTCDtlsTransport as the peer."""

from __future__ import annotations

import asyncio
import datetime
import struct

import pytest

from studyrooms.net.dtls import DtlsEndpoint, local_role_for, make_certificate
from studyrooms.net.ice import IceLiteServer
from studyrooms.net.loopback_peer import LoopbackPeer
from studyrooms.net.udp import bind_udp

CERT = make_certificate(365)


def test_certificate_validity_and_role_rule():
    cert = make_certificate(400)
    days = (cert.expires - datetime.datetime.now(tz=datetime.timezone.utc)).days
    assert 398 <= days <= 400
    assert local_role_for("client") == "server"
    assert local_role_for("server") == "client" and local_role_for("auto") == "client"


@pytest.fixture
async def setup():
    sock = await bind_udp("127.0.0.1", buffer_bytes=None)
    srv = IceLiteServer(sock)
    conn = srv.create_connection()
    states = []
    ep = DtlsEndpoint(CERT, conn.send, on_state=states.append)
    conn.on_datagram = lambda data, addr: ep.feed(data)
    conn.on_selected = lambda addr: ep.set_writable()
    peer = await LoopbackPeer.create()
    await peer.ice_connect(conn.parameters(), conn.candidates("127.0.0.1", None, sock.local_address[1])[0])
    yield ep, peer, states
    ep.close()
    await ep.wait_closed()
    await peer.close()
    srv.close()
    sock.close()


@pytest.mark.parametrize("remote_role", ["client", "server"])
async def test_handshake_both_roles(setup, remote_role):
    ep, peer, states = setup
    peer_task = asyncio.ensure_future(peer.dtls_connect(ep.local_fingerprints(), remote_role))
    state = await ep.start(remote_role, peer.fingerprints(), timeout_s=10)
    assert state == "connected" and await peer_task == "connected"
    assert ep.role == local_role_for(remote_role)
    assert states == ["connecting", "connected"] and ep.srtp is not None and ep.srtp_profile
    assert ep.srtp_sessions == (ep._dtls._rx_srtp, ep._dtls._tx_srtp)
    pkt = struct.pack("!BBHII", 0x80, 96, 1, 0, 42) + b"x" * 50
    assert ep.srtp.unprotect_rtp(peer.dtls._tx_srtp.protect(pkt)) == pkt
    assert peer.dtls._rx_srtp.unprotect(ep.srtp.protect_rtp(pkt)) == pkt


async def test_buffered_before_start(setup):
    ep, peer, _ = setup
    peer_task = asyncio.ensure_future(peer.dtls_connect(ep.local_fingerprints(), "client"))
    await asyncio.sleep(0.2)
    assert ep.received >= 1 and ep.state == "new"
    assert await ep.start("client", peer.fingerprints(), timeout_s=10) == "connected"
    assert await peer_task == "connected"


async def test_fingerprint_mismatch(setup):
    ep, peer, states = setup
    wrong = [{"algorithm": "sha-256", "value": make_certificate(1).getFingerprints()[0].value}]
    peer_task = asyncio.ensure_future(peer.dtls_connect(ep.local_fingerprints(), "client"))
    assert await ep.start("client", wrong, timeout_s=10) == "failed"
    assert ep.failure_reason == "fingerprint" and ep.srtp is None and states[-1] == "failed"
    await peer_task


async def test_timeout_and_close_leave_no_tasks(setup):
    ep, peer, states = setup
    assert await ep.start("client", peer.fingerprints(), timeout_s=0.2) == "failed"  # peer never speaks
    assert ep.failure_reason == "timeout"
    ep.close()
    await ep.wait_closed()
    assert ep.state == "failed"  # the reason stays visible
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and "RTCDtlsTransport.start" in repr(t)]
    assert all(t.done() for t in leftover)
