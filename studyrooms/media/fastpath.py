"""The compiled fan-out core (``_fanout``, built from fanout.c by ``make setup``) and its Python side.

``STUDYROOMS_MEDIA_FAST_PATH``: ``auto`` (default: compiled if it imports, else the pure-Python path
with ONE warning line), ``on`` (refuse to start without it), ``off`` (pure Python). :func:`active`
answers for this process; :func:`configure` re-reads (tests switch paths with it).

Objects here own the C memory the core works on (cffi keeps it alive while they live):

* :class:`TransportCell`: where and how a transport sends (fd, destination, SRTP session, counters,
  the transport-wide-seq counter and send-record ring for congestion control).
* :class:`History`: one producer encoding's recent packets, copied once per ingress packet; every
  consumer's retransmission ring points into it (no per-copy packet copy).
* :class:`FastSendStream`: a :class:`SendStream` whose forwarding state and counters live in an
  ``sr_consumer`` struct; every attribute Python reads (packets, max_seq, ...) reads the struct.
* :class:`Fanout`: one producer's consumer array and the per-ingress-packet call.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from typing import Any, Sequence

from studyrooms.errors import InvalidRequestError, UnsupportedError
from studyrooms.media.rtp import PT_SEQ_TS_SSRC
from studyrooms.media.send_stream import SendStream

logger = logging.getLogger("studyrooms.media.fastpath")

ENV = "STUDYROOMS_MEDIA_FAST_PATH"
MODES = ("auto", "on", "off")
SLOT_BYTES = 1536  # history slot: one MTU-sized packet
TWCC_RING = 1 << 14  # transport-wide send records kept per transport (media/twcc.py RING)

ffi: Any = None
lib: Any = None
_fanout_args: Any = None
_import_error: str | None = None
_mode: str | None = None
_active = False
_warned = False


class FastPathUnavailableError(UnsupportedError):
    """STUDYROOMS_MEDIA_FAST_PATH=on but the compiled core cannot be loaded."""


def _load() -> bool:
    global ffi, lib, _import_error
    if lib is not None:
        return True
    try:
        from studyrooms.media import _fanout  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken build
        _import_error = f"{type(exc).__name__}: {exc}"
        return False
    global _fanout_args
    ffi, lib = _fanout.ffi, _fanout.lib
    _fanout_args = lib.sr_fanout_args
    return True


def configure(mode: str | None = None) -> bool:
    """Decide (again) whether this process forwards with the compiled core; returns the answer.
    ``mode`` None reads the environment. Raises FastPathUnavailableError for ``on`` without it."""
    global _mode, _active, _warned
    if mode is None:
        mode = (os.environ.get(ENV) or "auto").strip().lower()
    if mode not in MODES:
        raise InvalidRequestError(f"{ENV} must be one of {', '.join(MODES)}, not {mode!r}")
    _mode = mode
    if mode == "off":
        _active = False
        return False
    if _load():
        _active = True
        return True
    _active = False
    if mode == "on":
        raise FastPathUnavailableError(
            f"{ENV}=on but the compiled fan-out core is unavailable ({_import_error}); run `make setup`"
        )
    if not _warned:
        _warned = True
        logger.warning("compiled fan-out core unavailable (%s): forwarding in pure Python", _import_error)
    return False


def active() -> bool:
    if _mode is None:
        configure()
    return _active


def mode() -> str:
    if _mode is None:
        configure()
    return _mode or "auto"


def describe() -> dict[str, Any]:
    return {"mode": mode(), "active": active(), "error": _import_error}


# ---------------------------------------------------------------------------------------------
# transports


def _sockaddr(addr: tuple) -> bytes:
    host, port = addr[0], int(addr[1])
    if ":" in host:
        flow = int(addr[2]) if len(addr) > 2 else 0
        scope = int(addr[3]) if len(addr) > 3 else 0
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, flow)
                + socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", scope))
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


class TransportCell:
    """A transport's sending state for the compiled core. ``fd`` -1 means "cannot send": the owner
    clears it before closing the socket, so the core never writes to a recycled descriptor."""

    __slots__ = ("c", "_records")

    def __init__(self, require_srtp: bool) -> None:
        self.c = ffi.new("sr_transport *")
        self.c.fd = -1
        self.c.require_srtp = 1 if require_srtp else 0
        self._records: Any = None

    def set_destination(
        self, sock: socket.socket | None, addr: tuple | None, connected: bool = False
    ) -> None:
        """Send on ``sock`` to ``addr`` (``connected``: the socket is connected to it: send(2))."""
        if sock is None or addr is None:
            self.c.fd = -1
            return
        raw = b"" if connected else _sockaddr(addr)
        self.c.addrlen = len(raw)
        if raw:
            ffi.memmove(self.c.addr, raw, len(raw))
        self.c.fd = sock.fileno()

    def set_srtp(self, ctx_address: int, protect_address: int) -> None:
        self.c.srtp_protect = ffi.cast("void *", protect_address)
        self.c.srtp_ctx = ffi.cast("void *", ctx_address)

    def clear_srtp(self) -> None:
        self.c.srtp_ctx = ffi.NULL

    def close(self) -> None:
        self.c.fd = -1
        self.c.srtp_ctx = ffi.NULL

    def enable_transport_wide_seq(self, first_seq: int = 1, system_clock: bool = True) -> "CellStamper":
        """Stamp a transport-wide seq into every RTP packet the core sends on this transport (when it
        has the slot RecvStream reserves) and keep the send records; returns the stamper Python uses
        for the packets it sends itself (RTX answers, probe padding) and for feedback lookups: one
        counter, one record ring. ``system_clock``: the transport's clock is time.monotonic."""
        if self._records is None:
            self._records = ffi.new("sr_twcc_record[]", TWCC_RING)
            lib.sr_twcc_init(self.c, self._records, TWCC_RING, first_seq)
            self.c.sys_clock = 1 if system_clock else 0
        return CellStamper(self)

    def stats(self) -> dict[str, int]:
        c = self.c
        return {"rtp": int(c.tx_rtp), "bytes": int(c.tx_bytes), "dropped": int(c.tx_dropped),
                "protected": int(c.srtp_protected), "srtpFailures": int(c.srtp_failures)}


