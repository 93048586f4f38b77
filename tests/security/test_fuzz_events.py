"""Hostile input, property-based: hypothesis drives every Socket.IO event of protocol.md with valid,
mutated and random payloads over ONE joined connection, while another pair of participants keeps
media flowing.

Properties:
* every ack is ``{ok: false, error: {code, message}}`` with a stable code (never ``internal``: an
  internal error is a bug the fuzzer found), or ``{ok: true, data}`` whose data matches the event's
  response model;
* the bystanders' video keeps decoding throughout;
* once the fuzzing client is gone, the workers hold exactly the bystanders' objects (no leaked
  routers, transports, producers, consumers) and the service only their room.
"""

from __future__ import annotations

import os

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from studyrooms.config import LimitSettings, RoomSettings
from studyrooms.protocol import EVENTS
from studyrooms.protocol.registry import RESPONSES
from studyrooms.standalone import start_standalone
from support.peer import Peer

from sechelpers import STABLE_CODES, eventually, join, settings, worker_counts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(150),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:The HMAC key is"),
]

ROOM = "fuzz"
FP = {"algorithm": "sha-256", "value": ":".join(["AB"] * 32)}


def opus_params(ssrc: int) -> dict:
    return {
        "mid": "0",
        "codecs": [{"mimeType": "audio/opus", "payloadType": 96, "clockRate": 48000, "channels": 2,
                    "parameters": {}, "rtcpFeedback": []}],
        "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 1},
                             {"uri": "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "id": 2}],
        "encodings": [{"ssrc": ssrc}],
        "rtcp": {"cname": "fuzz", "reducedSize": True},
    }


def vp8_params(ssrc: int) -> dict:
    return {
        "mid": "1",
        "codecs": [{"mimeType": "video/VP8", "payloadType": 97, "clockRate": 90000, "parameters": {},
                    "rtcpFeedback": [{"type": "nack"}, {"type": "nack", "parameter": "pli"},
                                     {"type": "goog-remb"}]},
                   {"mimeType": "video/rtx", "payloadType": 98, "clockRate": 90000, "parameters": {"apt": 97}}],
        "headerExtensions": [{"uri": "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", "id": 3}],
        "encodings": [{"ssrc": ssrc, "rtx": {"ssrc": ssrc + 1}}],
        "rtcp": {"cname": "fuzz", "reducedSize": True},
    }


class World:
    pass


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world():
    w = World()
    cfg = settings(
        limits=LimitSettings(requests_per_second=1000, request_burst=1000),
        rooms=RoomSettings(empty_room_timeout_s=0.2, max_rooms=20),
    )
    w.app = await start_standalone(cfg, num_workers=1, port=0)
    w.a = await join(w.app, ROOM, "Alice")
    w.b = await join(w.app, ROOM, "Bob")
    w.a_peer, w.b_peer = Peer(w.a.signal, video=True), Peer(w.b.signal)
    try:
        await w.a_peer.load(w.a.joined["rtpCapabilities"])
        await w.b_peer.load(w.b.joined["rtpCapabilities"])
        w.producer_id = (await w.a_peer.produce(video=True))["video"]
        w.counter = await w.b_peer.consume(w.producer_id)
        assert await w.counter.wait_frames(5, timeout=20) >= 5
        w.baseline = worker_counts(w.app)
        w.caps = w.b.joined["rtpCapabilities"]
        w.foreign_ids = [w.producer_id, w.a_peer.send_transport.id, w.b_peer.recv_transport.id,
                         next(iter(w.b_peer.consumers))]
        w.f = await join(w.app, ROOM, "Fuzzer")
        w.own: dict[str, list[str]] = {"transport": [], "producer": [], "consumer": []}
        await seed(w)
        w.acks = {"ok": 0, "error": 0}
        w.codes: dict[str, int] = {}
        yield w
    finally:
        await w.a_peer.close()
        await w.b_peer.close()
        for c in (w.a, w.b, getattr(w, "f", None)):
            if c is not None:
                await c.close()
        await w.app.stop()


async def seed(w) -> None:
    """Give the fuzzer objects of its own (so valid-looking requests reach deep paths)."""
    w.own = {"transport": [], "producer": [], "consumer": []}
    for direction in ("send", "recv"):
        w.own["transport"].append((await w.f.signal.call("create-transport", {"direction": direction}))["id"])
    reply = await w.f.signal.call("produce", {"transportId": w.own["transport"][0], "kind": "audio",
                                              "rtpParameters": opus_params(4242)})
    w.own["producer"].append(reply["producerId"])
    reply = await w.f.signal.call("consume", {"transportId": w.own["transport"][1], "producerId": w.producer_id,
                                              "rtpCapabilities": w.caps})
    w.own["consumer"].append(reply["id"])


# --- strategies ---------------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=12,
)
weird_values = st.one_of(
    json_values,
    st.text(min_size=257, max_size=3000),  # over the string bound
    st.just("x" * 70_000),  # over the payload bound
    st.lists(st.integers(), min_size=33, max_size=40),  # over the list bound
    st.just({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}),  # too deep
    st.sampled_from(["", " ", "\x00", "../../etc/passwd", "' OR 1=1 --", "🎥" * 10, "a" * 65, "send", "recv",
                     "audio", "video", "mic", 0, -1, 128, 2**32, 1.5, True, [], {}]),
)


