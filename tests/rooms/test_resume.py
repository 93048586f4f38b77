"""Session resume (docs/protocol.md "Session resume"): a socket that goes without leave-room leaves its
participant detached with its media for ``rooms.resume_grace_s``; a join-room with the participant's
resume key (same token identity, same room) binds it to the new socket again."""

from __future__ import annotations

import pytest

from roomfakes import VIDEO_RTP, session
from studyrooms.errors import InvalidStateError

ROOM = "room1"


def rsession(sid: str, key: str | None = None, user: str | None = None, route: str = "sig-1") -> dict:
    s = session(sid, user=user or "user-x", route=route)
    s["resume"] = True
    if key is not None:
        s["resumeKey"] = key
    return s


async def join(svc, sess: dict, room: str = ROOM) -> dict:
    return await svc.request(sess, "join-room", {"roomId": room, "displayName": sess["sid"]})


async def call(svc, sess: dict, method: str, data: dict) -> dict:
    return await svc.request(sess, method, data)


async def _in_call(svc):
    """x (resumable) publishes video on a send transport; y (plain client) is in the room too."""
    x = rsession("x1")
    ack = await join(svc, x)
    y = session("y1")
    await join(svc, y)
    t = await call(svc, x, "create-transport", {"direction": "send"})
    prod = await call(svc, x, "produce", {"transportId": t["id"], "kind": "video", "rtpParameters": VIDEO_RTP})
    return x, y, ack, t["id"], prod["producerId"]


def _closes(directory) -> list:
    return [(m, d) for w in directory.workers.values() for m, d in w.calls if m.startswith("close_")]


async def test_the_ack_of_a_resumable_client_carries_a_key_and_plain_clients_see_no_change(service):
    x, y, ack, _, _ = await _in_call(service)
    assert ack["resumed"] is False and isinstance(ack["resumeKey"], str) and len(ack["resumeKey"]) >= 40
    plain = await join(service, session("z1"))
    assert "resumeKey" not in plain and "resumed" not in plain
    # keys are unguessable and per participant
    other = await join(service, rsession("w1", user="user-w"))
    assert other["resumeKey"] != ack["resumeKey"]


async def test_a_dropped_socket_resumes_with_its_media_untouched(service, notifier, directory):
    x, y, ack, tid, prod = await _in_call(service)
    before = _closes(directory)
    notifier.clear()
    await service.disconnect(x)
    room = service.rooms[ROOM]
    p = room.participants[ack["participantId"]]
    assert p.detached_at is not None and tid in p.transports and prod in p.producers
    assert notifier.to("y1", "participant-left") == []  # nobody is told: it may come back
    assert service.dump()["detached"] == 1
    # while detached nothing is sent to the old socket
    await join(service, session("v1"))
    assert notifier.to("x1") == []
    notifier.clear()
    x2 = rsession("x2", ack["resumeKey"], route="sig-1")
    again = await join(service, x2)
    assert again["resumed"] is True and again["participantId"] == ack["participantId"]
    assert again["resumeKey"] == ack["resumeKey"]
    assert {q["displayName"] for q in again["participants"]} == {"y1", "v1"}
    assert _closes(directory) == before  # the server's media objects are untouched
    assert p.sid == "x2" and p.detached_at is None and service.dump()["detached"] == 0
    # the new socket is bound: its requests and the room's notifications reach it
    stats = await call(service, x2, "get-stats", {})
    assert stats["producerCount"] >= 1
    await call(service, y, "leave-room", {})
    assert [d["participantId"] for d in notifier.to("x2", "participant-left")]
    assert notifier.to("x1") == []
    assert notifier.to("y1", "participant-joined") == []  # the others saw no leave and no join


async def test_after_the_grace_the_participant_leaves_as_today(make_service, clock, notifier, directory):
    svc = make_service(resume_grace_s=15)
    x, y, ack, tid, prod = await _in_call(svc)
    await svc.disconnect(x)
    clock.advance(14.9)
    await svc.idle()
    assert ack["participantId"] in svc.rooms[ROOM].participants
    clock.advance(0.2)
    await svc.idle()
    assert ack["participantId"] not in svc.rooms[ROOM].participants
    assert [d["participantId"] for d in notifier.to("y1", "participant-left")] == [ack["participantId"]]
    assert [d["producerId"] for d in notifier.to("y1", "producer-closed")] == [prod]
    assert ("close_transport", {"transportId": tid}) in _closes(directory)
    assert svc.dump()["detached"] == 0
    # the key of a participant that is gone: a fresh join (the client rebuilds)
    again = await join(svc, rsession("x2", ack["resumeKey"]))
    assert again["resumed"] is False and again["participantId"] != ack["participantId"]
    assert again["resumeKey"] != ack["resumeKey"]


