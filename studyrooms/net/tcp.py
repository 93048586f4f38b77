"""ICE-TCP (RFC 6544) listener of the media plane: passive TCP candidates, RFC 4571 framing.

A client on a network that blocks UDP opens a TCP connection to the worker's TCP port (the same
number as its UDP port where free) and sends every STUN, DTLS and SRTP packet as a frame: a 16-bit
big-endian length, then the packet. :class:`TcpListener` turns frames into the same
``on_datagram(data, addr)`` calls a :class:`~studyrooms.net.udp.UdpSocket` makes, with ``addr =
(ip, port, "tcp")`` (never equal to a UDP address), so the ICE-lite server demuxes both alike; and
``sendto(data, addr)`` frames a packet onto that connection (sync, never raises, False when dropped).

Hygiene: at most ``max_connections`` connections; a connection whose address no ICE connection has
claimed (a valid binding request) within ``claim_timeout_s`` is closed; ``release(addr)`` closes one
(its tuple was dropped); a write buffer above ``MAX_WRITE_BUFFER_BYTES`` drops packets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Callable

from ..errors import ResourceExhaustedError
from .udp import Address, MAX_WRITE_BUFFER_BYTES, ports_in_range

logger = logging.getLogger("studyrooms.net.tcp")

TCP = "tcp"


def _drop(data: bytes, addr: Address) -> None:
    return None


class _Connection(asyncio.Protocol):
    __slots__ = ("listener", "transport", "addr", "buf", "timer")

    def __init__(self, listener: "TcpListener") -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.addr: Address = ("", 0, TCP)
        self.buf = bytearray()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.addr = (peer[0], peer[1], TCP)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.listener._accepted(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        listener = self.listener
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + size:
                break
            frame = bytes(buf[2 : 2 + size])
            del buf[: 2 + size]
            if frame:
                listener._frame(frame, self.addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.listener._lost(self)

    def send(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing() or len(data) > 0xFFFF:
            return False
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            return False
        transport.write(len(data).to_bytes(2, "big") + data)
        return True

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()


class TcpListener:
    """A listening TCP socket speaking RFC 4571 frames; the ICE-lite server installs the hooks."""

    def __init__(self, *, max_connections: int = 1000, claim_timeout_s: float = 10.0) -> None:
        self.on_datagram: Callable[[bytes, Address], None] = _drop
        self.on_closed: Callable[[Address], None] | None = None  # a connection went away
        self.is_claimed: Callable[[Address], bool] = lambda addr: False
        self.max_connections = max_connections
        self.claim_timeout_s = claim_timeout_s
        self.local_address: tuple[str, int] = ("", 0)
        self.closed = False
        self._server: asyncio.base_events.Server | None = None
        self._conns: dict[Address, _Connection] = {}
        # counters
        self.accepted = 0
        self.refused = 0  # over max_connections
        self.unclaimed_closed = 0
        self.received = 0
        self.received_bytes = 0
        self.sent = 0
        self.sent_bytes = 0
        self.send_errors = 0
        self.handler_errors = 0

    @property
    def port(self) -> int:
        return self.local_address[1]

    # ------------------------------------------------------------------ connections
    def _accepted(self, conn: _Connection) -> None:
        if self.closed or len(self._conns) >= self.max_connections:
            self.refused += 1
            conn.close()
            return
        self.accepted += 1
        old = self._conns.pop(conn.addr, None)
        if old is not None:  # the peer reused its port after a close we have not seen yet
            old.close()
        self._conns[conn.addr] = conn
        conn.timer = asyncio.get_running_loop().call_later(self.claim_timeout_s, self._check_claimed, conn)

    def _check_claimed(self, conn: _Connection) -> None:
        conn.timer = None
        if self._conns.get(conn.addr) is conn and not self.is_claimed(conn.addr):
            self.unclaimed_closed += 1
            conn.close()

    def _lost(self, conn: _Connection) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if self._conns.get(conn.addr) is conn:
            del self._conns[conn.addr]
            if self.on_closed is not None:
                try:
                    self.on_closed(conn.addr)
                except Exception:  # noqa: BLE001 - nothing may escape into the event loop
                    logger.exception("tcp %s: close handler failed", self.local_address)

    def _frame(self, data: bytes, addr: Address) -> None:
        self.received += 1
        self.received_bytes += len(data)
        try:
            self.on_datagram(data, addr)
        except Exception:  # noqa: BLE001
            self.handler_errors += 1
            if self.handler_errors % 1000 == 1:
                logger.exception("tcp %s: frame handler failed", self.local_address)

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ sending
    def sendto(self, data: bytes, addr: Address) -> bool:
        conn = self._conns.get(addr)
        if conn is None or not conn.send(data):
            self.send_errors += 1
            return False
        self.sent += 1
        self.sent_bytes += len(data)
        return True

    def release(self, addr: Address) -> None:
        """Close the connection of ``addr`` (its ICE tuple was dropped)."""
        conn = self._conns.get(addr)
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.on_datagram = _drop
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns.values()):
            conn.close()

    def stats(self) -> dict:
        return {
            "localIp": self.local_address[0],
            "localPort": self.local_address[1],
            "connections": len(self._conns),
            "accepted": self.accepted,
            "refused": self.refused,
            "unclaimedClosed": self.unclaimed_closed,
            "packetsReceived": self.received,
            "bytesReceived": self.received_bytes,
            "packetsSent": self.sent,
            "bytesSent": self.sent_bytes,
            "sendErrors": self.send_errors,
            "handlerErrors": self.handler_errors,
        }


async def bind_tcp(
    ip: str,
    port: int | None = None,
    *,
    port_range: tuple[int, int] | None = None,
    max_connections: int = 1000,
    claim_timeout_s: float = 10.0,
) -> TcpListener:
    """Listen on ``ip``: ``port`` if given and free, else a free port of ``port_range`` (random start,
    every port once), else an ephemeral one. Raises ResourceExhaustedError when none is free."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    candidates: list[int] = []
    if port is not None:
        candidates.append(port)
    if port_range is not None:
        candidates += ports_in_range(port_range, "TCP")
    if not candidates:
        candidates.append(0)
    sock: socket.socket | None = None
    for candidate in candidates:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TCP: only skips TIME_WAIT
        try:
            s.bind((ip, candidate))
        except OSError:
            s.close()
            continue
        sock = s
        break
    if sock is None:
        raise ResourceExhaustedError(f"no free TCP port on {ip} ({len(candidates)} tried)")
    listener = TcpListener(max_connections=max_connections, claim_timeout_s=claim_timeout_s)
    listener.local_address = sock.getsockname()[:2]
    try:
        sock.listen(128)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        listener._server = await loop.create_server(lambda: _Connection(listener), sock=sock)
    except BaseException:
        sock.close()
        raise
    return listener