def pick_id(w, kind: str, draw) -> str:
    """An id chosen by structure only (which pool, which index), so that hypothesis draws the same
    way whatever the server state is: mostly the fuzzer's own objects, sometimes the bystanders'
    (forbidden), sometimes unknown ones."""
    pool = draw(st.sampled_from(["own", "own", "own", "foreign", "other-own", "unknown"]))
    index = draw(st.integers(0, 15))
    if pool == "own":
        ids = w.own[kind]
    elif pool == "other-own":
        ids = [i for k, v in w.own.items() if k != kind for i in v]
    elif pool == "foreign":
        ids = w.foreign_ids
    else:
        ids = []
    return ids[index % len(ids)] if ids else f"unknown-{index}"


def valid_payload(w, event: str, draw) -> dict | None:
    tid = pick_id(w, "transport", draw)
    pid = pick_id(w, "producer", draw)
    cid = pick_id(w, "consumer", draw)
    ssrc = draw(st.integers(min_value=1, max_value=2**31))
    return {
        "join-room": {"roomId": draw(st.sampled_from([ROOM, "other-room", "r" * 64])), "displayName": "F"},
        "get-rtp-capabilities": {},
        "create-transport": {"direction": draw(st.sampled_from(["send", "recv"]))},
        "connect-transport": {"transportId": tid, "dtlsParameters": {"role": "server", "fingerprints": [FP]}},
        "produce": {"transportId": tid, "kind": draw(st.sampled_from(["audio", "video"])),
                    "rtpParameters": draw(st.sampled_from([opus_params(ssrc), vp8_params(ssrc)])),
                    "appData": {"source": draw(st.sampled_from(["mic", "camera", "screen"]))}},
        "consume": {"transportId": tid, "producerId": pid, "rtpCapabilities": w.caps},
        "resume-consumer": {"consumerId": cid},
        "pause-consumer": {"consumerId": cid},
        "pause-producer": {"producerId": pid},
        "resume-producer": {"producerId": pid},
        "close-producer": {"producerId": pid},
        "set-preferred-layers": {"consumerId": cid, "spatialLayer": draw(st.integers(0, 3)),
                                 "temporalLayer": draw(st.integers(0, 3))},
        "set-receive-constraints": {"lastN": draw(st.integers(0, 12)), "onStage": [draw(st.sampled_from(
                                        [w.a.joined["participantId"], w.f.joined["participantId"], "nobody"]))],
                                    "maxHeight": draw(st.sampled_from([0, 180, 720]))},
        "restart-ice": {"transportId": tid},
        "get-stats": {},
        "leave-room": {},
    }.get(event)


