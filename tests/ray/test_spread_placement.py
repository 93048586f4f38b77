"""Spread placement on a simulated cluster (``ray.cluster_utils.Cluster``, loopback): a head
(``signaling``, one front) and nodes ``a`` and ``b`` with two media slots each (four media workers).

A room that outgrows its worker gets its next router on a worker of its **own node** (the pipe is
plain RTP inside the node); only when that node has no worker left for it does the room spread to
the other node (the pipe carries SRTP). Peers on every router decode each other; nothing is left
after they leave.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import pytest_asyncio

from actors.app import start_app
from support.cluster import simulated_cluster
from support.scaleout import Client, room_dump, wait_all_gone

pytestmark = [pytest.mark.multinode, pytest.mark.ray, pytest.mark.slow,
              pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster():
    with simulated_cluster("tests-spread-placement", {name: dict(num_cpus=2, resources={"media_slots": 2})
                                                      for name in ("a", "b")}) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(cluster):
    from studyrooms.config import Settings

    settings = Settings(server={"host": "127.0.0.1", "port": 0},
                        rooms={"empty_room_timeout_s": 0.2, "max_consumers_per_worker": 2, "capacity": 4})
    handle = await start_app(settings, prefix=f"sp-{uuid.uuid4().hex[:6]}", health_interval_s=0.5)
    yield handle
    await handle.stop()


async def new_router(app, room: str, known: set) -> str:
    routers = set((await room_dump(app, room))["routers"])
    added = routers - known
    assert len(added) == 1, (routers, known)
    return added.pop()


async def test_a_room_spreads_on_its_own_node_first_then_to_the_other(app, aioice_loopback):
    nodes = app.worker_nodes
    assert len(nodes) == 4 and len(set(nodes.values())) == 2
    room = f"grow-{uuid.uuid4().hex[:4]}"
    ada, bob, cat, dan = Client("Ada"), Client("Bob"), Client("Cat"), Client("Dan")
    try:
        assert (await ada.join(app.url, room))["ok"]
        assert (await bob.join(app.url, room))["ok"]
        ada_video = (await ada.peer.produce(video=True))["video"]
        bob_video = (await bob.peer.produce(video=True))["video"]
        seen = [await bob.peer.consume(ada_video), await ada.peer.consume(bob_video)]
        home = (await room_dump(app, room))["workerId"]
        for counter in seen:
            assert await counter.wait_frames(5, timeout=30) >= 5

        # the home worker carries 2 consumers (the limit): Cat's router goes to the home node's other worker,
        # although the other node's two workers are idle
        assert (await cat.join(app.url, room))["ok"]
        second = await new_router(app, room, {home})
        assert nodes[second] == nodes[home]
        cat_sees = [await cat.peer.consume(ada_video), await cat.peer.consume(bob_video)]
        for counter in cat_sees:
            assert await counter.wait_frames(5, timeout=30) >= 5
        pipes = (await room_dump(app, room))["pipes"]
        assert {(p["from"], p["to"]) for p in pipes} == {(home, second)}
        assert all(p["srtp"] is False for p in pipes)  # inside one node: plain RTP

        # both of the home node's workers are full: Dan's router goes to the other node, over SRTP
        assert (await dan.join(app.url, room))["ok"]
        third = await new_router(app, room, {home, second})
        assert nodes[third] != nodes[home]
        dan_video = (await dan.peer.produce(video=True))["video"]
        dan_sees_ada = await dan.peer.consume(ada_video)
        ada_sees_dan = await ada.peer.consume(dan_video)
        for counter in (dan_sees_ada, ada_sees_dan):
            assert await counter.wait_frames(5, timeout=30) >= 5
        pipes = {(p["from"], p["to"]): p["srtp"] for p in (await room_dump(app, room))["pipes"]}
        assert pipes[(home, third)] is True and pipes[(third, home)] is True
        assert pipes[(home, second)] is False
    finally:
        await asyncio.gather(*(c.close() for c in (ada, bob, cat, dan)), return_exceptions=True)
    state = await wait_all_gone(app)
    assert state == {"routerCount": 0, "transportCount": 0, "producerCount": 0, "consumerCount": 0,
                     "rooms": 0, "reserved": 0}
