"""Directory placement and registry as a plain object (no Ray started)."""

from __future__ import annotations

import pytest

from actors.directory import Directory
from studyrooms.errors import ResourceExhaustedError


async def make(n_workers=3, n_hosts=2):
    d = Directory(health_interval_s=0)
    for i in range(n_workers):
        await d.register_worker(f"w{i}", object(), {"node": f"n{i % 2}"})
    for i in range(n_hosts):
        await d.register_host(f"h{i}", object())
    return d


async def test_round_robin_on_ties_then_least_loaded():
    d = await make()
    picks = [await d.place_router(f"room{i}") for i in range(6)]
    assert picks == ["w0", "w1", "w2", "w0", "w1", "w2"]
    # consumers weigh first: w1 carries consumers, so new routers avoid it
    await d.report_load("w0", {"routerCount": 2, "consumerCount": 0})
    await d.report_load("w1", {"routerCount": 0, "consumerCount": 10})
    await d.report_load("w2", {"routerCount": 1, "consumerCount": 0})
    assert await d.place_router("x") == "w2"  # (0 consumers, 1 router) beats (0, 2)
    assert await d.place_router("y") in {"w0", "w2"}
    assert await d.place_router("z", exclude=["w0", "w2"]) == "w1"


async def test_release_updates_load_and_forgets_closed_rooms():
    d = await make()
    host_id, _ = await d.host_for_room("r")
    wid = await d.place_router("r", host_id=host_id)
    assert d.workers[wid].router_count == 1 and d.room_host["r"] == host_id
    await d.release_router("r", wid)
    assert d.workers[wid].router_count == 0
    assert "r" not in d.room_host  # last router released: the room is closed on its host
    assert await d.host_for_room("r", create=False) is None


async def test_rooms_spread_over_hosts_and_stick():
    d = await make(n_hosts=2)
    a = (await d.host_for_room("a"))[0]
    b = (await d.host_for_room("b"))[0]
    assert {a, b} == {"h0", "h1"}
    assert (await d.host_for_room("a"))[0] == a


async def test_nothing_to_place_on():
    d = Directory(health_interval_s=0)
    with pytest.raises(ResourceExhaustedError):
        await d.place_router("r")
    with pytest.raises(ResourceExhaustedError):
        await d.host_for_room("r")
    assert not await d.ready()


class _DeadMethod:
    def remote(self):
        async def fail():
            from ray.exceptions import ActorDiedError

            raise ActorDiedError()

        return fail()


class _DeadHandle:
    load = _DeadMethod()
    ping = _DeadMethod()


async def test_health_drops_dead_workers():
    d = Directory(health_interval_s=0)
    await d.register_worker("dead", _DeadHandle())
    await d.register_host("h", _DeadHandle())
    dropped = await d.check_health()
    assert set(dropped) == {"dead", "h"} and not d.workers and not d.hosts


async def test_a_spreading_room_prefers_its_own_node_then_another():
    """Nodes n0 (w0, w2, w4) and n1 (w1, w3): a room homed on n0 spreads to n0's other workers while
    they have room (plain pipe), to n1 only when n0's are full (SRTP pipe), and to the least loaded
    full worker when every worker is full."""
    d = Directory(health_interval_s=0, consumer_limit=10)
    for i in range(5):
        await d.register_worker(f"w{i}", object(), {"node": f"n{i % 2}"})
    # n1's workers are idle, n0's other workers carry some load: plain least-loaded would pick n1
    await d.report_load("w2", {"consumerCount": 4, "node": "n0"})
    await d.report_load("w4", {"consumerCount": 6, "node": "n0"})
    assert await d.place_router("big") == "w0"  # the home router (w0 was first in round robin)
    assert await d.place_router("big", exclude=["w0"]) == "w2"  # same node, least loaded there
    assert await d.place_router("big", exclude=["w0", "w2"]) == "w4"
    # n0 fills up: the next router goes to the other node
    await d.report_load("w4", {"consumerCount": 10, "node": "n0"})
    assert d.workers[await d.place_router("big", exclude=["w0", "w2", "w4"])].node == "n1"
    # a room without routers is placed by load alone (n1's idle w1 / w3, not n0)
    assert d.workers[await d.place_router("other")].node == "n1"
    # every worker full: the least loaded one still takes it (the room's soft limit)
    for wid in ("w0", "w1", "w2", "w3", "w4"):
        await d.report_load(wid, {"consumerCount": 20 if wid != "w1" else 12, "node": f"n{int(wid[1]) % 2}"})
    assert await d.place_router("big", exclude=["w0"]) == "w1"