def mutate(value, draw, depth: int = 0):
    """One random structural mutation somewhere inside ``value``."""
    if isinstance(value, dict) and value and depth < 4:
        op = draw(st.sampled_from(["drop", "add", "replace", "recurse", "recurse"]))
        key = draw(st.sampled_from(sorted(value)))
        out = dict(value)
        if op == "drop":
            del out[key]
        elif op == "add":
            out[draw(st.text(min_size=1, max_size=10))] = draw(weird_values)
        elif op == "replace":
            out[key] = draw(weird_values)
        else:
            out[key] = mutate(out[key], draw, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 4:
        op = draw(st.sampled_from(["drop", "dup", "recurse", "recurse"]))
        i = draw(st.integers(0, len(value) - 1))
        out = list(value)
        if op == "drop":
            del out[i]
        elif op == "dup":
            out.extend([out[i]] * draw(st.integers(1, 40)))
        else:
            out[i] = mutate(out[i], draw, depth + 1)
        return out
    return draw(weird_values)


@st.composite
def requests(draw, w):
    names = sorted(EVENTS)
    event = draw(st.sampled_from(names) | st.sampled_from(
        ["", "connect", "disconnect", "produced", "error", "create-plain-transport", "x" * 300, "__proto__"]))
    base = valid_payload(w, event, draw) if event in EVENTS else {}
    how = draw(st.sampled_from(["valid", "valid", "valid", "mutate", "mutate", "mutate", "mutate2", "random",
                                "omitted", "two-args"]))
    if how == "valid":
        return event, base, "one"
    if how == "mutate":
        return event, mutate(base, draw), "one"
    if how == "mutate2":
        return event, mutate(mutate(base, draw), draw), "one"
    if how == "random":
        return event, draw(json_values), "one"
    if how == "omitted":
        return event, None, "none"
    return event, (base, draw(json_values)), "many"


def check_ack(event: str, reply) -> None:
    assert isinstance(reply, dict), reply
    if reply.get("ok") is True:
        assert set(reply) == {"ok", "data"} and isinstance(reply["data"], dict), reply
        model = RESPONSES.get(event)
        if model is not None:
            model.model_validate(reply["data"])
        return
    assert reply.get("ok") is False and set(reply) <= {"ok", "error"}, reply
    error = reply["error"]
    assert set(error) <= {"code", "message", "traceId"} and isinstance(error.get("message"), str), error
    assert error["code"] in STABLE_CODES, error
    assert error["code"] != "internal", f"{event}: internal error: {error}"


def remember(w, event: str, payload, reply) -> None:
    if not reply.get("ok"):
        return
    data = reply["data"]
    if event == "create-transport":
        w.own["transport"].append(data["id"])
    elif event == "produce":
        w.own["producer"].append(data["producerId"])
    elif event == "consume":
        w.own["consumer"].append(data["id"])
    elif event == "close-producer" and payload.get("producerId") in w.own["producer"]:
        w.own["producer"].remove(payload["producerId"])


# --- the property -------------------------------------------------------------------------------


@hsettings(max_examples=int(os.environ.get("SECURITY_FUZZ_EXAMPLES", "150")), deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                  HealthCheck.data_too_large])
@given(data=st.data())
async def test_every_event_acks_with_a_stable_shape(world, data):
    w = world
    if not w.f.sio.connected:  # a previous example may have got the socket dropped
        w.f = await join(w.app, ROOM, "Fuzzer")
        await seed(w)
    event, payload, arity = data.draw(requests(w))
    if arity == "none":
        reply = await w.f.sio.call(event, timeout=10)
    elif arity == "many":
        reply = await w.f.sio.call(event, payload, timeout=10)
    else:
        reply = await w.f.sio.call(event, payload, timeout=10)
    check_ack(event, reply)
    remember(w, event, payload, reply)
    w.acks["ok" if reply.get("ok") else "error"] += 1
    if not reply.get("ok"):
        code = reply["error"]["code"]
        w.codes[code] = w.codes.get(code, 0) + 1
    if event == "leave-room" and reply.get("ok"):  # stay in the room: the fuzz is about a joined client
        await w.f.signal.call("join-room", {"roomId": ROOM, "displayName": "Fuzzer"})
        await seed(w)


async def test_the_fuzz_exercised_both_outcomes_and_media_kept_flowing(world):
    w = world
    print("fuzz acks", w.acks, "error codes", w.codes)
    assert w.acks["ok"] >= 1 and w.acks["error"] >= 50, (w.acks, w.codes)
    assert "invalid-request" in w.codes
    before = w.counter.frames
    assert await w.counter.wait_frames(10, timeout=10) >= before + 10, "the bystanders' video stopped"


async def test_nothing_leaks_after_the_fuzzer_leaves(world):
    w = world
    await w.f.close()
    ok = await eventually(
        lambda: worker_counts(w.app) == w.baseline and set(w.app.service.rooms) == {ROOM}
        and len(w.app.service.rooms[ROOM].participants) == 2, timeout=10)
    assert ok, (worker_counts(w.app), w.baseline, sorted(w.app.service.rooms))
    room = w.app.service.rooms[ROOM]
    assert len(room.participants) == 2
    assert set(room._transport_owner) == {w.a_peer.send_transport.id, w.b_peer.recv_transport.id}
    assert set(room._producer_owner) == {w.producer_id}
    assert w.app.signaling.connected_sids and len(w.app.signaling.connected_sids) == 2
    before = w.counter.frames
    assert await w.counter.wait_frames(10, timeout=10) >= before + 10
