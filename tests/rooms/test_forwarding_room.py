"""Last-N video, speaker-selected audio and receive constraints, driven through the protocol
requests and worker events of a Room with in-test workers: what each worker is told to forward
(``consume`` options, ``set_consumers_forwarding``) and the ``forwarding-changed`` each receiver gets."""

from __future__ import annotations

import pytest

from roomfakes import session
from studyrooms.errors import InvalidRequestError, NotFoundError
from test_rooms_service import join, publish, subscribe, transport


def replay(directory) -> dict[str, dict]:
    """The same, computed in call order so later updates win."""
    state: dict[str, dict] = {}
    for worker in directory.workers.values():
        created = iter(worker.consumers.items())
        for method, data in worker.calls:
            if method == "consume":
                cid, info = next(created)
                state[cid] = {"forwardable": data.get("forwardable", True), "maxHeight": data.get("maxHeight"),
                              "producerId": info["producerId"]}
            elif method == "set_consumers_forwarding":
                for cid, change in data["consumers"].items():
                    state[cid].update(change)
    return state


async def room_of(service, n, *, video=True, audio=True):
    """n participants p0..p{n-1}, each publishing; returns {sid: (participantId, mic, cam)}."""
    people = {}
    for i in range(n):
        sid = f"p{i}"
        joined = await join(service, sid)
        mic = await publish(service, sid, "audio") if audio else None
        cam = await publish(service, sid, "video") if video else None
        people[sid] = (joined["participantId"], mic, cam)
    return people


async def consume_all(service, people, sid):
    recv = (await transport(service, sid, "recv"))["id"]
    out = {}
    for other, (_pid, mic, cam) in people.items():
        if other == sid:
            continue
        for producer in (mic, cam):
            if producer:
                out[producer] = (await subscribe(service, sid, producer, recv))["id"]
    return out


def forwarded_producers(directory, consumers: dict[str, str]) -> set[str]:
    state = replay(directory)
    return {producer for producer, cid in consumers.items() if state[cid]["forwardable"]}


async def speak(service, room, levels: dict[str, int], clock, ticks: int = 1):
    for _ in range(ticks):
        await service.on_worker_event("audio-levels", {"routerId": room.router_id, "levels": levels})
        clock.advance(0.3)


async def test_last_n_from_constraints_follows_speakers_with_on_stage_first(make_service, directory, notifier, clock):
    service = make_service(last_n=9, speaker_dwell_s=0.5)
    people = await room_of(service, 6)
    ids = {sid: v[0] for sid, v in people.items()}
    cams = {sid: v[2] for sid, v in people.items()}
    me = "p0"
    consumers = await consume_all(service, people, me)
    room = service.rooms["room1"]
    # default: 9 >= 5 others, every video forwarded
    assert forwarded_producers(directory, consumers) >= {cams[s] for s in ("p1", "p2", "p3", "p4", "p5")}
    notifier.clear()
    await service.request(session(me), "set-receive-constraints", {"lastN": 2})
    # no speaker yet: join order
    assert {p for p in forwarded_producers(directory, consumers) if p in cams.values()} == {cams["p1"], cams["p2"]}
    assert notifier.to(me, "forwarding-changed") == [{"video": [ids["p1"], ids["p2"]], "onStage": []}]
    # p4 speaks long enough (dwell): it enters, p2 (the last of the order) leaves
    await speak(service, room, {people["p4"][1]: 20}, clock, ticks=4)
    assert notifier.to(me, "forwarding-changed")[-1] == {"video": [ids["p4"], ids["p1"]], "onStage": []}
    assert {p for p in forwarded_producers(directory, consumers) if p in cams.values()} == {cams["p4"], cams["p1"]}
    # a short interjection by p5 (shorter than the dwell) changes nothing
    notifier.clear()
    await speak(service, room, {people["p4"][1]: 127, people["p5"][1]: 10}, clock, ticks=1)
    await speak(service, room, {people["p4"][1]: 15, people["p5"][1]: 127}, clock, ticks=2)
    assert notifier.to(me, "forwarding-changed") == []
    # on stage goes first and gets the best layer; the rest are capped at maxHeight
    await service.request(session(me), "set-receive-constraints", {"onStage": [ids["p3"]], "maxHeight": 180})
    assert notifier.to(me, "forwarding-changed")[-1] == {"video": [ids["p3"], ids["p4"]], "onStage": [ids["p3"]]}
    state = replay(directory)
    assert state[consumers[cams["p3"]]]["forwardable"] and state[consumers[cams["p3"]]]["maxHeight"] is None
    assert state[consumers[cams["p4"]]]["forwardable"] and state[consumers[cams["p4"]]]["maxHeight"] == 180
    assert not state[consumers[cams["p1"]]]["forwardable"]
    # null resets lastN to the server's default (9): everyone again, on stage kept
    await service.request(session(me), "set-receive-constraints", {"lastN": None})
    assert set(notifier.to(me, "forwarding-changed")[-1]["video"]) == {ids[s] for s in ("p1", "p2", "p3", "p4", "p5")}
    # a consumer created later starts with the current decision (no extra call needed)
    await service.request(session(me), "set-receive-constraints", {"lastN": 1, "onStage": []})
    p6 = await join(service, "p6")
    cam6 = await publish(service, "p6", "video")
    late = await subscribe(service, me, cam6, (await transport(service, me, "recv"))["id"])
    consume_call = [d for m, d in directory.workers[room.worker_id].calls if m == "consume"][-1]
    assert consume_call["forwardable"] is False and replay(directory)[late["id"]]["forwardable"] is False
    assert p6["participantId"] not in notifier.to(me, "forwarding-changed")[-1]["video"]


