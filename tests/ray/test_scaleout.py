"""Scale-out on a simulated cluster (``ray.cluster_utils.Cluster``, loopback): the head and nodes
``a`` and ``c`` advertise ``signaling`` (three signaling fronts), nodes ``a`` and ``b`` one media slot
each (two media workers on two nodes, one room host per media node).

* participants on different fronts share a room and decode each other; the room outgrows its node
  and spreads to the other one; the pipe between the nodes is SRTP on the wire; all gone after leave;
* a front's process is killed: the others' media never stops, its participants leave the room and
  its clients reconnect through the other front;
* the room limit and the room capacity hold across the two room hosts and the two fronts;
* (last: it removes node ``c``) a front's node goes for good: its resumable client moves to another
  front and resumes the same participant, media untouched; a client that cannot resume is dropped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid

import pytest
import pytest_asyncio

from actors.app import start_app
from actors.hop import call
from studyrooms.config import Settings
from support.cluster import simulated_cluster
from support.healing import HealingClient
from support.scaleout import Client, http, room_dump, wait_all_gone
from support.wire import capture_or_skip, check_srtp

pytestmark = [pytest.mark.multinode, pytest.mark.ray, pytest.mark.slow,
              pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster():
    with simulated_cluster("tests-scaleout", {"a": dict(num_cpus=1, resources={"media_slots": 1, "signaling": 1}),
                                              "b": dict(num_cpus=1, resources={"media_slots": 1}),
                                              "c": dict(num_cpus=0, resources={"signaling": 1})}) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(cluster):
    settings = Settings(server={"host": "127.0.0.1", "port": 0},
                        rooms={"empty_room_timeout_s": 0.2, "max_consumers_per_worker": 2, "capacity": 3,
                               "max_rooms": 2})
    handle = await start_app(settings, prefix=f"so-{uuid.uuid4().hex[:6]}", health_interval_s=0.5)
    yield handle
    await handle.stop()


async def test_fronts_on_two_nodes_room_spreads_over_an_srtp_pipe(app, cluster, aioice_loopback):
    fronts = list(app.front_info.values())
    assert fronts[0]["node"] == cluster.ids["head"]  # one per `signaling` node, the head's first
    assert sorted(f["node"] for f in fronts) == sorted(cluster.ids[n] for n in ("head", "a", "c"))
    assert sorted(app.worker_nodes.values()) == sorted([cluster.ids["a"], cluster.ids["b"]])
    url0, url1 = fronts[0]["url"], fronts[1]["url"]
    room = f"big-{uuid.uuid4().hex[:4]}"
    ada, bob, cat = Client("Ada"), Client("Bob"), Client("Cat")
    try:
        assert (await ada.join(url0, room))["ok"]
        assert (await bob.join(url1, room))["ok"]  # another front, the same room
        ada_video = (await ada.peer.produce(video=True))["video"]
        bob_video = (await bob.peer.produce(video=True))["video"]
        bob_sees_ada = await bob.peer.consume(ada_video)
        ada_sees_bob = await ada.peer.consume(bob_video)
        for counter in (bob_sees_ada, ada_sees_bob):
            assert await counter.wait_frames(5, timeout=30) >= 5
        home = (await room_dump(app, room))["workerId"]

        # the home worker carries 2 consumers (the limit): Cat's router goes to the other node
        assert (await cat.join(url0, room))["ok"]
        cat_video = (await cat.peer.produce(video=True))["video"]
        capture = capture_or_skip()
        with capture:
            cat_sees_ada = await cat.peer.consume(ada_video)  # piped home -> other node
            ada_sees_cat = await ada.peer.consume(cat_video)  # piped other node -> home
            for counter in (cat_sees_ada, ada_sees_cat):
                assert await counter.wait_frames(10, timeout=30) >= 10
            dump = await room_dump(app, room)
            assert set(dump["routers"]) == set(app.workers)
            other = next(w for w in dump["routers"] if w != home)
            assert app.worker_nodes[home] != app.worker_nodes[other]
            assert {(p["from"], p["to"]) for p in dump["pipes"]} == {(home, other), (other, home)}
            for pipe in dump["pipes"]:
                assert pipe["srtp"] is True
                local, remote = pipe["local"], pipe["remote"]
                wire = await asyncio.to_thread(capture.wait_for, local["tuple"]["localPort"],
                                               remote["tuple"]["localPort"], 20, 15)
                assert check_srtp(wire, local["srtpParameters"], remote["srtpParameters"]) >= 20
    finally:
        for client in (ada, bob, cat):
            await client.close()
    state = await wait_all_gone(app)
    assert state == {"routerCount": 0, "transportCount": 0, "producerCount": 0, "consumerCount": 0,
                     "rooms": 0, "reserved": 0}


async def test_killing_a_front_moves_its_clients_and_spares_the_others_media(app, cluster, aioice_loopback):
    (route0, info0), *others = list(app.front_info.items())
    route1, info1 = next((r, i) for r, i in others if i["node"] == cluster.ids["a"])
    room = f"kill-{uuid.uuid4().hex[:4]}"
    ada, cat, bob, bob2 = Client("Ada"), Client("Cat"), Client("Bob"), Client("Bob")
    try:
        assert (await ada.join(info0["url"], room))["ok"]
        assert (await cat.join(info0["url"], room))["ok"]
        assert (await bob.join(info1["url"], room))["ok"]
        ada_video = (await ada.peer.produce(video=True))["video"]
        bob_video = (await bob.peer.produce(video=True))["video"]
        cat_sees_ada = await cat.peer.consume(ada_video)
        ada_sees_bob = await ada.peer.consume(bob_video)
        for counter in (cat_sees_ada, ada_sees_bob):
            assert await counter.wait_frames(5, timeout=30) >= 5

        # Bob's front dies (SIGKILL of its process): his socket drops; Ada's and Cat's front and media go on
        pid = (await call(app.fronts[route1].info.remote()))["pid"]
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 20
        while time.monotonic() < deadline and not any(e == "participant-left" for e, _ in ada.events):
            await asyncio.sleep(0.1)
        left = [d for e, d in ada.events if e == "participant-left"]
        assert len(left) == 1, ada.events  # the room host dropped Bob's participant
        assert ada.sio.connected and cat.sio.connected
        _, rooms = await http(info0["url"], "GET", "api/rooms")
        assert [r["participantCount"] for r in rooms["rooms"] if r["roomId"] == room] == [2]

        # Bob's client reconnects through the surviving front (what a load balancer does) and rejoins
        assert (await bob2.join(info0["url"], room))["ok"]
        bob2_video = (await bob2.peer.produce(video=True))["video"]
        ada_sees_bob2 = await ada.peer.consume(bob2_video)
        bob2_sees_ada = await bob2.peer.consume(ada_video)
        for counter in (ada_sees_bob2, bob2_sees_ada):
            assert await counter.wait_frames(5, timeout=30) >= 5
        # Cat decoded Ada all along: no gap of a second around the kill, frames ever since
        around = [t for t in cat_sees_ada.times if t >= killed_at - 2.0]
        assert cat_sees_ada.frames_since(killed_at) >= 10
        assert max(b - a for a, b in zip(around, around[1:])) < 2.0  # (a loaded CI box: not a frame-rate check)
        # Ray restarts the killed front: it registers again and listens on its node's same port
        deadline = time.monotonic() + 20
        while True:
            infos = {i["route"]: i for i in await call(app.directory.front_infos.remote())}
            if route1 in infos or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert infos[route0] == {**info0, "route": route0}
        assert infos.get(route1, {}).get("port") == info1["port"], infos
    finally:
        for client in (ada, cat, bob, bob2):
            await client.close()
    state = await wait_all_gone(app)
    assert state == {"routerCount": 0, "transportCount": 0, "producerCount": 0, "consumerCount": 0,
                     "rooms": 0, "reserved": 0}


async def test_room_limit_and_capacity_hold_across_hosts(app):
    url = next(iter(app.front_info.values()))["url"]  # (the other front may have been killed above)
    clients = []

    async def join(name, room):
        client = Client(name)
        clients.append(client)
        return await client.join(url, room, media=False)

    try:
        assert (await join("a", "r1"))["ok"] and (await join("b", "r2"))["ok"]
        directory = await call(app.directory.dump.remote())
        assert len({directory["rooms"]["r1"], directory["rooms"]["r2"]}) == 2  # one room per host
        refused = await join("c", "r3")  # each host holds one room; the cluster holds max_rooms = 2
        assert refused["ok"] is False and refused["error"]["code"] == "resource-exhausted"
        assert "room limit" in refused["error"]["message"]
        assert "r3" not in (await call(app.directory.dump.remote()))["rooms"]  # a refused room leaves nothing
        # capacity 3 in r2, whoever's host and front: the 4th is refused
        assert (await join("d", "r2"))["ok"] and (await join("e", "r2"))["ok"]
        full = await join("f", "r2")
        assert full["ok"] is False and full["error"]["code"] == "room-full"
        # r1 empties and closes: r3 may open (on either host)
        await clients[0].close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reply = await join("g", "r3")
            if reply["ok"]:
                break
            await clients.pop().close()
            await asyncio.sleep(0.2)
        assert reply["ok"], reply
    finally:
        for client in clients:
            await client.close()
    state = await wait_all_gone(app)
    assert state["rooms"] == 0 and state["reserved"] == 0


async def test_a_fronts_node_gone_for_good_its_client_resumes_through_another(app, cluster, aioice_loopback):
    """Node ``c`` (a front, nothing else) is removed for good. Cat (on that front, resumable) reconnects
    through the head's front and gets the same participant back: no new transport or consumer, and
    both directions decode again. Dan (on that front, not resumable) is dropped from the room."""
    (route0, info0), *others = list(app.front_info.items())
    route_c, info_c = next((r, i) for r, i in others if i["node"] == cluster.ids["c"])
    room = f"move-{uuid.uuid4().hex[:4]}"

    async def token(url: str, name: str) -> str:
        status, body = await http(url, "POST", "api/token", {"roomId": room, "displayName": name})
        assert status == 200, body
        return body["token"]

    ada = HealingClient(info0["url"], await token(info0["url"], "Ada"), room, "Ada")
    cat = HealingClient(info_c["url"], await token(info_c["url"], "Cat"), room, "Cat", failover=(info0["url"],))
    dan = Client("Dan")
    try:
        for client in (ada, cat):
            await client.start()
            await client.wait_joined()
        assert (await dan.join(info_c["url"], room, media=False))["ok"]
        await wait_decoding({ada: "Cat", cat: "Ada"}, since=0.0, timeout=30)
        cat_id, cat_transports = cat.participant_id, (cat.peer.send_transport.id, cat.peer.recv_transport.id)

        removed_at = time.monotonic()
        await asyncio.to_thread(cluster.remove_node, cluster.nodes["c"], False)  # SIGKILL: node and front gone
        deadline = time.monotonic() + 20
        while cat.resumes == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert cat.resumes == 1, (cat.errors, cat.events[-8:])
        resumed_at = next(t for t, e in cat.events if e == "resumed")
        assert cat.url == info0["url"] and cat.participant_id == cat_id  # another front, the same participant
        assert (cat.peer.send_transport.id, cat.peer.recv_transport.id) == cat_transports
        assert cat.consumers_created_after(removed_at) == 0 and ada.consumers_created_after(removed_at) == 0
        await wait_decoding({ada: "Cat", cat: "Ada"}, since=resumed_at + 0.3, timeout=15)
        print(f"\nfront's node removed -> resumed through another front: {resumed_at - removed_at:.2f} s")

        # Dan could not resume: once Ray declares the node dead (its health check, ~15 s) the
        # directory finds the front dead for good and he leaves the room
        # (asked of the room hosts themselves: while Ray declares the node dead, the fronts' /api/rooms
        # answers 503 "rooms are not available" for a while, a gap noted on issue 15)
        deadline = time.monotonic() + 30

        async def counts() -> list:
            parts = [await call(h.list_rooms.remote()) for h in app.hosts.values()]
            return [r["participantCount"] for part in parts for r in (part.get("rooms", []) if isinstance(part, dict) else part)
                    if r["roomId"] == room]

        while time.monotonic() < deadline and await counts() != [2]:
            await asyncio.sleep(0.2)
        assert await counts() == [2]
        print(f"front's node removed -> its non-resumable participant left: {time.monotonic() - removed_at:.2f} s")
        assert route_c not in {i["route"] for i in await call(app.directory.front_infos.remote())}
    finally:
        for client in (ada, cat, dan):
            await client.close()
    state = await wait_all_gone(app)
    assert state == {"routerCount": 0, "transportCount": 0, "producerCount": 0, "consumerCount": 0,
                     "rooms": 0, "reserved": 0}


async def wait_decoding(pairs: dict, *, since: float, timeout: float) -> None:
    """Until each client decoded the named person's video after ``since`` (monotonic)."""
    deadline = time.monotonic() + timeout
    while any(c.first_frame_after(since, name, new_only=False) is None for c, name in pairs.items()):
        assert time.monotonic() < deadline, {c.name: (c.errors[-3:], c.events[-6:]) for c in pairs}
        await asyncio.sleep(0.05)