class CellStamper:
    """media/twcc.py TwccStamper's interface over a TransportCell: the counter and the send records
    live in C, shared by the packets the core sends and those Python sends (TransportBwe uses it
    unchanged: ``stamp``, ``record``, ``lookup``, ``cluster``, ``seq``, ``stamped``/``unstamped``)."""

    __slots__ = ("_cell", "_c", "_out")

    def __init__(self, cell: TransportCell) -> None:
        self._cell = cell  # keeps the ring alive
        self._c = cell.c
        self._out = ffi.new("sr_twcc_record *")

    seq = property(lambda self: int(self._c.twcc_seq),
                   lambda self, v: setattr(self._c, "twcc_seq", int(v) & 0xFFFF))
    cluster = property(lambda self: int(self._c.twcc_cluster),
                       lambda self, v: setattr(self._c, "twcc_cluster", int(v)))
    stamped = property(lambda self: int(self._c.twcc_stamped))
    unstamped = property(lambda self: int(self._c.twcc_unstamped))

    def stamp(self, data: bytes, now: float) -> bytes:
        buf = bytearray(data)
        if lib.sr_twcc_stamp(self._c, ffi.from_buffer(buf), len(buf), now) < 0:
            return data
        return bytes(buf)

    def record(self, size: int, now: float) -> int:
        """A seq for a packet whose slot the caller fills (TwccStamper.record)."""
        c = self._c
        seq = int(c.twcc_seq)
        c.twcc_seq = (seq + 1) & 0xFFFF
        r = c.twcc[seq & c.twcc_mask]
        r.sent_at, r.size, r.cluster = float(now), int(size), int(c.twcc_cluster)
        c.twcc_stamped += 1
        return seq

    def lookup(self, seq: int) -> tuple[float, int, int] | None:
        out = self._out
        if not lib.sr_twcc_lookup(self._c, seq, out):
            return None
        return out.sent_at, int(out.size), int(out.cluster)


