"""OpenTelemetry API access for the library (the SDK and exporters are installed by ``actors/``).

No span or metric call sits on the packet path: the media plane keeps plain int counters and
observable gauges read them (see actors/telemetry.py).
"""

from __future__ import annotations

import logging

from opentelemetry import metrics, trace

TRACER_NAME = "studyrooms"


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def meter() -> metrics.Meter:
    return metrics.get_meter(TRACER_NAME)


def logger(tag: str) -> logging.Logger:
    """mediasoup-like debug tags: ice, dtls, srtp, rtp, rtcp, rtx, bwe, score, simulcast, room, signaling."""
    return logging.getLogger(f"studyrooms.{tag}")
