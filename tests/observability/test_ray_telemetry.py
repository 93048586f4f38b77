"""The Ray app: ``GET /metrics`` on the signaling actor's HTTP port after a real pymediasoup pair
exchanged media, and one trace per join across the signaling actor, the room host and the media
worker (three processes; each writes its spans as JSON lines under STUDYROOMS_SPANS_DIR, which
start_app forwards to the actors)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import socketio
from prometheus_client.parser import text_string_to_metric_families

from actors.app import start_app
from studyrooms.config import Settings

peer_mod = pytest.importorskip("support.peer")

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def traced_app(ray_session, tmp_path_factory):
    spans_dir = tmp_path_factory.mktemp("spans")
    mp = pytest.MonkeyPatch()
    mp.setenv("STUDYROOMS_SPANS_DIR", str(spans_dir))
    settings = Settings(server={"host": "127.0.0.1", "port": 0, "num_workers": 1})
    try:
        handle = await start_app(settings, prefix=f"otel-{uuid.uuid4().hex[:6]}", health_interval_s=0.5)
    finally:
        mp.undo()  # only the actors needed it
    yield handle, spans_dir
    await handle.stop()


async def _join(url: str, room: str, name: str):
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "api/token", json={"roomId": room, "displayName": name}) as resp:
            token = (await resp.json())["token"]
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    signal = peer_mod.SocketIOSignal(sio, timeout=20)
    ack = await signal.call("join-room", {"roomId": room, "displayName": name})
    peer = peer_mod.Peer(signal, video=True, audio=True)
    await peer.load(ack["rtpCapabilities"])
    return sio, peer, ack


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_"))))] = s.value
    return out


def _read_spans(spans_dir: Path) -> list[dict]:
    spans = []
    for path in spans_dir.glob("spans-*.jsonl"):
        spans.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return spans


async def test_metrics_and_one_trace_across_the_actors(traced_app, aioice_loopback):
    app, spans_dir = traced_app
    room = f"room-{uuid.uuid4().hex[:4]}"
    amy_sio, amy, amy_ack = await _join(app.url, room, "Amy")
    bob_sio, bob, _ = await _join(app.url, room, "Bob")
    try:
        amy_ids = await asyncio.wait_for(amy.produce(video=True, audio=True), 30)
        counter = await asyncio.wait_for(bob.consume(amy_ids["video"]), 30)
        assert await counter.wait_frames(5, timeout=45) >= 5

        async with aiohttp.ClientSession() as http:
            async with http.get(app.url + "metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
        m = _samples(text)
        w = ("worker", "worker-0")
        assert m[("studyrooms_rooms", ())] >= 1 and m[("studyrooms_participants", ())] >= 2
        assert m[("studyrooms_rtp_packets_total", (("direction", "in"), w))] > 0
        assert m[("studyrooms_rtp_packets_total", (("direction", "out"), w))] > 0
        assert m[("studyrooms_rtp_bytes_total", (("direction", "out"), w))] > 0
        assert m[("studyrooms_transports", (w,))] >= 2 and m[("studyrooms_consumers", (w,))] >= 1
        assert m[("studyrooms_worker_cpu_time_seconds_total", (w,))] > 0
        assert m[("studyrooms_worker_memory_rss_bytes", (w,))] > 10e6
        for name in ("studyrooms_rtcp_nacks_total", "studyrooms_rtcp_plis_total", "studyrooms_rtp_packets_lost_total",
                     "studyrooms_worker_cpu_utilization", "studyrooms_producers"):
            assert any(k[0] == name for k in m), name
        assert any(k[0] == "studyrooms_signaling_requests_total" and ("event", "join-room") in k[1] for k in m)
    finally:
        await asyncio.gather(amy.close(), bob.close(), return_exceptions=True)
        for sio in (amy_sio, bob_sio):
            await sio.disconnect()

    # the first join created the room's router: signaling -> room host -> media worker, one trace
    deadline = time.monotonic() + 10
    while True:
        spans = _read_spans(spans_dir)
        joins = [s for s in spans if s["name"] == "signaling join-room"
                 and s["attributes"].get("studyrooms.participant_id") == amy_ack["participantId"]]
        trace_spans = [s for s in spans if joins and s["trace_id"] == joins[0]["trace_id"]]
        if any(s["name"] == "media_worker create_router" for s in trace_spans) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert joins, sorted({s["name"] for s in spans})
    by_name = {s["name"]: s for s in trace_spans}
    assert {"signaling join-room", "room join-room", "worker create_router", "media_worker create_router"} <= set(by_name)
    assert {s["component"] for s in trace_spans} >= {"signaling", "room-host", "media-worker"}
    assert len({s["pid"] for s in trace_spans}) >= 3  # three processes, one trace
    assert by_name["room join-room"]["parent_id"] == by_name["signaling join-room"]["span_id"]
    assert by_name["worker create_router"]["parent_id"] == by_name["room join-room"]["span_id"]
    assert by_name["media_worker create_router"]["parent_id"] == by_name["worker create_router"]["span_id"]
    for name in ("signaling join-room", "room join-room"):
        assert by_name[name]["attributes"]["studyrooms.room_id"] == room
        assert by_name[name]["attributes"]["studyrooms.participant_id"] == amy_ack["participantId"]
    # later requests of the same socket carry the room/participant ids too, down to the worker
    produce = [s for s in spans if s["name"] == "room produce"
               and s["attributes"].get("studyrooms.participant_id") == amy_ack["participantId"]]
    assert produce and produce[0]["attributes"]["studyrooms.room_id"] == room
    assert any(s["name"] == "media_worker produce" and s["trace_id"] == produce[0]["trace_id"] for s in spans)