# ---------------------------------------------------------------------------------------------
# history


class History:
    """Recent packets of one producer encoding (a ring of MTU slots indexed by ingress ext seq)."""

    __slots__ = ("c", "_data", "_lens", "_gens")

    def __init__(self, packets: int) -> None:
        slots = 1
        while slots < packets:
            slots <<= 1
        self.c = ffi.new("sr_history *")
        self._data = ffi.new("unsigned char[]", slots * SLOT_BYTES)
        self._lens = ffi.new("unsigned short[]", slots)
        self._gens = ffi.new("unsigned long long[]", slots)
        self.c.data, self.c.lens, self.c.gens = self._data, self._lens, self._gens
        self.c.slots = slots
        self.c.slot_bytes = SLOT_BYTES


# ---------------------------------------------------------------------------------------------
# send streams

_C_FIELDS = {
    # SendStream attribute -> sr_consumer field (plain ints/floats)
    "ssrc": "ssrc", "payload_type": "payload_type", "_sync_required": "sync_required",
    "_source_ssrc": "source_ssrc", "_seq_off": "seq_off", "_ts_off": "ts_off", "_started": "started",
    "max_seq": "max_seq", "max_ts": "max_ts", "_max_sent_at": "max_sent_at", "_initial_seq": "initial_seq",
    "clock_rate": "clock_rate", "_mid_elem_id": "mid_elem_id", "_mid_len_nibble": "mid_len_nibble",
    "packets": "packets", "bytes": "bytes", "octets": "octets", "dropped_gated": "dropped_gated",
    "syncs": "syncs", "_rate_next": "rate_next", "keyframe_gating": "keyframe_gating",
}
_BOOLS = {"_sync_required", "_started", "keyframe_gating"}


def _field(name: str, cname: str) -> property:
    if name in _BOOLS:
        def get(self: "FastSendStream") -> Any:
            return bool(getattr(self._c, cname))

        def put(self: "FastSendStream", value: Any) -> None:
            setattr(self._c, cname, 1 if value else 0)
    elif cname in ("max_sent_at", "rate_next", "clock_rate"):
        def get(self: "FastSendStream") -> Any:
            return getattr(self._c, cname)

        def put(self: "FastSendStream", value: Any) -> None:
            setattr(self._c, cname, float(value))
    else:
        def get(self: "FastSendStream") -> Any:
            return int(getattr(self._c, cname))

        def put(self: "FastSendStream", value: Any) -> None:
            setattr(self._c, cname, int(value))
    return property(get, put)