async def test_a_key_is_bound_to_its_identity_and_room(service):
    x, y, ack, _, _ = await _in_call(service)
    await service.disconnect(x)
    stolen = await join(service, rsession("m1", ack["resumeKey"], user="mallory"))
    assert stolen["resumed"] is False and stolen["participantId"] != ack["participantId"]
    elsewhere = await join(service, rsession("x3", ack["resumeKey"]), room="room2")
    assert elsewhere["resumed"] is False
    wrong = await join(service, rsession("x4", "A" * 43))
    assert wrong["resumed"] is False
    # the real client still resumes
    again = await join(service, rsession("x2", ack["resumeKey"]))
    assert again["resumed"] is True and again["participantId"] == ack["participantId"]


async def test_a_second_tab_of_the_same_user_is_a_second_participant(service, notifier):
    x, y, ack, _, _ = await _in_call(service)
    tab2 = await join(service, rsession("x-tab2"))  # same token identity, no key: a new participant
    assert tab2["resumed"] is False and tab2["participantId"] != ack["participantId"]
    room = service.rooms[ROOM]
    assert room.participants[ack["participantId"]].detached_at is None  # the first tab is untouched
    assert len(room.participants) == 3


async def test_a_key_presented_while_the_old_socket_is_still_bound_takes_over(service, notifier):
    x, y, ack, _, _ = await _in_call(service)
    x2 = rsession("x2", ack["resumeKey"])
    again = await join(service, x2)  # the server had not noticed the old socket's end yet
    assert again["resumed"] is True and again["participantId"] == ack["participantId"]
    await service.disconnect(x)  # the old socket's late disconnect changes nothing
    p = service.rooms[ROOM].participants[ack["participantId"]]
    assert p.sid == "x2" and p.detached_at is None
    with pytest.raises(InvalidStateError):  # the old socket is no longer bound to it
        await call(service, x, "get-stats", {})
    assert service.dump()["sockets"] == 2 and service.dump()["detached"] == 0


async def test_a_restarted_signaling_route_detaches_its_resumable_participants(service, notifier):
    x, y, ack, _, _ = await _in_call(service)
    notifier.clear()
    gone = await service.forget_route("sig-1")
    assert gone == 2
    room = service.rooms[ROOM]
    # y (a client that cannot resume) left; x waits for its client
    assert list(room.participants) == [ack["participantId"]]
    assert notifier.to("x1") == []
    again = await join(service, rsession("new-sid", ack["resumeKey"]))
    assert again["resumed"] is True


async def test_grace_zero_makes_a_disconnect_a_leave(make_service):
    svc = make_service(resume_grace_s=0)
    x, y, ack, _, _ = await _in_call(svc)
    await svc.disconnect(x)
    assert ack["participantId"] not in svc.rooms[ROOM].participants


async def test_a_socket_closed_on_purpose_is_a_leave(service, notifier):
    x, y, ack, _, _ = await _in_call(service)
    await service.disconnect({**x, "leaving": True})  # the client's own disconnect (the page on pagehide)
    assert ack["participantId"] not in service.rooms[ROOM].participants
    assert [d["participantId"] for d in notifier.to("y1", "participant-left")] == [ack["participantId"]]
    assert service.dump()["detached"] == 0


async def test_a_restarted_route_keeps_the_sockets_its_new_process_bound(service, notifier, clock):
    """The restarted signaling server listens first and clears its old sockets meanwhile: a socket
    that resumed (or joined) on the new process, bound after ``before``, is not cleared."""
    x, y, ack, _, _ = await _in_call(service)
    clock.advance(1.0)
    restarted_at = clock.wall()
    clock.advance(0.5)
    again = await join(service, rsession("new-sid", ack["resumeKey"]))  # resumed on the new process
    assert again["resumed"] is True
    gone = await service.forget_route("sig-1", before=restarted_at)
    assert gone == 1  # only y's old socket (x's old one moved to the new sid on resume)
    room = service.rooms[ROOM]
    p = room.participants[ack["participantId"]]
    assert p.sid == "new-sid" and p.detached_at is None
    assert service.dump()["sockets"] == 1 and service.dump()["detached"] == 0


async def test_a_restarted_route_clears_its_old_process_by_incarnation_whatever_the_clocks(service, clock):
    """Sessions carry their signaling process's tag: the restarted process keeps exactly its own
    sockets, even one bound 'before' its restart time by another machine's clock."""
    old_x = {**rsession("x1"), "incarnation": "old"}
    ack = await join(service, old_x)
    await join(service, {**session("y1"), "incarnation": "old"})
    restarted_at = clock.wall() + 5.0  # the new process's clock runs 5 s ahead of the room host's
    again = await join(service, {**rsession("new-sid", ack["resumeKey"]), "incarnation": "new"})
    assert again["resumed"] is True
    late = await join(service, {**session("z1", user="user-z"), "incarnation": "new"})  # a new join there
    gone = await service.forget_route("sig-1", before=restarted_at, keep="new")
    assert gone == 1  # y's old socket only: the wall clocks alone would have cleared all three
    room = service.rooms[ROOM]
    assert set(room.participants) == {ack["participantId"], late["participantId"]}
    assert room.participants[ack["participantId"]].sid == "new-sid"
    assert service.dump()["sockets"] == 2 and service.dump()["detached"] == 0
