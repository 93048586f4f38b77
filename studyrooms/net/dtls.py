"""DTLS for WebRTC transports: aiortc's RTCDtlsTransport over our ICE-lite, SRTP keys out.

Only the handshake, the fingerprint check and the SRTP key export come from aiortc. Hooks used
(pinned by tests/net/test_aiortc_hooks.py): the ICE duck type (``role``, ``async _recv()``,
``async _send(data)``), ``_set_role``, ``start(RTCDtlsParameters)``, ``_rx_srtp``/``_tx_srtp``,
``_ssl``/``_task`` (for a synchronous close), the ``statechange`` event.

DTLS datagrams are fed with :meth:`DtlsEndpoint.feed` and buffered from the first one, before
:meth:`start`: clients send their ClientHello before our ``connect`` request arrives. Once connected,
SRTP never goes through aiortc: the owner uses :attr:`DtlsEndpoint.srtp` synchronously.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from typing import Any, Callable

from aiortc import RTCCertificate, RTCDtlsFingerprint, RTCDtlsParameters, RTCDtlsTransport
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from .srtp import SrtpPair

logger = logging.getLogger("studyrooms.net.dtls")

FINGERPRINT_ALGORITHMS = ("sha-256", "sha-384", "sha-512")
MAX_BUFFERED_DATAGRAMS = 64  # DTLS flights are a handful of datagrams; more is abuse


def make_certificate(validity_days: int = 365) -> RTCCertificate:
    """An ECDSA P-256 certificate valid for ``validity_days`` (aiortc's default is 30 days)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, os.urandom(16).hex())])
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=validity_days))
        .sign(key, hashes.SHA256())
    )
    return RTCCertificate(key=key, cert=cert)


def local_role_for(remote_role: str) -> str:
    """mediasoup's rule (WebRtcTransport::Connect): remote client -> we serve; server/auto -> we connect."""
    return "server" if remote_role == "client" else "client"


class _IceDuck:
    """The three members of RTCIceTransport that RTCDtlsTransport uses."""

    def __init__(self, endpoint: "DtlsEndpoint", role: str) -> None:
        self.role = role
        self._endpoint = endpoint

    async def _recv(self) -> bytes:
        data = await self._endpoint._queue.get()
        if data is None:
            self._endpoint._queue.put_nowait(None)  # keep waking any other reader
            raise ConnectionError("DTLS endpoint closed")
        return data

    async def _send(self, data: bytes) -> None:
        ep = self._endpoint
        if not ep._writable.is_set():  # we are the DTLS client and ICE has no tuple yet
            await ep._writable.wait()
        if ep._closed:
            raise ConnectionError("DTLS endpoint closed")
        ep._send(data)


