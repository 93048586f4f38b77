"""PipeConsumer: a producer's every encoding, sent over a PipeTransport to a router on another
worker (mediasoup's PipeConsumer). There the same producer id is produced again from these
parameters, so consumers on that worker are served without the origin worker sending N copies.

Each encoding keeps its own SSRC (the consumable "mapped" SSRC) and gets its own SendStream, so
sequence numbers stay continuous per encoding across pause/resume; no MID is written (pipe
parameters carry none) and keyframe gating applies per encoding as for any consumer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..media.recv_stream import RecvStream
from ..media.send_stream import SendStream
from .consumer import Consumer
from .parameters import consumer_stream_params

if TYPE_CHECKING:
    from .producer import Producer
    from .router import Router
    from .transport import Transport


class PipeConsumer(Consumer):
    def __init__(  # not Consumer.__init__: one SendStream per encoding instead of one
        self,
        router: "Router",
        transport: "Transport",
        consumer_id: str,
        producer: "Producer",
        *,
        rtp_parameters: dict,
        app_data: dict | None = None,
        buffer_packets: int = 256,
    ) -> None:
        self._init_common(router, transport, consumer_id, producer, rtp_parameters, app_data, paused=False)
        self.type = "pipe"
        self.mid = None
        base = consumer_stream_params(rtp_parameters)
        cname = (rtp_parameters.get("rtcp") or {}).get("cname", "")
        self.streams = [
            SendStream(
                ssrc=encoding["ssrc"],
                payload_type=base.payload_type,
                clock_rate=base.clock_rate,
                kind=self.kind,
                codec=base.codec,
                mid=None,
                buffer_packets=buffer_packets if base.nack else 1,  # pipes negotiate no NACK by default
                keyframe_gating=self.kind == "video",
                cname=cname,
                clock=self.clock,
            )
            for encoding in rtp_parameters["encodings"]
        ]
        self._index_by_ssrc = {stream.ssrc: index for index, stream in enumerate(self.streams)}
        self.send_stream = self.streams[0]
        self.ssrc = self.streams[0].ssrc
        self.rtx_ssrc = None
        self.preferred_spatial_layer = len(self.streams) - 1
        self.target_layer = self.current_layer = 0
        self._vp8 = None
        self._active = False
        self._update_active()

    # ------------------------------------------------------------------ hot path
    def forward(self, pkt: bytearray, index: int, stream: RecvStream, out: list) -> None:
        """Rewrite one ingress packet for this consumer and append ``(send, packet)`` to ``out``."""
        if not self._active or index >= len(self.streams):
            return
        data = self.streams[index].send(
            pkt, stream.mid_value_offset, stream.last_seq, stream.last_ts, stream.last_keyframe, stream.ssrc,
            stream.last_payload_end - stream.last_payload_offset, stream.last_receive_time, stream.snapshot,
        )
        if data is None:
            self.producer.request_key_frame(index)
            return
        out.append((self.transport.send_rtp, data))

    # ------------------------------------------------------------------ feedback
    def all_ssrcs(self) -> tuple[int, ...]:
        return tuple(self._index_by_ssrc)

    def on_nack(self, seqs: list[int], ssrc: int = 0) -> None:
        index = self._index_by_ssrc.get(ssrc)
        if self.closed or index is None:
            return
        for packet in self.streams[index].on_nack(seqs):
            self.transport.send_rtp(packet)

    def on_key_frame_request(self, fir: bool = False, ssrc: int = 0) -> None:
        index = self._index_by_ssrc.get(ssrc)
        if index is None:
            return
        if fir:
            self.streams[index].on_fir()
        else:
            self.streams[index].on_pli()
        if self._active:
            self.producer.request_key_frame(index)

    def on_receiver_report(self, block, now: float) -> None:
        index = self._index_by_ssrc.get(block[0])
        if index is not None:
            self.streams[index].on_receiver_report(*block[1:], now)

    def sender_report(self, wall: float, now: float) -> bytes | None:
        if self.closed:
            return None
        reports = [s.build_sr(wall, now) for s in self.streams if s.packets]
        reports = [r for r in reports if r]
        return b"".join(reports) if reports else None

    def request_key_frame(self) -> None:
        self._check_open()
        if self._active:
            self.producer.request_key_frame(-1)

    # ------------------------------------------------------------------ control
    def _update_active(self) -> None:
        was = self._active
        self._active = (
            not self.closed and not self.paused and not self.producer_paused and self.transport.media_ready
        )
        if self._active and not was:
            for stream in self.streams:
                stream.request_sync()
            self.producer.request_key_frame(-1)

    def get_stats(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        out = []
        for stream in self.streams:
            stats = stream.to_stats(now)
            stats.update({"type": "outbound-rtp", "consumerId": self.id, "kind": self.kind})
            out.append(stats)
        return out


__all__ = ["PipeConsumer"]
