"""RoomService / Room behaviour, driven through the protocol requests with in-test ports."""

from __future__ import annotations

import asyncio

import pytest

from roomfakes import AUDIO_RTP, DTLS, RTP_CAPABILITIES, VIDEO_RTP, session
from studyrooms.errors import (
    ForbiddenError,
    InvalidRequestError,
    InvalidStateError,
    NotFoundError,
    RateLimitedError,
    ResourceExhaustedError,
    RoomFullError,
    StudyRoomsError,
)
from studyrooms.rooms import LocalRoomsPort

CAPS = {"codecs": RTP_CAPABILITIES["codecs"]}


async def join(svc, sid, room="room1", name=None, **kw):
    return await svc.request(session(sid, **kw), "join-room", {"roomId": room, "displayName": name or sid})


async def transport(svc, sid, direction):
    return await svc.request(session(sid), "create-transport", {"direction": direction})


async def publish(svc, sid, kind="audio", source=None):
    t = await transport(svc, sid, "send")
    payload = {"transportId": t["id"], "kind": kind, "rtpParameters": AUDIO_RTP if kind == "audio" else VIDEO_RTP}
    if source:
        payload["appData"] = {"source": source}
    return (await svc.request(session(sid), "produce", payload))["producerId"]


async def subscribe(svc, sid, producer_id, transport_id=None):
    if transport_id is None:
        transport_id = (await transport(svc, sid, "recv"))["id"]
    return await svc.request(
        session(sid), "consume", {"transportId": transport_id, "producerId": producer_id, "rtpCapabilities": CAPS}
    )


# --- join / leave ---------------------------------------------------------------------------------


async def test_join_ack_is_exactly_the_protocol_shape(service, notifier):
    a = await join(service, "a", name="  Ada ")
    assert set(a) == {"participantId", "roomId", "participants", "producers", "rtpCapabilities", "recommendAudioOnly"}
    assert a["roomId"] == "room1" and a["participants"] == [] and a["producers"] == []
    assert a["rtpCapabilities"] == RTP_CAPABILITIES and a["recommendAudioOnly"] is False
    mic = await publish(service, "a", "audio")
    b = await join(service, "b", name="Bob")
    assert b["participants"] == [{"participantId": a["participantId"], "displayName": "Ada"}]
    assert b["producers"] == [{"producerId": mic, "participantId": a["participantId"], "kind": "audio", "source": "mic"}]
    assert notifier.to("a", "participant-joined") == [{"participantId": b["participantId"], "displayName": "Bob"}]
    assert notifier.to("b", "participant-joined") == []


async def test_the_token_name_is_the_display_name_others_see(service, notifier):
    """A token issued for "Ada" cannot join as "Teacher (official)"; a token without a name can
    choose one with join-room."""
    a = await join(service, "a", name="Teacher (official)", token_name="Ada")
    b = await join(service, "b", name="Bob")
    assert b["participants"] == [{"participantId": a["participantId"], "displayName": "Ada"}]
    assert notifier.to("a", "participant-joined") == [{"participantId": b["participantId"], "displayName": "Bob"}]
    c = await join(service, "c", name="Anything", token_name="Cy")
    assert {p["displayName"] for p in c["participants"]} == {"Ada", "Bob"}
    assert notifier.to("a", "participant-joined")[-1]["displayName"] == "Cy"


async def test_join_checks_token_rooms_and_duplicates(service):
    with pytest.raises(ForbiddenError):
        await join(service, "a", room="secret", rooms=["room1"])
    await join(service, "a", room="room1", rooms=["room1"])
    with pytest.raises(InvalidStateError):
        await join(service, "a", room="room1")
    with pytest.raises(InvalidStateError):
        await join(service, "a", room="room2")
    assert service.stats()["rooms"][0]["participantCount"] == 1


async def test_capacity_gives_room_full(make_service):
    svc = make_service(capacity=2)
    await join(svc, "a")
    await join(svc, "b")
    with pytest.raises(RoomFullError) as info:
        await join(svc, "c")
    assert info.value.code == "room-full"
    await svc.request(session("b"), "leave-room", None)
    await join(svc, "c")


async def test_room_limit_is_resource_exhausted(make_service, clock):
    svc = make_service(max_rooms=2, empty_room_timeout_s=5)
    await join(svc, "a", room="r1")
    await join(svc, "b", room="r2")
    with pytest.raises(ResourceExhaustedError) as info:
        await join(svc, "c", room="r3")
    assert info.value.code == "resource-exhausted" and "room limit" in info.value.message
    await join(svc, "c", room="r1")  # an existing room is fine
    await svc.request(session("b"), "leave-room", {})
    clock.advance(5)
    await svc.idle()
    await join(svc, "d", room="r3")