async def test_server_last_n_caps_the_client_and_screen_shares_come_first(make_service, directory, notifier):
    service = make_service(last_n=2)
    people = await room_of(service, 5, audio=False)
    ids = {sid: v[0] for sid, v in people.items()}
    screen = await publish(service, "p4", "video", source="screen")
    consumers = await consume_all(service, people, "p0")
    recv = (await transport(service, "p0", "recv"))["id"]
    consumers[screen] = (await subscribe(service, "p0", screen, recv))["id"]
    await service.request(session("p0"), "set-receive-constraints", {"lastN": 10})  # capped at 2
    assert notifier.to("p0", "forwarding-changed")[-1]["video"] == [ids["p4"], ids["p1"]]
    fwd = forwarded_producers(directory, consumers)
    assert fwd == {screen, people["p4"][2], people["p1"][2]}
    await service.request(session("p0"), "set-receive-constraints", {"lastN": 0})
    assert forwarded_producers(directory, consumers) == set()
    assert notifier.to("p0", "forwarding-changed")[-1] == {"video": [], "onStage": []}


async def test_bad_constraints_are_clear_errors_and_change_nothing(service, notifier):
    people = await room_of(service, 2, audio=False)
    for payload, code, needle in [
        ({"lastN": -1}, "invalid-request", "lastN"),
        ({"onStage": [people["p0"][0]]}, "invalid-request", "themselves"),
        ({"onStage": ["nobody"]}, "not-found", "nobody"),
        ({"maxHeight": "high"}, "invalid-request", "maxHeight"),
        ({"lastN": 1, "extra": 1}, "invalid-request", "extra"),
    ]:
        with pytest.raises((InvalidRequestError, NotFoundError)) as info:
            await service.request(session("p0"), "set-receive-constraints", payload)
        assert info.value.code == code and needle in info.value.message
    assert service.rooms["room1"].forwarding.last_n(people["p0"][0]) == 9
    # an omitted payload is the empty constraint (nothing changes)
    with pytest.raises(InvalidRequestError):
        await service.request(session("p0"), "set-receive-constraints", None)
    assert await service.request(session("p0"), "set-receive-constraints", {}) == {}


async def test_audio_selection_forwards_the_loudest_k_across_workers(make_service, directory, notifier, clock):
    service = make_service(max_audio_streams=2, audio_hangover_s=0.6)
    people = await room_of(service, 5, video=False)
    mics = {sid: v[1] for sid, v in people.items()}
    listeners = {sid: await consume_all(service, people, sid) for sid in ("p0", "p4")}
    room = service.rooms["room1"]
    await room._open_router(exclude=tuple(room.routers))  # the room spans a second worker
    routers = [r["routerId"] for r in room.routers.values()]
    assert len(routers) == 2
    # no level reported yet: audio that cannot be judged is forwarded
    assert forwarded_producers(directory, listeners["p0"]) == {mics[s] for s in ("p1", "p2", "p3", "p4")}
    # levels arrive from each router for the producers it hosts: the room merges them
    # each router reports the producers it hosts (here p0, p1 on one, the rest on the other)
    by_router: dict[str, dict] = {routers[0]: {}, routers[1]: {}}
    for sid, mic in mics.items():
        level = {"p1": 10, "p2": 25, "p3": 127}.get(sid, 127)
        by_router[routers[0] if sid in ("p0", "p1") else routers[1]][mic] = level
    for _ in range(2):
        for router_id, levels in by_router.items():
            await service.on_worker_event("audio-levels", {"routerId": router_id, "levels": levels})
        clock.advance(0.3)
    assert forwarded_producers(directory, listeners["p0"]) == {mics["p1"], mics["p2"]}
    assert forwarded_producers(directory, listeners["p4"]) == {mics["p1"], mics["p2"]}
    # p3 starts talking loudly while p2 stops: p3 takes a slot once p2's hang-over is over
    for sid in by_router:
        for mic in by_router[sid]:
            by_router[sid][mic] = {mics["p1"]: 10, mics["p3"]: 5}.get(mic, 127)
    for _ in range(4):
        for router_id, levels in by_router.items():
            await service.on_worker_event("audio-levels", {"routerId": router_id, "levels": levels})
        clock.advance(0.3)
    assert forwarded_producers(directory, listeners["p0"]) == {mics["p1"], mics["p3"]}
    assert notifier.to("p0", "active-speaker")[-1]["participantId"] in (people["p1"][0], people["p3"][0])
    assert mics["p0"] not in forwarded_producers(directory, listeners["p4"])  # p0 is silent
    # under the limit again (three leave, two remain): everyone is forwarded as before
    for sid in ("p1", "p2", "p3"):
        await service.request(session(sid), "leave-room", None)
    assert forwarded_producers(directory, {mics["p0"]: listeners["p4"][mics["p0"]]}) == {mics["p0"]}


async def test_muted_mics_do_not_count_toward_the_audio_limit(make_service, directory, clock):
    service = make_service(max_audio_streams=2)
    people = await room_of(service, 4, video=False)
    mics = {sid: v[1] for sid, v in people.items()}
    heard = await consume_all(service, people, "p0")
    room = service.rooms["room1"]
    await speak(service, room, {mics["p1"]: 10, mics["p2"]: 127, mics["p3"]: 127}, clock, ticks=2)
    assert forwarded_producers(directory, heard) == {mics["p1"]}  # 3 unmuted > 2: the talker only
    await service.request(session("p3"), "pause-producer", {"producerId": mics["p3"]})
    await service.request(session("p0"), "pause-producer", {"producerId": mics["p0"]})
    # two unmuted mics left (p1, p2): under the limit, both forwarded as in a small room
    assert forwarded_producers(directory, heard) >= {mics["p1"], mics["p2"]}
