"""ICE-lite server over a real UDP socket, driven by real aioice.stun messages."""

from __future__ import annotations

import asyncio

import pytest
from aioice import stun
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from studyrooms.clock import FakeClock
from studyrooms.errors import ResourceExhaustedError
from studyrooms.net.ice import HOST_UDP_PRIORITY, IceLiteServer
from studyrooms.net.loopback_peer import LoopbackPeer
from studyrooms.net.udp import bind_udp


@pytest.fixture
async def server():
    sock = await bind_udp("127.0.0.1", buffer_bytes=None)
    srv = IceLiteServer(sock)
    yield srv
    srv.close()
    sock.close()


@pytest.fixture
async def peers():
    made = []

    async def make():
        p = await LoopbackPeer.create()
        made.append(p)
        return p

    yield make
    for p in made:
        await p.close()


def addr_of(srv):
    return srv.socket.local_address


async def test_good_check_gets_xor_mapped_address_and_integrity(server, peers):
    conn = server.create_connection()
    peer = await peers()
    params = conn.parameters()
    resp = await peer.request(peer.build_check(params, use_candidate=False), addr_of(server))
    assert resp is not None and resp.message_class == stun.Class.RESPONSE
    assert resp.attributes["XOR-MAPPED-ADDRESS"] == peer.local_address
    assert resp.check_message_integrity(conn.password.encode())
    assert not resp.check_message_integrity(b"wrong")
    assert "FINGERPRINT" in resp.attributes  # parse_message verified it
    assert conn.state == "connected" and conn.selected_tuple == peer.local_address
    resp = await peer.request(peer.build_check(params, use_candidate=True), addr_of(server))
    assert resp.message_class == stun.Class.RESPONSE
    assert conn.state == "completed"


async def test_wrong_password_401_missing_integrity_400_unknown_ufrag_silent(server, peers):
    conn = server.create_connection()
    peer = await peers()
    params = conn.parameters()
    resp = await peer.request(peer.build_check(params, password="x" * 32), addr_of(server))
    assert resp.message_class == stun.Class.ERROR and resp.error_code == 401
    resp = await peer.request(peer.build_check(params, integrity=False), addr_of(server))
    assert resp.message_class == stun.Class.ERROR and resp.error_code == 400
    resp = await peer.request(peer.build_check(params, username=""), addr_of(server))
    assert resp.error_code == 400
    unknown = {"usernameFragment": "nobodyhasthisufr", "password": conn.password}
    assert await peer.request(peer.build_check(unknown), addr_of(server), timeout_s=0.3) is None
    assert server.stun_unknown_ufrag == 1
    assert server.stun_unauthorized == 1 and server.stun_bad_request == 2
    assert conn.state == "new" and conn.selected_tuple is None


async def test_ice_controlled_gets_487_with_integrity(server, peers):
    conn = server.create_connection()
    peer = await peers()
    resp = await peer.request(peer.build_check(conn.parameters(), controlled=True), addr_of(server))
    assert resp.error_code == 487
    assert resp.check_message_integrity(conn.password.encode())
    assert conn.state == "new"


async def test_use_candidate_renomination_switches_tuple_and_drops_stale(server, peers):
    conn = server.create_connection()
    got = []
    conn.on_datagram = lambda data, addr: got.append((data, addr))
    a, b = await peers(), await peers()
    params = conn.parameters()
    assert (await a.request(a.build_check(params), addr_of(server))).message_class == stun.Class.RESPONSE
    assert conn.selected_tuple == a.local_address and conn.state == "completed"
    # a plain check from b adds a tuple but does not select it
    await b.request(b.build_check(params, use_candidate=False), addr_of(server))
    assert conn.selected_tuple == a.local_address and conn.has_tuple(b.local_address)
    # USE-CANDIDATE from b renominates (Chrome does this) and a becomes stale
    await b.request(b.build_check(params), addr_of(server))
    assert conn.selected_tuple == b.local_address and conn.renominations == 1
    assert not conn.has_tuple(a.local_address)
    # send goes to the selected tuple
    conn.send(b"\x17hello")
    await asyncio.sleep(0.05)
    assert b._dtls_queue.qsize() == 1 and a._dtls_queue.qsize() == 0
    # data from the stale tuple is dropped, from the selected one delivered
    before = server.unknown_tuple
    a.sock.sendto(b"\x80" + bytes(20), addr_of(server))
    b.sock.sendto(b"\x80" + bytes(20), addr_of(server))
    await asyncio.sleep(0.05)
    assert server.unknown_tuple == before + 1
    assert got == [(b"\x80" + bytes(20), b.local_address)]


async def test_consent_timeout_with_fake_clock(server, peers):
    clock = FakeClock()
    conn = server.create_connection(consent_timeout_s=30.0, clock=clock)
    fired = []
    conn.on_timeout = lambda: fired.append(conn.state)
    peer = await peers()
    await peer.request(peer.build_check(conn.parameters()), addr_of(server))
    assert conn.state == "completed"
    clock.advance(20)
    await peer.request(peer.build_check(conn.parameters()), addr_of(server))  # consent refreshed
    clock.advance(20)
    assert conn.state == "completed" and not fired
    clock.advance(15)
    assert conn.state == "disconnected" and fired == ["disconnected"]


