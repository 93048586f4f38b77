"""UDP endpoints of the media plane: one bound socket, synchronous send, a replaceable handler.

``bind_udp`` binds in a port range the way mediasoup's PortManager does (random start, then every
port once), sets large socket buffers (the 212 KB default overflows under bursts, because asyncio
reads one datagram per loop iteration), and wraps the socket in an asyncio datagram endpoint.

The hot path is ``datagram_received -> on_datagram(data, addr)`` and ``sendto(data, addr)``: both are
plain synchronous calls that never raise (errors are counted).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
from typing import Any, Callable

from ..errors import InvalidRequestError, ResourceExhaustedError

logger = logging.getLogger("studyrooms.net.udp")

Address = tuple  # (host, port) or (host, port, flowinfo, scope_id) for IPv6
DatagramHandler = Callable[[bytes, Address], None]

# Above this many bytes queued in user space (socket full), sendto drops instead of buffering
# without bound (asyncio's DatagramTransport.sendto never refuses on its own).
MAX_WRITE_BUFFER_BYTES = 1 << 20

_BUSY_ERRNOS = {errno.EADDRINUSE, errno.EACCES}


def _drop(data: bytes, addr: Address) -> None:  # default handler until an owner installs one
    return None


class UdpSocket(asyncio.DatagramProtocol):
    """One bound UDP socket. Owners replace :attr:`on_datagram`; :meth:`sendto` is sync."""

    def __init__(self) -> None:
        self.on_datagram: DatagramHandler = _drop
        self.local_address: tuple[str, int] = ("", 0)
        self.closed = False
        self.rcvbuf_bytes = 0
        self.sndbuf_bytes = 0
        # counters
        self.received = 0
        self.received_bytes = 0
        self.sent = 0
        self.sent_bytes = 0
        self.send_errors = 0  # OSError on send, or dropped because the user-space buffer is full
        self.handler_errors = 0  # a handler raised (a bug: it is logged once per 1000)
        self._transport: asyncio.DatagramTransport | None = None
        # The bound socket itself, for direct sends while the loop has nothing queued (see bind_udp).
        self._raw: socket.socket | None = None
        # media.ingress.RxSocket once a transport routes media through the compiled receive step
        # (it then reads this socket instead of the asyncio transport and counts what it reads)
        self.fast_rx: Any = None

    # ------------------------------------------------------------------ asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received += 1
        self.received_bytes += len(data)
        try:
            self.on_datagram(data, addr)
        except Exception:  # noqa: BLE001 - nothing may escape into the event loop
            self.handler_errors += 1
            if self.handler_errors % 1000 == 1:
                logger.exception("udp %s: datagram handler failed", self.local_address)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (e.g. port unreachable after the peer went away) land here.
        self.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._raw = None
        self._transport = None

    # ------------------------------------------------------------------ sending
    def sendto(self, data: bytes, addr: Address) -> bool:
        """Send one datagram; never raises. Returns False when it was dropped."""
        transport = self._transport
        if transport is None:
            return self._sendto_raw(data, addr)
        raw = self._raw
        if raw is not None and not transport.get_write_buffer_size():
            try:
                raw.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                pass  # socket full: let asyncio queue it below, keeping order
            except (OSError, TypeError, ValueError):
                self.send_errors += 1
                return False
            else:
                self.sent += 1
                self.sent_bytes += len(data)
                return True
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER_BYTES:
            self.send_errors += 1
            return False
        try:
            transport.sendto(data, addr)
        except Exception:  # noqa: BLE001 - e.g. bad address family; must not reach the hot path
            self.send_errors += 1
            return False
        self.sent += 1
        self.sent_bytes += len(data)
        return True

    def _sendto_raw(self, data: bytes, addr: Address) -> bool:
        """A socket the compiled reader owns (no asyncio transport): send directly; a full socket
        buffer drops the datagram (counted), as the compiled core does for its copies."""
        raw = self._raw
        if raw is None or self.closed:
            self.send_errors += 1
            return False
        try:
            raw.sendto(data, addr)
        except (OSError, TypeError, ValueError):
            self.send_errors += 1
            return False
        self.sent += 1
        self.sent_bytes += len(data)
        return True

    def connect_remote(self, addr: Address) -> bool:
        """Connect the socket to its only peer (sends may still name it). False if that failed."""
        raw = self._raw
        if raw is None:
            return False
        try:
            raw.connect(addr)
        except OSError:
            return False
        return True

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.on_datagram = _drop
        raw = self._raw
        self._raw = None
        if self.fast_rx is not None:
            self.fast_rx.close()  # stops its reader before the fd can be reused
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        elif raw is not None:  # the compiled reader's socket: no asyncio transport closes it
            raw.close()

    def stats(self) -> dict:
        rx = self.fast_rx.c if self.fast_rx is not None else None
        return {
            "localIp": self.local_address[0],
            "localPort": self.local_address[1],
            "packetsReceived": self.received + (rx.received if rx is not None else 0),
            "bytesReceived": self.received_bytes + (rx.received_bytes if rx is not None else 0),
            "packetsSent": self.sent,
            "bytesSent": self.sent_bytes,
            "sendErrors": self.send_errors,
            "handlerErrors": self.handler_errors + (self.fast_rx.handler_errors if rx is not None else 0),
            # the compiled reader's recvmmsg calls and its drops (truncated datagrams, read errors)
            "recvBatches": rx.batches if rx is not None else 0,
            "readErrors": rx.read_errors if rx is not None else 0,
            "rcvbufBytes": self.rcvbuf_bytes,
            "sndbufBytes": self.sndbuf_bytes,
        }

    def __repr__(self) -> str:
        return f"<UdpSocket {self.local_address[0]}:{self.local_address[1]}{' closed' if self.closed else ''}>"


def _new_socket(family: int, buffer_bytes: int | None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    # No SO_REUSEADDR: on Linux it would let two UDP sockets share a port.
    if buffer_bytes:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)
            except OSError:  # capped by net.core.[rw]mem_max; keep what we got
                pass
    return sock


def _try_bind(ip: str, port: int, family: int, buffer_bytes: int | None) -> socket.socket | None:
    sock = _new_socket(family, buffer_bytes)
    try:
        sock.bind((ip, port))
    except OSError as exc:
        sock.close()
        if exc.errno in _BUSY_ERRNOS:
            return None
        raise InvalidRequestError(f"cannot bind UDP {ip}:{port}: {exc.strerror or exc}") from exc
    return sock


def ports_in_range(port_range: tuple[int, int], proto: str) -> list[int]:
    """Every port of ``(min, max)`` (inclusive) once, from a random start (mediasoup's PortManager);
    InvalidRequestError for a range that is not one."""
    lo, hi = port_range
    if not (0 < lo <= hi <= 65535):
        raise InvalidRequestError(f"invalid {proto} port range {lo}-{hi}")
    count = hi - lo + 1
    start = random.randrange(count)
    return [lo + (start + i) % count for i in range(count)]


async def bind_udp(
    ip: str,
    port: int | None = None,
    *,
    port_range: tuple[int, int] | None = None,
    buffer_bytes: int | None = 4 * 1024 * 1024,
    compiled_reader: bool | int = False,
) -> UdpSocket:
    """Bind a UDP socket on ``ip``.

    ``port`` given: exactly that port. Else ``port_range=(min, max)`` (inclusive): a random start,
    then every port once. Neither: an ephemeral port. Raises ResourceExhaustedError when no port is
    free, InvalidRequestError for an unusable address.
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock: socket.socket | None = None
    if port is not None:
        sock = _try_bind(ip, port, family, buffer_bytes)
        if sock is None:
            raise ResourceExhaustedError(f"UDP port {ip}:{port} is already in use")
    elif port_range is not None:
        ports = ports_in_range(port_range, "UDP")
        for candidate in ports:
            sock = _try_bind(ip, candidate, family, buffer_bytes)
            if sock is not None:
                break
        if sock is None:
            lo, hi = port_range
            raise ResourceExhaustedError(f"no free UDP port on {ip} in range {lo}-{hi} ({len(ports)} ports tried)")
    else:
        sock = _try_bind(ip, 0, family, buffer_bytes)
        if sock is None:  # pragma: no cover - the kernel always has an ephemeral port or errors
            raise ResourceExhaustedError(f"no ephemeral UDP port on {ip}")

    sock.setblocking(False)
    protocol = UdpSocket()
    protocol.local_address = sock.getsockname()[:2]
    protocol.rcvbuf_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    protocol.sndbuf_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    if buffer_bytes and protocol.rcvbuf_bytes < buffer_bytes:
        logger.info(
            "udp %s: SO_RCVBUF is %d < %d requested (raise net.core.rmem_max)",
            protocol.local_address, protocol.rcvbuf_bytes, buffer_bytes,
        )
    loop = asyncio.get_running_loop()
    if compiled_reader:
        from ..media import ingress

        if ingress.available():
            protocol._raw = sock
            try:
                batch = ingress.BATCH if compiled_reader is True else int(compiled_reader)
                ingress.rx_socket(protocol, batch).install(loop)
            except BaseException:
                sock.close()
                raise
            return protocol
    try:
        await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    except BaseException:
        sock.close()
        raise
    # Send on the socket directly while the loop holds no queued data: ~0.6 us per packet less than
    # the stock loop's transport.sendto and ~1.5 us less than uvloop's (which parses the address
    # and goes through its own buffering). Both loops keep using (and finally close) this object.
    protocol._raw = sock
    return protocol