async def test_requests_before_join_and_leave_when_not_joined(service):
    with pytest.raises(InvalidStateError):
        await transport(service, "a", "send")
    assert await service.request(session("a"), "leave-room", None) == {}
    with pytest.raises(InvalidRequestError):
        await service.request(session("a"), "no-such-event", {})


async def test_leave_closes_everything_and_tells_the_others(service, notifier, directory):
    a = await join(service, "a", name="Ada")
    b = await join(service, "b", name="Bob")
    mic = await publish(service, "a", "audio")
    cam = await publish(service, "a", "video", "camera")
    ca = await subscribe(service, "b", mic)
    cc = await subscribe(service, "b", cam)
    notifier.clear()
    await service.request(session("a"), "leave-room", {})
    worker = directory.workers[service.rooms["room1"].worker_id]
    assert [d["transportId"] for m, d in worker.calls if m == "close_transport"]  # transports closed in the worker
    events = notifier.to("b")
    assert ("consumer-closed", {"consumerId": ca["id"], "producerId": mic}) in events
    assert ("consumer-closed", {"consumerId": cc["id"], "producerId": cam}) in events
    assert ("producer-closed", {"producerId": mic, "participantId": a["participantId"]}) in events
    assert events[-1] == ("participant-left", {"participantId": a["participantId"], "displayName": "Ada"})
    assert notifier.to("a") == []
    stats = service.stats()["rooms"][0]
    assert stats == {"roomId": "room1", "participantCount": 1, "transportCount": 2, "producerCount": 0,
                     "consumerCount": 0, "workers": stats["workers"]}
    assert b["participantId"] in service.rooms["room1"].participants


async def test_disconnect_is_leave(service, notifier):
    await join(service, "a")
    await join(service, "b")
    await publish(service, "a")
    await service.disconnect(session("a"))
    assert [e for e, _ in notifier.to("b")][-2:] == ["producer-closed", "participant-left"]
    assert service.stats()["rooms"][0]["participantCount"] == 1
    await service.disconnect(session("a"))  # twice is harmless


async def test_empty_room_closes_after_timeout_and_releases_router(make_service, clock, directory):
    svc = make_service(empty_room_timeout_s=30)
    await join(svc, "a")
    worker_id = svc.rooms["room1"].worker_id
    router_id = svc.rooms["room1"].router_id
    await svc.request(session("a"), "leave-room", {})
    clock.advance(29)
    await svc.idle()
    assert "room1" in svc.rooms and directory.released == []
    clock.advance(1)
    await svc.idle()
    assert "room1" not in svc.rooms
    assert ("close_router", {"routerId": router_id}) in directory.workers[worker_id].calls
    assert directory.released == [("room1", worker_id)]
    assert svc.list_rooms() == []


async def test_rejoin_before_timeout_keeps_the_room(make_service, clock, directory):
    svc = make_service(empty_room_timeout_s=30)
    await join(svc, "a")
    room = svc.rooms["room1"]
    await svc.request(session("a"), "leave-room", {})
    clock.advance(20)
    await join(svc, "b")
    clock.advance(60)
    await svc.idle()
    assert svc.rooms["room1"] is room and not room.closed and directory.released == []


async def test_router_failure_is_reported_and_placement_released(service, directory):
    for w in directory.workers.values():
        w.fail["create_router"] = ResourceExhaustedError("worker full")
    with pytest.raises(ResourceExhaustedError):
        await join(service, "a")
    assert len(directory.released) == 1
    for w in directory.workers.values():
        w.fail.clear()
    await join(service, "a")


async def test_rooms_are_placed_round_robin(service, directory):
    await join(service, "a", room="r1")
    await join(service, "b", room="r2")
    assert {wid for _, wid in directory.placed} == {"w0", "w1"}
    assert sorted(service.stats()["workers"]) == ["w0", "w1"]


async def test_service_close_closes_every_room(service, directory):
    await join(service, "a", room="r1")
    await join(service, "b", room="r2")
    await service.close()
    assert len(directory.released) == 2 and service.rooms == {}
    with pytest.raises(InvalidStateError):
        await join(service, "c")


# --- media requests -------------------------------------------------------------------------------


