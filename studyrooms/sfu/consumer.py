"""Consumer: one outgoing copy of a producer toward one recv transport (mediasoup's Simple- and
SimulcastConsumer).

Created paused (mediasoup-client resumes it once its side is ready). On a WebRtcTransport the
layers (spatial and temporal) and whether video flows at all under bandwidth pressure are decided
by the transport's BandwidthAllocator (``apply_allocation``); elsewhere by ``_update_target_layer``. Resuming asks the producer
for a keyframe and the SendStream forwards from the next keyframe on, keeping sequence numbers and
timestamps continuous across pause/resume and simulcast layer switches. Per packet the work is
``forward``: a few attribute checks, ``SendStream.send`` (rewrite in place + copy) and the
transport's ``send_rtp`` (protect + sendto).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError, InvalidStateError
from ..events import EventEmitter
from ..media.recv_stream import RecvStream
from ..media.send_stream import SendStream
from ..media.vp8 import Vp8PictureRewriter, parse_vp8_descriptor
from .parameters import consumer_stream_params

if TYPE_CHECKING:
    from .producer import Producer
    from .router import Router
    from .transport import Transport

logger = logging.getLogger("studyrooms.simulcast")

LAYER_ACTIVE_WINDOW_S = 2.0
LAYER_DWELL_S = 3.0


class Consumer:
    """Besides the client's pause and the producer's pause, two plain attributes set by the room
    (worker API ``set_consumers_forwarding``) say what the server forwards to this receiver:

    - ``forwardable``: False while the room keeps this consumer out of its receiver's last-N video
      set or out of the room's selected audio streams. A server-side pause orthogonal to the other
      two: no packets leave; becoming forwardable again re-bases sequence numbers and timestamps
      (continuous for the receiver) and, for video, waits for a keyframe it asks for.
    - ``max_height``: cap (pixels) on the simulcast layer chosen for this consumer (thumbnails);
      None for no cap. Layer heights come from the producer's keyframes.

    They are the inputs a per-receiver bandwidth allocator reads (read them, do not duplicate
    them); until one exists the consumer's own layer selection applies the cap.
    """

    forwardable: bool = True
    max_height: int | None = None
    send_stream_class: type = SendStream
    fast = False  # FastConsumer: forwarded by the compiled core (Producer drives it)

    def __init__(
        self,
        router: "Router",
        transport: "Transport",
        consumer_id: str,
        producer: "Producer",
        *,
        rtp_parameters: dict,
        paused: bool = True,
        app_data: dict | None = None,
        buffer_packets: int = 256,
    ) -> None:
        self._init_common(router, transport, consumer_id, producer, rtp_parameters, app_data, paused)
        params = consumer_stream_params(rtp_parameters)
        self.ssrc = params.ssrc
        self.rtx_ssrc = params.rtx_ssrc
        self.mid = rtp_parameters.get("mid")
        self.type = "simulcast" if len(producer.stream_params) > 1 else "simple"
        self.send_stream = self.send_stream_class(
            ssrc=params.ssrc,
            payload_type=params.payload_type,
            clock_rate=params.clock_rate,
            kind=self.kind,
            codec=params.codec,
            mid=self.mid,
            rtx_ssrc=params.rtx_ssrc,
            rtx_payload_type=params.rtx_payload_type,
            # no retransmission history where the consumer did not negotiate NACK (e.g. Opus)
            buffer_packets=buffer_packets if params.nack else 1,
            keyframe_gating=self.kind == "video",
            cname=(rtp_parameters.get("rtcp") or {}).get("cname", ""),
            clock=self.clock,
        )
        # Simulcast state: encodings are indexed lowest (0) to highest.
        layers = len(producer.stream_params)
        self.preferred_spatial_layer = layers - 1
        self.preferred_temporal_layer = -1
        self.target_layer = layers - 1 if self.type == "simulcast" else 0
        self.current_layer = -1 if self.type == "simulcast" else 0
        self._vp8 = Vp8PictureRewriter() if self.type == "simulcast" and params.codec == "vp8" else None
        self._layer_changed_at = float("-inf")
        # bandwidth allocation (BandwidthAllocator): temporal layer kept (-1 = all), pause, reason
        self.temporal_layer_count = self._temporal_layers()
        self.target_temporal = -1
        self.current_temporal = -1
        self.allocation_reason = "new"
        self.tl_dropped = 0
        if self._vp8 is None and params.codec == "vp8" and self.temporal_layer_count > 1:
            self._vp8 = Vp8PictureRewriter()  # temporal-layer dropping keeps PictureID continuous
        self._switched = False  # the next packet is the first after a layer switch (VP8 rewriter)
        self._active = False
        self._update_active()

    def _init_common(self, router: "Router", transport: "Transport", consumer_id: str, producer: "Producer",
                     rtp_parameters: dict, app_data: dict | None, paused: bool) -> None:
        """What every kind of consumer (simple, simulcast, pipe) holds."""
        self.id = consumer_id
        self.router = router
        self.transport = transport
        self.producer = producer
        self.kind = producer.kind
        self.rtp_parameters = rtp_parameters
        self.app_data = dict(app_data or {})
        self.clock = transport.clock
        self.closed = False
        self.paused = paused
        self.producer_paused = producer.paused
        self.priority = 1
        self.bwe_paused = False
        self.observer = EventEmitter()  # "close", "pause", "resume", "layerschange"

    # ------------------------------------------------------------------ hot path
    def forward(self, pkt: bytearray, index: int, stream: RecvStream, out: list) -> None:
        """Rewrite one ingress packet for this consumer and append ``(send, packet)`` to ``out``."""
        if not self._active:
            return
        if index != self.current_layer:
            if index != self.target_layer:
                return
            if not stream.last_keyframe:
                # waiting for a keyframe of the target layer: ask again (the producer throttles to one
                # request per interval). The first request may have gone nowhere (the encoding had
                # no stream yet) or been ignored by the sender; nothing else would ask again for a
                # layer no other consumer switches to (mediasoup retries the same way).
                self.producer.request_key_frame(index)
                return
            self._switch_layer(index)
        if self.target_temporal != self.current_temporal or self.current_temporal >= 0:
            if self._drop_temporal(pkt, stream):
                return
        if self._vp8 is not None:
            # the ingress buffer is shared by every consumer of the producer: rewrite a private copy
            pkt = bytearray(pkt)
            self._vp8.rewrite(pkt, stream.last_payload_offset, stream.last_payload_end, self._switched)
            self._switched = False
        data = self.send_stream.send(
            pkt, stream.mid_value_offset, stream.last_seq, stream.last_ts, stream.last_keyframe, stream.ssrc,
            stream.last_payload_end - stream.last_payload_offset, stream.last_receive_time,
            # a VP8-rewritten private copy differs from the shared snapshot: keep its own bytes
            stream.snapshot if self._vp8 is None else None,
        )
        if data is None:
            # gated: waiting for a keyframe; the producer throttles these requests
            self.producer.request_key_frame(index)
            return
        out.append((self.transport.send_rtp, data))

    def _drop_temporal(self, pkt: bytearray, stream: RecvStream) -> bool:
        """VP8 temporal-layer dropping: True to drop this packet (TID above the kept layer). The kept
        layer changes at a frame start only: down at any frame, up at a TL0 frame. Sequence numbers
        and PictureID stay continuous for the receiver."""
        desc = parse_vp8_descriptor(pkt, stream.last_payload_offset, stream.last_payload_end)
        if desc is None:
            return False
        picture_id, bits, _tl0, tid, _kf, _ln = desc
        if tid < 0:
            return False
        b0 = pkt[stream.last_payload_offset]
        if b0 & 0x10 and not b0 & 0x07:  # S=1, partition 0: a frame starts
            want = self.target_temporal
            cur = self.current_temporal
            if want != cur and ((want >= 0 and (cur < 0 or want < cur)) or tid == 0):
                self.current_temporal = want
        keep = self.current_temporal
        if keep < 0 or tid <= keep:
            return False
        self.tl_dropped += 1
        self.send_stream.skip_packet(stream.last_seq)
        if self._vp8 is not None and picture_id >= 0:
            self._vp8.skip_picture(picture_id, bits)
        return True

    def _switch_layer(self, index: int) -> None:
        previous = self.current_layer
        self.current_layer = index
        self._switched = True
        self.send_stream.request_sync()
        if previous != index:
            self.observer.emit("layerschange", {"spatialLayer": index, "temporalLayer": self._temporal_layers() - 1})

    def _temporal_layers(self) -> int:
        mode = (self.rtp_parameters.get("encodings") or [{}])[0].get("scalabilityMode") or "L1T1"
        try:
            return int(mode.split("T", 1)[1].rstrip("_KEY"))
        except (IndexError, ValueError):
            return 1

    # ------------------------------------------------------------------ feedback from the remote
    def all_ssrcs(self) -> tuple[int, ...]:
        """Every SSRC this consumer sends (RTCP feedback about them is routed here)."""
        return tuple(s for s in (self.ssrc, self.rtx_ssrc) if s)

    def on_nack(self, seqs: list[int], ssrc: int = 0) -> None:
        if self.closed:
            return
        send = self.transport.send_rtp
        for packet in self.send_stream.on_nack(seqs):
            send(packet)

    def on_key_frame_request(self, fir: bool = False, ssrc: int = 0) -> None:
        if fir:
            self.send_stream.on_fir()
        else:
            self.send_stream.on_pli()
        if self._active:
            self.producer.request_key_frame(self.current_layer if self.current_layer >= 0 else self.target_layer)

    def on_receiver_report(self, block, now: float) -> None:
        _ssrc, fraction_lost, cumulative_lost, highest_seq, jitter, lsr, dlsr = block
        if _ssrc == self.ssrc:
            self.send_stream.on_receiver_report(fraction_lost, cumulative_lost, highest_seq, jitter, lsr, dlsr, now)

    def sender_report(self, wall: float, now: float) -> bytes | None:
        """RTCP tick: re-evaluate the simulcast layer (also while nothing was sent yet: a consumer
        still waiting for its first keyframe asks again), then the SR once packets went out."""
        if self.closed:
            return None
        self._update_target_layer(now)
        if not self.send_stream.packets:
            return None
        return self.send_stream.build_sr(wall, now)

    # ------------------------------------------------------------------ simulcast layer choice
    def _update_target_layer(self, now: float, force: bool = False) -> None:
        """Without an allocator (plain transports): pick the highest active encoding not above the preferred one (re-evaluated on the RTCP tick
        and on preference changes). The receiver's REMB caps it further: the estimate covers every
        video consumer of the transport, so each gets its share; going up needs 25% headroom, and
        bandwidth-driven changes happen at most every LAYER_DWELL_S so layers do not flap (each
        switch costs a keyframe)."""
        allocator = getattr(self.transport, "allocator", None)
        if allocator is not None:
            allocator.schedule(0.0)
            return
        if self.type != "simulcast" or not self._active:
            return
        active = self.producer.active_stream_indexes(now, LAYER_ACTIVE_WINDOW_S)
        if not active:
            return
        candidates = [i for i in active if i <= self.preferred_spatial_layer] or [min(active)]
        if self.max_height is not None:
            candidates = self._under_max_height(candidates)
        remb = self.transport.rtcp.remote_remb_bps
        if remb:
            videos = sum(1 for c in self.transport.consumers.values() if c.kind == "video") or 1
            budget = remb / videos
            streams = self.producer.streams
            fitting = [
                i for i in candidates
                if streams[i] is not None
                and streams[i].bitrate_bps(now) * (1.25 if i > self.current_layer else 1.0) <= budget
            ]
            candidates = fitting or [min(candidates)]
        target = max(candidates)
        current_ok = self.current_layer in active
        if target == self.target_layer and current_ok:
            return
        if not force and current_ok and now - self._layer_changed_at < LAYER_DWELL_S:
            return
        self.target_layer = target
        self._layer_changed_at = now
        if target != self.current_layer:
            self.producer.request_key_frame(target)

    def _under_max_height(self, candidates: list[int]) -> list[int]:
        """The layers whose (keyframe-measured) height fits ``max_height``; the lowest candidate
        always stays (a capped receiver still gets video). An unmeasured layer does not fit."""
        heights = self.producer.layer_heights()
        cap = self.max_height
        fitting = [i for i in candidates if heights[i] is not None and heights[i] <= cap]
        return fitting or [min(candidates)]

    def apply_allocation(self, spatial: int, temporal: int, reason: str) -> None:
        """The allocator's decision: spatial layer (-1 = paused for bandwidth), temporal layer to keep
        (-1 or the top one = all) and why. A spatial change asks for a keyframe of the new layer
        (throttled by the producer); switching happens on that keyframe."""
        self.allocation_reason = reason
        paused = spatial < 0
        if paused != self.bwe_paused:
            self.bwe_paused = paused
            self._update_active()
        if paused:
            return
        self.target_temporal = -1 if temporal >= self.temporal_layer_count - 1 else temporal
        if self.type == "simulcast" and spatial != self.target_layer:
            self.target_layer = spatial
            self._layer_changed_at = self.clock.now()
            if spatial != self.current_layer and self._active:
                self.producer.request_key_frame(spatial)

    def set_priority(self, priority: int) -> None:
        """mediasoup's setPriority: 1..255, higher gets bandwidth first."""
        self._check_open()
        if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 255:
            raise InvalidRequestError("priority must be an integer 1..255")
        self.priority = priority
        allocator = getattr(self.transport, "allocator", None)
        if allocator is not None:
            allocator.schedule(0.0)

    # ------------------------------------------------------------------ control
    def _update_active(self) -> None:
        was = self._active
        self._active = (
            not self.closed and not self.paused and not self.producer_paused and self.forwardable
            and self.transport.media_ready and not self.bwe_paused
        )
        if self._active != was or not self._active:
            allocator = getattr(self.transport, "allocator", None)
            if allocator is not None and not self.closed:
                allocator.schedule(0.0)
        if self._active and not was:
            self.send_stream.request_sync()
            if self.type == "simulcast":
                self.current_layer = -1
                if getattr(self.transport, "allocator", None) is None:
                    self._update_target_layer(self.clock.now(), force=True)
            self.producer.request_key_frame(self.target_layer)

    def transport_ready(self) -> None:
        self._update_active()

    def pause(self) -> None:
        self._check_open()
        self.paused = True
        self._update_active()
        self.observer.emit("pause")

    def resume(self) -> None:
        self._check_open()
        self.paused = False
        self._update_active()
        self.observer.emit("resume")

    def set_forwarding(self, forwardable: bool | None = None, max_height: int | None = -1,
                       on_stage: bool | None = None, speaker: bool | None = None,
                       speaker_recency: int | None = None) -> None:
        """The room's decision for this consumer (``max_height`` -1: unchanged, None: no cap;
        ``on_stage``: the receiver put this producer's participant on stage; ``speaker``: that
        participant is the room's active speaker; ``speaker_recency``: the room's speaker order,
        higher = spoke more recently). A transport with a bandwidth allocator gets the same inputs,
        and the allocator picks the layers. None leaves an input unchanged."""
        self._check_open()
        allocator = getattr(self.transport, "allocator", None)
        if allocator is not None:
            inp = allocator.inputs(self.id)
            if forwardable is not None:
                inp.forwardable = forwardable
            if max_height != -1:
                inp.max_height = max_height
            if on_stage is not None:
                inp.on_stage = on_stage
            if speaker is not None:
                inp.speaker = speaker
            if speaker_recency is not None:
                inp.speaker_recency = speaker_recency
            allocator.schedule(0.0)
        if max_height != -1 and max_height != self.max_height:
            self.max_height = max_height
            self._update_target_layer(self.clock.now(), force=True)
        if forwardable is not None and forwardable != self.forwardable:
            self.forwardable = forwardable
            self._update_active()

    def producer_paused_changed(self, paused: bool) -> None:
        self.producer_paused = paused
        self._update_active()
        self.router._consumer_event("consumer-paused" if paused else "consumer-resumed", self)

    def set_preferred_layers(self, spatial_layer: int, temporal_layer: int | None = None) -> None:
        self._check_open()
        if self.type != "simulcast":
            raise InvalidRequestError("preferred layers only apply to simulcast consumers")
        layers = len(self.producer.stream_params)
        if not 0 <= spatial_layer < 16:
            raise InvalidRequestError("spatialLayer out of range")
        self.preferred_spatial_layer = min(spatial_layer, layers - 1)
        if temporal_layer is not None:
            self.preferred_temporal_layer = temporal_layer
        self._update_target_layer(self.clock.now(), force=True)

    def request_key_frame(self) -> None:
        self._check_open()
        if self._active:
            self.producer.request_key_frame(self.current_layer if self.current_layer >= 0 else self.target_layer)

    def _check_open(self) -> None:
        if self.closed:
            raise InvalidStateError(f"consumer {self.id} is closed")

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self._active = False
        self.producer.remove_consumer(self)
        self.transport.remove_consumer(self)
        allocator = getattr(self.transport, "allocator", None)
        if allocator is not None:
            allocator.remove(self.id)
        forget = getattr(self.transport, "forget_tx_ssrc", None)
        if forget is not None:  # free the outbound SRTP streams of our SSRCs (no leak under churn)
            for ssrc in self.all_ssrcs():
                forget(ssrc)
        self.router._consumer_closed(self, reason)
        self.observer.emit("close", reason)

    # ------------------------------------------------------------------ introspection
    @property
    def score(self) -> dict:
        return {"score": self.send_stream.score, "producerScore": self.producer.score}

    @property
    def current_layers(self) -> dict | None:
        if self.type != "simulcast" or self.current_layer < 0:
            return None
        t = self.current_temporal if self.current_temporal >= 0 else self.temporal_layer_count - 1
        return {"spatialLayer": self.current_layer, "temporalLayer": t}

    def allocation(self) -> dict[str, Any]:
        """What the bandwidth allocator chose for this consumer, and why."""
        return {
            "priority": self.priority,
            "pausedForBandwidth": self.bwe_paused,
            "targetSpatialLayer": self.target_layer,
            "targetTemporalLayer": self.target_temporal if self.target_temporal >= 0
            else self.temporal_layer_count - 1,
            "currentLayers": self.current_layers,
            "reason": self.allocation_reason,
            "temporalDropped": self.tl_dropped,
        }

    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "producerId": self.producer.id,
            "kind": self.kind,
            "type": self.type,
            "paused": self.paused,
            "producerPaused": self.producer_paused,
            "forwardable": self.forwardable,
            "maxHeight": self.max_height,
            "closed": self.closed,
            "transportId": self.transport.id,
            "rtpParameters": self.rtp_parameters,
            "preferredLayers": {"spatialLayer": self.preferred_spatial_layer}
            if self.type == "simulcast"
            else None,
            "currentLayers": self.current_layers,
            "priority": self.priority,
            "allocation": self.allocation() if self.kind == "video" else None,
            "appData": self.app_data,
        }

    def get_stats(self) -> list[dict]:
        stats = self.send_stream.to_stats(self.clock.now())
        stats.update({"type": "outbound-rtp", "consumerId": self.id, "kind": self.kind})
        if self.kind == "video":
            stats["allocation"] = self.allocation()
        return [stats]
