"""Structured logs: ids bound with log_context (room, participant, transport) and the current trace
ids appear in the JSON output; debug tags switch on ``studyrooms.<tag>`` loggers."""

from __future__ import annotations

import io
import json
import logging

from actors.telemetry import JsonFormatter
from studyrooms import observability as obs


def test_json_log_records_carry_ids_and_trace(spans):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(obs.ContextFilter())
    log = obs.logger("dtls")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with obs.tracer().start_as_current_span("signaling produce") as span:
            with obs.log_context(room_id="maths", participant_id="p1"):
                obs.bind_log_context(transport_id="t1")
                log.info("handshake done")
            log.info("outside")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["logger"] == "studyrooms.dtls" and first["msg"] == "handshake done"
    assert (first["room_id"], first["participant_id"], first["transport_id"]) == ("maths", "p1", "t1")
    assert first["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "room_id" not in second


def test_debug_tags_enable_tagged_loggers():
    names = obs.enable_debug_tags("ice, rtcp")
    try:
        assert names == ["ice", "rtcp"]
        assert logging.getLogger("studyrooms.ice").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("studyrooms.rtcp").level == logging.DEBUG
    finally:
        for name in names:
            logging.getLogger(f"studyrooms.{name}").setLevel(logging.NOTSET)


def test_trace_context_carrier_round_trip(spans):
    assert obs.inject() == {}
    with obs.tracer().start_as_current_span("parent") as parent:
        carrier = obs.inject()
    assert carrier["traceparent"].split("-")[1] == format(parent.get_span_context().trace_id, "032x")
    with obs.tracer().start_as_current_span("child", context=obs.extract(carrier)) as child:
        assert child.get_span_context().trace_id == parent.get_span_context().trace_id
    assert obs.extract(None) is None and obs.extract({"x": 1}) is None