async def test_transport_produce_consume_flow(service, notifier, directory):
    a = await join(service, "a")
    await join(service, "b")
    caps = await service.request(session("a"), "get-rtp-capabilities", None)
    assert caps == RTP_CAPABILITIES
    send = await transport(service, "a", "send")
    assert set(send) >= {"id", "iceParameters", "iceCandidates", "dtlsParameters", "direction"}
    assert send["direction"] == "send"
    ok = await service.request(session("a"), "connect-transport", {"transportId": send["id"], "dtlsParameters": DTLS})
    assert ok == {"transportId": send["id"]}
    with pytest.raises(InvalidStateError):
        await service.request(session("a"), "connect-transport", {"transportId": send["id"], "dtlsParameters": DTLS})
    notifier.clear()
    produced = await service.request(
        session("a"), "produce",
        {"transportId": send["id"], "kind": "video", "rtpParameters": VIDEO_RTP, "appData": {"source": "screen"}},
    )
    pid = produced["producerId"]
    assert notifier.to("b", "new-producer") == [
        {"producerId": pid, "participantId": a["participantId"], "kind": "video", "source": "screen"}
    ]
    assert notifier.to("a", "new-producer") == []
    consumed = await subscribe(service, "b", pid)
    assert set(consumed) == {"id", "producerId", "kind", "rtpParameters", "type", "producerPaused"}
    worker = directory.workers[service.rooms["room1"].worker_id]
    consume_call = [d for m, d in worker.calls if m == "consume"][-1]
    assert consume_call["paused"] is True  # consumers start paused
    for event in ("resume-consumer", "pause-consumer"):
        assert await service.request(session("b"), event, {"consumerId": consumed["id"]}) == {}
    assert await service.request(
        session("b"), "set-preferred-layers", {"consumerId": consumed["id"], "spatialLayer": 1, "temporalLayer": 0}
    ) == {}
    assert ("set_consumer_preferred_layers", {"consumerId": consumed["id"], "spatialLayer": 1, "temporalLayer": 0}) in worker.calls
    assert await service.request(
        session("b"), "set-consumer-priority", {"consumerId": consumed["id"], "priority": 7}) == {}
    assert ("set_consumer_priority", {"consumerId": consumed["id"], "priority": 7}) in worker.calls
    for event in ("pause-producer", "resume-producer"):
        assert await service.request(session("a"), event, {"producerId": pid}) == {}
    ice = await service.request(session("a"), "restart-ice", {"transportId": send["id"]})
    assert set(ice) == {"iceParameters"}
    stats = await service.request(session("a"), "get-stats", None)
    assert stats["participantCount"] == 2 and stats["transportCount"] == 2
    assert stats["producerCount"] == 1 and stats["consumerCount"] == 1
    notifier.clear()
    assert await service.request(session("a"), "close-producer", {"producerId": pid}) == {}
    assert notifier.to("b") == [
        ("consumer-closed", {"consumerId": consumed["id"], "producerId": pid}),
        ("producer-closed", {"producerId": pid, "participantId": a["participantId"]}),
        ("forwarding-changed", {"video": [], "onStage": []}),  # b's forwarded videos: none left
    ]
    assert (await service.request(session("a"), "get-stats", {}))["consumerCount"] == 0


async def test_default_source_follows_kind(service, notifier):
    await join(service, "a")
    await join(service, "b")
    await publish(service, "a", "audio")
    await publish(service, "a", "video")
    assert [d["source"] for d in notifier.to("b", "new-producer")] == ["mic", "camera"]


async def test_ownership_forbidden_and_not_found(service):
    await join(service, "a")
    await join(service, "b")
    await join(service, "x", room="other")
    mic = await publish(service, "a")
    a_recv = await transport(service, "a", "recv")
    a_send = service.rooms["room1"].participants["p-1"].transports
    a_send_id = next(t for t, d in a_send.items() if d == "send")
    consumed = await subscribe(service, "b", mic)
    with pytest.raises(ForbiddenError):
        await service.request(session("b"), "connect-transport", {"transportId": a_send_id, "dtlsParameters": DTLS})
    with pytest.raises(ForbiddenError):
        await subscribe(service, "b", mic, transport_id=a_recv["id"])
    with pytest.raises(ForbiddenError):
        await service.request(session("b"), "pause-producer", {"producerId": mic})
    with pytest.raises(ForbiddenError):
        await service.request(session("b"), "close-producer", {"producerId": mic})
    with pytest.raises(ForbiddenError):
        await service.request(session("a"), "resume-consumer", {"consumerId": consumed["id"]})
    with pytest.raises(ForbiddenError):
        b_recv = next(iter(service.rooms["room1"].participants["p-2"].transports))
        await service.request(session("a"), "restart-ice", {"transportId": b_recv})
    # a producer of another room is simply not found (nothing revealed)
    with pytest.raises(NotFoundError) as info:
        await subscribe(service, "x", mic)
    assert "room" not in info.value.message
    with pytest.raises(NotFoundError):
        await service.request(session("b"), "resume-consumer", {"consumerId": "nope"})
    with pytest.raises(NotFoundError):
        await service.request(session("b"), "connect-transport", {"transportId": "nope", "dtlsParameters": DTLS})