class DtlsEndpoint:
    """One DTLS association (client or server role), SRTP sessions once connected.

    ``send(data)`` is called synchronously with each outgoing DTLS datagram; the owner calls
    :meth:`set_writable` once it has somewhere to send (ICE selected a tuple). ``on_state(state)``
    fires on every change of :attr:`state` (new, connecting, connected, failed, closed).
    """

    def __init__(
        self,
        certificate: RTCCertificate,
        send: Callable[[bytes], Any],
        *,
        ice_role: str = "controlled",
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self._send = send
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writable = asyncio.Event()
        self._ice = _IceDuck(self, ice_role)
        self._dtls = RTCDtlsTransport(self._ice, [certificate])  # type: ignore[arg-type]
        self._dtls.on("statechange", self._on_aiortc_state)
        self._certificate = certificate
        self._start_task: asyncio.Task | None = None
        self.on_state = on_state
        self.state = "new"
        self.role: str | None = None  # our DTLS role once started
        self.failure_reason: str | None = None  # timeout, handshake, fingerprint, closed
        self.srtp: SrtpPair | None = None
        self.srtp_profile: str | None = None
        self.dropped = 0  # DTLS datagrams over the buffer limit or after close
        self._closed = False
        self.received = 0

    # ------------------------------------------------------------------ parameters
    def local_fingerprints(self) -> list[dict[str, str]]:
        return [
            {"algorithm": f.algorithm, "value": f.value}
            for f in self._certificate.getFingerprints()
            if f.algorithm in FINGERPRINT_ALGORITHMS
        ]

    @property
    def srtp_sessions(self) -> tuple[Any, Any] | None:
        """(rx, tx) pylibsrtp sessions once connected (``srtp`` wraps them for the hot path)."""
        srtp = self.srtp
        return None if srtp is None else (srtp.rx_session, srtp.tx_session)

    # ------------------------------------------------------------------ datagrams in
    def feed(self, data: bytes) -> None:
        """A DTLS datagram (first byte 20..63) from the peer. Sync, never raises."""
        if self._closed or self._queue.qsize() >= MAX_BUFFERED_DATAGRAMS:
            self.dropped += 1
            return
        self.received += 1
        self._queue.put_nowait(data)

    def set_writable(self) -> None:
        self._writable.set()

    # ------------------------------------------------------------------ handshake
    async def start(self, remote_role: str, fingerprints: list[dict[str, str]], timeout_s: float = 30.0) -> str:
        """Run the handshake to the end; returns the final state ('connected' or 'failed').

        ``remote_role`` is the peer's dtlsParameters.role ('client', 'server' or 'auto').
        """
        if self.state != "new":
            raise RuntimeError(f"DTLS already started (state {self.state})")
        self.role = local_role_for(remote_role)
        self._dtls._set_role(self.role)
        params = RTCDtlsParameters(
            fingerprints=[RTCDtlsFingerprint(algorithm=f["algorithm"].lower(), value=f["value"]) for f in fingerprints],
            role=remote_role,
        )
        self._set_state("connecting")
        self._start_task = asyncio.ensure_future(self._dtls.start(params))
        try:
            await asyncio.wait_for(asyncio.shield(self._start_task), timeout_s)
        except asyncio.TimeoutError:
            self._fail("timeout")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                if self.state not in ("closed", "failed"):
                    self._fail("cancelled")
                raise
            # only the inner handshake was cancelled, by close(): report, don't propagate
        except Exception as exc:  # noqa: BLE001 - an aiortc internal error fails the handshake
            logger.debug("DTLS start raised %r", exc)
            self._fail("handshake")
        finally:
            if self._start_task is not None and not self._start_task.done():
                self._start_task.cancel()
            self._start_task = None
        return self.state

    def _on_aiortc_state(self) -> None:
        aio = self._dtls.state
        if aio == "connected":
            rx, tx = self._dtls._rx_srtp, self._dtls._tx_srtp
            self.srtp = SrtpPair(rx, tx)
            ssl = self._dtls._ssl
            profile = ssl.get_selected_srtp_profile() if ssl is not None else b""
            self.srtp_profile = profile.decode() if profile else None
            self._set_state("connected")
        elif aio == "failed":
            self._fail("fingerprint" if self._dtls.encrypted else "handshake")
        elif aio == "closed" and self.state == "connected":
            # the pump ended: close_notify or a fatal alert from the peer
            self.failure_reason = "closed"
            self._set_state("closed")

    def _fail(self, reason: str) -> None:
        if self.state in ("failed", "closed"):
            return
        self.failure_reason = reason
        self.srtp = None
        self._set_state("failed")

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:  # noqa: BLE001
                logger.exception("DTLS on_state callback failed")

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Synchronous: sends close_notify if a session exists, stops aiortc's tasks.

        A 'failed' endpoint stays 'failed' (so the reason stays visible); otherwise -> 'closed'.
        """
        if self._closed:
            return
        self._closed = True
        self.on_state = None
        if self.state != "failed":
            self.state = "closed"
        self.srtp = None
        dtls = self._dtls
        ssl = dtls._ssl
        if ssl is not None and dtls.encrypted and self._writable.is_set():
            try:
                ssl.shutdown()
                data = ssl.bio_read(1500)
                if data:
                    self._send(data)
            except Exception:  # noqa: BLE001 - best effort
                pass
        for task in (self._start_task, dtls._task):
            if task is not None and not task.done():
                task.cancel()
        dtls._task = None
        self._queue.put_nowait(None)
        self._writable.set()  # release a _send waiting for ICE; it sees the endpoint closed
        dtls.remove_all_listeners()

    async def wait_closed(self) -> None:
        """Let cancelled aiortc tasks finish (tests: no pending tasks)."""
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    def dump(self) -> dict[str, Any]:
        return {
            "dtlsState": self.state,
            "dtlsRole": self.role or "auto",
            "dtlsFailureReason": self.failure_reason,
            "srtpProfile": self.srtp_profile,
        }

