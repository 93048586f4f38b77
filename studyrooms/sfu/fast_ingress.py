"""The producer's side of the compiled receive step (studyrooms.media.ingress).

A producer on a transport with ``fast_rx`` keeps its encodings in FastRecvStreams registered in the
transport's SSRC table. The core takes a stream's packets only while its ``gate`` is open: no NACK
pending or keyframe owed, producer not paused or closed, every consumer compiled, no per-TID rate
measurement in Python (per-TID rates are C-backed: FastTemporalRates), and a keyframe detector the core has (VP8, or none for audio). :func:`sync` recomputes
the gate and hands the core the producer's fan-out (consumer array, events, histories); the
producer calls it whenever any of those change and after every packet Python received itself.
:func:`after` does the Python half of a packet the core forwarded (Producer.receive_rtp's tail).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..media import fastpath
from ..media.ingress import FastRecvStream, FastTemporalRates

if TYPE_CHECKING:
    from .producer import Producer


def sync(producer: "Producer", index: int) -> None:
    stream = producer.streams[index] if 0 <= index < len(producer.streams) else None
    if not isinstance(stream, FastRecvStream):
        return
    c = stream._c
    fan = producer._fan
    ffi = fastpath.ffi
    if fan is None or fan._n == 0:
        c.n = 0
        c.cs = ffi.NULL
        c.events = ffi.NULL
        c.store = 0
        c.hist = ffi.NULL
    else:
        c.cs = fan._arr
        c.events = fan._events
        c.n = fan._n
        c.store = 1 if fan.history_packets > 1 else 0
        h = fan._hists.get(index)
        c.hist = h.c if h is not None else ffi.NULL
    temporal = producer._temporal[index] if producer._temporal is not None else None
    if isinstance(temporal, FastTemporalRates):
        c.tl_totals, c.tl_next, c.tl_n = temporal._ctot, temporal._cnext, temporal.n
    closed = (not stream.fast_ok or producer.closed or producer.paused or bool(producer._slow)
              or (temporal is not None and not isinstance(temporal, FastTemporalRates))
              or stream.keyframe_required
              or (producer._nack_enabled and bool(stream.missing)))
    c.gate = 1 if closed else 0


def sync_all(producer: "Producer") -> None:
    for index, stream in enumerate(producer.streams):
        if isinstance(stream, FastRecvStream):
            sync(producer, index)


def after(producer: "Producer", stream: FastRecvStream) -> None:
    """The core forwarded ``stream``'s packet; its fan-out reported what Python must do."""
    c = stream._c
    key = stream.key
    fan = producer._fan
    if fan is None:
        return
    if c.store and c.hist == fastpath.ffi.NULL and c.sent:
        fan.history(key)  # first packet of this encoding sent: keep the next ones
        sync(producer, key)
    for _ in range(c.gated):  # as many requests as the Python path makes (throttled)
        producer.request_key_frame(key)
    size = c.out_len
    for i in range(c.nev):
        ev = fan.event(i)
        consumer = fan.consumers[ev >> 2]
        if ev & 1:
            consumer.fast_switched()
        if ev & 2:
            consumer.fast_rate_sample(size, stream.last_receive_time)


def release(producer: "Producer") -> None:
    rx = producer.transport.fast_rx
    for stream in producer.streams:
        if isinstance(stream, FastRecvStream):
            if rx is not None:
                rx.remove_stream(stream)
            stream.release()


def level_sums(producer: "Producer") -> tuple[int, int]:
    """Audio-level (sum, count) the core added since the last reset."""
    total = count = 0
    for stream in producer.streams:
        if isinstance(stream, FastRecvStream):
            total += stream._c.level_sum
            count += stream._c.level_count
    return total, count


def reset_levels(producer: "Producer", which: str) -> None:
    for stream in producer.streams:
        if isinstance(stream, FastRecvStream):
            setattr(stream._c, which, 0)


def temporal_rates(producer: "Producer", layers: int) -> FastTemporalRates:
    return FastTemporalRates(layers)


def new_stream(producer: "Producer", index: int, **kwargs: Any) -> FastRecvStream:
    stream = FastRecvStream(key=index, owner=producer, **kwargs)
    rx = producer.transport.fast_rx
    if rx is None or not rx.add_stream(stream):
        stream.fast_ok = False
    return stream
