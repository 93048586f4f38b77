"""The coturn config of docs/deployment.md, as written there, on real coturn (Debian's package).

The documented block is started with only what a loopback test must change: ports, listening and
relay IPs (127.0.0.1; no NAT mapping), the secret, a self-signed certificate for 127.0.0.1, and two
test-only lines: ``allow-loopback-peers`` and ``allowed-peer-ip=127.0.0.1``, where 127.0.0.1 stands
for a media node and every other 127.x address for the private network the relay must not reach.
Then, with credentials StudyRooms makes: allocations over UDP, TCP and TLS work and relay to the
media node; a permission for a denied peer is refused with 403.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from aioice import stun, turn

from studyrooms.config import TurnSettings
from studyrooms.rooms.turn import ice_servers
from support.coturn import free_tcp_udp_port, free_udp_range, run_turnserver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
SECRET = "deployment-doc-static-auth-secret"
MEDIA_NODE = "127.0.0.1"  # allowed-peer-ip (test only)
PRIVATE_HOST = "127.0.0.2"  # inside a denied-peer-ip range


def documented_config() -> list[str]:
    blocks = re.findall(r"```ini\n(.*?)```", DOC.read_text(), flags=re.S)
    [block] = [b for b in blocks if b.startswith("# studyrooms-turnserver.conf")]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_documented_config_has_what_studyrooms_relies_on():
    lines = set(documented_config())
    for needed in ("use-auth-secret", "listening-port=3478", "tls-listening-port=443", "no-tcp-relay",
                   "no-multicast-peers", "denied-peer-ip=10.0.0.0-10.255.255.255",
                   "denied-peer-ip=172.16.0.0-172.31.255.255", "denied-peer-ip=192.168.0.0-192.168.255.255",
                   "denied-peer-ip=127.0.0.0-127.255.255.255", "denied-peer-ip=169.254.0.0-169.254.255.255"):
        assert needed in lines, needed
    assert any(line.startswith("realm=") for line in lines)
    assert any(line.startswith("static-auth-secret=") for line in lines)
    assert "allow-loopback-peers" not in lines and not any(line.startswith("allowed-peer-ip=") for line in lines)


@pytest.fixture(scope="module")
def documented_coturn(tmp_path_factory):
    work = tmp_path_factory.mktemp("coturn-doc")
    cert, key = work / "cert.pem", work / "key.pem"
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    port, tls_port = free_tcp_udp_port(), free_tcp_udp_port()
    relay_min = free_udp_range()
    relay_max = relay_min + 39
    replace = {
        "listening-port": str(port), "tls-listening-port": str(tls_port), "listening-ip": "127.0.0.1",
        "relay-ip": "127.0.0.1", "min-port": str(relay_min), "max-port": str(relay_max),
        "static-auth-secret": SECRET, "cert": str(cert), "pkey": str(key),
    }
    lines = []
    for line in documented_config():
        name = line.split("=", 1)[0]
        if name in ("external-ip", "log-file", "simple-log"):
            continue  # no NAT on loopback; the runner logs to its own file
        lines.append(f"{name}={replace[name]}" if name in replace else line)
    lines += ["allow-loopback-peers", f"allowed-peer-ip={MEDIA_NODE}"]  # TEST ONLY (see module docstring)
    server = run_turnserver(work, lines, secret=SECRET, port=port, relay=(relay_min, relay_max))
    deadline = time.monotonic() + 10
    while True:  # the TLS listener too
        try:
            socket.create_connection(("127.0.0.1", tls_port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise AssertionError(f"no TLS listener on {tls_port}:\n{server.log()}")
            time.sleep(0.1)
    tls = ssl.create_default_context(cafile=str(cert))
    yield server, tls_port, tls
    server.stop()


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"echo:" + data, addr)


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self):
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, addr))


def _credentials(port: int) -> dict:
    turn_settings = TurnSettings(urls=(f"turn:127.0.0.1:{port}",), secret=SECRET)
    return ice_servers(turn_settings, "participant-9", time.time())[0]


@pytest.mark.parametrize("how", ["udp", "tcp", "tls"])
async def test_documented_config_allocates_and_relays_to_the_media_node(documented_coturn, how):
    server, tls_port, tls = documented_coturn
    creds = _credentials(server.port)
    loop = asyncio.get_running_loop()
    media_node, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(MEDIA_NODE, 0))
    relay, inbox = await asyncio.wait_for(turn.create_turn_endpoint(
        _Inbox, server_addr=("127.0.0.1", tls_port if how == "tls" else server.port),
        username=creds["username"], password=creds["credential"], transport="udp" if how == "udp" else "tcp",
        ssl=tls if how == "tls" else None), timeout=10)
    try:
        relay.sendto(b"rtp", media_node.get_extra_info("sockname"))
        data, _ = await asyncio.wait_for(inbox.queue.get(), timeout=5)
        assert data == b"echo:rtp"
    finally:
        relay.close()
        media_node.close()


async def test_documented_config_refuses_peers_in_denied_ranges(documented_coturn):
    server, _, _ = documented_coturn
    creds = _credentials(server.port)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(
        lambda: turn.TurnClientUdpProtocol(("127.0.0.1", server.port), username=creds["username"],
                                           password=creds["credential"], lifetime=120, channel_refresh_time=500),
        remote_addr=("127.0.0.1", server.port))
    try:
        await asyncio.wait_for(client.connect(), timeout=10)
        with pytest.raises(stun.TransactionFailed) as info:
            await asyncio.wait_for(client.channel_bind(0x4000, (PRIVATE_HOST, 9)), timeout=10)
        assert info.value.response.attributes["ERROR-CODE"][0] == 403
        await asyncio.wait_for(client.channel_bind(0x4001, (MEDIA_NODE, 9)), timeout=10)  # the media node: fine
    finally:
        client.transport.close()
