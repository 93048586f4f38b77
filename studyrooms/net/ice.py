"""ICE-lite server side (mediasoup's WebRtcServer + IceServer), over one shared UDP socket and,
with ICE-TCP enabled, a TCP listener (studyrooms.net.tcp: its addresses are ``(ip, port, "tcp")``).

mediasoup-client never signals its own ICE credentials, so the SFU is ICE-lite and always
*controlled*: it answers the client's binding requests, learns the client's address from them
(peer-reflexive), follows every USE-CANDIDATE (Chrome renominates, and its consent checks carry
USE-CANDIDATE), and never sends checks of its own. aioice is full-ICE only, so only its ``stun``
module (parse/serialise) is used here.

Demux (``IceLiteServer.datagram_received``):
  * STUN binding request -> connection by the local part of USERNAME ("localUfrag:remoteUfrag");
    unknown ufrag: silently dropped (WebRtcServer does the same) and counted.
  * anything else from a known 5-tuple -> that connection's ``on_datagram(data, addr)`` (DTLS,
    SRTP); from an unknown tuple -> dropped and counted.
Nothing ever raises out of ``datagram_received``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from aioice import stun

from ..clock import Clock, SystemClock, TimerHandle
from ..ids import random_ice_string
from .tcp import TCP, TcpListener
from .udp import Address, UdpSocket

logger = logging.getLogger("studyrooms.net.ice")

# mediasoup's priority for a UDP host candidate.
HOST_UDP_PRIORITY = 1076302079
# A passive TCP host candidate: same type preference, lower local preference (UDP preferred).
HOST_TCP_PRIORITY = 1076046079  # (64 << 24) + (9000 << 8) + 255; UDP's local preference is 10000
# mediasoup keeps at most this many tuples per connection.
MAX_TUPLES = 8
# Consent is checked at most this often (mediasoup: ConsentCheckIntervalMs = 5000).
MAX_CONSENT_CHECK_INTERVAL_S = 5.0

_BINDING = stun.Method.BINDING
_REQUEST = stun.Class.REQUEST


def _noop_datagram(data: bytes, addr: Address) -> None:
    return None


class IceLiteConnection:
    """The ICE-lite state of one WebRtcTransport (mediasoup's IceServer).

    States: ``new`` -> ``connected`` (a valid check selected a tuple) -> ``completed`` (USE-CANDIDATE)
    -> ``disconnected`` (consent lost: no valid check for ``consent_timeout_s``) -> ``closed``.
    Owners set ``on_datagram(data, addr)`` (non-STUN datagrams from a valid tuple),
    ``on_state(state)``, ``on_selected(tuple)`` and ``on_timeout()`` (consent lost).
    """

    role = "controlled"  # ICE-lite is always controlled

    def __init__(
        self,
        server: "IceLiteServer",
        *,
        consent_timeout_s: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self._server = server
        self.clock: Clock = clock or SystemClock()
        self.consent_timeout_s = consent_timeout_s
        self.ufrag = random_ice_string(16)
        self.password = random_ice_string(32)
        self._key = self.password.encode()
        self.state = "new"
        self.selected_tuple: Address | None = None
        self._tuples: dict[Address, float] = {}  # tuple -> time of its last valid check
        self._last_consent = 0.0
        self._timer: TimerHandle | None = None
        # hooks set by the owner
        self.on_datagram: Callable[[bytes, Address], None] = _noop_datagram
        self.on_state: Callable[[str], None] | None = None
        self.on_selected: Callable[[Address], None] | None = None
        self.on_timeout: Callable[[], None] | None = None
        # counters
        self.valid_checks = 0
        self.renominations = 0
        self.restarts = 0
        server._register(self)

    # ------------------------------------------------------------------ signalling
    def parameters(self) -> dict[str, Any]:
        return {"usernameFragment": self.ufrag, "password": self.password, "iceLite": True}

    def candidates(self, ip: str, announced_ip: str | None, port: int, *, udp: bool = True,
                   tcp_port: int | None = None) -> list[dict[str, Any]]:
        address = announced_ip or ip
        out = []
        if udp:
            out.append({
                "foundation": "udpcandidate",
                "priority": HOST_UDP_PRIORITY,
                "address": address,  # mediasoup >= 3.12 / mediasoup-client >= 3.7
                "ip": address,  # pymediasoup (and older clients) read this
                "protocol": "udp",
                "port": port,
                "type": "host",
            })
        if tcp_port is not None:  # ICE-TCP: the client connects (active), we listen (passive)
            out.append({
                "foundation": "tcpcandidate",
                "priority": HOST_TCP_PRIORITY,
                "address": address,
                "ip": address,
                "protocol": "tcp",
                "port": tcp_port,
                "type": "host",
                "tcpType": "passive",
            })
        return out

    def restart(self) -> dict[str, Any]:
        """New ufrag/password (mediasoup restartIce). Tuples and DTLS are kept."""
        if self.state == "closed":
            return self.parameters()
        old = self.ufrag
        self.ufrag = random_ice_string(16)
        self.password = random_ice_string(32)
        self._key = self.password.encode()
        self.restarts += 1
        self._server._reregister(self, old)
        return self.parameters()

    # ------------------------------------------------------------------ sending
    def send(self, data: bytes) -> bool:
        """Send to the selected tuple (sync, never raises). False when there is none."""
        tuple_ = self.selected_tuple
        if tuple_ is None:
            return False
        return self._server.sendto(data, tuple_)

    def has_tuple(self, addr: Address) -> bool:
        return addr in self._tuples

    # ------------------------------------------------------------------ called by the server
    def _valid_check(self, addr: Address, use_candidate: bool) -> None:
        """A binding request authenticated with our password arrived from ``addr``."""
        now = self.clock.now()
        self.valid_checks += 1
        self._last_consent = now
        if addr not in self._tuples:
            self._add_tuple(addr, now)
        else:
            self._tuples[addr] = now
        state = self.state
        if state == "closed":
            return
        if self.selected_tuple is None or state == "disconnected":
            self._select(addr)
            self._set_state("completed" if use_candidate else "connected")
        elif use_candidate:
            if addr != self.selected_tuple:
                self.renominations += 1
                self._select(addr)
                self._drop_other_tuples(addr)
            if state != "completed":
                self._set_state("completed")
        if self._timer is None:
            self._arm_timer()

    def _add_tuple(self, addr: Address, now: float) -> None:
        if len(self._tuples) >= MAX_TUPLES:  # evict the least recently checked non-selected tuple
            victims = [t for t in self._tuples if t != self.selected_tuple]
            if victims:
                oldest = min(victims, key=self._tuples.__getitem__)
                self._remove_tuple(oldest)
        self._tuples[addr] = now
        self._server._by_tuple[addr] = self

    def _remove_tuple(self, addr: Address) -> None:
        self._tuples.pop(addr, None)
        if self._server._by_tuple.get(addr) is self:
            del self._server._by_tuple[addr]
            self._server._release(addr)

    def _tuple_lost(self, addr: Address) -> None:
        """The tuple's TCP connection closed: select the most recently checked other tuple, if any."""
        self._remove_tuple(addr)
        if addr != self.selected_tuple or self.state == "closed":
            return
        if self._tuples:
            self._select(max(self._tuples, key=self._tuples.__getitem__))
        else:
            self.selected_tuple = None
            if self.on_selected is not None:
                self.on_selected(None)
            self._set_state("disconnected")  # consent checks on another path bring it back

    def _drop_other_tuples(self, keep: Address) -> None:
        """On renomination the other paths are stale; a path checked again is re-added."""
        for addr in [t for t in self._tuples if t != keep]:
            self._remove_tuple(addr)

    def _select(self, addr: Address) -> None:
        self.selected_tuple = addr
        if self.on_selected is not None:
            self.on_selected(addr)

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self.on_state is not None:
            self.on_state(state)

    # ------------------------------------------------------------------ consent freshness
    def _interval(self) -> float:
        return max(0.05, min(MAX_CONSENT_CHECK_INTERVAL_S, self.consent_timeout_s / 3.0))

    def _arm_timer(self) -> None:
        if self.consent_timeout_s and self.consent_timeout_s > 0 and self.state != "closed":
            self._timer = self.clock.call_later(self._interval(), self._check_consent)

    def _check_consent(self) -> None:
        self._timer = None
        if self.state == "closed":  # "disconnected" by a lost ICE-TCP path still times out below
            return
        now = self.clock.now()
        deadline = now - self.consent_timeout_s
        for addr in [t for t, last in self._tuples.items() if last < deadline and t != self.selected_tuple]:
            self._remove_tuple(addr)
        if self._last_consent < deadline:
            self._set_state("disconnected")
            if self.on_timeout is not None:
                self.on_timeout()
            return
        self._arm_timer()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self.state == "closed":
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server._unregister(self)
        self._tuples.clear()
        self.selected_tuple = None
        self.on_datagram = _noop_datagram
        self._set_state("closed")
        self.on_state = self.on_selected = self.on_timeout = None

    def dump(self) -> dict[str, Any]:
        sel = self.selected_tuple
        return {
            "iceRole": self.role,
            "iceState": self.state,
            "usernameFragment": self.ufrag,
            "selectedTuple": None if sel is None else {"remoteIp": sel[0], "remotePort": sel[1],
                                                       "protocol": protocol_of(sel)},
            "tuples": [{"remoteIp": t[0], "remotePort": t[1], "protocol": protocol_of(t)}
                       for t in self._tuples],
            "validChecks": self.valid_checks,
            "renominations": self.renominations,
            "restarts": self.restarts,
        }


def protocol_of(addr: Address) -> str:
    return TCP if len(addr) == 3 else "udp"


class IceLiteServer:
    """Answers ICE checks on one UdpSocket (and a TcpListener, with ICE-TCP) and demuxes datagrams
    to many IceLiteConnections."""

    def __init__(self, sock: UdpSocket, *, software: str | None = None,
                 tcp: TcpListener | None = None) -> None:
        self.socket = sock
        self.tcp = tcp
        self.software = software
        self._by_ufrag: dict[str, IceLiteConnection] = {}
        self._by_tuple: dict[Address, IceLiteConnection] = {}
        self.closed = False
        # counters
        self.stun_requests = 0
        self.stun_success = 0
        self.stun_bad_request = 0  # 400 sent
        self.stun_unauthorized = 0  # 401 sent
        self.stun_role_conflict = 0  # 487 sent
        self.stun_unknown_ufrag = 0  # dropped silently
        self.stun_ignored = 0  # responses, indications, other methods
        self.malformed = 0  # unparseable STUN, bad fingerprint, empty datagrams
        self.unknown_tuple = 0  # non-STUN datagrams from no known tuple
        sock.on_datagram = self.datagram_received
        if tcp is not None:
            tcp.on_datagram = self.datagram_received
            tcp.on_closed = self._tcp_closed
            tcp.is_claimed = self._by_tuple.__contains__

    def create_connection(self, *, consent_timeout_s: float = 30.0, clock: Clock | None = None) -> IceLiteConnection:
        return IceLiteConnection(self, consent_timeout_s=consent_timeout_s, clock=clock)

    @property
    def connection_count(self) -> int:
        return len(self._by_ufrag)

    # ------------------------------------------------------------------ sending
    def sendto(self, data: bytes, addr: Address) -> bool:
        """Send to a UDP or an ICE-TCP address (sync, never raises)."""
        return self.sender_for(addr)(data, addr)

    def sender_for(self, addr: Address) -> Callable[[bytes, Address], bool]:
        """The bound send of ``addr``'s socket (transports cache it for the hot path)."""
        if len(addr) == 3 and self.tcp is not None:
            return self.tcp.sendto
        return self.socket.sendto

    def _release(self, addr: Address) -> None:
        if len(addr) == 3 and self.tcp is not None:
            self.tcp.release(addr)  # a dropped ICE-TCP tuple: close its connection

    def _tcp_closed(self, addr: Address) -> None:
        conn = self._by_tuple.get(addr)
        if conn is not None:
            conn._tuple_lost(addr)

    # ------------------------------------------------------------------ registry
    def _register(self, conn: IceLiteConnection) -> None:
        self._by_ufrag[conn.ufrag] = conn

    def _reregister(self, conn: IceLiteConnection, old_ufrag: str) -> None:
        if self._by_ufrag.get(old_ufrag) is conn:
            del self._by_ufrag[old_ufrag]
        self._by_ufrag[conn.ufrag] = conn

    def _unregister(self, conn: IceLiteConnection) -> None:
        if self._by_ufrag.get(conn.ufrag) is conn:
            del self._by_ufrag[conn.ufrag]
        for addr in [a for a, c in self._by_tuple.items() if c is conn]:
            del self._by_tuple[addr]
            self._release(addr)

    # ------------------------------------------------------------------ hot path
    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not data:
            self.malformed += 1
            return
        if data[0] > 3:  # not STUN (RFC 7983): DTLS 20..63, SRTP/SRTCP 128..191
            conn = self._by_tuple.get(addr)
            if conn is None:
                self.unknown_tuple += 1
                return
            conn.on_datagram(data, addr)
            return
        self._handle_stun(data, addr)

    # ------------------------------------------------------------------ STUN
    def _handle_stun(self, data: bytes, addr: Address) -> None:
        try:
            msg = stun.parse_message(data)
        except Exception:  # noqa: BLE001 - ValueError, struct.error, UnicodeDecodeError, ...
            self.malformed += 1
            return
        if msg.message_class != _REQUEST:
            self.stun_ignored += 1  # ICE-lite sends no requests, so responses are stray
            return
        self.stun_requests += 1
        if msg.message_method != _BINDING:
            self._send_error(msg, addr, 400, "Bad Request", None)
            self.stun_bad_request += 1
            return
        attrs = msg.attributes
        username = attrs.get("USERNAME")
        if not username or "MESSAGE-INTEGRITY" not in attrs:
            self._send_error(msg, addr, 400, "Bad Request", None)
            self.stun_bad_request += 1
            return
        local_ufrag, colon, _ = username.partition(":")
        conn = self._by_ufrag.get(local_ufrag) if colon else None
        if conn is None:
            self.stun_unknown_ufrag += 1
            return
        key = conn._key
        if not msg.check_message_integrity(key):
            self._send_error(msg, addr, 401, "Unauthorized", None)
            self.stun_unauthorized += 1
            return
        if "PRIORITY" not in attrs:
            self._send_error(msg, addr, 400, "Bad Request", key)
            self.stun_bad_request += 1
            return
        if "ICE-CONTROLLED" in attrs:  # we are lite, hence controlled: the peer must control
            self._send_error(msg, addr, 487, "Role Conflict", key)
            self.stun_role_conflict += 1
            return
        response = stun.Message(_BINDING, stun.Class.RESPONSE, transaction_id=msg.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        if self.software:
            response.attributes["SOFTWARE"] = self.software
        response.add_message_integrity(key)  # adds FINGERPRINT too
        self.sendto(bytes(response), addr)
        self.stun_success += 1
        conn._valid_check(addr, "USE-CANDIDATE" in attrs)

    def _send_error(self, msg: stun.Message, addr: Address, code: int, reason: str, key: bytes | None) -> None:
        response = stun.Message(msg.message_method, stun.Class.ERROR, transaction_id=msg.transaction_id)
        response.attributes["ERROR-CODE"] = (code, reason)
        if key is not None:
            response.add_message_integrity(key)
        else:
            response.add_fingerprint()
        self.sendto(bytes(response), addr)

    # ------------------------------------------------------------------ lifecycle
    def stats(self) -> dict[str, int]:
        return {
            "tcpConnections": self.tcp.connection_count if self.tcp is not None else 0,
            "connections": len(self._by_ufrag),
            "tuples": len(self._by_tuple),
            "stunRequests": self.stun_requests,
            "stunSuccess": self.stun_success,
            "stunBadRequest": self.stun_bad_request,
            "stunUnauthorized": self.stun_unauthorized,
            "stunRoleConflict": self.stun_role_conflict,
            "stunUnknownUfrag": self.stun_unknown_ufrag,
            "stunIgnored": self.stun_ignored,
            "malformed": self.malformed,
            "unknownTuple": self.unknown_tuple,
        }

    def close(self) -> None:
        """Closes every connection (their owners get on_state('closed')); does not close the socket."""
        if self.closed:
            return
        self.closed = True
        for conn in list(self._by_ufrag.values()):
            conn.close()
        self._by_tuple.clear()
