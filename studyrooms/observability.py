"""OpenTelemetry API access for the library (the SDK and exporters are installed by ``actors/``).

No span or metric call sits on the packet path: the media plane keeps plain int counters and
observable gauges read them (see actors/telemetry.py). Spans are per control request (a Socket.IO
event, a room operation, a media worker call), never per packet.

Trace context crosses process hops (Ray actor calls) as a W3C ``traceparent`` carrier dict
(:func:`inject` / :func:`extract`): in the client session (signaling -> room host) and in the
worker request's data under :data:`TRACE_KEY` (room host -> media worker; the worker channel
ignores unknown keys).

Logs: :func:`logger` gives mediasoup-like tagged loggers (``studyrooms.<tag>``); :func:`log_context`
binds room/participant/transport ids for the current task, and :class:`ContextFilter` copies them
(and the current trace/span ids) onto every record, for a structured formatter to print.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Iterator

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace

TRACER_NAME = "studyrooms"
#: key of the W3C carrier in a worker request's data / a client session
TRACE_KEY = "traceContext"

#: span/log attribute names (OpenTelemetry style: namespaced, dotted)
ROOM_ID = "studyrooms.room_id"
PARTICIPANT_ID = "studyrooms.participant_id"
TRANSPORT_ID = "studyrooms.transport_id"
PRODUCER_ID = "studyrooms.producer_id"
CONSUMER_ID = "studyrooms.consumer_id"
WORKER_ID = "studyrooms.worker_id"
SID = "studyrooms.sid"

#: the debug log tags (as mediasoup's logTags); ``STUDYROOMS_DEBUG_TAGS=ice,dtls`` enables them
LOG_TAGS = ("ice", "dtls", "srtp", "rtp", "rtcp", "rtx", "bwe", "score", "simulcast", "room", "signaling",
            "worker", "telemetry")


_tracer_cache: list = [None, None]  # [provider, its tracer]: get_tracer builds a new Tracer per call


def tracer() -> trace.Tracer:
    """The studyrooms tracer of the current global provider (cached: one span per request is on the
    consume path, and ``get_tracer`` costs more than the span itself)."""
    provider = trace.get_tracer_provider()
    if _tracer_cache[0] is not provider:
        _tracer_cache[1] = trace.get_tracer(TRACER_NAME, tracer_provider=provider)
        _tracer_cache[0] = provider
    return _tracer_cache[1]


def meter() -> metrics.Meter:
    return metrics.get_meter(TRACER_NAME)


def logger(tag: str) -> logging.Logger:
    """mediasoup-like debug tags: ice, dtls, srtp, rtp, rtcp, rtx, bwe, score, simulcast, room, signaling."""
    return logging.getLogger(f"studyrooms.{tag}")


# --- trace context across hops --------------------------------------------------------------------

def inject() -> dict[str, str]:
    """The current span's context as a W3C carrier (``{"traceparent": ...}``; empty without a span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract(carrier: Any) -> otel_context.Context | None:
    """A parent context from a carrier made by :func:`inject` (None when there is none)."""
    if not isinstance(carrier, dict) or not carrier.get("traceparent"):
        return None
    return propagate.extract({str(k): str(v) for k, v in carrier.items()})


def ids_from(data: Any) -> dict[str, str]:
    """Span attributes for the ids a request payload names (transportId, producerId, ...)."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, attr in (("roomId", ROOM_ID), ("transportId", TRANSPORT_ID), ("producerId", PRODUCER_ID),
                          ("consumerId", CONSUMER_ID)):
            value = data.get(key)
            if isinstance(value, str) and value:
                out[attr] = value
    return out


# --- structured log context -----------------------------------------------------------------------

_LOG_CONTEXT: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("studyrooms_log_context", default={})


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind ids (room_id=..., participant_id=..., transport_id=...) to log records of this task."""
    merged = {**_LOG_CONTEXT.get(), **{k: str(v) for k, v in ids.items() if v}}
    token = _LOG_CONTEXT.set(merged)
    try:
        yield
    finally:
        _LOG_CONTEXT.reset(token)


def bind_log_context(**ids: Any) -> None:
    """Add ids to the current task's log context (until the enclosing :func:`log_context` ends)."""
    _LOG_CONTEXT.set({**_LOG_CONTEXT.get(), **{k: str(v) for k, v in ids.items() if v}})


def current_log_context() -> dict[str, str]:
    return dict(_LOG_CONTEXT.get())


class ContextFilter(logging.Filter):
    """Copies the task's log context and the current trace/span ids onto each record
    (``record.ids`` dict, ``record.trace_id``, ``record.span_id``); never filters anything out."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.ids = _LOG_CONTEXT.get()
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        return True


def enable_debug_tags(tags: str | list[str] | None) -> list[str]:
    """Set DEBUG on ``studyrooms.<tag>`` for each tag (comma-separated string or list)."""
    if not tags:
        return []
    names = [t.strip() for t in (tags.split(",") if isinstance(tags, str) else tags) if t.strip()]
    for name in names:
        logging.getLogger(f"studyrooms.{name}").setLevel(logging.DEBUG)
    return names
