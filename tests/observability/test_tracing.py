"""A join produces one trace: the signaling request span, the room span and the media worker call
spans share a trace id, with room/participant attributes (in-memory span exporter)."""

from __future__ import annotations

import aiohttp
import pytest
import socketio
from opentelemetry.trace import SpanKind

from studyrooms.config import Settings
from studyrooms.standalone import start_standalone

pytestmark = [pytest.mark.timeout(60)]


async def test_join_and_transport_requests_are_traced(spans):
    app = await start_standalone(Settings(), num_workers=1, port=0)
    sio = socketio.AsyncClient(reconnection=False)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{app.url}/api/token", json={"roomId": "traced", "displayName": "Ada"}) as resp:
                token = (await resp.json())["token"]
        await sio.connect(app.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
        joined = await sio.call("join-room", {"roomId": "traced", "displayName": "Ada"}, timeout=10)
        assert joined["ok"], joined
        pid = joined["data"]["participantId"]
        created = await sio.call("create-transport", {"direction": "send"}, timeout=10)
        assert created["ok"], created
        refused = await sio.call("consume", {"transportId": "nope", "producerId": "nope",
                                             "rtpCapabilities": {"codecs": [], "headerExtensions": []}}, timeout=10)
        assert not refused["ok"]
    finally:
        await sio.disconnect()
        await app.stop()

    finished = spans.get_finished_spans()
    by_name: dict[str, list] = {}
    for s in finished:
        by_name.setdefault(s.name, []).append(s)
    join = by_name["signaling join-room"][0]
    room_join = by_name["room join-room"][0]
    router = by_name["worker create_router"][0]
    assert join.kind == SpanKind.SERVER and router.kind == SpanKind.CLIENT
    trace_id = join.context.trace_id
    assert room_join.context.trace_id == trace_id and router.context.trace_id == trace_id
    assert room_join.parent.span_id == join.context.span_id
    assert router.parent.span_id == room_join.context.span_id
    for s in (join, room_join):
        assert s.attributes["studyrooms.room_id"] == "traced"
        assert s.attributes["studyrooms.participant_id"] == pid
    assert router.attributes["studyrooms.worker_id"] == "worker-0"

    transport = by_name["signaling create-transport"][0]
    assert transport.context.trace_id != trace_id  # one trace per request
    assert transport.attributes["studyrooms.participant_id"] == pid
    room_transport = by_name["room create-transport"][0]
    worker_transport = by_name["worker create_webrtc_transport"][0]
    assert room_transport.context.trace_id == worker_transport.context.trace_id == transport.context.trace_id
    assert room_transport.attributes["studyrooms.room_id"] == "traced"

    failed = by_name["signaling consume"][0]
    assert not failed.status.is_ok and failed.attributes["studyrooms.error_code"]

    disconnect = by_name["signaling disconnect"][0]
    room_disconnect = by_name["room disconnect"][0]
    assert room_disconnect.parent.span_id == disconnect.context.span_id
    assert room_disconnect.attributes["studyrooms.participant_id"] == pid
    assert any(s.name == "worker close_transport" or s.name.startswith("worker close")
               for s in finished if s.context.trace_id == disconnect.context.trace_id)
