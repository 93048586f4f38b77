"""WorkerChannel: the flat, id-keyed, JSON-in/JSON-out control API of a Worker.

This is what crosses the Ray hop (actors.MediaWorkerActor wraps it) and what the room layer talks
to; docs/worker-api.md is its reference. Callers above have validated the wire payloads with
pydantic already; this layer still checks types and ids (a malformed call is InvalidRequestError,
an unknown id NotFoundError) because a worker must never be crashed by a caller.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from ..errors import InvalidRequestError, NotFoundError
from .options import PlainTransportOptions, WebRtcTransportOptions
from .worker import Worker


def _get(data: dict, key: str, kind: type | tuple = str, *, required: bool = True, default: Any = None) -> Any:
    value = data.get(key, default)
    if value is None:
        if required:
            raise InvalidRequestError(f"missing field {key!r}")
        return default
    if isinstance(value, bool) and kind in (int, float):
        raise InvalidRequestError(f"field {key!r} has the wrong type")
    if not isinstance(value, kind):
        raise InvalidRequestError(f"field {key!r} has the wrong type")
    return value


FORWARDING_KEYS = frozenset({"forwardable", "maxHeight", "onStage", "speaker", "speakerRecency"})


def _speaker_recency(data: dict, name: str) -> int | None:
    """The room's speaker order for a consumer's producer (higher = spoke more recently, 0 never)."""
    value = data.get("speakerRecency")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError(f"{name} must be an int >= 0")
    return value


class WorkerChannel:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._methods: dict[str, Callable[[dict], Awaitable[dict]]] = {
            name[len("_m_"):]: getattr(self, name) for name in dir(self) if name.startswith("_m_")
        }

    @property
    def methods(self) -> list[str]:
        return sorted(self._methods)

    async def request(self, method: str, data: dict | None = None) -> dict:
        handler = self._methods.get(method)
        if handler is None:
            raise InvalidRequestError(f"unknown worker method {method!r}")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InvalidRequestError("request data must be an object")
        return await handler(data)

    # ------------------------------------------------------------------ lookups
    def _transport(self, data: dict):
        transport_id = _get(data, "transportId")
        transport = self.worker.transports.get(transport_id)
        if transport is None:
            raise NotFoundError(f"transport {transport_id} not found")
        return transport

    def _producer(self, data: dict):
        producer_id = _get(data, "producerId")
        producer = self.worker.producers.get(producer_id)
        if producer is None:
            raise NotFoundError(f"producer {producer_id} not found")
        return producer

    def _consumer(self, data: dict):
        consumer_id = _get(data, "consumerId")
        consumer = self.worker.consumers.get(consumer_id)
        if consumer is None:
            raise NotFoundError(f"consumer {consumer_id} not found")
        return consumer

    # ------------------------------------------------------------------ routers
    async def _m_create_router(self, data: dict) -> dict:
        router = self.worker.create_router(
            _get(data, "routerId", required=False), _get(data, "mediaCodecs", list, required=False)
        )
        return {"routerId": router.id, "rtpCapabilities": router.rtp_capabilities}

    async def _m_close_router(self, data: dict) -> dict:
        self.worker.router(_get(data, "routerId")).close()
        return {}

    async def _m_router_rtp_capabilities(self, data: dict) -> dict:
        return {"rtpCapabilities": self.worker.router(_get(data, "routerId")).rtp_capabilities}

    async def _m_can_consume(self, data: dict) -> dict:
        router = self.worker.router(_get(data, "routerId"))
        return {"canConsume": router.can_consume(_get(data, "producerId"), _get(data, "rtpCapabilities", dict))}

    async def _m_get_router_stats(self, data: dict) -> dict:
        return self.worker.router(_get(data, "routerId")).get_stats()

    # ------------------------------------------------------------------ transports
    async def _m_create_webrtc_transport(self, data: dict) -> dict:
        router = self.worker.router(_get(data, "routerId"))
        direction = _get(data, "direction", required=False)
        if direction not in (None, "send", "recv"):
            raise InvalidRequestError("direction must be 'send' or 'recv'")
        bitrate = _get(data, "maxIncomingBitrate", int, required=False)
        if bitrate is None:
            bitrate = self.worker.options.max_incoming_bitrate_bps
        options = WebRtcTransportOptions(
            direction=direction,
            max_incoming_bitrate_bps=bitrate,
            app_data=_get(data, "appData", dict, required=False, default={}),
        )
        transport = await router.create_webrtc_transport(options, _get(data, "transportId", required=False))
        return {**transport.parameters(), "direction": direction}

    async def _m_connect_webrtc_transport(self, data: dict) -> dict:
        await self._transport(data).connect(_get(data, "dtlsParameters", dict))
        return {}

    async def _m_restart_ice(self, data: dict) -> dict:
        return {"iceParameters": self._transport(data).restart_ice()}

    async def _m_set_max_incoming_bitrate(self, data: dict) -> dict:
        bitrate = _get(data, "bitrate", int)
        if bitrate < 0:
            raise InvalidRequestError("bitrate must be >= 0")
        self._transport(data).max_incoming_bitrate_bps = bitrate or None
        return {}

    async def _m_create_plain_transport(self, data: dict) -> dict:
        router = self.worker.router(_get(data, "routerId"))
        options = PlainTransportOptions(
            listen_ip=_get(data, "listenIp", required=False, default=self.worker.options.listen_ip),
            announced_ip=_get(data, "announcedIp", required=False, default=self.worker.options.announced_ip),
            port=_get(data, "port", int, required=False),
            rtcp_mux=_get(data, "rtcpMux", bool, required=False, default=True),
            comedia=_get(data, "comedia", bool, required=False, default=False),
            enable_srtp=_get(data, "enableSrtp", bool, required=False, default=False),
            srtp_crypto_suite=_get(data, "srtpCryptoSuite", required=False, default="AES_CM_128_HMAC_SHA1_80"),
            app_data=_get(data, "appData", dict, required=False, default={}),
        )
        transport = await router.create_plain_transport(options, _get(data, "transportId", required=False))
        return transport.parameters()

    async def _m_connect_plain_transport(self, data: dict) -> dict:
        transport = self._transport(data)
        await transport.connect(
            ip=_get(data, "ip", required=False),
            port=_get(data, "port", int, required=False),
            srtp_parameters=_get(data, "srtpParameters", dict, required=False),
        )
        return {}

    async def _m_create_pipe_transport(self, data: dict) -> dict:
        router = self.worker.router(_get(data, "routerId"))
        transport = await router.create_pipe_transport(
            listen_ip=_get(data, "listenIp", required=False),
            enable_srtp=_get(data, "enableSrtp", bool, required=False, default=False),
            transport_id=_get(data, "transportId", required=False),
            app_data=_get(data, "appData", dict, required=False, default={}),
        )
        return transport.parameters()

    async def _m_connect_pipe_transport(self, data: dict) -> dict:
        transport = self._transport(data)
        if getattr(transport, "kind", None) != "pipe":
            raise InvalidRequestError("not a pipe transport")
        await transport.connect(
            ip=_get(data, "ip"), port=_get(data, "port", int),
            srtp_parameters=_get(data, "srtpParameters", dict, required=False),
        )
        return {}

    async def _m_close_transport(self, data: dict) -> dict:
        self._transport(data).close()
        return {}

    async def _m_get_transport_stats(self, data: dict) -> dict:
        return self._transport(data).get_stats()

    # ------------------------------------------------------------------ producers
    async def _m_produce(self, data: dict) -> dict:
        transport = self._transport(data)
        producer = transport.router.produce(
            transport,
            kind=_get(data, "kind"),
            rtp_parameters=_get(data, "rtpParameters", dict),
            app_data=_get(data, "appData", dict, required=False, default={}),
            paused=_get(data, "paused", bool, required=False, default=False),
            producer_id=_get(data, "producerId", required=False),
        )
        return {"id": producer.id, "kind": producer.kind, "type": producer.type}

    async def _m_pause_producer(self, data: dict) -> dict:
        self._producer(data).pause()
        return {}

    async def _m_resume_producer(self, data: dict) -> dict:
        self._producer(data).resume()
        return {}

    async def _m_close_producer(self, data: dict) -> dict:
        self._producer(data).close()
        return {}

    async def _m_get_producer_stats(self, data: dict) -> dict:
        return {"stats": self._producer(data).get_stats()}

    # ------------------------------------------------------------------ consumers
    async def _m_consume(self, data: dict) -> dict:
        transport = self._transport(data)
        consumer = transport.router.consume(
            transport,
            producer_id=_get(data, "producerId"),
            rtp_capabilities=_get(data, "rtpCapabilities", dict, required=getattr(transport, "kind", "") != "pipe"),
            paused=_get(data, "paused", bool, required=False, default=True),
            app_data=_get(data, "appData", dict, required=False, default={}),
            consumer_id=_get(data, "consumerId", required=False),
        )
        forwardable = _get(data, "forwardable", bool, required=False)
        max_height = _get(data, "maxHeight", int, required=False)
        on_stage = _get(data, "onStage", bool, required=False)
        speaker = _get(data, "speaker", bool, required=False)
        recency = _speaker_recency(data, "speakerRecency")
        if (forwardable is not None or max_height is not None or on_stage or speaker or recency) \
                and consumer.type != "pipe":
            consumer.set_forwarding(forwardable, max_height if max_height is not None else -1, on_stage,
                                    speaker, recency)
        return {
            "id": consumer.id,
            "producerId": consumer.producer.id,
            "kind": consumer.kind,
            "rtpParameters": consumer.rtp_parameters,
            "type": consumer.type,
            "producerPaused": consumer.producer_paused,
        }

    async def _m_pipe_to_router(self, data: dict) -> dict:
        """Pipe a producer to another router of THIS worker (across workers the room layer makes
        the same calls on both channels: create/connect_pipe_transport, consume, produce)."""
        source = self.worker.router(_get(data, "routerId"))
        target = self.worker.router(_get(data, "targetRouterId"))
        return await source.pipe_to_router(_get(data, "producerId"), target)

    async def _m_pause_consumer(self, data: dict) -> dict:
        self._consumer(data).pause()
        return {}

    async def _m_resume_consumer(self, data: dict) -> dict:
        self._consumer(data).resume()
        return {}

    async def _m_close_consumer(self, data: dict) -> dict:
        self._consumer(data).close()
        return {}

    async def _m_set_consumer_preferred_layers(self, data: dict) -> dict:
        self._consumer(data).set_preferred_layers(
            _get(data, "spatialLayer", int), _get(data, "temporalLayer", int, required=False)
        )
        return {}

    async def _m_set_consumers_forwarding(self, data: dict) -> dict:
        """The room's per-receiver decisions, batched: ``{consumers: {consumerId: {forwardable?,
        maxHeight?, onStage?, speaker?, speakerRecency?}}}``. Ids of consumers gone meanwhile are
        skipped and listed in ``missing``."""
        entries = _get(data, "consumers", dict)
        if len(entries) > 10_000:
            raise InvalidRequestError("too many consumers in one call")
        checked = []
        for consumer_id, entry in entries.items():
            if not isinstance(entry, dict) or set(entry) - FORWARDING_KEYS:
                raise InvalidRequestError(f"consumers[{consumer_id!r}] must be {{forwardable?, maxHeight?, onStage?,"
                                          " speaker?, speakerRecency?}")
            forwardable = _get(entry, "forwardable", bool, required=False)
            on_stage = _get(entry, "onStage", bool, required=False)
            speaker = _get(entry, "speaker", bool, required=False)
            recency = _speaker_recency(entry, f"consumers[{consumer_id!r}].speakerRecency")
            max_height = entry.get("maxHeight", -1)
            if max_height is not None and (isinstance(max_height, bool) or not isinstance(max_height, int)
                                           or max_height < -1):
                raise InvalidRequestError(f"consumers[{consumer_id!r}].maxHeight must be an int >= 0 or null")
            checked.append((consumer_id, forwardable, max_height, on_stage, speaker, recency))
        missing = []
        for consumer_id, forwardable, max_height, on_stage, speaker, recency in checked:
            consumer = self.worker.consumers.get(consumer_id)
            if consumer is None or consumer.closed or consumer.type == "pipe":  # pipes always forward
                missing.append(consumer_id)
                continue
            consumer.set_forwarding(forwardable, max_height, on_stage, speaker, recency)
        return {"missing": missing}
    async def _m_set_consumer_priority(self, data: dict) -> dict:
        self._consumer(data).set_priority(_get(data, "priority", int))
        return {}

    async def _m_request_consumer_key_frame(self, data: dict) -> dict:
        self._consumer(data).request_key_frame()
        return {}

    async def _m_get_consumer_stats(self, data: dict) -> dict:
        return {"stats": self._consumer(data).get_stats()}

    # ------------------------------------------------------------------ worker
    async def _m_dump(self, data: dict) -> dict:
        return self.worker.dump()

    async def _m_get_stats(self, data: dict) -> dict:
        return self.worker.get_stats()
