"""Cluster-wide limits and signaling fronts in the Directory, as plain objects (no Ray): two room
services (two room hosts) share one Directory; the room limit holds across them, a room forgotten on
one host frees a slot for the other, and a dead signaling front makes every host drop its sockets'
participants."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rooms"))

from roomfakes import FakeDirectory, RecordingNotifier, session  # noqa: E402

from actors.directory import Directory  # noqa: E402
from actors.runtime import NodeInfo, plan_fronts  # noqa: E402
from studyrooms.clock import FakeClock  # noqa: E402
from studyrooms.config import Settings  # noqa: E402
from studyrooms.errors import ResourceExhaustedError  # noqa: E402
from studyrooms.rooms import RoomService  # noqa: E402


class SharedDirectoryPort(FakeDirectory):
    """One host's DirectoryPort: fake workers, the real Directory's room reservations."""

    def __init__(self, directory: Directory, host_id: str) -> None:
        super().__init__(1)
        self.directory, self.host_id = directory, host_id

    async def reserve_room(self, room_id: str) -> None:
        await self.directory.reserve_room(room_id, self.host_id)

    async def release_room(self, room_id: str) -> None:
        await self.directory.release_room(room_id, self.host_id)


def two_hosts(max_rooms: int):
    settings = Settings(rooms={"max_rooms": max_rooms, "empty_room_timeout_s": 5})
    directory = Directory(health_interval_s=0, max_rooms=max_rooms)
    clock = FakeClock()
    hosts = [RoomService(settings, SharedDirectoryPort(directory, f"h{i}"), RecordingNotifier(), clock, f"h{i}")
             for i in range(2)]
    return directory, clock, hosts


async def join(svc, sid, room, route="sig-1"):
    return await svc.request(session(sid, route=route), "join-room", {"roomId": room, "displayName": sid})


async def test_max_rooms_counts_every_host():
    directory, clock, (h0, h1) = two_hosts(max_rooms=3)
    await join(h0, "a", "r1")
    await join(h1, "b", "r2")
    await join(h0, "c", "r3")
    with pytest.raises(ResourceExhaustedError) as info:  # h1 holds 1 room, but the cluster holds 3
        await join(h1, "d", "r4")
    assert info.value.code == "resource-exhausted" and "room limit reached (3 rooms)" in info.value.message
    assert not h1.rooms.get("r4")
    await join(h1, "e", "r2")  # an existing room is fine
    assert sorted(directory.reserved) == ["r1", "r2", "r3"]
    # r1 empties on h0 and is forgotten after the empty-room timeout: h1 may now open r4
    await h0.request(session("a"), "leave-room", {})
    clock.advance(5)
    await h0.idle()
    assert "r1" not in directory.reserved
    await join(h1, "d", "r4")
    assert directory.reserved == {"r2": "h1", "r3": "h0", "r4": "h1"}
    await h0.close()  # a host closing frees its rooms
    assert directory.reserved == {"r2": "h1", "r4": "h1"}


class Front:
    def __init__(self) -> None:
        self.dead = False
        self.ping = self

    def remote(self):
        async def answer():
            if self.dead:
                raise ConnectionError("front gone")
            return "ok"
        return answer()


class Host:
    def __init__(self, svc: RoomService) -> None:
        self.svc = svc
        self.drop_route = self
        self.ping = self

    def remote(self, route=None):
        async def answer():
            return await self.svc.drop_route(route) if route else "h"
        return answer()


async def test_a_dead_front_makes_every_host_drop_its_participants():
    directory, clock, (h0, h1) = two_hosts(max_rooms=10)
    for i, svc in enumerate((h0, h1)):
        await directory.register_host(f"h{i}", Host(svc))
    front_a, front_b = Front(), Front()
    await directory.register_front("sig-a", front_a, {"port": 1})
    await directory.register_front("sig-b", front_b, {"port": 2})
    await join(h0, "a1", "r1", route="sig-a")
    await join(h0, "b1", "r1", route="sig-b")
    await join(h1, "a2", "r2", route="sig-a")
    assert await directory.check_health() == []
    front_a.dead = True
    assert await directory.check_health() == []  # one failed ping is not death (max_failures 2)
    assert await directory.check_health() == ["sig-a"]
    assert [p.display_name for p in h0.rooms["r1"].participants.values()] == ["b1"]
    assert not h1.rooms["r2"].participants  # empty: closes after its timeout
    assert [f["route"] for f in await directory.front_infos()] == ["sig-b"]
    # the sid is free again: a client of the dead front may join through another one
    await join(h1, "a2", "r2", route="sig-b")


def node(name, signaling=False, head=False):
    return NodeInfo(node_id=name, address="127.0.0.1", cpus=2, media_slots=2, signaling=signaling, is_head=head)


def test_plan_fronts_one_per_signaling_node_or_a_count():
    nodes = [node("b", signaling=True), node("head", signaling=True, head=True), node("c")]
    assert plan_fronts(nodes, None, 8080) == [("head", 8080), ("b", 8080)]  # the head's first
    assert plan_fronts(nodes, 3, 8080) == [("head", 8080), ("b", 8080), ("head", 8081)]
    assert plan_fronts(nodes, 3, 0) == [("head", 0), ("b", 0), ("head", 0)]
    nothing = [node("x"), node("head", head=True)]  # no node advertises `signaling`: the head
    assert plan_fronts(nothing, None, 80) == [("head", 80)]


async def test_refused_room_ids_leave_no_assignment():
    directory = Directory(health_interval_s=0, max_rooms=1)
    await directory.register_host("h0", object())
    await directory.register_host("h1", object())
    host, _ = await directory.host_for_room("r1", join=True)
    await directory.reserve_room("r1", host)  # the host created r1
    await directory.join_finished("r1")
    with pytest.raises(ResourceExhaustedError):  # the limit, before any host is assigned
        await directory.host_for_room("r2")
    assert "r2" not in directory.room_host
    await directory.release_room("r1", host)
    # a join the host refuses (e.g. forbidden room): the assignment goes once the join is over...
    first, _ = await directory.host_for_room("x", join=True)
    again, _ = await directory.host_for_room("x", join=True)  # ...but not while another join of it is on its way
    assert again == first
    await directory.join_finished("x")
    assert directory.room_host["x"] == first
    await directory.join_finished("x")
    assert "x" not in directory.room_host and not directory.joining
    assert all(not h.rooms for h in directory.hosts.values())


async def test_a_room_closing_while_a_join_is_on_its_way_keeps_its_host():
    directory = Directory(health_interval_s=0, max_rooms=5)
    for i in range(2):
        await directory.register_host(f"h{i}", object())
    host, _ = await directory.host_for_room("r", join=True)
    await directory.reserve_room("r", host)
    await directory.join_finished("r")
    await directory.host_for_room("r", join=True)  # a second join is routed to the room's host...
    await directory.release_room("r", host)  # ...while the room empties and closes there
    assert directory.room_host["r"] == host  # the join recreates it on the same host, not on another
    await directory.reserve_room("r", host)
    await directory.join_finished("r")
    assert directory.room_host["r"] == host and directory.reserved == {"r": host}
