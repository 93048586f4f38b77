"""FastConsumer: a Consumer forwarded by the compiled fan-out core (studyrooms.media.fastpath).

Same control logic as Consumer (pause/resume, layer choice, RTCP, NACK); only the per-packet work
moves to C. The state the packet path and Python share (active, current/target layer, the
"switched" flag) lives in the C struct: these attributes read and write it, so Python and the
core never disagree. ``forward`` (the Python path) still works on it and is used by tests.
"""

from __future__ import annotations

from typing import Any

from ..media.fastpath import FastSendStream
from .consumer import Consumer


def _c_int(cname: str) -> property:
    def get(self: "FastConsumer") -> int:
        return int(getattr(self.send_stream.cell, cname))

    def put(self: "FastConsumer", value: Any) -> None:
        setattr(self.send_stream.cell, cname, int(value))

    return property(get, put)


def _c_bool(cname: str) -> property:
    def get(self: "FastConsumer") -> bool:
        return bool(getattr(self.send_stream.cell, cname))

    def put(self: "FastConsumer", value: Any) -> None:
        setattr(self.send_stream.cell, cname, 1 if value else 0)

    return property(get, put)


class FastConsumer(Consumer):
    send_stream_class = FastSendStream
    fast = True

    current_layer = _c_int("current_layer")
    target_layer = _c_int("target_layer")
    _active = _c_bool("active")
    _switched = _c_bool("switched")
    # VP8 temporal-layer dropping (the allocator writes target_temporal; the core drops and counts)
    target_temporal = _c_int("target_temporal")
    current_temporal = _c_int("current_temporal")
    tl_dropped = _c_int("tl_dropped")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_stream.cell.vp8 = 1 if self._vp8 is not None else 0
        self.send_stream.attach_transport(self.transport.fast_cell)

    def fast_switched(self) -> None:
        """The core switched this consumer to a new layer (it already re-synced the stream)."""
        self.observer.emit(
            "layerschange", {"spatialLayer": self.current_layer, "temporalLayer": self._temporal_layers() - 1}
        )

    def fast_rate_sample(self, packet_len: int, now: float) -> None:
        ss = self.send_stream
        ss._rate_next = ss._rate.sample(ss.bytes - packet_len, now)
