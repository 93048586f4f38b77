"""Contract: the private aiortc/pylibsrtp hooks studyrooms.net relies on. An upgrade that breaks one
fails here first (pin: aiortc==1.16.0, pylibsrtp==1.0.0)."""

from __future__ import annotations

import inspect

import aiortc
import pylibsrtp
from aiortc import RTCCertificate, RTCDtlsParameters, RTCDtlsTransport
from pylibsrtp._binding import ffi, lib


def test_pinned_versions():
    assert aiortc.__version__ == "1.16.0"
    assert pylibsrtp.__version__ == "1.0.0"


class _Ice:
    role = "controlled"

    async def _recv(self):  # pragma: no cover - never awaited here
        raise ConnectionError

    async def _send(self, data):  # pragma: no cover
        pass


def test_dtls_transport_hooks():
    t = RTCDtlsTransport(_Ice(), [RTCCertificate.generateCertificate()])  # duck-typed ICE accepted
    assert t.transport.role == "controlled"
    for name in ("_rx_srtp", "_tx_srtp", "_ssl", "_task", "encrypted"):
        assert hasattr(t, name), name
    assert t._rx_srtp is None and t._tx_srtp is None and t._ssl is None and t.encrypted is False
    assert callable(t._set_role)
    t._set_role("server")
    assert t._role == "server"
    params = list(inspect.signature(RTCDtlsTransport.start).parameters)
    assert params == ["self", "remoteParameters"]
    assert inspect.iscoroutinefunction(RTCDtlsTransport.start)
    assert t.state == "new"
    # the state names DtlsEndpoint maps, and the event it listens to
    assert callable(t.on) and callable(t.remove_all_listeners)
    assert {"role", "fingerprints"} <= set(inspect.signature(RTCDtlsParameters).parameters)


def test_dtls_uses_only_the_ice_duck_members():
    src = inspect.getsource(RTCDtlsTransport)
    used = {m for m in ("transport._recv(", "transport._send(", "transport.role") if m in src}
    assert used == {"transport._recv(", "transport._send(", "transport.role"}
    # no other transport member is touched (that would break the duck type)
    import re

    others = set(re.findall(r"self\.transport\.(\w+)", src)) - {"_recv", "_send", "role"}
    assert others == set()


def test_pylibsrtp_cffi_entry_points():
    for fn in ("srtp_protect", "srtp_unprotect", "srtp_protect_rtcp", "srtp_unprotect_rtcp"):
        assert hasattr(lib, fn), fn
    s = pylibsrtp.Session(pylibsrtp.Policy(key=bytes(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    assert ffi.typeof(s._srtp).cname == "struct srtp_ctx_t_ * *"
    assert pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM is not None
