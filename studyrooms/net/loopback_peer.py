"""A minimal WebRTC peer for tests and load generation (not used by the SFU itself).

It plays the browser's side toward an ICE-lite WebRtcTransport with its own, independent code:
a *controlling* ICE client that sends binding requests (USE-CANDIDATE, the server's credentials)
and aiortc's ``RTCDtlsTransport`` used directly, with an explicit DTLS role. Once DTLS is up, RTP
is protected with aiortc's own tx session and incoming SRTP is unprotected with its rx session.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aioice import stun
from aiortc import RTCCertificate, RTCDtlsFingerprint, RTCDtlsParameters, RTCDtlsTransport

from ..ids import random_ice_string
from .udp import Address, UdpSocket, bind_udp


class LoopbackPeer:
    """One UDP socket; ICE checks, DTLS (client or server role) and SRTP toward one server tuple."""

    role = "controlling"  # ICE duck type for RTCDtlsTransport

    def __init__(self, sock: UdpSocket, certificate: RTCCertificate | None = None) -> None:
        self.sock = sock
        sock.on_datagram = self._on_datagram
        self.ufrag = random_ice_string(8)
        self.remote: Address | None = None
        self.certificate = certificate or RTCCertificate.generateCertificate()
        self.dtls = RTCDtlsTransport(self, [self.certificate])  # type: ignore[arg-type]
        self._dtls_queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending: dict[bytes, asyncio.Future] = {}
        self.rtp: asyncio.Queue[bytes] = asyncio.Queue()  # decrypted RTP received
        self.rtcp: asyncio.Queue[bytes] = asyncio.Queue()  # decrypted RTCP received
        self.srtp_errors = 0
        self.stray = 0

    @classmethod
    async def create(cls, ip: str = "127.0.0.1", certificate: RTCCertificate | None = None) -> "LoopbackPeer":
        return cls(await bind_udp(ip), certificate)

    @property
    def local_address(self) -> Address:
        return self.sock.local_address

    def fingerprints(self) -> list[dict[str, str]]:
        return [{"algorithm": f.algorithm, "value": f.value} for f in self.certificate.getFingerprints()]

    # ------------------------------------------------------------------ ICE (controlling)
    def build_check(
        self,
        ice_parameters: dict[str, Any],
        *,
        use_candidate: bool = True,
        password: str | None = None,
        integrity: bool = True,
        username: str | None = None,
        controlled: bool = False,
    ) -> stun.Message:
        msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        if username is None:
            username = f"{ice_parameters['usernameFragment']}:{self.ufrag}"
        if username:
            msg.attributes["USERNAME"] = username
        msg.attributes["PRIORITY"] = 1853824767
        if controlled:
            msg.attributes["ICE-CONTROLLED"] = secrets.randbits(64)
        else:
            msg.attributes["ICE-CONTROLLING"] = secrets.randbits(64)
        if use_candidate:
            msg.attributes["USE-CANDIDATE"] = None
        if integrity:
            msg.add_message_integrity((password or ice_parameters["password"]).encode())
        else:
            msg.add_fingerprint()
        return msg

    async def request(self, msg: stun.Message, addr: Address, timeout_s: float = 1.0) -> stun.Message | None:
        """Send a STUN request; the response (success or error), or None on timeout."""
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg.transaction_id] = fut
        self.sock.sendto(bytes(msg), addr)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            return None
        finally:
            self._pending.pop(msg.transaction_id, None)

    async def ice_connect(
        self, ice_parameters: dict[str, Any], candidate: dict[str, Any], timeout_s: float = 1.0
    ) -> stun.Message | None:
        """Regular nomination like aiortc toward a lite peer: a plain check, then USE-CANDIDATE."""
        addr = (candidate.get("ip") or candidate["address"], candidate["port"])
        first = await self.request(self.build_check(ice_parameters, use_candidate=False), addr, timeout_s)
        if first is None or first.message_class != stun.Class.RESPONSE:
            return first
        self.remote = addr
        return await self.request(self.build_check(ice_parameters, use_candidate=True), addr, timeout_s)

    # ------------------------------------------------------------------ DTLS
    async def dtls_connect(self, server_fingerprints: list[dict[str, str]], our_role: str, timeout_s: float = 5.0) -> str:
        """Handshake as DTLS ``our_role`` ('client' or 'server'); returns aiortc's final state."""
        self.dtls._set_role(our_role)
        params = RTCDtlsParameters(
            fingerprints=[RTCDtlsFingerprint(algorithm=f["algorithm"], value=f["value"]) for f in server_fingerprints]
        )
        try:
            await asyncio.wait_for(self.dtls.start(params), timeout_s)
        except asyncio.TimeoutError:
            pass
        return self.dtls.state

    async def _recv(self) -> bytes:
        data = await self._dtls_queue.get()
        if data is None:
            raise ConnectionError("peer closed")
        return data

    async def _send(self, data: bytes) -> None:
        if self.remote is None:
            raise ConnectionError("no remote")
        self.sock.sendto(data, self.remote)

    # ------------------------------------------------------------------ SRTP
    def send_rtp(self, plain: bytes) -> None:
        self.sock.sendto(self.dtls._tx_srtp.protect(plain), self.remote)

    def send_rtcp(self, plain: bytes) -> None:
        self.sock.sendto(self.dtls._tx_srtp.protect_rtcp(plain), self.remote)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.remote)

    # ------------------------------------------------------------------ datagrams
    def _on_datagram(self, data: bytes, addr: Address) -> None:
        b0 = data[0] if data else 255
        if b0 < 4:
            try:
                msg = stun.parse_message(data)
            except ValueError:
                self.stray += 1
                return
            fut = self._pending.get(msg.transaction_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif 19 < b0 < 64:
            self._dtls_queue.put_nowait(data)
        elif 127 < b0 < 192 and self.dtls._rx_srtp is not None:
            try:
                if 191 < data[1] < 224:
                    self.rtcp.put_nowait(self.dtls._rx_srtp.unprotect_rtcp(data))
                else:
                    self.rtp.put_nowait(self.dtls._rx_srtp.unprotect(data))
            except Exception:  # noqa: BLE001
                self.srtp_errors += 1
        else:
            self.stray += 1

    async def close(self) -> None:
        await self.dtls.stop()
        self._dtls_queue.put_nowait(None)
        self.sock.close()
        await asyncio.sleep(0)
