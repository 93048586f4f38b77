"""PlainTransport (mediasoup's): RTP/RTCP over one UDP socket (rtcp-mux), optional SDES-style SRTP.

The remote is either given with ``connect(ip, port)`` or, with ``comedia``, learned from the first
valid packet (in SRTP mode: the first one that authenticates). Packets from any other address are
dropped and counted, like garbage (not RTP version 2, too short, failing SRTP).

SRTP: with ``enable_srtp`` the transport makes its own key (``srtp_parameters``, which the remote
uses to decrypt what we send) and ``connect(srtp_parameters=...)`` gives the remote's key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..clock import Clock, SystemClock
from ..errors import InvalidRequestError, InvalidStateError, UnsupportedError
from ..media import fastpath, ingress
from ..net.srtp import CRYPTO_SUITES, SrtpPair, generate_key_base64
from ..net.udp import Address, UdpSocket, bind_udp
from .options import PlainTransportOptions, WorkerOptions
from .transport import Transport

if TYPE_CHECKING:
    from .router import Router


class PlainTransport(Transport):
    kind = "plain"

    def __init__(
        self,
        router: "Router",
        transport_id: str,
        *,
        options: PlainTransportOptions,
        sock: UdpSocket,
        clock: Clock,
    ) -> None:
        super().__init__(router, transport_id, app_data=options.app_data, clock=clock)
        self.closed_reason: str | None = None
        self.comedia = options.comedia
        self.rtcp_mux = True
        self._listen_ip = options.listen_ip
        self._announced_ip = options.announced_ip
        self.socket = sock
        self._sendto = sock.sendto
        sock.on_datagram = self._on_datagram
        self.remote: Address | None = None
        self._connected_called = False
        self.enable_srtp = options.enable_srtp
        self._crypto_suite = options.srtp_crypto_suite
        self._local_key: str | None = None
        if self.enable_srtp:
            if options.srtp_crypto_suite not in CRYPTO_SUITES:
                raise InvalidRequestError(f"unsupported SRTP crypto suite {options.srtp_crypto_suite!r}")
            self._local_key = generate_key_base64(options.srtp_crypto_suite)
        self.srtp: SrtpPair | None = None
        if fastpath.active():
            self.fast_cell = fastpath.TransportCell(require_srtp=self.enable_srtp)
        if ingress.available() and isinstance(clock, SystemClock):  # the core reads CLOCK_MONOTONIC
            self.fast_rx = ingress.RxTransport(require_srtp=self.enable_srtp)
        # counters
        self._garbage = 0  # + the SRTP failures of the compiled receive step: see garbage
        self.wrong_source = 0

    @classmethod
    async def create(
        cls,
        router: "Router",
        transport_id: str,
        *,
        options: PlainTransportOptions,
        worker_options: WorkerOptions,
        clock: Clock | None = None,
    ) -> "PlainTransport":
        if not options.rtcp_mux:
            raise UnsupportedError("PlainTransport supports rtcpMux only")
        sock = await bind_udp(
            options.listen_ip,
            options.port,
            port_range=None if options.port is not None else (worker_options.rtc_min_port, worker_options.rtc_max_port),
            buffer_bytes=worker_options.socket_buffer_bytes,
            compiled_reader=ingress.available() and ingress.OWN_SOCKET_BATCH,
        )
        try:
            return cls(router, transport_id, options=options, sock=sock, clock=clock or SystemClock())
        except BaseException:
            sock.close()
            raise

    @property
    def garbage(self) -> int:
        rx = self.fast_rx
        return self._garbage if rx is None else self._garbage + rx.srtp_failures

    @garbage.setter
    def garbage(self, value: int) -> None:
        rx = self.fast_rx
        self._garbage = value if rx is None else value - rx.srtp_failures

    # ------------------------------------------------------------------ signalling
    def tuple(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "localIp": self._announced_ip or self._listen_ip,
            "localPort": self.socket.local_address[1],
            "protocol": "udp",
        }
        if self.remote is not None:
            out["remoteIp"], out["remotePort"] = self.remote[0], self.remote[1]
        return out

    @property
    def srtp_parameters(self) -> dict[str, str] | None:
        if not self.enable_srtp:
            return None
        return {"cryptoSuite": self._crypto_suite, "keyBase64": self._local_key or ""}

    def parameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "tuple": self.tuple()}
        if self.enable_srtp:
            out["srtpParameters"] = self.srtp_parameters
        return out

    async def connect(
        self, ip: str | None = None, port: int | None = None, srtp_parameters: dict | None = None
    ) -> None:
        if self.closed:
            raise InvalidStateError(f"transport {self.id} is closed")
        if self._connected_called:
            raise InvalidStateError("connect() already called")
        srtp = None
        if self.enable_srtp:
            if not isinstance(srtp_parameters, dict):
                raise InvalidRequestError("srtpParameters required (enableSrtp)")
            suite = srtp_parameters.get("cryptoSuite")
            if suite != self._crypto_suite:
                raise InvalidRequestError(f"cryptoSuite must be {self._crypto_suite}")
            try:
                srtp = SrtpPair.from_keys(suite, self._local_key or "", str(srtp_parameters.get("keyBase64", "")))
            except ValueError as exc:
                raise InvalidRequestError(str(exc)) from None
        elif srtp_parameters is not None:
            raise InvalidRequestError("srtpParameters given but SRTP is not enabled")
        remote = None
        if not self.comedia:
            if not isinstance(ip, str) or not ip or not isinstance(port, int) or not 0 < port < 65536:
                raise InvalidRequestError("ip and port required (comedia is off)")
            remote = (ip, port)
        elif ip is not None or port is not None:
            raise InvalidRequestError("ip/port must not be given in comedia mode")
        self._connected_called = True
        self.srtp = srtp
        cell = self.fast_cell
        if cell is not None and srtp is not None:
            cell.set_srtp(*srtp.tx_protect_addresses())
        if self.fast_rx is not None and srtp is not None:
            self.fast_rx.set_srtp(srtp)
        if remote is not None:
            self.remote = remote
            self._route_fast_rx()
            # A fixed remote: connect the socket (the kernel then caches the route: ~1 us less per
            # send, measured; datagrams from other addresses are dropped by the kernel instead of
            # being counted in wrongSourceDropped). Comedia transports stay unconnected.
            connected = self.socket.connect_remote(remote)
            if cell is not None:
                cell.set_destination(self.socket._raw, remote, connected=connected)
            self._set_media_ready()

    # ------------------------------------------------------------------ hot path
    def _on_datagram(self, data: bytes, addr: Address) -> None:
        remote = self.remote
        if remote is not None and addr != remote:
            self.wrong_source += 1
            return
        if len(data) < 8 or data[0] & 0xC0 != 0x80:  # RTP/RTCP version 2
            self.garbage += 1
            return
        is_rtcp = 191 < data[1] < 224
        if self.enable_srtp:
            srtp = self.srtp
            if srtp is None:  # keys not known yet
                self.garbage += 1
                return
            data = srtp.unprotect_rtcp(data) if is_rtcp else srtp.unprotect_rtp(data)
            if data is None:
                self.garbage += 1
                return
        elif not is_rtcp and len(data) < 12:
            self.garbage += 1
            return
        if remote is None:
            if not self.comedia:  # not connected yet
                self.wrong_source += 1
                return
            self.remote = (addr[0], addr[1])
            if self.fast_cell is not None:
                self.fast_cell.set_destination(self.socket._raw, self.remote)
            self._route_fast_rx()
            self._set_media_ready()
        if is_rtcp:
            self.receive_rtcp(data)
        else:
            self.receive_rtp(data)

    def _route_fast_rx(self) -> None:
        """The compiled receive step takes RTP from the remote from now on (see media/ingress.py)."""
        if self.fast_rx is not None and self.remote is not None and not self.closed:
            ingress.rx_socket(self.socket).set_route(self.remote, self.fast_rx, self.receive_rtp)

    def send_rtp(self, data: bytes) -> None:
        remote = self.remote
        if remote is None or self.closed:
            self.tx_dropped += 1
            return
        if self.enable_srtp:
            srtp = self.srtp
            data = srtp.protect_rtp(data) if srtp is not None else None
            if data is None:
                self.tx_dropped += 1
                return
        if not self._sendto(data, remote):
            self.tx_dropped += 1
            return
        self.tx_rtp += 1
        self.tx_bytes += len(data)

    def send_rtcp(self, data: bytes) -> None:
        remote = self.remote
        if remote is None or self.closed:
            self.tx_dropped += 1
            return
        if self.enable_srtp:
            srtp = self.srtp
            data = srtp.protect_rtcp(data) if srtp is not None else None
            if data is None:
                self.tx_dropped += 1
                return
        if not self._sendto(data, remote):
            self.tx_dropped += 1
            return
        self.tx_rtcp += 1
        self.tx_bytes += len(data)

    # ------------------------------------------------------------------ lifecycle
    def _close_network(self) -> None:
        if self.fast_cell is not None:
            self.fast_cell.close()  # before the socket: the core must not send on a closed fd
        if self.fast_rx is not None:
            self.fast_rx.close()  # before the SRTP session goes
            if self.socket.fast_rx is not None:
                self.socket.fast_rx.remove_routes(self.fast_rx)
        self.srtp = None
        self.socket.close()

    def dump(self) -> dict[str, Any]:
        out = super().dump()
        out.update(
            {
                "tuple": self.tuple(),
                "comedia": self.comedia,
                "rtcpMux": True,
                "srtpParameters": self.srtp_parameters,
                "closedReason": self.closed_reason,
            }
        )
        return out

    def get_stats(self) -> dict[str, Any]:
        out = super().get_stats()
        rx = self.fast_rx
        out.update({"tuple": self.tuple(), "garbageDropped": self.garbage, "wrongSourceDropped": self.wrong_source})
        out["udp"] = self.socket.stats()
        if self.srtp is not None:
            out.update(self.srtp.stats())
            if rx is not None:
                for k, v in rx.srtp_stats().items():
                    out[k] += v
            if self.fast_cell is not None:
                out["srtpProtected"] += self.fast_cell.c.srtp_protected
                out["srtpOtherFailures"] += self.fast_cell.c.srtp_failures
        return out
