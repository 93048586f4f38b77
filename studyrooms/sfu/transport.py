"""Transport: the base of WebRtcTransport, PlainTransport and PipeTransport (mediasoup's Transport).

Contract with the concrete transports (which live beside this file and own the network edge):

* Egress: a concrete transport implements :meth:`send_rtp` and :meth:`send_rtcp`. Both take
  *plaintext* packets, are synchronous, never raise, and drop (counting ``tx_dropped``) while the
  transport cannot send (not connected yet, closed, SRTP protect failure).
* Ingress: once a packet is plaintext (after SRTP unprotect, or as received on a plain socket),
  the concrete transport calls :meth:`receive_rtp` or :meth:`receive_rtcp` synchronously from its
  datagram callback. These never raise either.
* Lifecycle: a concrete transport calls :meth:`_set_media_ready` when media can flow (DTLS
  connected / plain remote known), and :meth:`close` (or the router does) to end it. Subclasses
  extend :meth:`_close_network` to release sockets and handshakes, and :meth:`dump` /
  :meth:`get_stats` with their own fields.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from ..clock import Clock, SystemClock
from ..events import EventEmitter
from .rtcp_router import RtcpRouter
from .rtp_listener import RtpListener

if TYPE_CHECKING:
    from .consumer import Consumer
    from .producer import Producer
    from .router import Router

logger = logging.getLogger("studyrooms.rtp")


class Transport:
    kind = "base"
    # the compiled receive step's view of this transport (studyrooms.media.ingress.RxTransport);
    # None: every packet is received in Python. Its counters add to rx_rtp / rx_bytes.
    fast_rx: Any = None

    def __init__(
        self,
        router: "Router",
        transport_id: str,
        *,
        app_data: dict | None = None,
        max_incoming_bitrate_bps: int | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.id = transport_id
        self.router = router
        self.app_data = dict(app_data or {})
        self.clock: Clock = clock or SystemClock()
        self.closed = False
        self.closed_reason: str | None = None
        self.media_ready = False
        self.max_incoming_bitrate_bps = max_incoming_bitrate_bps
        self.producers: dict[str, "Producer"] = {}
        self.consumers: dict[str, "Consumer"] = {}
        self.listener = RtpListener()
        self.rtcp = RtcpRouter(self)
        self.observer = EventEmitter()  # "close", "media-ready", "producer-added", "consumer-added"
        self._next_mid = 0
        # Plain int counters (read by observable gauges; never a metric call per packet).
        self._rx_rtp = 0
        self.rx_rtcp = 0
        self._rx_bytes = 0
        self.rx_dropped = 0  # unparseable or for no known producer
        # where the compiled fan-out core sends for this transport (studyrooms.media.fastpath);
        # None: this transport's consumers forward in Python
        self.fast_cell: Any = None
        self._tx_rtp = 0
        self.tx_rtcp = 0
        self._tx_bytes = 0
        self._tx_dropped = 0

    # ------------------------------------------------------------------ ingress counters
    # Python receives count here; the compiled receive step counts in fast_rx; readers see the sum.
    @property
    def rx_rtp(self) -> int:
        rx = self.fast_rx
        return self._rx_rtp if rx is None else self._rx_rtp + rx.c.rx_rtp

    @rx_rtp.setter
    def rx_rtp(self, value: int) -> None:
        rx = self.fast_rx
        self._rx_rtp = value if rx is None else value - rx.c.rx_rtp

    @property
    def rx_bytes(self) -> int:
        rx = self.fast_rx
        return self._rx_bytes if rx is None else self._rx_bytes + rx.c.rx_bytes

    @rx_bytes.setter
    def rx_bytes(self, value: int) -> None:
        rx = self.fast_rx
        self._rx_bytes = value if rx is None else value - rx.c.rx_bytes

    # ------------------------------------------------------------------ egress counters
    # Python sends count here; the compiled core counts in fast_cell; readers see the sum.
    @property
    def tx_rtp(self) -> int:
        cell = self.fast_cell
        return self._tx_rtp if cell is None else self._tx_rtp + cell.c.tx_rtp

    @tx_rtp.setter
    def tx_rtp(self, value: int) -> None:
        cell = self.fast_cell
        self._tx_rtp = value if cell is None else value - cell.c.tx_rtp

    @property
    def tx_bytes(self) -> int:
        cell = self.fast_cell
        return self._tx_bytes if cell is None else self._tx_bytes + cell.c.tx_bytes

    @tx_bytes.setter
    def tx_bytes(self, value: int) -> None:
        cell = self.fast_cell
        self._tx_bytes = value if cell is None else value - cell.c.tx_bytes

    @property
    def tx_dropped(self) -> int:
        cell = self.fast_cell
        return self._tx_dropped if cell is None else self._tx_dropped + cell.c.tx_dropped

    @tx_dropped.setter
    def tx_dropped(self, value: int) -> None:
        cell = self.fast_cell
        self._tx_dropped = value if cell is None else value - cell.c.tx_dropped

    # ------------------------------------------------------------------ egress (subclasses)
    def send_rtp(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def send_rtcp(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ ingress (hot path)
    def receive_rtp(self, data: bytes) -> None:
        """One plaintext RTP packet from the remote side: find its producer stream and forward."""
        self._rx_rtp += 1
        self._rx_bytes += len(data)
        entry = self.listener.lookup(data)
        if entry is None:
            self.rx_dropped += 1
            return
        entry[0].receive_rtp(entry[1], data)

    def receive_rtcp(self, data: bytes) -> None:
        """One plaintext compound RTCP packet from the remote side."""
        self.rx_rtcp += 1
        self._rx_bytes += len(data)
        self.rtcp.receive(data)

    # ------------------------------------------------------------------ lifecycle
    def _set_media_ready(self) -> None:
        if self.media_ready or self.closed:
            return
        self.media_ready = True
        self.rtcp.start()
        for consumer in list(self.consumers.values()):
            consumer.transport_ready()
        self.observer.emit("media-ready")

    def allocate_mid(self) -> str:
        """A MID unique within this transport (consumers on a recv transport)."""
        mid = str(self._next_mid)
        self._next_mid += 1
        return mid

    def add_producer(self, producer: "Producer") -> None:
        self.producers[producer.id] = producer
        self.listener.add_producer(producer)
        self.observer.emit("producer-added", producer)

    def remove_producer(self, producer: "Producer") -> None:
        self.producers.pop(producer.id, None)
        self.listener.remove_producer(producer)

    def add_consumer(self, consumer: "Consumer") -> None:
        self.consumers[consumer.id] = consumer
        self.rtcp.add_consumer(consumer)
        self.observer.emit("consumer-added", consumer)

    def remove_consumer(self, consumer: "Consumer") -> None:
        self.consumers.pop(consumer.id, None)
        self.rtcp.remove_consumer(consumer)

    def close(self, reason: str = "closed") -> None:
        """Idempotent; closes this transport's producers and consumers, then the network edge.
        ``reason`` (e.g. "ice-consent-timeout", "dtls-failed") is reported to the room."""
        if self.closed:
            return
        self.closed = True
        if self.closed_reason is None:
            self.closed_reason = reason
        self.media_ready = False
        for producer in list(self.producers.values()):
            producer.close(reason="transport-closed")
        for consumer in list(self.consumers.values()):
            consumer.close(reason="transport-closed")
        self.rtcp.stop()
        try:
            self._close_network()
        except Exception:  # noqa: BLE001 - closing must always finish
            logger.exception("transport %s: network close failed", self.id)
        self.router._transport_closed(self)
        self.observer.emit("close")

    def _close_network(self) -> None:
        """Release sockets/handshakes (subclasses)."""

    # ------------------------------------------------------------------ introspection
    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.kind,
            "closed": self.closed,
            "mediaReady": self.media_ready,
            "producerIds": list(self.producers),
            "consumerIds": list(self.consumers),
            "maxIncomingBitrate": self.max_incoming_bitrate_bps,
            "rtpListener": self.listener.dump(),
            "appData": self.app_data,
        }

    def get_stats(self) -> dict[str, Any]:
        return {
            "type": f"{self.kind}-transport",
            "transportId": self.id,
            "timestamp": self.clock.wall(),
            "rtpPacketsReceived": self.rx_rtp,
            "rtcpPacketsReceived": self.rx_rtcp,
            "bytesReceived": self.rx_bytes,
            "packetsDropped": self.rx_dropped,
            "rtpPacketsSent": self.tx_rtp,
            "rtcpPacketsSent": self.tx_rtcp,
            "bytesSent": self.tx_bytes,
            "sendDropped": self.tx_dropped,
            "producerCount": len(self.producers),
            "consumerCount": len(self.consumers),
            "maxIncomingBitrate": self.max_incoming_bitrate_bps,
            **self.rtcp.stats(),
        }


SendFn = Callable[[bytes], None]