async def test_transport_direction_is_enforced(service):
    await join(service, "a")
    mic = await publish(service, "a")
    recv = await transport(service, "a", "recv")
    with pytest.raises(InvalidStateError):
        await service.request(session("a"), "produce", {"transportId": recv["id"], "kind": "audio", "rtpParameters": AUDIO_RTP})
    send_id = service.rooms["room1"].participants["p-1"].producers[mic]["transportId"]
    with pytest.raises(InvalidStateError):
        await subscribe(service, "a", mic, transport_id=send_id)


async def test_per_participant_limits_are_rate_limited(make_service):
    svc = make_service(max_send_transports=1, max_recv_transports=1, max_producers=1, max_consumers=1)
    await join(svc, "a")
    await join(svc, "b")
    mic = await publish(svc, "a")
    with pytest.raises(RateLimitedError):
        await transport(svc, "a", "send")
    send_id = next(iter(svc.rooms["room1"].participants["p-1"].transports))
    with pytest.raises(RateLimitedError) as info:
        await svc.request(session("a"), "produce", {"transportId": send_id, "kind": "video", "rtpParameters": VIDEO_RTP})
    assert info.value.code == "rate-limited"
    recv = await transport(svc, "b", "recv")
    await subscribe(svc, "b", mic, recv["id"])
    with pytest.raises(RateLimitedError):
        await subscribe(svc, "b", mic, recv["id"])
    with pytest.raises(RateLimitedError):
        await transport(svc, "b", "recv")


async def test_request_rate_limiter_uses_the_clock(make_service, clock):
    svc = make_service(requests_per_second=2, request_burst=3)
    await join(svc, "a")
    await svc.request(session("a"), "get-stats", None)
    await svc.request(session("a"), "get-stats", None)
    with pytest.raises(RateLimitedError):
        await svc.request(session("a"), "get-stats", None)
    clock.advance(0.5)
    await svc.request(session("a"), "get-stats", None)
    with pytest.raises(RateLimitedError):
        await svc.request(session("a"), "get-stats", None)
    await svc.request(session("b"), "leave-room", None)  # another socket has its own bucket


async def test_audio_only_recommendation_over_threshold(make_service, notifier):
    svc = make_service(capacity=10, audio_only_threshold=2)
    assert (await join(svc, "a"))["recommendAudioOnly"] is False
    assert (await join(svc, "b"))["recommendAudioOnly"] is False
    assert not [s for _, s, e, _ in notifier.sent if e == "recommend-audio-only"]
    c = await join(svc, "c")
    assert c["recommendAudioOnly"] is True
    expected = {"participantCount": 3, "threshold": 2}
    for sid in "abc":
        assert notifier.to(sid, "recommend-audio-only") == [expected]
    notifier.clear()
    await join(svc, "d")
    assert [s for _, s, e, _ in notifier.sent if e == "recommend-audio-only"] == ["d"]
    notifier.clear()
    await publish(svc, "a", "audio")
    assert notifier.to("a", "recommend-audio-only") == []
    await publish(svc, "a", "video")
    assert notifier.to("a", "recommend-audio-only") == [{"participantCount": 4, "threshold": 2}]
    assert svc.list_rooms()[0]["recommendAudioOnly"] is True


async def test_room_operations_are_serialised(service, directory):
    await join(service, "a")
    await join(service, "b")
    worker = directory.workers[service.rooms["room1"].worker_id]
    in_flight = max_in_flight = 0
    original = worker.request

    async def tracking(method, data):
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        try:
            await asyncio.sleep(0.01)
            return await original(method, data)
        finally:
            in_flight -= 1

    worker.request = tracking
    await asyncio.gather(*(transport(service, sid, d) for sid in "ab" for d in ("send", "recv")))
    assert max_in_flight == 1
    assert service.stats()["rooms"][0]["transportCount"] == 4


# --- worker events --------------------------------------------------------------------------------


