"""OTLP export configured only by the standard OTEL_* variables: a process that calls
setup_telemetry posts its spans and metrics (OTLP/HTTP protobuf) to the configured endpoint."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.timeout(60)]

CHILD = r"""
from actors.telemetry import setup_telemetry
from studyrooms import observability as obs
from opentelemetry import metrics, trace
assert setup_telemetry("otlp-test", prometheus=False)
with obs.tracer().start_as_current_span("signaling join-room", attributes={obs.ROOM_ID: "otlp-room"}):
    pass
obs.meter().create_counter("studyrooms.test.counter").add(3)
trace.get_tracer_provider().shutdown()
metrics.get_meter_provider().shutdown()
"""


async def test_spans_and_metrics_reach_an_otlp_http_endpoint():
    received: dict[str, list[bytes]] = {"/v1/traces": [], "/v1/metrics": []}

    async def collect(request: web.Request) -> web.Response:
        received.setdefault(request.path, []).append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    app.router.add_post("/v1/metrics", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
               "OTEL_SERVICE_NAME": "studyrooms-otlp-test", "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, env=env, cwd=str(ROOT),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 45)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        await runner.cleanup()
    traces = b"".join(received["/v1/traces"])
    assert b"signaling join-room" in traces and b"otlp-room" in traces and b"studyrooms-otlp-test" in traces
    assert b"studyrooms.test.counter" in b"".join(received["/v1/metrics"])
