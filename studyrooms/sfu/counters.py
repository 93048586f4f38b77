"""A media worker's traffic counters over its whole life (what ``/metrics`` exports).

Transports, producers and consumers keep plain int counters while they live. When one closes, the
worker folds its final values into :class:`WorkerCounters` (:meth:`retire`, called when the entity
leaves the worker's registry), so the worker's totals include every packet and byte ever handled,
however rarely (or never) they were scraped while the entity lived. Read per scrape, never per packet.
"""

from __future__ import annotations

from typing import Any, Iterable

#: every counter a worker exports, in its telemetry snapshot's keys
KEYS = ("rx_rtp", "tx_rtp", "rx_bytes", "tx_bytes", "rx_rtcp", "tx_rtcp", "nacks_received",
        "plis_received", "firs_received", "nacks_sent", "keyframe_requests_sent", "lost_in", "lost_out",
        "probe_clusters", "twcc_feedback")


def transport_counters(t: Any) -> dict[str, int]:
    rtcp = getattr(t, "rtcp", None)
    return {
        "rx_rtp": t.rx_rtp, "tx_rtp": t.tx_rtp, "rx_bytes": t.rx_bytes, "tx_bytes": t.tx_bytes,
        "rx_rtcp": t.rx_rtcp, "tx_rtcp": t.tx_rtcp,
        "nacks_received": getattr(rtcp, "nacks_received", 0), "plis_received": getattr(rtcp, "plis_received", 0),
        "firs_received": getattr(rtcp, "firs_received", 0),
        # downlink bandwidth estimation (WebRtcTransports): probe clusters sent, feedback received
        "probe_clusters": getattr(getattr(t, "bwe", None), "probes_sent", 0),
        "twcc_feedback": getattr(getattr(t, "bwe", None), "feedback_received", 0),
    }


def producer_counters(p: Any) -> dict[str, int]:
    streams = [s for s in getattr(p, "streams", []) if s is not None]
    return {
        "nacks_sent": sum(s.nacks_sent for s in streams),
        "lost_in": sum(max(0, s.packets_lost) for s in streams),
        "keyframe_requests_sent": getattr(p, "keyframe_requests_sent", 0),
    }


def consumer_counters(c: Any) -> dict[str, int]:
    return {"lost_out": max(0, getattr(getattr(c, "send_stream", None), "packets_lost", 0))}


_BY_KIND = {"transport": transport_counters, "producer": producer_counters, "consumer": consumer_counters}


class WorkerCounters:
    """The closed entities' final values, summed; :meth:`totals` adds the live ones."""

    def __init__(self) -> None:
        self.retired: dict[str, int] = dict.fromkeys(KEYS, 0)

    def retire(self, kind: str, entity: Any) -> None:
        """``entity`` (a transport, producer or consumer) left the worker: keep its final values."""
        read = _BY_KIND.get(kind)
        if read is None:
            return
        try:
            values = read(entity)
        except Exception:  # noqa: BLE001 - an entity that cannot be read must not break its close
            return
        for name, value in values.items():
            self.retired[name] += int(value or 0)

    def totals(self, transports: Iterable[Any], producers: Iterable[Any], consumers: Iterable[Any]) -> dict[str, int]:
        out = dict(self.retired)
        for read, entities in ((transport_counters, transports), (producer_counters, producers),
                               (consumer_counters, consumers)):
            for entity in entities:
                for name, value in read(entity).items():
                    out[name] += int(value or 0)
        return out