async def test_worker_events_become_notifications(service, notifier, clock):
    a = await join(service, "a")
    await join(service, "b")
    room = service.rooms["room1"]
    mic = await publish(service, "a", "audio")
    cam = await publish(service, "a", "video")
    c1 = await subscribe(service, "b", mic)
    c2 = await subscribe(service, "b", cam)
    rid = room.router_id
    notifier.clear()
    await service.on_worker_event("consumer-paused", {"routerId": rid, "consumerId": c1["id"], "producerId": mic})
    await service.on_worker_event("consumer-resumed", {"routerId": rid, "consumerId": c1["id"], "producerId": mic})
    await service.on_worker_event(
        "consumer-layers-changed", {"routerId": rid, "consumerId": c2["id"], "spatialLayer": 2, "temporalLayer": 1}
    )
    # the room names the speaker from the merged audio levels of its routers, not per router
    await service.on_worker_event("active-speaker", {"routerId": rid, "producerId": mic, "volume": -30})
    await service.on_worker_event("audio-levels", {"routerId": rid, "levels": {mic: 30}})
    clock.advance(1.5)  # no report for longer than the staleness window: nobody speaks
    await service.on_worker_event("audio-levels", {"routerId": rid, "levels": {}})
    await service.on_worker_event("consumer-closed", {"routerId": rid, "transportId": "t", "consumerId": c1["id"],
                                                      "producerId": mic, "reason": "producer-closed"})
    await service.on_worker_event("producer-score", {"routerId": rid, "producerId": mic, "score": 10})
    assert notifier.to("b") == [
        ("consumer-paused", {"consumerId": c1["id"]}),
        ("consumer-resumed", {"consumerId": c1["id"]}),
        ("consumer-layers-changed", {"consumerId": c2["id"], "spatialLayer": 2, "temporalLayer": 1}),
        ("active-speaker", {"participantId": a["participantId"], "volume": -30}),
        ("active-speaker", {"participantId": None, "volume": -127}),
        ("consumer-closed", {"consumerId": c1["id"], "producerId": mic}),
    ]
    assert notifier.to("a", "active-speaker") == [
        {"participantId": a["participantId"], "volume": -30}, {"participantId": None, "volume": -127}
    ]
    assert room.stats()["consumerCount"] == 1
    # a repeated event for a consumer already gone is ignored
    notifier.clear()
    await service.on_worker_event("consumer-closed", {"routerId": rid, "consumerId": c1["id"], "producerId": mic})
    assert notifier.sent == []


async def test_worker_producer_and_transport_closed(service, notifier):
    a = await join(service, "a")
    await join(service, "b")
    room = service.rooms["room1"]
    mic = await publish(service, "a", "audio")
    c1 = await subscribe(service, "b", mic)
    rid = room.router_id
    send_id = room.participants["p-1"].producers[mic]["transportId"]
    notifier.clear()
    await service.on_worker_event("producer-closed", {"routerId": rid, "transportId": send_id, "producerId": mic,
                                                      "reason": "transport-closed"})
    closed = {"producerId": mic, "participantId": a["participantId"]}
    assert notifier.to("b") == [("consumer-closed", {"consumerId": c1["id"], "producerId": mic}),
                                ("producer-closed", closed)]
    assert notifier.to("a") == [("producer-closed", closed)]  # the owner learns its producer died
    # transport-closed drops the transport (and what was on it) from the bookkeeping
    recv_id = next(t for t, d in room.participants["p-2"].transports.items() if d == "recv")
    cam = await publish(service, "a", "video")
    c2 = await subscribe(service, "b", cam, recv_id)
    notifier.clear()
    await service.on_worker_event("transport-closed", {"routerId": rid, "transportId": recv_id, "reason": "dtls"})
    assert notifier.to("b") == [("consumer-closed", {"consumerId": c2["id"], "producerId": cam})]
    assert recv_id not in room.participants["p-2"].transports
    assert room.stats()["consumerCount"] == 0
    await service.on_worker_event("transport-closed", {"routerId": "elsewhere", "transportId": "zzz"})
    await service.on_worker_event("transport-closed", "garbage")  # type: ignore[arg-type]


async def test_local_rooms_port(service, directory):
    port = LocalRoomsPort(service)
    assert await port.ready() is True
    s = session("a")
    ack = await port.request(s, "join-room", {"roomId": "r1", "displayName": "A"})
    assert ack["roomId"] == "r1"
    assert (await port.list_rooms())[0]["participantCount"] == 1
    stats = await port.stats()
    assert stats["rooms"][0]["roomId"] == "r1"
    assert stats["workers"][0]["routerCount"] == 1
    await port.disconnect(s)
    assert (await port.stats())["rooms"][0]["participantCount"] == 0
    await service.close()
    assert await port.ready() is False


async def test_errors_are_studyrooms_errors_with_codes(service):
    with pytest.raises(StudyRoomsError) as info:
        await service.request(session("a"), "join-room", {"roomId": "r1"})
    assert info.value.code == "invalid-request" and "displayName" in info.value.message
