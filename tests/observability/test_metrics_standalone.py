"""``GET /metrics`` on a running (standalone) server: every listed metric is exposed, and after a
real pymediasoup pair exchanged media the packet and byte counters are non-zero."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from actors.telemetry import attach_standalone
from studyrooms.config import Settings
from studyrooms.standalone import start_standalone
from support.peer import Peer, SocketIOSignal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

LISTED = ["studyrooms_rooms", "studyrooms_participants", "studyrooms_workers", "studyrooms_transports",
          "studyrooms_producers", "studyrooms_consumers", "studyrooms_rtp_packets_total", "studyrooms_rtp_bytes_total",
          "studyrooms_rtcp_packets_total", "studyrooms_rtcp_nacks_total", "studyrooms_rtcp_plis_total",
          "studyrooms_rtcp_firs_total", "studyrooms_rtp_packets_lost_total", "studyrooms_worker_cpu_time_seconds_total",
          "studyrooms_worker_cpu_utilization", "studyrooms_worker_memory_rss_bytes",
          "studyrooms_signaling_requests_total", "studyrooms_signaling_request_duration_seconds_bucket",
          "studyrooms_downlink_estimate", "studyrooms_downlink_probing", "studyrooms_downlink_video_paused",
          "studyrooms_downlink_video_reduced", "studyrooms_downlink_probes_total", "studyrooms_downlink_feedback_total"]


@pytest.fixture
async def server(restore_tracing):
    app = await start_standalone(Settings(), num_workers=1, port=0)
    attach_standalone(app, name="test-metrics")
    yield app
    from actors.telemetry import MetricsHub

    MetricsHub.get().remove_source("test-metrics")
    await app.stop()


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_"))))] = s.value
    return out


async def _join(app, room: str, name: str):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{app.url}/api/token", json={"roomId": room, "displayName": name}) as resp:
            token = (await resp.json())["token"]
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(app.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    signal = SocketIOSignal(sio)
    ack = await signal.call("join-room", {"roomId": room, "displayName": name})
    peer = Peer(signal, video=True, audio=True)
    await peer.load(ack["rtpCapabilities"])
    return sio, peer


async def test_metrics_endpoint_counts_real_media(server, aioice_loopback):
    status, ctype, text = await _get(server.url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    before = _samples(text)
    assert before[("studyrooms_rooms", ())] == 0

    sio_a, a = await _join(server, "metrics", "Ada")
    sio_b, b = await _join(server, "metrics", "Bob")
    try:
        ids_a = await a.produce(video=True, audio=True)
        ids_b = await b.produce(video=True, audio=True)
        counters = [await b.consume(ids_a["video"]), await b.consume(ids_a["audio"]), await a.consume(ids_b["video"])]
        for counter in counters:
            assert await counter.wait_frames(5, timeout=30) >= 5
        await asyncio.sleep(1.2)  # an RTCP interval: receiver reports / feedback reach the worker

        status, _, text = await _get(server.url + "/metrics")
        assert status == 200
        m = _samples(text)
        names = {k[0] for k in m}
        missing = [n for n in LISTED if n not in names]
        assert not missing, missing
        w = ("worker", "worker-0")
        assert m[("studyrooms_rooms", ())] == 1 and m[("studyrooms_participants", ())] == 2
        assert m[("studyrooms_workers", ())] == 1
        assert m[("studyrooms_transports", (w,))] == 4 and m[("studyrooms_consumers", (w,))] == 3
        assert m[("studyrooms_producers", (("kind", "video"), w))] == 2
        assert m[("studyrooms_producers", (("kind", "audio"), w))] == 2
        for direction in ("in", "out"):
            assert m[("studyrooms_rtp_packets_total", (("direction", direction), w))] > 50
            assert m[("studyrooms_rtp_bytes_total", (("direction", direction), w))] > 5000
        assert m[("studyrooms_rtcp_packets_total", (("direction", "in"), w))] > 0
        assert m[("studyrooms_worker_cpu_time_seconds_total", (w,))] > 0
        assert m[("studyrooms_worker_memory_rss_bytes", (w,))] > 10e6
        assert m[("studyrooms_signaling_requests_total", (("event", "produce"), ("outcome", "ok")))] >= 4
        assert m[("studyrooms_signaling_requests_total", (("event", "join-room"), ("outcome", "ok")))] >= 2
        # aiortc receivers send REMB, not transport-cc: their estimate is the REMB, nothing is paused
        assert m[("studyrooms_downlink_estimate", (("direction", "min"), w))] > 0
        assert m[("studyrooms_downlink_video_paused", (w,))] == 0
    finally:
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)
        for sio in (sio_a, sio_b):
            await sio.disconnect()

    # closed transports keep their packets in the counters (monotonic), the gauges go back to zero
    w = ("worker", "worker-0")
    for _ in range(50):
        _, _, text = await _get(server.url + "/metrics")
        after = _samples(text)
        if after[("studyrooms_participants", ())] == 0 and after[("studyrooms_transports", (w,))] == 0:
            break
        await asyncio.sleep(0.1)
    assert after[("studyrooms_transports", (w,))] == 0 and after[("studyrooms_participants", ())] == 0
    key = ("studyrooms_rtp_packets_total", (("direction", "out"), w))
    assert after[key] >= m[key]


async def test_metrics_is_404_without_telemetry():
    app = await start_standalone(Settings(), num_workers=1, port=0)
    try:
        status, _, _ = await _get(app.url + "/metrics")
        assert status == 404
    finally:
        await app.stop()
