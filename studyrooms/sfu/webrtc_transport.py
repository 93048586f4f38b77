"""WebRtcTransport (mediasoup's): ICE-lite + DTLS + SRTP toward one browser/client.

Port modes: with a ``WebRtcServer`` the transport shares the worker's UDP port (demux by ufrag, then
5-tuple); without one it binds its own UDP socket in [rtc_min_port, rtc_max_port]. With ``enable_tcp``
there is also a passive ICE-TCP candidate (the WebRtcServer's TCP port, or the transport's own).

Hot path, synchronous in the UDP callback (IceLiteServer -> ``_on_datagram``):
  first byte 128..191 -> SRTP: unprotect -> ``receive_rtp`` / ``receive_rtcp`` (RFC 5761 demux)
  first byte 20..63   -> DTLS: fed to the DtlsEndpoint (buffered until ``connect``)
Egress ``send_rtp``/``send_rtcp``: protect -> sendto the ICE-selected tuple. Media never flows
unencrypted: before DTLS is connected, SRTP is dropped and nothing is sent.

Bandwidth (``self.bwe``, sfu/transport_bwe.py; ``self.allocator``, sfu/bandwidth_allocator.py):
``send_rtp`` is where every outgoing RTP packet Python sends (media of Python consumers, RTX, probe
padding) gets its transport-wide sequence number — ``self.bwe.stamper.stamp(data, now)`` right
before SRTP protect, once a consumer negotiated transport-wide-cc; the compiled core stamps the
packets it sends from the same counter and record ring (``fastpath.CellStamper``). TransportFeedback from the receiver goes to ``bwe.on_feedback``; the
allocator (created with the first consumer) turns the estimate into per-consumer layers.

Closes itself with ``closed_reason``: 'ice-timeout' (consent lost), 'dtls-failed', 'dtls-closed'
(the peer sent close_notify), 'webrtc-server-closed'.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..clock import Clock, SystemClock
from ..errors import InvalidRequestError, InvalidStateError
from ..media import fastpath, ingress
from ..net.dtls import DtlsEndpoint
from ..net.ice import IceLiteConnection, IceLiteServer, protocol_of
from ..net.tcp import bind_tcp
from ..net.udp import Address, UdpSocket, bind_udp
from .bandwidth_allocator import BandwidthAllocator
from .options import WebRtcTransportOptions, WorkerOptions
from .supported_capabilities import TRANSPORT_CC_URI
from .transport import Transport
from .transport_bwe import TransportBwe

if TYPE_CHECKING:
    from aiortc import RTCCertificate

    from .router import Router
    from .webrtc_server import WebRtcServer

logger = logging.getLogger("studyrooms.sfu.webrtc_transport")

_DTLS_ROLES = ("auto", "client", "server")


class WebRtcTransport(Transport):
    kind = "webrtc"

    def __init__(
        self,
        router: "Router",
        transport_id: str,
        *,
        options: WebRtcTransportOptions,
        worker_options: WorkerOptions,
        certificate: "RTCCertificate",
        ice_server: IceLiteServer,
        listen_ip: str,
        announced_ip: str | None,
        port: int,
        own_socket: UdpSocket | None,
        clock: Clock,
    ) -> None:
        super().__init__(
            router,
            transport_id,
            app_data=options.app_data,
            max_incoming_bitrate_bps=options.max_incoming_bitrate_bps,
            clock=clock,
        )
        self.direction = options.direction
        self.closed_reason: str | None = None
        self._worker_options = worker_options
        self._listen_ip = listen_ip
        self._announced_ip = announced_ip
        self._port = port
        self._own_socket = own_socket
        self._ice_server = ice_server
        self._send_to = ice_server.socket.sendto
        self.ice: IceLiteConnection = ice_server.create_connection(
            consent_timeout_s=worker_options.consent_timeout_s, clock=clock
        )
        self.ice.on_datagram = self._on_datagram
        self.ice.on_selected = self._on_ice_selected
        self.ice.on_state = self._on_ice_state
        self.ice.on_timeout = self._on_ice_timeout
        self.dtls = DtlsEndpoint(certificate, self.ice.send, on_state=self._on_dtls_state)
        self._srtp = None  # SrtpPair once DTLS is connected: the fast path's only gate
        self._tuple: Address | None = None  # ICE-selected tuple, cached for send
        self._connect_task: asyncio.Task | None = None
        self._connected_called = False
        # the compiled core sends for this transport's FastConsumers (UDP only: an ICE-TCP tuple is
        # framed and sent by Python). Transport-wide seqs: see add_consumer.
        if fastpath.active() and fastpath.webrtc_enabled() and not worker_options.enable_tcp:
            self.fast_cell = fastpath.TransportCell(require_srtp=True)
            if ingress.available() and isinstance(clock, SystemClock):  # the core reads CLOCK_MONOTONIC
                self.fast_rx = ingress.RxTransport(require_srtp=True)
        self._now = clock.now
        self.bwe = TransportBwe(
            self,
            initial_bps=worker_options.initial_outgoing_bitrate_bps,
            max_bps=worker_options.max_outgoing_bitrate_bps,
        )
        self.allocator: BandwidthAllocator | None = None
        self._twcc_in = self.bwe.recorder
        self.rtcp.on_transport_feedback = self.bwe.on_feedback
        # counters beyond the base's
        self.srtp_dropped_early = 0  # SRTP before DTLS was connected
        self.garbage = 0  # neither DTLS nor SRTP
        self.tx_not_connected = 0

    # ------------------------------------------------------------------ creation
    @classmethod
    async def create(
        cls,
        router: "Router",
        transport_id: str,
        *,
        options: WebRtcTransportOptions,
        worker_options: WorkerOptions,
        certificate: "RTCCertificate",
        webrtc_server: "WebRtcServer | None" = None,
        clock: Clock | None = None,
    ) -> "WebRtcTransport":
        clock = clock or SystemClock()
        if webrtc_server is not None:
            if webrtc_server.closed:
                raise InvalidStateError("the WebRtcServer is closed")
            return cls(
                router,
                transport_id,
                options=options,
                worker_options=worker_options,
                certificate=certificate,
                ice_server=webrtc_server.ice_server,
                listen_ip=webrtc_server.listen_ip,
                announced_ip=webrtc_server.announced_ip,
                port=webrtc_server.port,
                own_socket=None,
                clock=clock,
            )
        sock = await bind_udp(
            worker_options.listen_ip,
            port_range=(worker_options.rtc_min_port, worker_options.rtc_max_port),
            buffer_bytes=worker_options.socket_buffer_bytes,
            compiled_reader=ingress.available() and ingress.OWN_SOCKET_BATCH,
        )
        tcp = None
        try:
            if worker_options.enable_tcp:
                tcp = await bind_tcp(worker_options.listen_ip, sock.local_address[1],
                                     port_range=(worker_options.rtc_min_port, worker_options.rtc_max_port))
            return cls(
                router,
                transport_id,
                options=options,
                worker_options=worker_options,
                certificate=certificate,
                ice_server=IceLiteServer(sock, tcp=tcp),
                listen_ip=worker_options.listen_ip,
                announced_ip=worker_options.announced_ip,
                port=sock.local_address[1],
                own_socket=sock,
                clock=clock,
            )
        except BaseException:
            sock.close()
            if tcp is not None:
                tcp.close()
            raise

    # ------------------------------------------------------------------ signalling
    @property
    def ice_parameters(self) -> dict[str, Any]:
        return self.ice.parameters()

    @property
    def ice_candidates(self) -> list[dict[str, Any]]:
        tcp = self._ice_server.tcp
        return self.ice.candidates(self._listen_ip, self._announced_ip, self._port,
                                   udp=self._worker_options.enable_udp,
                                   tcp_port=tcp.port if tcp is not None else None)

    @property
    def dtls_parameters(self) -> dict[str, Any]:
        return {"role": "auto", "fingerprints": self.dtls.local_fingerprints()}

    @property
    def ice_state(self) -> str:
        return self.ice.state

    @property
    def dtls_state(self) -> str:
        return self.dtls.state

    @property
    def port_mode(self) -> str:
        return "per-transport" if self._own_socket is not None else "shared"

    def parameters(self) -> dict[str, Any]:
        """What createWebRtcTransport returns to the client (mediasoup format)."""
        return {
            "id": self.id,
            "iceParameters": self.ice_parameters,
            "iceCandidates": self.ice_candidates,
            "dtlsParameters": self.dtls_parameters,
        }

    async def connect(self, dtls_parameters: dict) -> None:
        """mediasoup's transport.connect({dtlsParameters}): validates, then runs DTLS in the background."""
        if self.closed:
            raise InvalidStateError(f"transport {self.id} is closed")
        if self._connected_called:
            raise InvalidStateError("connect() already called")
        role, fingerprints = _validate_dtls_parameters(dtls_parameters)
        self._connected_called = True
        self._connect_task = asyncio.ensure_future(self._run_dtls(role, fingerprints))

    async def _run_dtls(self, role: str, fingerprints: list[dict[str, str]]) -> None:
        state = await self.dtls.start(role, fingerprints, timeout_s=self._worker_options.dtls_timeout_s)
        if state != "connected" and not self.closed:
            self.close("dtls-failed")

    def restart_ice(self) -> dict[str, Any]:
        if self.closed:
            raise InvalidStateError(f"transport {self.id} is closed")
        return self.ice.restart()

    # ------------------------------------------------------------------ state callbacks
    def _on_ice_selected(self, addr: Address | None) -> None:
        self._tuple = addr  # None: the selected ICE-TCP connection closed and no other path is left
        if self.fast_cell is not None:
            self.fast_cell.set_destination(self._ice_server.socket._raw if addr is not None else None, addr)
        if addr is not None:
            self._send_to = self._ice_server.sender_for(addr)
            self.dtls.set_writable()
        self.refresh_fast_rx()

    def _on_ice_state(self, state: str) -> None:
        self.observer.emit("icestatechange", state)
        if state == "closed" and not self.closed:  # our WebRtcServer closed under us
            self.close("webrtc-server-closed")

    def _on_ice_timeout(self) -> None:
        self.close("ice-timeout")

    def _on_dtls_state(self, state: str) -> None:
        if state == "connected":
            self._srtp = self.dtls.srtp
            if self.fast_cell is not None and self._srtp is not None:
                self.fast_cell.set_srtp(*self._srtp.tx_protect_addresses())
            self.refresh_fast_rx()
            self.observer.emit("dtlsstatechange", state)
            self._set_media_ready()
            return
        self._srtp = None
        if self.fast_cell is not None:
            self.fast_cell.clear_srtp()
        self.refresh_fast_rx()
        self.observer.emit("dtlsstatechange", state)
        if state == "failed":
            self.close("dtls-failed")
        elif state == "closed" and not self.closed:
            self.close("dtls-closed")

    # ------------------------------------------------------------------ hot path
    def _on_datagram(self, data: bytes, addr: Address) -> None:
        b0 = data[0]
        if 127 < b0 < 192:
            srtp = self._srtp
            if srtp is None:
                self.srtp_dropped_early += 1
                return
            if len(data) > 1 and 191 < data[1] < 224:  # RFC 5761: RTCP packet types 192..223
                plain = srtp.unprotect_rtcp(data)
                if plain is not None:
                    self.receive_rtcp(plain)
            else:
                plain = srtp.unprotect_rtp(data)
                if plain is not None:
                    recorder = self._twcc_in
                    if recorder.ext_id:
                        if self.fast_rx is not None:
                            self.fast_rx.drain_twcc(recorder)  # what the core recorded arrived first
                        recorder.on_rtp(plain, self._now())
                    self.receive_rtp(plain)
            return
        if 19 < b0 < 64:
            self.dtls.feed(data)
            return
        self.garbage += 1

    def refresh_fast_rx(self) -> None:
        """Route the ICE-selected UDP tuple's SRTP through the compiled receive step (media/ingress.py)
        while DTLS is connected (Python receives from every other tuple). The sender's transport-wide
        seqs of the packets the core takes are recorded in C and drained into the Python recorder."""
        rx = self.fast_rx
        if rx is None:
            return
        sock = self._ice_server.socket
        tuple_, srtp = self._tuple, self._srtp
        if self.closed or srtp is None or tuple_ is None or len(tuple_) != 2:
            if sock.fast_rx is not None:
                sock.fast_rx.remove_routes(rx)
            rx.clear_srtp()
            return
        rx.set_srtp(srtp)
        rx.set_twcc(self._twcc_in.ext_id)
        ingress.rx_socket(sock).set_route(tuple_, rx, self._fast_plain_rtp)

    def _fast_plain_rtp(self, plain: bytes) -> None:
        """Plaintext RTP the compiled receive step unprotected but hands back (_on_datagram's tail)."""
        recorder = self._twcc_in
        if recorder.ext_id:
            self.fast_rx.drain_twcc(recorder)
            recorder.on_rtp(plain, self._now())
        self.receive_rtp(plain)

    def send_rtp(self, data: bytes) -> None:
        srtp = self._srtp
        tuple_ = self._tuple
        if srtp is None or tuple_ is None:
            self.tx_dropped += 1
            self.tx_not_connected += 1
            return
        stamper = self.bwe.stamper
        if stamper is not None:
            data = stamper.stamp(data, self._now())
        out = srtp.protect_rtp(data)
        if out is None or not self._send_to(out, tuple_):
            self.tx_dropped += 1
            return
        self.tx_rtp += 1
        self.tx_bytes += len(out)

    def send_rtcp(self, data: bytes) -> None:
        srtp = self._srtp
        tuple_ = self._tuple
        if srtp is None or tuple_ is None:
            self.tx_dropped += 1
            self.tx_not_connected += 1
            return
        out = srtp.protect_rtcp(data)
        if out is None or not self._send_to(out, tuple_):
            self.tx_dropped += 1
            return
        self.tx_rtcp += 1
        self.tx_bytes += len(out)

    # ------------------------------------------------------------------ bandwidth
    def add_consumer(self, consumer) -> None:
        super().add_consumer(consumer)
        exts = (consumer.rtp_parameters or {}).get("headerExtensions") or []
        if any(e.get("uri") == TRANSPORT_CC_URI for e in exts):
            if self.fast_cell is not None and self.bwe.stamper is None:
                # ONE transport-wide sequence and send-record ring for the packets the core sends
                # and those Python sends (RTX, probe padding): the stamper reads and writes the C cell
                self.bwe.stamper = self.fast_cell.enable_transport_wide_seq(
                    system_clock=isinstance(self.clock, SystemClock))
            self.bwe.enable_stamping()
        if self.allocator is None and consumer.kind == "video" and hasattr(consumer, "apply_allocation"):
            self.allocator = BandwidthAllocator(self)
            if self.media_ready:
                self.allocator.start()
        if self.allocator is not None:
            self.allocator.schedule(0.0)

    def _set_media_ready(self) -> None:
        super()._set_media_ready()
        if self.media_ready:
            self.bwe.start()
            if self.allocator is not None:
                self.allocator.start()
                self.allocator.schedule(0.0)

    def forget_tx_ssrc(self, ssrc: int) -> None:
        """Free the outbound SRTP stream of an SSRC no longer sent (consumer closed)."""
        if self._srtp is not None:
            self._srtp.remove_tx_stream(ssrc)

    # ------------------------------------------------------------------ lifecycle
    def _close_network(self) -> None:
        if self.fast_cell is not None:
            self.fast_cell.close()  # before any socket closes: the core must not send on a closed fd
        if self.fast_rx is not None:
            self.fast_rx.close()  # before the SRTP session goes
            if self._ice_server.socket.fast_rx is not None:
                self._ice_server.socket.fast_rx.remove_routes(self.fast_rx)
        self.bwe.stop()
        if self.allocator is not None:
            self.allocator.close()
        self._srtp = None
        self._tuple = None
        task = self._connect_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._connect_task = None
        self.dtls.close()
        self.ice.close()
        if self._own_socket is not None:
            self._ice_server.close()
            self._own_socket.close()
            if self._ice_server.tcp is not None:
                self._ice_server.tcp.close()

    async def wait_closed(self) -> None:
        """Let cancelled handshake tasks finish (tests)."""
        await self.dtls.wait_closed()

    # ------------------------------------------------------------------ introspection
    def dump(self) -> dict[str, Any]:
        out = super().dump()
        out.update(
            {
                "direction": self.direction,
                "portMode": self.port_mode,
                "iceParameters": self.ice_parameters,
                "iceCandidates": self.ice_candidates,
                "dtlsParameters": self.dtls_parameters,
                "closedReason": self.closed_reason,
            }
        )
        out.update(self.ice.dump())
        out.update(self.dtls.dump())
        out["bwe"] = self.bwe.stats()
        out["allocator"] = self.allocator.dump() if self.allocator is not None else None
        return out

    def get_stats(self) -> dict[str, Any]:
        out = super().get_stats()
        sel = self.ice.selected_tuple
        out.update(
            {
                "iceRole": "controlled",
                "iceState": self.ice.state,
                "dtlsState": self.dtls.state,
                "iceSelectedTuple": None
                if sel is None
                else {
                    "localIp": self._announced_ip or self._listen_ip,
                    "localPort": self._port if protocol_of(sel) == "udp" else self._ice_server.tcp.port,
                    "remoteIp": sel[0],
                    "remotePort": sel[1],
                    "protocol": protocol_of(sel),
                },
                "srtpDroppedEarly": self.srtp_dropped_early,
                "garbageDropped": self.garbage,
                "dtlsDatagramsDropped": self.dtls.dropped,
            }
        )
        out.update(self.bwe.stats())
        if self.allocator is not None:
            out["allocation"] = self.allocator.dump()
        srtp = self.dtls.srtp
        if srtp is not None:
            out.update(srtp.stats())
            if self.fast_cell is not None:
                out["srtpProtected"] += self.fast_cell.c.srtp_protected
                out["srtpOtherFailures"] += self.fast_cell.c.srtp_failures
            if self.fast_rx is not None:
                for k, v in self.fast_rx.srtp_stats().items():
                    out[k] += v
        if self._own_socket is not None:
            out["udp"] = self._own_socket.stats()
        return out


def _validate_dtls_parameters(dtls_parameters: Any) -> tuple[str, list[dict[str, str]]]:
    if not isinstance(dtls_parameters, dict):
        raise InvalidRequestError("dtlsParameters must be an object")
    role = dtls_parameters.get("role", "auto") or "auto"
    if role not in _DTLS_ROLES:
        raise InvalidRequestError(f"invalid dtlsParameters.role {role!r}")
    fingerprints = dtls_parameters.get("fingerprints")
    if not isinstance(fingerprints, list) or not fingerprints:
        raise InvalidRequestError("dtlsParameters.fingerprints must be a non-empty list")
    out = []
    for f in fingerprints:
        if (
            not isinstance(f, dict)
            or not isinstance(f.get("algorithm"), str)
            or not isinstance(f.get("value"), str)
            or not f["value"]
        ):
            raise InvalidRequestError("each fingerprint needs string 'algorithm' and 'value'")
        out.append({"algorithm": f["algorithm"], "value": f["value"]})
    if not any(f["algorithm"].lower() in ("sha-256", "sha-384", "sha-512") for f in out):
        raise InvalidRequestError("no fingerprint with a supported algorithm (sha-256/384/512)")
    return role, out
