"""Authorization against the real stack (standalone server, Socket.IO clients, pymediasoup media).

Connections need a valid signed token; a token names its rooms; a participant can only touch its
own transports, producers and consumers (``forbidden`` otherwise) and can only reach objects of its
own room (``not-found`` for any other room's ids, without saying more). Every attack asserts that
the victim is untouched: its objects still exist in the worker, unchanged, and its media still
decodes.
"""

from __future__ import annotations

import time

import pytest
import pytest_asyncio
import socketio

from studyrooms.standalone import start_standalone
from support.peer import Peer

from sechelpers import connect, find, join, settings, token

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:The HMAC key is"),
]

ROOM_A, ROOM_B = "room-a", "room-b"
VP8_PARAMS = {
    "codecs": [{"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000}],
    "encodings": [{"ssrc": 1111}],
}


class World:
    """Victim V produces video in room A; watcher W (room A) consumes and decodes it; attacker M is
    another participant of room A; outsider X is in room B. M and X have their own transports."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world():
    w = World()
    w.app = await start_standalone(settings(), num_workers=1, port=0)
    w.v = await join(w.app, ROOM_A, "Victim")
    w.w = await join(w.app, ROOM_A, "Watcher")
    w.m = await join(w.app, ROOM_A, "Mallory")
    w.x = await join(w.app, ROOM_B, "Outsider")
    w.v_peer = Peer(w.v.signal, video=True)
    w.w_peer = Peer(w.w.signal)
    try:
        await w.v_peer.load(w.v.joined["rtpCapabilities"])
        await w.w_peer.load(w.w.joined["rtpCapabilities"])
        w.producer_id = (await w.v_peer.produce(video=True))["video"]
        w.counter = await w.w_peer.consume(w.producer_id)
        assert await w.counter.wait_frames(5, timeout=20) >= 5
        w.v_send = w.v_peer.send_transport.id
        w.w_recv = w.w_peer.recv_transport.id
        w.consumer_id = next(iter(w.w_peer.consumers))
        w.caps = w.w.joined["rtpCapabilities"]
        w.m_recv = (await w.m.signal.call("create-transport", {"direction": "recv"}))["id"]
        w.m_send = (await w.m.signal.call("create-transport", {"direction": "send"}))["id"]
        w.x_recv = (await w.x.signal.call("create-transport", {"direction": "recv"}))["id"]
        yield w
    finally:
        await w.v_peer.close()
        await w.w_peer.close()
        for c in (w.v, w.w, w.m, w.x):
            await c.close()
        await w.app.stop()


async def assert_victim_untouched(w) -> None:
    producer = find(w.app, "producer", w.producer_id)
    assert producer is not None and not producer.closed and not producer.paused
    consumer = find(w.app, "consumer", w.consumer_id)
    assert consumer is not None and not consumer.closed and not consumer.paused
    assert find(w.app, "transport", w.v_send).dtls_state == "connected"
    assert find(w.app, "transport", w.w_recv).dtls_state == "connected"
    before = w.counter.frames
    assert await w.counter.wait_frames(5, timeout=10) >= before + 5, "the victim's video stopped"


# --- connection ---------------------------------------------------------------------------------


def _bad_tokens() -> dict:
    good = token([ROOM_A])
    head, payload, sig = good.split(".")
    return {
        "bad-signature": token([ROOM_A], secret="not-the-secret"),
        "tampered-payload": f"{head}.{payload[:-2]}AA.{sig}",
        "expired": token([ROOM_A], ttl_s=60, now=time.time() - 3600),
        "missing": None,
        "empty": "",
        "malformed": "not.a.jwt",
        "not-a-string": 12345,
        "huge": "a" * 10_000,
        "alg-none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.",
    }


@pytest.mark.parametrize("case", sorted(_bad_tokens()))
async def test_connection_refused_with_unauthorized(world, case):
    bad = _bad_tokens()[case]
    sio = socketio.AsyncClient(reconnection=False)
    errors: list = []
    sio.on("connect_error", lambda data: errors.append(data))
    auth = {} if bad is None else {"token": bad}
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(world.app.url, auth=auth, transports=["websocket"], wait_timeout=5)
    assert errors and errors[0]["code"] == "unauthorized", errors
    assert not sio.connected
    await sio.disconnect()


async def test_no_auth_payload_at_all_is_refused(world):
    sio = socketio.AsyncClient(reconnection=False)
    errors: list = []
    sio.on("connect_error", lambda data: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(world.app.url, transports=["websocket"], wait_timeout=5)
    assert errors and errors[0]["code"] == "unauthorized"


async def test_token_for_room_a_cannot_join_room_b(world):
    client = await connect(world.app, [ROOM_A], name="Eve")
    try:
        err = await client.error("join-room", {"roomId": ROOM_B, "displayName": "Eve"})
        assert err["code"] == "forbidden"
        # and the refusal left nothing behind: room B still has only its outsider
        assert len(world.app.service.rooms[ROOM_B].participants) == 1
    finally:
        await client.close()


async def test_dev_token_endpoint_is_closed_when_a_secret_is_set(world):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{world.app.url}/api/token", json={"roomId": ROOM_A, "displayName": "x"}) as r:
            assert r.status == 403


# --- same room, somebody else's objects: forbidden ---------------------------------------------


async def test_connect_someone_elses_transport_is_forbidden(world):
    fake = {"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": "AA:" * 31 + "AA"}]}
    err = await world.m.error("connect-transport", {"transportId": world.v_send, "dtlsParameters": fake})
    assert err["code"] == "forbidden"
    await assert_victim_untouched(world)


async def test_produce_on_someone_elses_transport_is_forbidden(world):
    err = await world.m.error(
        "produce", {"transportId": world.v_send, "kind": "video", "rtpParameters": VP8_PARAMS}
    )
    assert err["code"] == "forbidden"
    assert list(find(world.app, "transport", world.v_send).producers) == [world.producer_id]
    await assert_victim_untouched(world)


async def test_consume_through_someone_elses_transport_is_forbidden(world):
    err = await world.m.error(
        "consume", {"transportId": world.w_recv, "producerId": world.producer_id, "rtpCapabilities": world.caps}
    )
    assert err["code"] == "forbidden"
    assert list(find(world.app, "transport", world.w_recv).consumers) == [world.consumer_id]
    await assert_victim_untouched(world)


@pytest.mark.parametrize("event", ["pause-producer", "resume-producer", "close-producer"])
async def test_producer_ops_on_someone_elses_producer_are_forbidden(world, event):
    err = await world.m.error(event, {"producerId": world.producer_id})
    assert err["code"] == "forbidden"
    await assert_victim_untouched(world)


@pytest.mark.parametrize("event", ["pause-consumer", "resume-consumer"])
async def test_consumer_ops_on_someone_elses_consumer_are_forbidden(world, event):
    err = await world.m.error(event, {"consumerId": world.consumer_id})
    assert err["code"] == "forbidden"
    await assert_victim_untouched(world)


async def test_set_preferred_layers_on_someone_elses_consumer_is_forbidden(world):
    err = await world.m.error("set-preferred-layers", {"consumerId": world.consumer_id, "spatialLayer": 0})
    assert err["code"] == "forbidden"
    await assert_victim_untouched(world)


async def test_set_consumer_priority_on_someone_elses_consumer_is_forbidden(world):
    err = await world.m.error("set-consumer-priority", {"consumerId": world.consumer_id, "priority": 9})
    assert err["code"] == "forbidden"
    assert find(world.app, "consumer", world.consumer_id).priority == 1
    await assert_victim_untouched(world)


async def test_restart_ice_of_someone_elses_transport_is_forbidden(world):
    before = find(world.app, "transport", world.v_send).ice.ufrag
    err = await world.m.error("restart-ice", {"transportId": world.v_send})
    assert err["code"] == "forbidden"
    assert find(world.app, "transport", world.v_send).ice.ufrag == before
    await assert_victim_untouched(world)


async def test_same_room_participant_may_consume_the_producer_through_its_own_transport(world):
    """The positive control: M's refusals above are about ownership, not a broken setup."""
    reply = await world.m.raw(
        "consume", {"transportId": world.m_recv, "producerId": world.producer_id, "rtpCapabilities": world.caps}
    )
    assert reply["ok"] is True, reply
    assert find(world.app, "consumer", reply["data"]["id"]) is not None


# --- another room's objects: not-found, revealing nothing ---------------------------------------


def _outsider_attacks(w) -> list[tuple[str, dict]]:
    fake = {"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": "AA:" * 31 + "AA"}]}
    return [
        ("consume", {"transportId": w.x_recv, "producerId": w.producer_id, "rtpCapabilities": w.caps}),
        ("consume", {"transportId": w.w_recv, "producerId": w.producer_id, "rtpCapabilities": w.caps}),
        ("connect-transport", {"transportId": w.v_send, "dtlsParameters": fake}),
        ("produce", {"transportId": w.v_send, "kind": "video", "rtpParameters": VP8_PARAMS}),
        ("pause-producer", {"producerId": w.producer_id}),
        ("resume-producer", {"producerId": w.producer_id}),
        ("close-producer", {"producerId": w.producer_id}),
        ("pause-consumer", {"consumerId": w.consumer_id}),
        ("resume-consumer", {"consumerId": w.consumer_id}),
        ("set-preferred-layers", {"consumerId": w.consumer_id, "spatialLayer": 0}),
        ("set-consumer-priority", {"consumerId": w.consumer_id, "priority": 5}),
        ("restart-ice", {"transportId": w.v_send}),
    ]


async def test_another_rooms_objects_are_not_found_and_not_revealed(world):
    secrets_of_a = {world.producer_id, world.consumer_id, world.v_send, world.w_recv, ROOM_A}
    for event, payload in _outsider_attacks(world):
        err = await world.x.error(event, payload)
        assert err["code"] == "not-found", (event, err)
        # the message says what was not found, never where it lives
        assert "room-a" not in err["message"] and "another" not in err["message"], err
        assert set(err) <= {"code", "message"}
    assert all(s not in str(world.x.events) for s in secrets_of_a - {world.producer_id})
    await assert_victim_untouched(world)


async def test_outsider_sees_no_notifications_of_another_room(world):
    assert not [e for e in world.x.events if e[0] in ("new-producer", "participant-joined", "producer-closed")]
    stats = await world.x.signal.call("get-stats")
    assert stats["roomId"] == ROOM_B and stats["participantCount"] == 1
