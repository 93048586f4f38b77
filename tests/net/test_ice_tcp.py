"""ICE-TCP (RFC 6544 passive candidates, RFC 4571 framing) on the ICE-lite server, driven by a real
TCP client sending real aioice.stun checks."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from aioice import stun

from studyrooms.errors import ResourceExhaustedError
from studyrooms.net.ice import HOST_TCP_PRIORITY, HOST_UDP_PRIORITY, IceLiteServer
from studyrooms.net.tcp import bind_tcp
from studyrooms.net.udp import bind_udp


@pytest.fixture
async def server():
    for attempt in range(5):  # the UDP port's number may be taken on TCP by another process: next one
        sock = await bind_udp("127.0.0.1", buffer_bytes=None)
        try:
            tcp = await bind_tcp("127.0.0.1", sock.local_address[1], claim_timeout_s=0.3, max_connections=3)
            break
        except ResourceExhaustedError:
            sock.close()
            if attempt == 4:
                raise
    srv = IceLiteServer(sock, tcp=tcp)
    yield srv
    srv.close()
    sock.close()
    tcp.close()


def check(params: dict, *, use_candidate: bool = True) -> bytes:
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    msg.attributes["USERNAME"] = f"{params['usernameFragment']}:client"
    msg.attributes["PRIORITY"] = 1853824767
    msg.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
    if use_candidate:
        msg.attributes["USE-CANDIDATE"] = None
    msg.add_message_integrity(params["password"].encode())
    return bytes(msg)


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
    return await asyncio.wait_for(reader.readexactly(size), 5)


async def wait_until(predicate, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_passive_tcp_candidate_is_offered_after_udp(server):
    conn = server.create_connection()
    udp, tcp = conn.candidates("0.0.0.0", "203.0.113.7", 40001, tcp_port=server.tcp.port)
    assert udp["protocol"] == "udp" and udp["priority"] == HOST_UDP_PRIORITY
    assert tcp == {"foundation": "tcpcandidate", "priority": HOST_TCP_PRIORITY, "address": "203.0.113.7",
                   "ip": "203.0.113.7", "protocol": "tcp", "port": server.tcp.port, "type": "host",
                   "tcpType": "passive"}
    assert HOST_TCP_PRIORITY < HOST_UDP_PRIORITY
    assert [c["protocol"] for c in conn.candidates("127.0.0.1", None, 1, udp=False, tcp_port=2)] == ["tcp"]


async def test_check_media_and_close_over_one_tcp_connection(server):
    conn = server.create_connection(consent_timeout_s=2.0)
    got: list[tuple[bytes, tuple]] = []
    selected: list = []
    timeouts: list = []
    conn.on_datagram = lambda data, addr: got.append((data, addr))
    conn.on_selected = selected.append
    conn.on_timeout = lambda: timeouts.append(conn.state)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp.port)
    try:
        here = writer.get_extra_info("sockname")
        request = check(conn.parameters())
        for i in range(len(request)):  # the frame split over many segments
            writer.write(frame(request)[i : i + 1])
            await writer.drain()
        writer.write(frame(request)[len(request) :])
        response = stun.parse_message(await read_frame(reader))
        assert response.message_class == stun.Class.RESPONSE
        assert response.attributes["XOR-MAPPED-ADDRESS"] == (here[0], here[1])
        assert response.check_message_integrity(conn.password.encode())
        tcp_addr = (here[0], here[1], "tcp")
        assert conn.state == "completed" and conn.selected_tuple == tcp_addr == selected[-1]
        assert conn.dump()["selectedTuple"]["protocol"] == "tcp"
        # DTLS/SRTP-like frames both ways, two in one segment
        writer.write(frame(b"\x17dtls-record") + frame(b"\x80srtp-packet"))
        await writer.drain()
        await wait_until(lambda: len(got) == 2)
        assert got == [(b"\x17dtls-record", tcp_addr), (b"\x80srtp-packet", tcp_addr)]
        assert conn.send(b"\x80to-the-client")
        assert await read_frame(reader) == b"\x80to-the-client"
        # the client goes away: no path left, so disconnected until a check arrives on another one
        writer.close()
        await wait_until(lambda: conn.selected_tuple is None)
        assert conn.state == "disconnected" and selected[-1] is None and not conn.send(b"x")
        assert server.tcp.connection_count == 0 and timeouts == []
        await wait_until(lambda: timeouts, timeout=5.0)  # no path came back within the consent timeout
        assert timeouts == ["disconnected"]
    finally:
        writer.close()


async def test_unclaimed_and_surplus_connections_are_closed(server):
    idle = [await asyncio.open_connection("127.0.0.1", server.tcp.port) for _ in range(3)]
    extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", server.tcp.port)
    assert await asyncio.wait_for(extra_reader.read(), 3) == b""  # over max_connections: closed
    for reader, _ in idle:  # never sent a valid check: closed after claim_timeout_s
        assert await asyncio.wait_for(reader.read(), 3) == b""
    assert server.tcp.refused == 1 and server.tcp.unclaimed_closed == 3
    for _, writer in [*idle, (None, extra_writer)]:
        writer.close()


async def test_closing_the_ice_connection_closes_its_tcp_connection(server):
    conn = server.create_connection()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp.port)
    try:
        writer.write(frame(check(conn.parameters())))
        await read_frame(reader)
        await asyncio.sleep(0.4)  # past claim_timeout_s: a claimed connection stays
        assert server.tcp.connection_count == 1
        conn.close()
        assert await asyncio.wait_for(reader.read(), 3) == b""
    finally:
        writer.close()


@pytest.mark.parametrize("port_mode", ["shared", "per-transport"])
async def test_worker_offers_tcp_candidates_and_frees_the_port(port_mode):
    import socket

    from studyrooms.sfu.options import WorkerOptions
    from studyrooms.sfu.worker import Worker

    from support.coturn import free_tcp_udp_port

    port = free_tcp_udp_port()  # free for both now: the range is this one port (the machine is shared)
    options = WorkerOptions(port_mode=port_mode, enable_tcp=True, enable_udp=False, rtc_min_port=port,
                            rtc_max_port=port, socket_buffer_bytes=65536)
    worker = await Worker.create("w-tcp", options)
    try:
        router = worker.create_router()
        transport = await router.create_webrtc_transport()
        [candidate] = transport.parameters()["iceCandidates"]
        assert candidate["protocol"] == "tcp" and candidate["tcpType"] == "passive"
        assert candidate["port"] == port
        if port_mode == "shared":  # same number as the UDP port where it was free
            assert candidate["port"] == worker.webrtc_server.port == worker.webrtc_server.dump()["tcpPort"]
        with socket.create_connection(("127.0.0.1", candidate["port"]), timeout=2):
            pass  # listening
        transport.close()
        await worker.close()
        await asyncio.sleep(0.05)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", candidate["port"]), timeout=2).close()
    finally:
        await worker.close()


def test_udp_and_tcp_both_off_is_a_one_line_setting_error():
    from studyrooms.config import Settings
    from studyrooms.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="enable_udp and enable_tcp are both off"):
        Settings.from_env({"STUDYROOMS_MEDIA_ENABLE_UDP": "false"})
    assert Settings.from_env({"STUDYROOMS_MEDIA_ENABLE_TCP": "1"}).media.enable_tcp


async def test_garbage_on_the_tcp_port_is_counted_and_never_raises(server):
    import os

    conn = server.create_connection()
    got: list = []
    conn.on_datagram = lambda data, addr: got.append(data)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp.port)
    try:
        # random frames (not STUN from a known tuple), a STUN check with a bad password, an empty frame
        for _ in range(50):
            payload = os.urandom(1 + os.urandom(1)[0])
            writer.write(frame(payload))
        bad = stun.parse_message(check(conn.parameters()))
        bad.attributes.pop("MESSAGE-INTEGRITY", None)
        bad.attributes.pop("FINGERPRINT", None)
        bad.add_message_integrity(b"not-the-password")
        writer.write(frame(bytes(bad)) + frame(b""))
        await writer.drain()
        error = stun.parse_message(await read_frame(reader))
        assert error.message_class == stun.Class.ERROR and error.attributes["ERROR-CODE"][0] == 401
        await wait_until(lambda: server.tcp.received >= 51)
        assert got == [] and conn.state == "new" and server.tcp.handler_errors == 0
        stats = server.stats()
        assert stats["unknownTuple"] + stats["malformed"] + stats["stunUnknownUfrag"] + stats["stunIgnored"] \
            + stats["stunBadRequest"] >= 50 and stats["stunUnauthorized"] == 1
        # a frame length beyond what follows just waits; the unclaimed connection is closed anyway
        writer.write(b"\xff\xff" + os.urandom(100))
        assert await asyncio.wait_for(reader.read(), 3) == b""
    finally:
        writer.close()
