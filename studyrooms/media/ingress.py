"""The compiled receive step (ingress.c) and its Python side (issue 13).

A UDP socket bound with ``bind_udp(..., compiled_reader=True)`` has no asyncio datagram transport:
its :class:`RxSocket` is the loop's reader of the fd (``loop.add_reader``, on the stock loop and on
uvloop alike) and calls ``sr_rx_step``: ``recvmmsg`` batches (at most ``READ_BUDGET`` datagrams per wake-up), the route of
the source address (a transport's :class:`RxTransport`), SRTP unprotect with the transport's libsrtp
session, the SSRC's :class:`FastRecvStream`, RecvStream's in-order step and normalisation, and the
producer's compiled fan-out. Python gets back, one at a time and in arrival order:

* ``1`` a datagram the core does not take (STUN, DTLS, RTCP, unknown source, gated transport): the
  socket's ``on_datagram(data, addr)``, exactly as the asyncio reader would have called it;
* ``2`` a plaintext RTP packet it does not take (unknown SSRC, RTX, out of order, keyframe, NACKs
  pending, rate sample due, ...): the route's handler (the transport's ``receive_rtp`` path after
  unprotect); the core changed no stream state for it;
* ``3`` a packet it forwarded whose fan-out needs Python (layer switch, bitrate sample, keyframe
  request for a gated consumer, first history slot): the stream owner's ``fast_after``.

:class:`FastRecvStream` is a RecvStream whose fields the core writes live in a C ``sr_rstream``
(properties, like FastSendStream), so the Python path reads and updates the same state.
``fastpath.configure`` decides whether transports use this at all; :func:`set_enabled` turns the
receive step off alone (tests compare both paths).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
from typing import Any, Callable

from studyrooms.media import fastpath
from studyrooms.media.rate import TemporalRates
from studyrooms.media.recv_stream import _TABLE_SIZE, RecvStream

logger = logging.getLogger("studyrooms.media.ingress")

BATCH = 32  # datagrams per recvmmsg at most (ingress.c SR_RX_BATCH)
OWN_SOCKET_BATCH = 8  # a transport's own socket (per-transport port mode, plain/pipe transports)
SLOT = 2048  # bytes per datagram slot (SR_RX_SLOT)
ADDR = 28  # sockaddr bytes per slot (SR_RX_ADDR)
READ_BUDGET = 64  # datagrams per wake-up, then the loop runs its other callbacks
MAX_STREAMS = 32  # SSRCs per transport the core knows (more: Python receives them)
TWCC_RING = 512  # transport-wide seqs recorded between two drains (full: Python takes the packet)

_enabled = True
_ids = itertools.count(1)
_STREAMS: dict[int, "FastRecvStream"] = {}


def set_enabled(enabled: bool) -> None:
    """Whether transports created from now on use the compiled receive step (when the core is active)."""
    global _enabled
    _enabled = bool(enabled)


def available() -> bool:
    return _enabled and fastpath.active() and hasattr(fastpath.lib, "sr_rx_step")


# ---------------------------------------------------------------------------------------------
# transports


class RxTransport:
    """A transport's receive side in C: its inbound SRTP session, counters, and SSRC table."""

    __slots__ = ("c", "_streams", "_srtp_owner", "_twcc")

    def __init__(self, require_srtp: bool) -> None:
        self.c = fastpath.ffi.new("sr_rxt *")
        self.c.require_srtp = 1 if require_srtp else 0
        self._streams: list[FastRecvStream] = []
        self._srtp_owner: Any = None
        self._twcc: Any = None

    def set_twcc(self, ext_id: int) -> None:
        """Record the sender's transport-wide seqs (extension ``ext_id``; 0: stop) for drain_twcc."""
        ffi = fastpath.ffi
        c = self.c
        if ext_id and self._twcc is None:
            self._twcc = (ffi.new("unsigned int[]", TWCC_RING), ffi.new("unsigned int[]", TWCC_RING),
                          ffi.new("double[]", TWCC_RING))
            c.twcc_seqs, c.twcc_ssrcs, c.twcc_times = self._twcc
            c.twcc_cap = TWCC_RING
        c.twcc_id = int(ext_id) if self._twcc is not None else 0

    def drain_twcc(self, recorder: Any) -> None:
        """Hand what the core recorded to ``recorder`` (TwccRecorder.on_packet), in arrival order:
        called before Python records a packet itself and before feedback is built."""
        c = self.c
        n = c.twcc_n
        if n:
            c.twcc_n = 0
            seqs, ssrcs, times = self._twcc
            on_packet = recorder.on_packet
            for i in range(n):
                on_packet(seqs[i], times[i], ssrcs[i])

    def set_srtp(self, owner: Any) -> None:
        """Unprotect with ``owner``'s (an SrtpPair) inbound session; kept alive while set."""
        ffi = fastpath.ffi
        ctx, fn = owner.rx_unprotect_addresses()
        self._srtp_owner = owner
        self.c.srtp_unprotect = ffi.cast("void *", fn)
        self.c.srtp_ctx = ffi.cast("void *", ctx)

    def clear_srtp(self) -> None:
        self.c.srtp_ctx = fastpath.ffi.NULL
        self._srtp_owner = None

    @property
    def gate(self) -> bool:
        return bool(self.c.gate)

    @gate.setter
    def gate(self, value: bool) -> None:
        self.c.gate = 1 if value else 0

    def add_stream(self, stream: "FastRecvStream") -> bool:
        c = self.c
        if stream in self._streams:
            return True
        if c.nstreams >= MAX_STREAMS:
            return False
        c.ssrcs[c.nstreams] = stream.ssrc
        c.streams[c.nstreams] = stream._c
        c.nstreams += 1
        self._streams.append(stream)
        return True

    def remove_stream(self, stream: "FastRecvStream") -> None:
        if stream not in self._streams:
            return
        self._streams.remove(stream)
        c = self.c
        for i, s in enumerate(self._streams):
            c.ssrcs[i] = s.ssrc
            c.streams[i] = s._c
        c.nstreams = len(self._streams)

    def close(self) -> None:
        self.c.nstreams = 0
        self._streams.clear()
        self.clear_srtp()

    def srtp_stats(self) -> dict[str, int]:
        c = self.c
        return {"srtpUnprotected": int(c.srtp_unprotected), "srtpAuthFailures": int(c.srtp_auth_failures),
                "srtpReplayFailures": int(c.srtp_replay_failures), "srtpOtherFailures": int(c.srtp_other_failures)}

    @property
    def srtp_failures(self) -> int:
        c = self.c
        return int(c.srtp_auth_failures + c.srtp_replay_failures + c.srtp_other_failures)