class FastSendStream(SendStream):
    """SendStream whose forwarding state lives in a C ``sr_consumer`` (see module docstring).
    ``send()`` (inherited) still works on it, but the compiled core does the forwarding; the
    retransmission ring is the C ring of (history slot, out seq/ts, VP8 values) entries."""

    __slots__ = ("_c", "_cring", "_cring_n", "_keep")

    def __init__(self, **kwargs: Any) -> None:
        self._c = ffi.new("sr_consumer *")
        self._c.current_layer = 0
        self._c.pid_in = self._c.max_pid = self._c.max_tl0 = -1
        self._c.pid_sync = self._c.tl0_sync = 1
        self._keep: list[Any] = []
        super().__init__(**kwargs)
        n = self._n
        self._cring_n = n if n > 1 else 0
        self._cring = ffi.new("sr_hist_entry[]", n) if n > 1 else ffi.NULL
        self._c.ring = self._cring
        self._c.ring_n = self._cring_n

    # initial_ts may be None in Python (= take the first packet's)
    @property
    def _initial_ts(self) -> int | None:
        v = int(self._c.initial_ts)
        return None if v < 0 else v

    @_initial_ts.setter
    def _initial_ts(self, value: int | None) -> None:
        self._c.initial_ts = -1 if value is None else int(value) & 0xFFFFFFFF

    @property
    def _mid_value(self) -> bytes:
        return bytes(ffi.buffer(self._c.mid_value, 8))

    @_mid_value.setter
    def _mid_value(self, value: bytes) -> None:
        ffi.memmove(self._c.mid_value, bytes(value)[:8].ljust(8, b"\x00"), 8)

    # derived from the C fields (the core updates the element id): never stale for the Python twin
    @property
    def _mid_elem(self) -> bytes:
        c = self._c
        head = ((c.mid_elem_id & 0x0F) << 4) | (c.mid_len_nibble & 0x0F)
        return bytes((head,)) + bytes(ffi.buffer(c.mid_value, 8))

    @_mid_elem.setter
    def _mid_elem(self, value: bytes) -> None:
        self._c.mid_elem_id = value[0] >> 4

    @property
    def cell(self) -> Any:
        return self._c

    def attach_transport(self, cell: TransportCell | None) -> None:
        self._keep = [cell]
        self._c.transport = cell.c if cell is not None else ffi.NULL

    @property
    def history_packets(self) -> int:
        return self._n

    # ------------------------------------------------------------------ retransmission
    def _c_entry(self, seq: int) -> Any:
        if not self._cring_n:
            return None
        e = self._cring[seq % self._cring_n]
        if e.hist == ffi.NULL or e.out_seq != seq or e.hist.gens[e.slot] != e.gen or not e.gen:
            return None
        return e

    def on_nack(self, seqs: list[int]) -> list[bytes]:
        self.nacks_received += 1
        self.nack_packets_received += len(seqs)
        now = self._now()
        min_gap = (self.rtt_ms if self.rtt_ms > 0 else 100.0) / 1000.0
        resent = self._resent
        out: list[bytes] = []
        for s in seqs:
            s &= 0xFFFF
            e = self._c_entry(s)
            if e is None:
                self.nack_misses += 1
                continue
            key = int(e.gen)
            prev = resent.get(s)
            if prev is not None and prev[0] == key and now - prev[1] < min_gap:
                continue
            resent[s] = (key, now)
            data = self._rebuild_c(e)
            out.append(self._rtx_wrap(data) if self.rtx_enabled else data)
            self.retransmitted += 1
        if len(resent) > self._n:
            resent.clear()
        return out

    def _rebuild_c(self, e: Any) -> bytes:
        h = e.hist
        slot = e.slot
        buf = bytearray(ffi.buffer(h.data + slot * h.slot_bytes, h.lens[slot]))
        PT_SEQ_TS_SSRC.pack_into(buf, 1, (buf[1] & 0x80) | self.payload_type, e.out_seq, e.out_ts, self.ssrc)
        mo = e.mid_off
        if mo > 0:
            buf[mo - 1] = (buf[mo - 1] & 0xF0) | self._mid_len_nibble
            buf[mo : mo + 8] = self._mid_value
        if e.pid_off >= 0:
            if e.pid_bits == 15:
                buf[e.pid_off] = 0x80 | (e.pid >> 8)
                buf[e.pid_off + 1] = e.pid & 0xFF
            else:
                buf[e.pid_off] = e.pid & 0x7F
        if e.tl0_off >= 0:
            buf[e.tl0_off] = e.tl0 & 0xFF
        return bytes(buf)

    def build_rtx_probe(self, depth: int, max_size: int) -> bytes | None:
        """SendStream.build_rtx_probe over the C ring: the RTX of the packet ``depth`` behind the
        newest one the core sent (``None`` without RTX or history, when it is gone or too big)."""
        if not self.rtx_enabled or not self._started or not self._cring_n:
            return None
        e = self._c_entry((self.max_seq - depth) & 0xFFFF)
        if e is None or e.hist.lens[e.slot] + 2 > max_size:
            return None
        return self._rtx_wrap(self._rebuild_c(e))

    def get_buffered(self, seq: int) -> bytes | None:
        e = self._c_entry(seq & 0xFFFF)
        return None if e is None else self._rebuild_c(e)