async def test_restart_rejects_old_ufrag_accepts_new(server, peers):
    conn = server.create_connection()
    peer = await peers()
    old = conn.parameters()
    await peer.request(peer.build_check(old), addr_of(server))
    new = conn.restart()
    assert new["usernameFragment"] != old["usernameFragment"] and new["password"] != old["password"]
    assert len(new["usernameFragment"]) == 16 and len(new["password"]) == 32 and new["iceLite"] is True
    assert await peer.request(peer.build_check(old), addr_of(server), timeout_s=0.3) is None
    resp = await peer.request(peer.build_check(new), addr_of(server))
    assert resp.message_class == stun.Class.RESPONSE
    assert resp.check_message_integrity(new["password"].encode())


async def test_candidates_format(server):
    conn = server.create_connection()
    (c,) = conn.candidates("0.0.0.0", "203.0.113.7", 40001)
    assert c == {
        "foundation": "udpcandidate",
        "priority": HOST_UDP_PRIORITY,
        "address": "203.0.113.7",
        "ip": "203.0.113.7",
        "protocol": "udp",
        "port": 40001,
        "type": "host",
    }
    assert conn.candidates("127.0.0.1", None, 1)[0]["ip"] == "127.0.0.1"


async def test_close_unregisters(server, peers):
    conn = server.create_connection()
    peer = await peers()
    params = conn.parameters()
    await peer.request(peer.build_check(params), addr_of(server))
    conn.close()
    assert conn.state == "closed" and server.connection_count == 0
    assert await peer.request(peer.build_check(params), addr_of(server), timeout_s=0.2) is None


async def test_garbage_over_the_wire_is_counted(server, peers):
    peer = await peers()
    peer.remote = addr_of(server)
    for junk in (b"", b"\x00", b"\x00\x01\x00\x00" + bytes(16), b"\x01" * 30, b"\x80" * 40, b"\xff" * 3):
        peer.send_raw(junk)
    await asyncio.sleep(0.1)
    assert server.socket.handler_errors == 0
    assert server.malformed + server.unknown_tuple + server.stun_ignored + server.stun_bad_request >= 5


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200), prefix=st.sampled_from([b"", b"\x00\x01", b"\x01\x01", b"\x00\x01\x00\x08"]))
def test_random_bytes_never_raise(data, prefix):
    """Random datagrams straight into the handler (no loop needed for the receive path)."""
    srv = IceLiteServer(_NullSocket())
    conn = srv.create_connection()
    conn.on_datagram = lambda d, a: None
    srv._by_tuple[("127.0.0.1", 9)] = conn
    def dropped() -> int:  # every way a datagram can be refused is counted somewhere
        stats = srv.stats()
        return sum(stats[k] for k in ("stunBadRequest", "stunUnauthorized", "stunRoleConflict", "stunUnknownUfrag",
                                      "stunIgnored", "malformed", "unknownTuple"))

    srv.datagram_received(prefix + data, ("127.0.0.1", 9))
    before = dropped()
    srv.datagram_received(prefix + data, ("127.0.0.1", 10))
    # also a STUN header with a plausible length around random attributes
    body = data[: len(data) - len(data) % 4]
    hdr = b"\x00\x01" + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + bytes(12)
    srv.datagram_received(hdr + body, ("127.0.0.1", 10))
    assert dropped() == before + 2  # neither came from a validated tuple with valid STUN: both counted
    assert conn.selected_tuple is None


class _NullSocket:
    local_address = ("127.0.0.1", 1)

    def __init__(self):
        self.on_datagram = None
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append(data)
        return True


async def test_bind_udp_range_exhausted_and_buffers():
    a = await bind_udp("127.0.0.1", port_range=(47100, 47101), buffer_bytes=1 << 20)
    b = await bind_udp("127.0.0.1", port_range=(47100, 47101), buffer_bytes=1 << 20)
    try:
        assert {a.local_address[1], b.local_address[1]} == {47100, 47101}
        assert a.rcvbuf_bytes >= 1 << 20  # Linux reports double the request
        with pytest.raises(ResourceExhaustedError, match="47100-47101"):
            await bind_udp("127.0.0.1", port_range=(47100, 47101))
        with pytest.raises(ResourceExhaustedError):
            await bind_udp("127.0.0.1", a.local_address[1])
    finally:
        a.close()
        b.close()
    a.close()  # idempotent
    assert a.sendto(b"x", ("127.0.0.1", 9)) is False and a.send_errors == 1


async def test_udp_handler_exception_is_contained():
    a = await bind_udp("127.0.0.1")
    b = await bind_udp("127.0.0.1")
    got = asyncio.Event()

    def boom(data, addr):
        got.set()
        raise RuntimeError("bug")

    a.on_datagram = boom
    assert b.sendto(b"hi", a.local_address)
    await asyncio.wait_for(got.wait(), 1)
    assert a.handler_errors == 1 and a.received == 1 and b.sent == 1
    a.close()
    b.close()
