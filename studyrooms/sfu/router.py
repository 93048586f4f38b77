"""Router: one room's media switch (mediasoup's Router).

Holds the room's transports and producers on one worker, negotiates with ortc, creates producers
and consumers, and observes audio levels to name the active speaker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError, InvalidStateError, NotFoundError, UnsupportedError
from ..events import EventEmitter
from ..ids import new_id
from ..media.audio_level import ActiveSpeakerDetector
from . import ortc
from .consumer import Consumer
from .fast_consumer import FastConsumer
from .options import PlainTransportOptions, WebRtcTransportOptions
from .producer import Producer

if TYPE_CHECKING:
    from .transport import Transport
    from .worker import Worker

logger = logging.getLogger("studyrooms.router")

ACTIVE_SPEAKER_INTERVAL_S = 0.3
LEVELS_TAIL_S = 2.0  # longer than the room's SpeakerTracker staleness (1 s)


class Router:
    def __init__(self, worker: "Worker", router_id: str, media_codecs: list[dict] | None = None) -> None:
        self.id = router_id
        self.worker = worker
        self.clock = worker.clock
        self.rtp_capabilities = ortc.generate_router_rtp_capabilities(media_codecs)
        self.transports: dict[str, "Transport"] = {}
        self.producers: dict[str, Producer] = {}
        self.closed = False
        self.observer = EventEmitter()  # "close"
        self.active_speaker_id: str | None = None
        self._speakers = ActiveSpeakerDetector(threshold_dbov=-70.0)
        self._speaker_timer = None
        self._levels_until = -1.0  # keep reporting (empty) levels until then: the room sees silence

    # ------------------------------------------------------------------ transports
    def _check_open(self) -> None:
        if self.closed:
            raise InvalidStateError(f"router {self.id} is closed")

    async def create_webrtc_transport(
        self, options: WebRtcTransportOptions | None = None, transport_id: str | None = None
    ) -> "Transport":
        from .webrtc_transport import WebRtcTransport

        self._check_open()
        options = options or WebRtcTransportOptions()
        transport_id = self._fresh_transport_id(transport_id)
        transport = await WebRtcTransport.create(
            self,
            transport_id,
            options=options,
            worker_options=self.worker.options,
            certificate=self.worker.certificate,
            webrtc_server=self.worker.webrtc_server,
            clock=self.clock,
        )
        return self._add_transport(transport)

    async def create_plain_transport(
        self, options: PlainTransportOptions | None = None, transport_id: str | None = None
    ) -> "Transport":
        from .plain_transport import PlainTransport

        self._check_open()
        options = options or PlainTransportOptions(listen_ip=self.worker.options.listen_ip)
        transport_id = self._fresh_transport_id(transport_id)
        transport = await PlainTransport.create(
            self, transport_id, options=options, worker_options=self.worker.options, clock=self.clock
        )
        return self._add_transport(transport)

    async def create_pipe_transport(
        self, *, listen_ip: str | None = None, enable_srtp: bool = False, transport_id: str | None = None,
        app_data: dict | None = None,
    ) -> "Transport":
        """A PipeTransport toward a router on another worker (connect both ends to each other)."""
        from .pipe_transport import PipeTransport

        self._check_open()
        transport_id = self._fresh_transport_id(transport_id)
        transport = await PipeTransport.create_pipe(
            self, transport_id, worker_options=self.worker.options, listen_ip=listen_ip,
            enable_srtp=enable_srtp, app_data=app_data, clock=self.clock,
        )
        return self._add_transport(transport)

    async def pipe_to_router(self, producer_id: str, target: "Router", keep_id: bool | None = None) -> dict:
        """mediasoup's pipeToRouter for two routers in this process: pipe transports both ways,
        a PipeConsumer here and the same producer id produced again on ``target``. Returns the ids.
        (Across processes the room layer makes the same five calls through WorkerChannels.)"""
        producer = self.producers.get(producer_id)
        if producer is None:
            raise NotFoundError(f"producer {producer_id} not found")
        if keep_id is None:  # ids are unique per worker: same worker -> the pipe producer needs a new one
            keep_id = target.worker is not self.worker
        local = await self.create_pipe_transport()
        remote = await target.create_pipe_transport()
        try:
            await local.connect(ip=remote.tuple()["localIp"], port=remote.tuple()["localPort"])
            await remote.connect(ip=local.tuple()["localIp"], port=local.tuple()["localPort"])
            consumer = self.consume(local, producer_id=producer_id, rtp_capabilities=None)
            pipe_producer = target.produce(
                remote, kind=producer.kind, rtp_parameters=consumer.rtp_parameters,
                app_data=dict(producer.app_data), paused=producer.paused,
                producer_id=producer_id if keep_id else None,
            )
        except BaseException:
            local.close()
            remote.close()
            raise
        # the pipe follows its origin: closed with it, paused and resumed with it
        consumer.observer.on("close", lambda _reason: (pipe_producer.close(), local.close(), remote.close()))
        producer.observer.on("pause", lambda: None if pipe_producer.closed else pipe_producer.pause())
        producer.observer.on("resume", lambda: None if pipe_producer.closed else pipe_producer.resume())
        return {"pipeConsumerId": consumer.id, "pipeProducerId": pipe_producer.id,
                "localTransportId": local.id, "remoteTransportId": remote.id}

    def _fresh_transport_id(self, transport_id: str | None) -> str:
        transport_id = transport_id or new_id()
        if transport_id in self.worker.transports:
            raise InvalidStateError(f"transport id {transport_id} already exists")
        return transport_id

    def _add_transport(self, transport: "Transport") -> "Transport":
        if self.closed:  # closed while the transport was binding
            transport.close()
            raise InvalidStateError(f"router {self.id} is closed")
        self.transports[transport.id] = transport
        self.worker._register("transport", transport)
        return transport

    def _transport_closed(self, transport: "Transport") -> None:
        self.transports.pop(transport.id, None)
        self.worker._unregister("transport", transport)
        reason = getattr(transport, "closed_reason", None) or "closed"
        if reason not in ("closed", "router-closed"):
            failures = self.worker.transport_failures
            failures[reason] = failures.get(reason, 0) + 1
            self.worker._emit(
                "transport-closed", {"routerId": self.id, "transportId": transport.id, "reason": reason}
            )

    # ------------------------------------------------------------------ producers
    def produce(
        self,
        transport: "Transport",
        *,
        kind: str,
        rtp_parameters: dict,
        app_data: dict | None = None,
        paused: bool = False,
        producer_id: str | None = None,
    ) -> Producer:
        self._check_open()
        if transport.closed or transport.router is not self:
            raise InvalidStateError("transport is closed or belongs to another router")
        if kind not in ("audio", "video"):
            raise InvalidRequestError("kind must be 'audio' or 'video'")
        direction = getattr(transport, "direction", None)
        if direction == "recv":
            raise InvalidStateError("cannot produce on a recv transport")
        producer_id = producer_id or new_id()
        if producer_id in self.worker.producers:
            raise InvalidStateError(f"producer id {producer_id} already exists")
        ortc.validate_rtp_parameters(rtp_parameters)
        mapping = ortc.get_producer_rtp_parameters_mapping(rtp_parameters, self.rtp_capabilities)
        consumable = ortc.get_consumable_rtp_parameters(kind, rtp_parameters, self.rtp_capabilities, mapping)
        producer = Producer(
            self,
            transport,
            producer_id,
            kind=kind,
            rtp_parameters=rtp_parameters,
            rtp_mapping=mapping,
            consumable_rtp_parameters=consumable,
            app_data=app_data,
            paused=paused,
            keyframe_request_interval_s=self.worker.options.keyframe_request_interval_s,
        )
        transport.add_producer(producer)  # raises on SSRC/MID clashes within the transport
        self.producers[producer.id] = producer
        self.worker._register("producer", producer)
        if kind == "audio":
            self._start_speaker_timer()
        return producer

    def _producer_closed(self, producer: Producer, reason: str) -> None:
        self.producers.pop(producer.id, None)
        self.worker._unregister("producer", producer)
        self._speakers.remove(producer.id)
        if producer.id == self.active_speaker_id:
            self.active_speaker_id = None
            self.worker._emit("active-speaker", {"routerId": self.id, "producerId": None, "volume": -127})
        if reason == "transport-closed":
            self.worker._emit(
                "producer-closed",
                {"routerId": self.id, "transportId": producer.transport.id, "producerId": producer.id,
                 "reason": reason},
            )

    # ------------------------------------------------------------------ consumers
    def can_consume(self, producer_id: str, rtp_capabilities: dict) -> bool:
        producer = self.producers.get(producer_id)
        if producer is None:
            return False
        try:
            ortc.validate_rtp_capabilities(rtp_capabilities)
            return ortc.can_consume(producer.consumable_rtp_parameters, rtp_capabilities)
        except (InvalidRequestError, UnsupportedError):
            return False

    def consume(
        self,
        transport: "Transport",
        *,
        producer_id: str,
        rtp_capabilities: dict | None,
        paused: bool = True,
        app_data: dict | None = None,
        consumer_id: str | None = None,
    ) -> Consumer:
        self._check_open()
        if transport.closed or transport.router is not self:
            raise InvalidStateError("transport is closed or belongs to another router")
        if getattr(transport, "direction", None) == "send":
            raise InvalidStateError("cannot consume on a send transport")
        producer = self.producers.get(producer_id)
        if producer is None or producer.closed:
            raise NotFoundError(f"producer {producer_id} not found")
        if getattr(transport, "kind", None) == "pipe":
            return self._consume_pipe(transport, producer, app_data, consumer_id)
        if rtp_capabilities is None:
            raise InvalidRequestError("rtpCapabilities required")
        ortc.validate_rtp_capabilities(rtp_capabilities)
        if not ortc.can_consume(producer.consumable_rtp_parameters, rtp_capabilities):
            raise UnsupportedError(f"cannot consume producer {producer_id}: no common codec")
        rtp_parameters = ortc.get_consumer_rtp_parameters(producer.consumable_rtp_parameters, rtp_capabilities)
        rtp_parameters["mid"] = transport.allocate_mid()
        consumer_id = consumer_id or new_id()
        if consumer_id in self.worker.consumers:
            raise InvalidStateError(f"consumer id {consumer_id} already exists")
        # the compiled core serves every consumer of a transport it has a cell for (transport-wide
        # seqs and VP8 temporal-layer dropping included)
        consumer_class = FastConsumer if transport.fast_cell is not None else Consumer
        consumer = consumer_class(
            self,
            transport,
            consumer_id,
            producer,
            rtp_parameters=rtp_parameters,
            paused=paused,
            app_data=app_data,
            buffer_packets=self.worker.options.nack_buffer_packets,
        )
        consumer.observer.on(
            "layerschange",
            lambda layers, c=consumer: self.worker._emit(
                "consumer-layers-changed", {"routerId": self.id, "consumerId": c.id, **layers}
            ),
        )
        producer.add_consumer(consumer)
        transport.add_consumer(consumer)
        self.worker._register("consumer", consumer)
        return consumer

    def _consume_pipe(self, transport: "Transport", producer: Producer, app_data: dict | None,
                      consumer_id: str | None) -> Consumer:
        from .pipe_consumer import PipeConsumer

        consumer_id = consumer_id or new_id()
        if consumer_id in self.worker.consumers:
            raise InvalidStateError(f"consumer id {consumer_id} already exists")
        for other in transport.consumers.values():
            if other.producer is producer:
                raise InvalidStateError(f"producer {producer.id} is already piped over this transport")
        consumer = PipeConsumer(
            self, transport, consumer_id, producer,
            rtp_parameters=ortc.get_pipe_consumer_rtp_parameters(producer.consumable_rtp_parameters),
            app_data=app_data, buffer_packets=self.worker.options.nack_buffer_packets,
        )
        producer.add_consumer(consumer)
        transport.add_consumer(consumer)
        self.worker._register("consumer", consumer)
        return consumer

    def _consumer_closed(self, consumer: Consumer, reason: str) -> None:
        self.worker._unregister("consumer", consumer)
        if reason in ("producer-closed", "transport-closed"):
            self.worker._emit(
                "consumer-closed",
                {"routerId": self.id, "transportId": consumer.transport.id, "consumerId": consumer.id,
                 "producerId": consumer.producer.id, "reason": reason},
            )

    def _consumer_event(self, name: str, consumer: Consumer) -> None:
        self.worker._emit(name, {"routerId": self.id, "consumerId": consumer.id, "producerId": consumer.producer.id})

    # ------------------------------------------------------------------ active speaker
    def _start_speaker_timer(self) -> None:
        if self._speaker_timer is None and not self.closed:
            self._speaker_timer = self.clock.call_later(ACTIVE_SPEAKER_INTERVAL_S, self._on_speaker_timer)

    def _on_speaker_timer(self) -> None:
        """Every ACTIVE_SPEAKER_INTERVAL_S: each audio producer's mean ssrc-audio-level since the last
        tick feeds the detector (smoothing, staleness, hysteresis); a change of dominant speaker is
        an ``active-speaker`` event. Paused or silent producers go stale and drop out."""
        self._speaker_timer = None
        if self.closed:
            return
        now = self.clock.now()
        audio = False
        levels: dict[str, int] = {}
        for producer in self.producers.values():
            if producer.kind != "audio":
                continue
            audio = True
            count = producer.level_count
            if count and not producer.paused:
                level = round(producer.level_sum / count)
                self._speakers.add(producer.id, level, now)
                if not producer.app_data.get("pipe"):  # a piped producer is reported by its origin
                    levels[producer.id] = level
            producer.level_sum = producer.level_count = 0
        if levels:
            self._levels_until = now + LEVELS_TAIL_S
        if levels or now < self._levels_until:
            # the room merges these over its routers (speaker-selected audio, last-N order, the
            # active speaker the allocators rank); empty reports for LEVELS_TAIL_S after the last
            # sound let it see that a muted or silent speaker stopped
            self.worker._emit("audio-levels", {"routerId": self.id, "levels": levels})
        speaker, volume = self._speakers.dominant(now)
        if speaker != self.active_speaker_id:
            self.active_speaker_id = speaker
            self.worker._emit("active-speaker", {"routerId": self.id, "producerId": speaker, "volume": volume})
        if audio:
            self._start_speaker_timer()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._speaker_timer is not None:
            self._speaker_timer.cancel()
            self._speaker_timer = None
        for transport in list(self.transports.values()):
            transport.closed_reason = "router-closed"
            transport.close()
        self.worker._router_closed(self)
        self.observer.emit("close")

    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "closed": self.closed,
            "transportIds": list(self.transports),
            "producerIds": list(self.producers),
            "consumerIds": [c.id for p in self.producers.values() for c in p.consumers],
            "rtpCapabilities": self.rtp_capabilities,
            "activeSpeakerProducerId": self.active_speaker_id,
        }

    def get_stats(self) -> dict[str, Any]:
        return {
            "routerId": self.id,
            "transportCount": len(self.transports),
            "producerCount": len(self.producers),
            "consumerCount": sum(len(t.consumers) for t in self.transports.values()),
        }