# ---------------------------------------------------------------------------------------------
# sockets


def _decode_addr(raw: bytes) -> tuple:
    family = struct.unpack_from("=H", raw, 0)[0]
    if family == socket.AF_INET6:
        port, flow = struct.unpack_from("!HI", raw, 2)
        scope = struct.unpack_from("=I", raw, 24)[0]
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope)
    port = struct.unpack_from("!H", raw, 2)[0]
    return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)


class RxSocket:
    """The compiled reader of one UdpSocket (see the module docstring). Routes map a remote
    address to a transport's :class:`RxTransport` and the handler of the plaintext RTP the core
    hands back."""

    __slots__ = ("udp", "c", "_bufs", "_lens", "_addrs", "_addrlens", "_out", "_routes", "_handlers",
                 "_keys", "_addr_cache", "installed", "handler_errors", "_loop")

    def __init__(self, udp: Any, batch: int = BATCH) -> None:
        ffi = fastpath.ffi
        batch = max(1, min(BATCH, int(batch)))
        self.udp = udp
        self.c = ffi.new("sr_rx *")
        self._bufs = ffi.new("unsigned char[]", batch * SLOT)
        self._lens = ffi.new("int[]", batch)
        self._addrs = ffi.new("unsigned char[]", batch * ADDR)
        self._addrlens = ffi.new("int[]", batch)
        self._out = ffi.new("unsigned char[]", SLOT + 64)
        c = self.c
        c.fd = -1
        c.batch = batch
        c.bufs, c.lens, c.addrs, c.addrlens, c.out = self._bufs, self._lens, self._addrs, self._addrlens, self._out
        self._routes: Any = ffi.NULL
        self._handlers: list[Callable[[bytes], None]] = []
        self._keys: list[tuple[bytes, RxTransport]] = []
        self._addr_cache: dict[bytes, tuple] = {}
        self.installed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handler_errors = 0

    # ------------------------------------------------------------------ routes
    def set_route(self, addr: tuple, rxt: RxTransport, handler: Callable[[bytes], None]) -> None:
        """Packets from ``addr`` belong to ``rxt`` (replacing the transport's earlier routes)."""
        raw = fastpath._sockaddr(addr)
        keep = [(k, t, h) for (k, t), h in zip(self._keys, self._handlers) if t is not rxt and k != raw]
        keep.append((raw, rxt, handler))
        self._rebuild(keep)

    def remove_routes(self, rxt: RxTransport) -> None:
        keep = [(k, t, h) for (k, t), h in zip(self._keys, self._handlers) if t is not rxt]
        if len(keep) != len(self._keys):
            self._rebuild(keep)

    def _rebuild(self, routes: list) -> None:
        ffi = fastpath.ffi
        arr = ffi.new("sr_route[]", max(1, len(routes)))
        for i, (raw, rxt, _h) in enumerate(routes):
            arr[i].addrlen = len(raw)
            ffi.memmove(arr[i].addr, raw, len(raw))
            arr[i].t = rxt.c
            arr[i].pyid = i
        # the C side switches to the new table at once (no packet is mid-lookup: same thread)
        self.c.routes = arr
        self.c.nroutes = len(routes)
        self.c.maxroutes = len(routes)
        self._routes = arr
        self._keys = [(raw, rxt) for raw, rxt, _h in routes]
        self._handlers = [h for _r, _t, h in routes]

    # ------------------------------------------------------------------ reading
    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the socket from now on (bind_udp's ``compiled_reader``: no asyncio transport)."""
        fd = self.udp._raw.fileno()
        loop.add_reader(fd, self._read)
        self._loop = loop
        self.c.fd = fd
        self.installed = True

    def close(self) -> None:
        fd = int(self.c.fd)
        self.c.fd = -1
        self.c.nroutes = 0
        self._keys, self._handlers = [], []
        if self.installed and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        self.installed = False

    def _addr(self, slot: int) -> tuple:
        raw = fastpath.ffi.buffer(self._addrs + slot * ADDR, self._addrlens[slot])[:]
        addr = self._addr_cache.get(raw)
        if addr is None:
            if len(self._addr_cache) > 1024:
                self._addr_cache.clear()
            addr = self._addr_cache[raw] = _decode_addr(raw)
        return addr

    def _read(self) -> None:
        c = self.c
        c.left = READ_BUDGET
        step = fastpath.lib.sr_rx_step
        buffer = fastpath.ffi.buffer
        udp = self.udp
        while True:
            r = step(c)
            if not r:
                return
            try:
                if r == 1:
                    udp.on_datagram(buffer(c.cur, c.cur_len)[:], self._addr(c.cur_slot))
                elif r == 2:
                    self._handlers[c.cur_route](buffer(c.cur, c.cur_len)[:])
                else:
                    s = _STREAMS.get(c.cur_stream.pyid)
                    if s is not None and s.owner is not None:
                        s.owner.fast_after(s)
            except Exception:  # noqa: BLE001 - nothing may escape into the event loop
                self.handler_errors += 1
                if self.handler_errors % 1000 == 1:
                    logger.exception("udp %s: compiled receive handler failed", getattr(udp, "local_address", ""))

    def stats(self) -> dict[str, int]:
        c = self.c
        return {"received": int(c.received), "receivedBytes": int(c.received_bytes), "batches": int(c.batches),
                "readErrors": int(c.read_errors)}


def rx_socket(udp: Any, batch: int = BATCH) -> RxSocket:
    """The socket's RxSocket (created on first use with ``batch`` datagram slots of 2 KB: a
    worker's shared WebRtcServer socket takes 32, a transport's own socket fewer)."""
    rx = getattr(udp, "fast_rx", None)
    if rx is None:
        rx = udp.fast_rx = RxSocket(udp, batch)
    return rx


# ---------------------------------------------------------------------------------------------
# receive streams

_C_FIELDS = {
    # RecvStream attribute -> sr_rstream field; the ones the core writes on its in-order step
    "_max_seq": "max_seq", "_cycles": "cycles", "_ext_max": "ext_max", "_received": "received",
    "_jitter_q4": "jitter_q4", "_last_transit": "last_transit", "packets": "packets", "bytes": "bytes",
    "last_seq": "last_seq", "last_ts": "last_ts", "last_audio_level": "last_audio_level",
    "last_payload_offset": "last_payload_offset", "last_payload_end": "last_payload_end",
    "mid_value_offset": "mid_value_offset", "last_ext_seq": "last_ext_seq",
}
_BOOL_FIELDS = {"_started": "started", "last_marker": "last_marker", "last_keyframe": "last_keyframe"}
_FLOAT_FIELDS = {"_rate_next": "rate_next", "last_receive_time": "last_receive_time"}


def _int_prop(cname: str) -> property:
    return property(lambda self: int(getattr(self._c, cname)),
                    lambda self, v: setattr(self._c, cname, int(v)))


def _bool_prop(cname: str) -> property:
    return property(lambda self: bool(getattr(self._c, cname)),
                    lambda self, v: setattr(self._c, cname, 1 if v else 0))


def _float_prop(cname: str) -> property:
    return property(lambda self: getattr(self._c, cname),
                    lambda self, v: setattr(self._c, cname, float(v)))


class FastRecvStream(RecvStream):
    """RecvStream whose hot fields live in a C ``sr_rstream`` the receive step updates."""

    __slots__ = ("_c", "_tbuf", "_tview", "pyid", "owner", "key", "fast_ok")

    def __init__(self, *, key: int = 0, owner: Any = None, **kwargs: Any) -> None:
        ffi = fastpath.ffi
        self._c = ffi.new("sr_rstream *")
        self._tbuf = ffi.new("unsigned char[]", _TABLE_SIZE)
        self._tview = memoryview(ffi.buffer(self._tbuf))
        self._c.table = self._tbuf
        super().__init__(**kwargs)
        c = self._c
        c.ssrc = self.ssrc
        c.key = key
        c.clock_rate = float(self.clock_rate)
        for i, v in enumerate(self._pt_table):
            c.pt_table[i] = v
        ffi.memmove(c.ext_table, self._ext_table, 256)
        ffi.memmove(c.twcc_ids, self._twcc_ids, 256)
        slots = bytes(self._slots)
        # a detector the core does not have (VP9, H264): Python receives this stream
        self.fast_ok = len(slots) <= 16 and (self._kf is None or self.codec == "vp8")
        ffi.memmove(c.slots, slots[:16], min(16, len(slots)))
        c.slots_len = len(slots)
        c.mid_slot = 1 if self._mid_slot else 0
        c.al_id = self._al_id
        c.vp8 = 1 if self._kf is not None else 0
        c.gate = 1
        self.key = key
        self.owner = owner
        self.pyid = next(_ids)
        c.pyid = self.pyid
        _STREAMS[self.pyid] = self

    @property
    def _table(self) -> memoryview:
        return self._tview

    @_table.setter
    def _table(self, value: Any) -> None:
        self._tview[:] = bytes(value)

    @property
    def handled(self) -> int:
        """Packets the compiled receive step took end to end."""
        return int(self._c.handled)

    def release(self) -> None:
        _STREAMS.pop(self.pyid, None)
        self.owner = None
        c = self._c
        c.gate = 1
        c.n = 0
        c.cs = fastpath.ffi.NULL


for _name, _cname in _C_FIELDS.items():
    setattr(FastRecvStream, _name, _int_prop(_cname))
for _name, _cname in _BOOL_FIELDS.items():
    setattr(FastRecvStream, _name, _bool_prop(_cname))
for _name, _cname in _FLOAT_FIELDS.items():
    setattr(FastRecvStream, _name, _float_prop(_cname))


class FastTemporalRates(TemporalRates):
    """TemporalRates whose per-TID byte totals and next sample times are C arrays: the receive
    step adds a packet's size to its TID's total, and hands the packet to Python when that TID's
    RateMeter sample is due (so the snapshots are the Python path's)."""

    __slots__ = ("_ctot", "_cnext", "n")

    def __init__(self, layers: int) -> None:
        super().__init__(layers)
        ffi = fastpath.ffi
        self.n = layers
        self._ctot = ffi.new("long long[]", layers)
        self._cnext = ffi.new("double[]", [float("-inf")] * layers)
        self._totals = self._ctot  # type: ignore[assignment]
        self._next = self._cnext  # type: ignore[assignment]

    def add(self, tid: int, size: int, now: float) -> None:
        if 0 <= tid < self.n:
            if now >= self._next[tid]:
                self._next[tid] = self._meters[tid].sample(self._totals[tid], now)
            self._totals[tid] += size
