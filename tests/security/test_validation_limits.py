"""Validation and per-participant limits on the real stack (no media needed: requests only).

Every payload is validated (types, sizes, enums, id syntax, unknown keys) -> ``invalid-request``;
an unsupported codec -> ``unsupported``; per-participant limits -> ``rate-limited``; room capacity ->
``room-full``; PlainTransports cannot be created by any event; reserved Socket.IO event names sent by
a client cannot re-run connect/disconnect handling.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from studyrooms.config import LimitSettings, RoomSettings
from studyrooms.standalone import start_standalone

from sechelpers import connect, eventually, join, settings, worker_counts

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:The HMAC key is"),
]

FP = {"algorithm": "sha-256", "value": ":".join(["AB"] * 32)}
OPUS = {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}


def rtp(codec: dict, ssrc: int, **extra) -> dict:
    return {"codecs": [codec], "encodings": [{"ssrc": ssrc}], **extra}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app():
    app = await start_standalone(settings(rooms=RoomSettings(capacity=3, empty_room_timeout_s=0.2)),
                                 num_workers=1, port=0)
    yield app
    await app.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def member(app):
    client = await join(app, "valid", "Val")
    yield client
    await client.close()


# --- payload validation -------------------------------------------------------------------------

BAD = [
    # (event, payload) -> invalid-request
    ("join-room", {"roomId": "a b", "displayName": "x"}),  # id syntax
    ("join-room", {"roomId": "r" * 65, "displayName": "x"}),  # id length
    ("join-room", {"roomId": "", "displayName": "x"}),
    ("join-room", {"roomId": 5, "displayName": "x"}),  # type, no coercion
    ("join-room", {"roomId": "valid", "displayName": ""}),
    ("join-room", {"roomId": "valid", "displayName": "x" * 65}),
    ("join-room", {"roomId": "valid", "displayName": "bad\x07name"}),
    ("join-room", {"roomId": "valid", "displayName": "x", "admin": True}),  # unknown key
    ("join-room", {"room_id": "valid", "displayName": "x"}),  # snake_case is not the wire name
    ("join-room", ["valid", "x"]),
    ("join-room", "valid"),
    ("join-room", None),
    ("create-transport", {"direction": "sideways"}),  # enum
    ("create-transport", {"direction": "send", "type": "plain"}),
    ("create-transport", {"direction": "send", "listenIp": "0.0.0.0", "port": 22}),
    ("create-transport", {}),
    ("connect-transport", {"transportId": "t", "dtlsParameters": {"role": "boss", "fingerprints": [FP]}}),
    ("connect-transport", {"transportId": "t", "dtlsParameters": {"fingerprints": []}}),
    ("connect-transport", {"transportId": "t/../x", "dtlsParameters": {"fingerprints": [FP]}}),
    ("connect-transport", {"transportId": "t", "dtlsParameters": {"fingerprints": [FP] * 33}}),
    ("produce", {"transportId": "t", "kind": "data", "rtpParameters": rtp(OPUS, 1)}),
    ("produce", {"transportId": "t", "kind": "audio", "rtpParameters": {"codecs": []}}),
    ("produce", {"transportId": "t", "kind": "audio", "rtpParameters": rtp({**OPUS, "payloadType": 300}, 1)}),
    ("produce", {"transportId": "t", "kind": "audio", "rtpParameters": rtp(OPUS, 2**32)}),
    ("produce", {"transportId": "t", "kind": "audio", "rtpParameters": rtp(OPUS, -1)}),
    ("produce", {"transportId": "t", "kind": "audio", "rtpParameters": rtp(OPUS, 1), "appData": {"source": "x"}}),
    ("produce", {"transportId": "t", "kind": "audio", "rtpParameters": rtp(OPUS, 1), "appData": {"evil": 1}}),
    ("produce", {"transportId": "t", "kind": "audio",
                 "rtpParameters": rtp({**OPUS, "parameters": {"k": "v" * 300}}, 1)}),
    ("produce", {"transportId": "t", "kind": "audio",
                 "rtpParameters": {**rtp(OPUS, 1), "x": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}}),
    ("consume", {"transportId": "t", "producerId": "p", "rtpCapabilities": {"codecs": "opus"}}),
    ("consume", {"transportId": "t", "producerId": "p"}),
    ("resume-consumer", {"consumerId": None}),
    ("pause-consumer", {"consumerId": ["c"]}),
    ("pause-producer", {"producerId": 1.5}),
    ("close-producer", {}),
    ("set-preferred-layers", {"consumerId": "c", "spatialLayer": -1}),
    ("set-preferred-layers", {"consumerId": "c", "spatialLayer": 16}),
    ("set-preferred-layers", {"consumerId": "c", "spatialLayer": True}),
    ("set-preferred-layers", {"consumerId": "c", "spatialLayer": "1"}),
    ("restart-ice", {"transportId": "t", "iceParameters": {}}),
    ("set-receive-constraints", {"lastN": -1}),
    ("set-receive-constraints", {"lastN": 2.0}),
    ("set-receive-constraints", {"onStage": "someone"}),
    ("set-receive-constraints", {"onStage": [f"p{i}" for i in range(9)]}),
    ("set-receive-constraints", {"maxHeight": "720"}),
    ("set-receive-constraints", {"lastN": 1, "video": True}),
    ("get-stats", {"all": True}),
    ("get-stats", "please"),
    ("leave-room", {"force": True}),
]


@pytest.mark.parametrize("event,payload", BAD, ids=[f"{i}-{e}" for i, (e, _) in enumerate(BAD)])
async def test_invalid_payloads_are_invalid_request(member, event, payload):
    reply = await member.raw(event, payload) if payload is not None else await member.sio.call(event, None)
    assert reply["ok"] is False and reply["error"]["code"] == "invalid-request", reply
    # the participant is still there and served
    assert (await member.signal.call("get-stats"))["participantCount"] >= 1


async def test_extra_positional_arguments_are_refused(member):
    reply = await member.sio.call("get-stats", ({}, {"x": 1}), timeout=5)
    assert reply["error"]["code"] == "invalid-request"


async def test_oversized_payload_is_refused_and_the_socket_keeps_working(app, member):
    big = {"roomId": "valid", "displayName": "x", "pad": "y" * (app.settings.limits.max_payload_bytes + 10)}
    err = await member.error("join-room", big)
    assert err["code"] == "invalid-request"
    big_caps = {"transportId": "t", "producerId": "p",
                "rtpCapabilities": {"codecs": [{"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000,
                                                "parameters": {f"k{i}": "v" * 250 for i in range(60)}}] * 30}}
    assert (await member.error("consume", big_caps))["code"] == "invalid-request"
    assert (await member.signal.call("get-stats"))["roomId"] == "valid"


async def test_a_message_over_the_transport_bound_drops_only_that_socket(app, member):
    """Beyond engine.io's max_http_buffer_size the server closes the socket; the participant leaves
    cleanly and everyone else is still served."""
    victim = await join(app, "valid", "Huge")
    try:
        with pytest.raises(Exception):
            await victim.sio.call("get-stats", {"pad": "z" * 2_000_000}, timeout=5)
        assert await eventually(lambda: len(app.service.rooms["valid"].participants) == 1, timeout=10)
    finally:
        await victim.close()
    assert (await member.signal.call("get-stats"))["participantCount"] == 1


async def test_unknown_events_are_invalid_request(member):
    for event in ("hello", "produced", "error", "rtp-capabilities", "__proto__", "x" * 500, ""):
        assert (await member.error(event, {}))["code"] == "invalid-request", event


async def test_requests_before_joining_are_invalid_state(app):
    client = await connect(app, ["valid"], name="Early")
    try:
        assert (await client.error("create-transport", {"direction": "send"}))["code"] == "invalid-state"
        assert (await client.error("get-stats"))["code"] == "invalid-state"
        assert (await client.raw("leave-room"))["ok"] is True
    finally:
        await client.close()


@pytest.mark.parametrize("event", ["connect", "disconnect"])
async def test_client_emitted_reserved_events_are_refused(app, member, event):
    """python-socketio hands a client-emitted "connect"/"disconnect" event to the server's connect /
    disconnect handlers; they must refuse it (not re-authenticate, not leave the room)."""
    from sechelpers import token

    reply = await member.sio.call(event, {}, timeout=5)
    assert reply["ok"] is False and reply["error"]["code"] == "invalid-request", reply
    reply = await member.sio.call(event, ({}, {"token": token(["other-room"])}), timeout=5)
    assert reply["ok"] is False and reply["error"]["code"] == "invalid-request", reply
    stats = await member.signal.call("get-stats")  # still joined, same identity
    assert stats["roomId"] == "valid" and stats["participantCount"] == 1
    assert app.signaling._sessions[member.sio.get_sid()]["rooms"] == ["valid"]


# --- codecs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,codec", [
    ("video", {"mimeType": "video/H265", "payloadType": 96, "clockRate": 90000}),
    ("audio", {"mimeType": "audio/G729", "payloadType": 18, "clockRate": 8000}),
    ("audio", {"mimeType": "audio/opus", "payloadType": 111, "clockRate": 44100, "channels": 2}),
])
async def test_unsupported_codec_is_unsupported(member, kind, codec):
    tid = (await member.signal.call("create-transport", {"direction": "send"}))["id"]
    err = await member.error("produce", {"transportId": tid, "kind": kind, "rtpParameters": rtp(codec, 5)})
    assert err["code"] == "unsupported", err


# --- limits -------------------------------------------------------------------------------------


async def test_transports_per_direction_are_limited(app, member):
    limits = app.settings.limits
    for direction, limit in (("send", limits.max_send_transports), ("recv", limits.max_recv_transports)):
        for _ in range(limit):
            await member.signal.call("create-transport", {"direction": direction})
        err = await member.error("create-transport", {"direction": direction})
        assert err["code"] == "rate-limited", err
    room = app.service.rooms["valid"]
    (p,) = room.participants.values()
    assert len(p.transports) == limits.max_send_transports + limits.max_recv_transports


async def test_producers_are_limited(app, member):
    tid = (await member.signal.call("create-transport", {"direction": "send"}))["id"]
    for i in range(app.settings.limits.max_producers):
        await member.signal.call("produce", {"transportId": tid, "kind": "audio",
                                             "rtpParameters": rtp(OPUS, 1000 + i, mid=str(i))})
    err = await member.error("produce", {"transportId": tid, "kind": "audio", "rtpParameters": rtp(OPUS, 999)})
    assert err["code"] == "rate-limited"
    assert worker_counts(app)["producers"] == app.settings.limits.max_producers


async def test_room_capacity(app):
    clients = [await join(app, "full", f"P{i}") for i in range(app.settings.rooms.capacity)]
    extra = await connect(app, ["full"], name="Late")
    try:
        assert (await extra.error("join-room", {"roomId": "full", "displayName": "Late"}))["code"] == "room-full"
    finally:
        for c in (*clients, extra):
            await c.close()


async def test_requests_per_second_are_limited():
    app = await start_standalone(settings(limits=LimitSettings(requests_per_second=2, request_burst=5)),
                                 num_workers=1, port=0)
    try:
        client = await join(app, "busy", "Busy")  # the join spent one token
        replies = [await client.raw("get-stats") for _ in range(10)]
        codes = [r["error"]["code"] if not r["ok"] else "ok" for r in replies]
        assert codes[:4] == ["ok"] * 4 and "rate-limited" in codes[4:], codes
        await asyncio.sleep(1.1)  # the bucket refills
        assert (await client.raw("get-stats"))["ok"] is True
        other = await join(app, "busy", "Calm")  # one participant's flood does not limit another
        assert (await other.raw("get-stats"))["ok"] is True
        await client.close()
        await other.close()
    finally:
        await app.stop()


# --- no PlainTransport from the internet --------------------------------------------------------


async def test_plain_transports_cannot_be_created_by_a_participant(app, member):
    attempts = [
        ("create-plain-transport", {}),
        ("createPlainTransport", {"listenIp": "0.0.0.0"}),
        ("create_plain_transport", {"routerId": "r"}),
        ("connect-plain-transport", {"ip": "10.0.0.1", "port": 5004}),
        ("create-pipe-transport", {}),
        ("pipe-to-router", {}),
        ("create_webrtc_transport", {"routerId": "r"}),  # worker API names are not events either
        ("create-transport", {"direction": "send", "comedia": True}),
        ("create-transport", {"direction": "send", "kind": "plain"}),
    ]
    for event, payload in attempts:
        assert (await member.error(event, payload))["code"] == "invalid-request", event
    for w in app.workers:
        assert all(t.kind == "webrtc" for t in w.transports.values())