for _name, _cname in _C_FIELDS.items():
    setattr(FastSendStream, _name, _field(_name, _cname))


# ---------------------------------------------------------------------------------------------
# fan-out


class Fanout:
    """One producer's compiled fan-out: the consumers' ``sr_consumer`` array and a reused
    ``sr_packet``. ``run`` returns the events the caller must handle (layer switches, bitrate samples)."""

    __slots__ = ("consumers", "_arr", "_events", "_counts", "_n", "_hists", "history_packets")

    def __init__(self, histories: dict[int, History] | None = None) -> None:
        self.consumers: tuple = ()
        self._arr: Any = ffi.NULL
        self._events: Any = ffi.NULL
        self._counts = ffi.new("int[2]")
        self._n = 0
        # encoding index -> History. Consumers' ring entries point into these: the owner (the
        # producer) keeps them for its whole life, and one is never replaced once created.
        self._hists: dict[int, History] = {} if histories is None else histories
        self.history_packets = 0

    def set_consumers(self, consumers: Sequence[Any]) -> None:
        """``consumers``: objects with ``send_stream`` a FastSendStream."""
        self.consumers = tuple(consumers)
        n = len(self.consumers)
        self._arr = ffi.new("sr_consumer *[]", max(1, n))
        for i, consumer in enumerate(self.consumers):
            self._arr[i] = consumer.send_stream.cell
        self._events = ffi.new("int[]", max(1, n))
        self._n = n
        self.history_packets = max([c.send_stream.history_packets for c in self.consumers] + [0])

    def history(self, index: int) -> History | None:
        """This encoding's packet history (created when the encoding is first forwarded by a consumer
        that keeps a ring, so encodings nobody receives cost no memory)."""
        if self.history_packets <= 1:
            return None
        h = self._hists.get(index)
        if h is None:  # sized for the consumers of now; a later bigger ring just finds fewer packets
            h = History(self.history_packets)
            self._hists[index] = h
        return h

    def run(
        self, pkt: bytearray, index: int, stream: Any, store: bool, twcc_value_offset: int = -1
    ) -> tuple[int, int]:
        """Forward one normalised ingress packet (``stream``'s last_* fields describe it). Returns
        (events, consumers that dropped it waiting for a keyframe)."""
        hist = ffi.NULL
        if store:
            h = self._hists.get(index)
            if h is not None:
                hist = h.c
        nev = _fanout_args(
            ffi.from_buffer(pkt), len(pkt), index, stream.last_seq, stream.last_ts,
            1 if stream.last_keyframe else 0,
            stream.ssrc, stream.last_payload_offset, stream.last_payload_end, stream.mid_value_offset,
            stream.last_receive_time, hist, stream.last_ext_seq, twcc_value_offset,
            self._arr, self._n, self._events, self._counts,
        )
        counts = self._counts
        if store and hist == ffi.NULL and counts[1]:
            self.history(index)  # first packet of this encoding sent: keep the next ones
        return nev, counts[0]

    def event(self, i: int) -> int:
        return self._events[i]



_webrtc = True


def set_webrtc(enabled: bool) -> None:
    """Whether WebRtcTransports use the compiled core (default: yes, when it is active). False keeps
    them on the Python path while plain/pipe transports stay on the core (tests, diagnosis)."""
    global _webrtc
    _webrtc = bool(enabled)


def webrtc_enabled() -> bool:
    return _webrtc
