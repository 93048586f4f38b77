"""Producer: one incoming media source (mediasoup's Producer).

The client's rtpParameters arrive in the client's payload types and header-extension ids; they
were validated and mapped to the router's numbering by ortc (see Router.produce). Per encoding a
RecvStream (studyrooms.media) normalises every packet once — router PT, router extension ids, a
reserved MID slot — and tracks sequence numbers, loss, jitter and NACKs. The normalised packet
then goes to every consumer, each of which rewrites it in place and sends it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import InvalidStateError
from ..events import EventEmitter
from ..media.fastpath import Fanout
from ..media.keyframe import KeyFrameRequestThrottle
from ..media.rate import TemporalRates
from ..media.recv_stream import RecvStream
from ..media.rtcp import build_fir, build_pli
from ..media.vp8 import parse_vp8_descriptor, vp8_keyframe_height
from . import fast_ingress, ortc
from .parameters import producer_stream_params
from .rtcp_router import SFU_RTCP_SSRC
from .supported_capabilities import AUDIO_LEVEL_URI, MID_URI, RID_URI, RRID_URI, TRANSPORT_CC_URI

if TYPE_CHECKING:
    from .consumer import Consumer
    from .router import Router
    from .transport import Transport

logger = logging.getLogger("studyrooms.rtp")


class Producer:
    def __init__(
        self,
        router: "Router",
        transport: "Transport",
        producer_id: str,
        *,
        kind: str,
        rtp_parameters: dict,
        rtp_mapping: dict,
        consumable_rtp_parameters: dict,
        app_data: dict | None = None,
        paused: bool = False,
        keyframe_request_interval_s: float = 1.0,
        producer_type: str | None = None,
    ) -> None:
        self.id = producer_id
        self.router = router
        self.transport = transport
        self.kind = kind
        self.rtp_parameters = rtp_parameters
        self.rtp_mapping = rtp_mapping
        self.consumable_rtp_parameters = consumable_rtp_parameters
        self.app_data = dict(app_data or {})
        self.paused = paused
        self.closed = False
        self.clock = transport.clock
        self.observer = EventEmitter()  # "close", "pause", "resume", "score"
        self.stream_params = producer_stream_params(rtp_parameters, rtp_mapping)
        self.type = producer_type or ("simulcast" if len(self.stream_params) > 1 else "simple")
        self.source = self.app_data.get("source") or ("mic" if kind == "audio" else "camera")

        client_ext = {e["uri"]: e["id"] for e in rtp_parameters.get("headerExtensions") or []}
        self.listener_ext_ids = (client_ext.get(MID_URI), client_ext.get(RID_URI), client_ext.get(RRID_URI))
        self._ext_id_map = ortc.get_producer_header_extension_mapping(
            rtp_parameters, router.rtp_capabilities, kind
        )
        router_ext = {
            e["uri"]: e["preferredId"]
            for e in router.rtp_capabilities.get("headerExtensions", [])
            if e.get("kind") == kind
        }
        self._router_mid_id = router_ext.get(MID_URI)
        # a transport-wide seq slot in every normalised packet (egress WebRtcTransports stamp it);
        # the sender's own seq is recorded by this transport for its feedback toward the sender
        self._router_twcc_id = router_ext.get(TRANSPORT_CC_URI)
        bwe = getattr(transport, "bwe", None)
        if bwe is not None and client_ext.get(TRANSPORT_CC_URI):
            bwe.recorder.ext_id = client_ext[TRANSPORT_CC_URI]
            refresh = getattr(transport, "refresh_fast_rx", None)
            if refresh is not None:
                refresh()  # the compiled receive step records the sender's transport-wide seqs too
        self._router_audio_level_id = router_ext.get(AUDIO_LEVEL_URI) if kind == "audio" else None
        feedback = set()
        for codec in rtp_parameters.get("codecs", []):
            for fb in codec.get("rtcpFeedback") or []:
                feedback.add((fb.get("type"), fb.get("parameter") or ""))
        self._nack_enabled = kind == "video" and ("nack", "") in feedback
        self._use_fir = ("nack", "pli") not in feedback and ("ccm", "fir") in feedback
        self._fir_seq = 0

        # the compiled receive step (media/ingress.py, sfu/fast_ingress.py) when the transport has one
        self._fast_rx = transport.fast_rx is not None
        self._level_sum = 0
        self._level_count = 0
        self.streams: list[RecvStream | None] = [
            self._make_stream(index, params.ssrc) if params.ssrc else None
            for index, params in enumerate(self.stream_params)
        ]
        self._throttles = [KeyFrameRequestThrottle(keyframe_request_interval_s) for _ in self.stream_params]
        # per encoding, the measured bitrate of each VP8 temporal layer (the allocator's rung prices)
        layers = temporal_layer_count(rtp_parameters)
        vp8 = any((c.get("mimeType") or "").lower() == "video/vp8" for c in rtp_parameters.get("codecs") or [])
        self._temporal: list[TemporalRates] | None = (
            [(fast_ingress.temporal_rates(self, layers) if self._fast_rx else TemporalRates(layers))
             for _ in self.stream_params] if kind == "video" and vp8 and layers > 1 else None)
        self._deferred_keyframe: list[Any] = [None] * len(self.stream_params)
        self._consumers: tuple["Consumer", ...] = ()
        self._fan: Fanout | None = None  # the compiled core's view of the FastConsumers
        self._histories: dict = {}  # encoding -> fastpath.History (kept while the producer lives)
        self._slow: tuple["Consumer", ...] = ()  # consumers forwarded in Python
        self._out: list = []  # (send, packet) of one ingress packet, sent after the rewrites
        self._consumer_set: dict[str, "Consumer"] = {}
        # active speaker sampling: sum/count of audio levels since the last observer tick
        self.level_sum = 0
        self.level_count = 0
        if self._fast_rx:
            self.receive_rtp = self._receive_rtp_then_sync  # type: ignore[method-assign]
            fast_ingress.sync_all(self)
        self.keyframe_requests_sent = 0
        self.score = 10
        # frame height per encoding, read from its VP8 keyframes (consumers' max_height cap)
        self._heights: list[int | None] = [None] * len(self.stream_params)
        self._measure_heights = kind == "video" and bool(self.stream_params) and self.stream_params[0].codec == "vp8"

    # ------------------------------------------------------------------ streams
    def _make_stream(self, index: int, ssrc: int) -> RecvStream:
        params = self.stream_params[index]
        make: Any = RecvStream
        if self._fast_rx:
            def make(**kwargs: Any) -> RecvStream:
                return fast_ingress.new_stream(self, index, **kwargs)
        return make(
            ssrc=ssrc,
            kind=self.kind,
            codec=params.codec,
            clock_rate=params.clock_rate,
            payload_type_map=params.payload_type_map,
            ext_id_map=self._ext_id_map,
            reserve_mid_ext_id=self._router_mid_id,
            audio_level_ext_id=self._router_audio_level_id,
            rtx_ssrc=params.rtx_ssrc,
            rtx_payload_type=params.rtx_payload_type,
            rid=params.rid,
            nack_enabled=self._nack_enabled,
            clock=self.clock,
            reserve_twcc_ext_id=self._router_twcc_id,
        )

    def key_for_rid(self, rid: str | None, rrid: str | None) -> int | None:
        """Listener support: encoding index for a RID (media) or repaired RID (RTX, negative key)."""
        for index, params in enumerate(self.stream_params):
            if rid is not None and params.rid == rid:
                return index
            if rrid is not None and params.rid == rrid:
                return ~index
        return None

    def stream_learned(self, key: int, ssrc: int) -> None:
        """The listener learned an SSRC for an encoding announced by RID only."""
        index = key if key >= 0 else ~key
        if key >= 0 and self.streams[index] is None:
            self.streams[index] = self._make_stream(index, ssrc)
            if self._fast_rx:
                fast_ingress.sync(self, index)
        elif key < 0 and self.streams[index] is not None:
            self.streams[index].rtx_ssrc = ssrc

    # ------------------------------------------------------------------ audio levels
    # Python adds here; the compiled receive step adds in its streams; readers see the sum.
    @property
    def level_sum(self) -> int:
        return self._level_sum + fast_ingress.level_sums(self)[0] if self._fast_rx else self._level_sum

    @level_sum.setter
    def level_sum(self, value: int) -> None:
        self._level_sum = value
        if self._fast_rx:
            fast_ingress.reset_levels(self, "level_sum")

    @property
    def level_count(self) -> int:
        return self._level_count + fast_ingress.level_sums(self)[1] if self._fast_rx else self._level_count

    @level_count.setter
    def level_count(self, value: int) -> None:
        self._level_count = value
        if self._fast_rx:
            fast_ingress.reset_levels(self, "level_count")

    # ------------------------------------------------------------------ hot path
    def _receive_rtp_then_sync(self, key: int, data: bytes) -> None:
        """receive_rtp for a packet the compiled receive step handed to Python; afterwards the
        core's view of the stream (gate, fan-out, histories) is brought up to date."""
        Producer.receive_rtp(self, key, data)
        fast_ingress.sync(self, key if key >= 0 else ~key)

    def fast_after(self, stream: Any) -> None:
        fast_ingress.after(self, stream)

    def receive_rtp(self, key: int, data: bytes) -> None:
        if key >= 0:
            stream = self.streams[key]
            if stream is None:
                return
            pkt = stream.receive(data)
            if pkt is not None and self._temporal is not None:
                desc = parse_vp8_descriptor(pkt, stream.last_payload_offset, stream.last_payload_end)
                if desc is not None:
                    self._temporal[key].add(desc[3], len(pkt), stream.last_receive_time)
        else:
            stream = self.streams[~key]
            if stream is None:
                return
            pkt = stream.receive_rtx(data)
            key = ~key
        if pkt is None:
            return
        if stream.last_keyframe and self._measure_heights:
            height = vp8_keyframe_height(pkt, stream.last_payload_offset, stream.last_payload_end)
            if height:
                self._heights[key] = height
        if stream.missing and self._nack_enabled:
            self._send_stream_nack(stream)
        elif stream.keyframe_required:
            stream.keyframe_required = False
            self.request_key_frame(key)
        if self.paused:
            return
        level = stream.last_audio_level
        if level >= 0:
            self._level_sum += level
            self._level_count += 1
        fan = self._fan
        slow = self._slow
        if fan is not None:
            # the compiled core: every FastConsumer's rewrite, protect, history entry and send
            nev, gated = fan.run(pkt, key, stream, fan.history_packets > 1)
            if nev < 0:  # too big for the core's buffer (> 1900 bytes): the Python twin forwards it
                slow = self._consumers
            for _ in range(gated):  # as many requests as the Python path makes (throttled)
                self.request_key_frame(key)
            for i in range(nev):
                ev = fan.event(i)
                consumer = fan.consumers[ev >> 2]
                if ev & 1:
                    consumer.fast_switched()
                if ev & 2:
                    consumer.fast_rate_sample(len(pkt), stream.last_receive_time)
            if not slow:
                return
        if level < 0 and self._nack_enabled:
            # one immutable copy per ingress packet: the consumers' retransmission history shares it
            stream.snapshot = bytes(pkt)
        # Rewrite for every consumer first, then send the copies back to back: the sends of one
        # ingress packet leave together (receivers woken once per burst, not once per copy).
        out = self._out
        for consumer in slow:
            consumer.forward(pkt, key, stream, out)
        for send, data in out:
            send(data)
        out.clear()

    def _send_stream_nack(self, stream: RecvStream) -> None:
        packet = stream.build_nack(SFU_RTCP_SSRC, self.clock.now())
        if packet:
            self.transport.send_rtcp(packet)
        self.transport.rtcp.schedule_nack_retry()

    def send_nacks(self, now: float) -> bool:
        """NACK retries (RTCP timer). Returns True while some loss is still being chased."""
        pending = False
        for stream in self.streams:
            if stream is None or not stream.nack_enabled:
                continue
            packet = stream.build_nack(SFU_RTCP_SSRC, now)
            if packet:
                self.transport.send_rtcp(packet)
            pending = pending or stream.has_missing()
        if self._fast_rx:
            fast_ingress.sync_all(self)
        return pending

    # ------------------------------------------------------------------ feedback
    def request_key_frame(self, index: int = -1) -> None:
        """Ask the sender for a keyframe on an encoding (all when -1); throttled per encoding, and a
        throttled request is sent when the interval expires rather than lost."""
        if self.closed or self.kind != "video":
            return
        indexes = range(len(self.streams)) if index < 0 else (index,)
        now = self.clock.now()
        for i in indexes:
            if i >= len(self.streams) or self.streams[i] is None:
                continue
            throttle = self._throttles[i]
            if throttle.allow(now):
                self._send_key_frame_request(i)
            elif self._deferred_keyframe[i] is None:
                due = throttle.next_due()
                delay = max(0.01, (due - now) if due is not None else throttle.interval_s)
                self._deferred_keyframe[i] = self.clock.call_later(delay, lambda i=i: self._deferred_fire(i))

    def _deferred_fire(self, index: int) -> None:
        self._deferred_keyframe[index] = None
        if self.closed:
            return
        if self._throttles[index].pending_due(self.clock.now()):
            self._send_key_frame_request(index)

    def _send_key_frame_request(self, index: int) -> None:
        stream = self.streams[index]
        if stream is None:
            return
        if self._use_fir:
            self._fir_seq = (self._fir_seq + 1) & 0xFF
            packet = build_fir(SFU_RTCP_SSRC, stream.ssrc, self._fir_seq)
        else:
            packet = build_pli(SFU_RTCP_SSRC, stream.ssrc)
        self.keyframe_requests_sent += 1
        self.transport.send_rtcp(packet)

    def on_sender_report(self, index: int, ntp_sec: int, ntp_frac: int, rtp_ts: int, now: float) -> None:
        stream = self.streams[index]
        if stream is not None:
            stream.on_sender_report(ntp_sec, ntp_frac, rtp_ts, now)

    def report_blocks(self, now: float):
        for stream in self.streams:
            if stream is not None and stream.packets:
                yield stream.report_block(now), stream.ssrc

    # ------------------------------------------------------------------ consumers
    def add_consumer(self, consumer: "Consumer") -> None:
        self._consumer_set[consumer.id] = consumer
        self._consumers_changed()

    def remove_consumer(self, consumer: "Consumer") -> None:
        if self._consumer_set.pop(consumer.id, None) is not None:
            self._consumers_changed()

    def _consumers_changed(self) -> None:
        self._consumers = tuple(self._consumer_set.values())
        fast = [c for c in self._consumers if c.fast]
        self._slow = tuple(c for c in self._consumers if not c.fast)
        if fast:
            if self._fan is None:
                self._fan = Fanout(self._histories)
            self._fan.set_consumers(fast)
        else:
            self._fan = None
        if self._fast_rx:
            fast_ingress.sync_all(self)

    @property
    def consumers(self) -> tuple["Consumer", ...]:
        return self._consumers

    def layer_heights(self) -> list[int | None]:
        """Height (pixels) per encoding, lowest first: measured from keyframes, else derived from a
        measured one through the encodings' ``scaleResolutionDownBy``; None where unknown."""
        heights = list(self._heights)
        known = next(((i, h) for i, h in enumerate(heights) if h), None)
        if known is None or all(heights):
            return heights
        encodings = self.rtp_parameters.get("encodings") or []
        scales = [float((e or {}).get("scaleResolutionDownBy") or 0) for e in encodings]
        if len(scales) != len(heights) or not all(s > 0 for s in scales):
            return heights
        top = known[1] * scales[known[0]]
        return [h or int(top / scales[i]) for i, h in enumerate(heights)]

    def temporal_bitrates(self, index: int, now: float) -> list[int] | None:
        """Measured bitrate of TIDs 0..t for every temporal layer t of an encoding (VP8 with
        temporal layers), None when not measured (other codecs, one layer, nothing received)."""
        if self._temporal is None or index >= len(self._temporal):
            return None
        rates = self._temporal[index].cumulative_bps(now)
        return rates if rates and rates[-1] > 0 else None

    def active_stream_indexes(self, now: float, window_s: float = 2.0) -> list[int]:
        """Encodings that received media recently (simulcast layer availability)."""
        out = []
        for index, stream in enumerate(self.streams):
            if stream is not None and stream.packets and now - stream.last_receive_time <= window_s:
                out.append(index)
        return out

    # ------------------------------------------------------------------ control
    def pause(self) -> None:
        self._check_open()
        if self.paused:
            return
        self.paused = True
        if self._fast_rx:
            fast_ingress.sync_all(self)
        for consumer in self._consumers:
            consumer.producer_paused_changed(True)
        self.observer.emit("pause")

    def resume(self) -> None:
        self._check_open()
        if not self.paused:
            return
        self.paused = False
        if self._fast_rx:
            fast_ingress.sync_all(self)
        for consumer in self._consumers:
            consumer.producer_paused_changed(False)
        self.request_key_frame()
        self.observer.emit("resume")

    def _check_open(self) -> None:
        if self.closed:
            raise InvalidStateError(f"producer {self.id} is closed")

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        if self._fast_rx:
            fast_ingress.release(self)
        for handle in self._deferred_keyframe:
            if handle is not None:
                handle.cancel()
        for consumer in tuple(self._consumers):
            consumer.close(reason="producer-closed")
        self._consumers = self._slow = ()
        self._fan = None
        self._consumer_set.clear()
        self.transport.remove_producer(self)
        self.router._producer_closed(self, reason)
        self.observer.emit("close", reason)

    # ------------------------------------------------------------------ introspection
    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "type": self.type,
            "paused": self.paused,
            "closed": self.closed,
            "transportId": self.transport.id,
            "rtpParameters": self.rtp_parameters,
            "rtpMapping": self.rtp_mapping,
            "consumerIds": [c.id for c in self._consumers],
            "ssrcs": [s.ssrc for s in self.streams if s is not None],
            "appData": self.app_data,
        }

    def get_stats(self) -> list[dict]:
        now = self.clock.now()
        out = []
        for stream in self.streams:
            if stream is None:
                continue
            stats = stream.to_stats(now)
            stats.update({"type": "inbound-rtp", "producerId": self.id, "kind": self.kind})
            out.append(stats)
        return out

    def compute_score(self) -> int:
        scores = [s.score for s in self.streams if s is not None and s.packets]
        self.score = min(scores) if scores else 0
        return self.score


def temporal_layer_count(rtp_parameters: dict) -> int:
    """Temporal layers of the first encoding's ``scalabilityMode`` (L1T3 -> 3; 1 when absent)."""
    mode = (rtp_parameters.get("encodings") or [{}])[0].get("scalabilityMode") or "L1T1"
    try:
        return max(1, int(mode.split("T", 1)[1].rstrip("_KEY")))
    except (IndexError, ValueError):
        return 1
