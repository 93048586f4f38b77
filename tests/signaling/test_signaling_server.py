"""SignalingServer end to end: real python-socketio clients over real aiohttp on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import time

import pytest
import socketio

from sighelpers import Client, make_settings
from roomfakes import AUDIO_RTP, DTLS, RTP_CAPABILITIES, VIDEO_RTP
from studyrooms.errors import InvalidStateError
from studyrooms.signaling import SignalingServer, issue_token

CAPS = {"codecs": RTP_CAPABILITIES["codecs"]}


def ok(ack: dict) -> dict:
    assert ack["ok"] is True, ack
    assert set(ack) == {"ok", "data"}
    return ack["data"]


def err(ack: dict, code: str) -> dict:
    assert ack["ok"] is False, ack
    assert set(ack) == {"ok", "error"}
    assert ack["error"]["code"] == code, ack
    return ack["error"]


async def joined(stack, name="Ada", room="room1", user=None) -> tuple[Client, dict]:
    c = await stack.client(stack.token(user or name, name))
    return c, ok(await c.call("join-room", {"roomId": room, "displayName": name}))


# --- connection -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "garbage", "bad-signature", "expired"])
async def test_connect_refused_without_a_valid_token(stack, case):
    tokens = {
        "missing": None,
        "garbage": "not-a-jwt",
        "bad-signature": issue_token("another-secret-another-secret-another", "u", "U", ["*"], 60),
        "expired": issue_token(stack.server._secret, "u", "U", ["*"], 60, now=time.time() - 3600),
    }
    c = Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(stack.url, tokens[case])
    assert c.connect_errors and c.connect_errors[0]["code"] == "unauthorized"
    assert c.connect_errors[0]["message"]
    # socket.io-client (JS) reads err.data = packet.data.data
    assert c.connect_errors[0]["data"] == {"code": "unauthorized", "message": c.connect_errors[0]["message"]}
    assert stack.server.connected_sids == []


async def test_connect_with_a_token_from_the_dev_endpoint(stack):
    status, body = await stack.http("POST", "/api/token", json={"roomId": "room1", "displayName": " Ada "})
    assert status == 200 and set(body) == {"token"}
    c = await stack.client(body["token"])
    ok(await c.call("join-room", {"roomId": "room1", "displayName": "Ada"}))
    # the token only allows room1
    c2 = await stack.client(body["token"])
    err(await c2.call("join-room", {"roomId": "room2", "displayName": "Ada"}), "forbidden")


# --- requests -------------------------------------------------------------------------------------


async def test_ack_shapes_and_guide_reply_events(stack):
    a, join_a = await joined(stack, "Ada")
    assert set(join_a) == {"participantId", "roomId", "participants", "producers", "rtpCapabilities",
                           "recommendAudioOnly"}
    b, join_b = await joined(stack, "Bob")
    assert join_b["participants"] == [{"participantId": join_a["participantId"], "displayName": "Ada"}]

    caps = ok(await a.call("get-rtp-capabilities"))
    assert caps == RTP_CAPABILITIES
    assert (await a.wait_for("rtp-capabilities")) == [caps]

    send = ok(await a.call("create-transport", {"direction": "send"}))
    assert {"id", "iceParameters", "iceCandidates", "dtlsParameters", "direction"} <= set(send)
    assert (await a.wait_for("transport-created")) == [send]
    connected = ok(await a.call("connect-transport", {"transportId": send["id"], "dtlsParameters": DTLS}))
    assert connected == {"transportId": send["id"]}
    assert (await a.wait_for("transport-connected")) == [connected]

    produced = ok(await a.call("produce", {"transportId": send["id"], "kind": "audio", "rtpParameters": AUDIO_RTP,
                                           "appData": {"source": "mic"}}))
    assert set(produced) == {"producerId"}
    assert (await a.wait_for("produced")) == [produced]
    new = await b.wait_for("new-producer")
    assert new == [{"producerId": produced["producerId"], "participantId": join_a["participantId"],
                    "kind": "audio", "source": "mic"}]

    recv = ok(await b.call("create-transport", {"direction": "recv"}))
    consumed = ok(await b.call("consume", {"transportId": recv["id"], "producerId": produced["producerId"],
                                           "rtpCapabilities": CAPS}))
    assert set(consumed) == {"id", "producerId", "kind", "rtpParameters", "type", "producerPaused"}
    assert (await b.wait_for("consumed")) == [consumed]
    assert ok(await b.call("resume-consumer", {"consumerId": consumed["id"]})) == {}
    stats = ok(await b.call("get-stats"))
    assert stats["participantCount"] == 2 and stats["transportCount"] == 2
    assert stats["producerCount"] == 1 and stats["consumerCount"] == 1
    assert a.got("error") == [] and b.got("error") == []


async def test_failures_ack_and_emit_error_event(stack):
    c = await stack.client()
    e = err(await c.call("create-transport", {"direction": "send"}), "invalid-state")
    assert (await c.wait_for("error")) == [{"event": "create-transport", "code": "invalid-state",
                                            "message": e["message"]}]
    assert c.got("transport-created") == []
    assert ok(await c.call("leave-room")) == {}  # harmless when not joined
    assert ok(await c.call("leave-room", {})) == {}


@pytest.mark.parametrize(
    "event,payload,field",
    [
        ("join-room", {"roomId": "r", "displayName": "A", "extra": 1}, "extra"),
        ("join-room", {"roomId": "r"}, "displayName"),
        ("join-room", {"roomId": "bad room!", "displayName": "A"}, "roomId"),
        ("join-room", {"roomId": "r", "displayName": 5}, "displayName"),
        ("join-room", ["r", "A"], "payload"),
        ("join-room", None, "payload"),
        ("create-transport", {"direction": "sideways"}, "direction"),
        ("get-stats", {"x": 1}, "x"),
        ("no-such-event", {}, "unknown event"),
    ],
)
async def test_invalid_payloads_are_invalid_request(stack, event, payload, field):
    c = await stack.client()
    e = err(await c.call(event, payload), "invalid-request")
    assert field in e["message"]
    assert (await c.wait_for("error"))[0]["code"] == "invalid-request"


async def test_payload_size_limit(make_stack):
    stack = await make_stack(make_settings(max_payload_bytes=2048))
    c, _ = await joined(stack)
    send = ok(await c.call("create-transport", {"direction": "send"}))
    big = dict(VIDEO_RTP, codecs=[dict(VIDEO_RTP["codecs"][0], parameters={f"k{i}": "v" * 200 for i in range(12)})])
    e = err(await c.call("produce", {"transportId": send["id"], "kind": "video", "rtpParameters": big}),
            "invalid-request")
    assert "larger than 2048 bytes" in e["message"]


async def test_one_clients_requests_run_in_order(stack):
    for w in stack.directory.workers.values():
        w.delay["create_webrtc_transport"] = 0.05
    c = await stack.client()
    order: list[str] = []
    done = asyncio.Event()
    results: dict[str, dict] = {}

    def cb(name, last=False):
        def _cb(ack):
            order.append(name)
            results[name] = ack
            if last:
                done.set()
        return _cb

    await c.sio.emit("join-room", {"roomId": "room1", "displayName": "Ada"}, callback=cb("join"))
    await c.sio.emit("create-transport", {"direction": "send"}, callback=cb("send"))
    await c.sio.emit("create-transport", {"direction": "recv"}, callback=cb("recv"))
    await c.sio.emit("get-stats", callback=cb("stats", last=True))
    await asyncio.wait_for(done.wait(), 5)
    assert order == ["join", "send", "recv", "stats"]
    assert ok(results["stats"])["transportCount"] == 2


async def test_internal_errors_carry_a_trace_id(make_stack):
    stack = await make_stack()
    c, _ = await joined(stack)
    for w in stack.directory.workers.values():
        w.fail["create_webrtc_transport"] = RuntimeError("boom")
    e = err(await c.call("create-transport", {"direction": "send"}), "internal")
    assert e["traceId"] and e["traceId"] in e["message"] and "boom" not in e["message"]


# --- notifications and disconnect -----------------------------------------------------------------


async def test_notifications_and_disconnect_cleanup(stack):
    a, join_a = await joined(stack, "Ada")
    b, join_b = await joined(stack, "Bob")
    assert (await a.wait_for("participant-joined")) == [{"participantId": join_b["participantId"], "displayName": "Bob"}]
    send = ok(await b.call("create-transport", {"direction": "send"}))
    cam = ok(await b.call("produce", {"transportId": send["id"], "kind": "video", "rtpParameters": VIDEO_RTP}))
    assert (await a.wait_for("new-producer"))[0]["source"] == "camera"
    recv = ok(await a.call("create-transport", {"direction": "recv"}))
    ok(await a.call("consume", {"transportId": recv["id"], "producerId": cam["producerId"], "rtpCapabilities": CAPS}))
    await b.close()
    left = await a.wait_for("participant-left")
    assert left == [{"participantId": join_b["participantId"], "displayName": "Bob"}]
    assert a.got("producer-closed") == [{"producerId": cam["producerId"], "participantId": join_b["participantId"]}]
    assert a.got("consumer-closed")[0]["producerId"] == cam["producerId"]
    await a.close()
    for _ in range(100):
        status, stats = await stack.http("GET", "/api/stats")
        if not stats["rooms"] or stats["rooms"][0]["participantCount"] == 0:
            break
        await asyncio.sleep(0.02)
    for room in stats["rooms"]:
        assert room["participantCount"] == room["transportCount"] == room["producerCount"] == room["consumerCount"] == 0
    assert stack.server.connected_sids == []
    await asyncio.sleep(0.3)  # empty_room_timeout_s=0.2: the room closes and its router is released
    await stack.service.idle()
    assert stack.service.rooms == {} and len(stack.directory.released) == 1


async def test_server_stop_disconnects_clients_and_cleans_rooms(make_stack):
    stack = await make_stack()
    a, _ = await joined(stack)
    await stack.server.stop()
    assert all(r["participantCount"] == 0 for r in stack.service.stats()["rooms"])
    assert stack.server.connected_sids == []
    for _ in range(100):
        if not a.sio.connected:
            break
        await asyncio.sleep(0.02)
    assert not a.sio.connected


# --- HTTP -----------------------------------------------------------------------------------------


async def test_http_routes(stack):
    assert await stack.http("GET", "/healthz") == (200, {"status": "ok"})
    status, body = await stack.http("POST", "/api/token", json={"roomId": "room1"})
    assert status == 400 and body["error"]["code"] == "invalid-request" and "displayName" in body["error"]["message"]
    status, body = await stack.http("POST", "/api/token", data="nope")
    assert status == 400
    await joined(stack, "Ada")
    status, body = await stack.http("GET", "/api/rooms")
    assert status == 200 and body["rooms"][0]["roomId"] == "room1" and body["rooms"][0]["participantCount"] == 1
    status, body = await stack.http("GET", "/api/stats")
    assert status == 200 and set(body) == {"rooms", "workers"}
    assert set(body["rooms"][0]) == {"roomId", "participantCount", "transportCount", "producerCount",
                                     "consumerCount", "workers"}
    assert body["workers"][0]["routerCount"] == 1


async def test_healthz_is_503_until_ready(make_stack):
    stack = await make_stack()
    await stack.service.close()
    status, body = await stack.http("GET", "/healthz")
    assert status == 503


async def test_token_endpoint_is_403_with_a_configured_secret(make_stack):
    stack = await make_stack(make_settings(secret="s3cret-s3cret-s3cret-s3cret-s3cret"))
    assert stack.server.dev_mode is False
    status, body = await stack.http("POST", "/api/token", json={"roomId": "room1", "displayName": "A"})
    assert status == 403 and body["error"]["code"] == "forbidden"
    c = await stack.client(issue_token("s3cret-s3cret-s3cret-s3cret-s3cret", "u", "U", ["room1"], 60))
    ok(await c.call("join-room", {"roomId": "room1", "displayName": "A"}))


async def test_static_web_root(make_stack, tmp_path):
    missing = await make_stack(web_root=tmp_path / "nothing")
    status, text = await missing.http("GET", "/")
    assert status == 200 and "has not been built" in text
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<h1>study</h1>")
    (tmp_path / "site" / "app.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("no")
    site = await make_stack(web_root=tmp_path / "site")
    assert await site.http("GET", "/") == (200, "<h1>study</h1>")
    assert (await site.http("GET", "/app.js"))[0] == 200
    assert (await site.http("GET", "/../secret.txt"))[0] == 404
    assert (await site.http("GET", "/%2e%2e/secret.txt"))[0] == 404
    assert (await site.http("GET", "/nope.js"))[0] == 404


async def test_dev_mode_refuses_non_loopback(stack):
    server = SignalingServer(make_settings(), stack.rooms, "sig-2")
    with pytest.raises(InvalidStateError):
        await server.start("0.0.0.0", 0)
