"""Batched room notifications (actors/notify_batch.py) as plain objects: one front call per batch,
order kept per socket, a slow socket holds up nobody else, a lost batch never raises."""

from __future__ import annotations

import asyncio

from actors.notify_batch import NotificationBatcher, SocketOutboxes


async def test_a_burst_goes_out_in_few_calls_and_in_order_per_socket():
    got: list[tuple[str, str, dict]] = []
    calls: list[int] = []
    front = SocketOutboxes(lambda sid, event, data: _record(got, sid, event, data))

    async def send(route: str, items: list) -> None:
        calls.append(len(items))
        await asyncio.sleep(0.01)  # a Ray round trip
        front.accept(items)

    batcher = NotificationBatcher(send)

    async def recipient(sid: str) -> None:  # the room's send_in_order: one after the other per socket
        for n in range(3):
            await batcher.notify("front-0", sid, "new-producer", {"n": n})

    await asyncio.gather(*(recipient(f"s{i}") for i in range(49)))
    await asyncio.sleep(0.05)
    assert sum(calls) == 49 * 3 and len(calls) <= 4  # 147 notifications, a handful of calls
    for i in range(49):
        assert [d["n"] for sid, _, d in got if sid == f"s{i}"] == [0, 1, 2]
    assert batcher.calls == len(calls) and batcher.sent == 147


async def test_a_slow_socket_delays_only_itself():
    got: list[str] = []
    release = asyncio.Event()

    async def deliver(sid: str, event: str, data: dict) -> None:
        if sid == "stuck":
            await release.wait()
        got.append(f"{sid}:{data['n']}")

    front = SocketOutboxes(deliver)
    assert front.accept([("stuck", "e", {"n": 0}), ("ok", "e", {"n": 0})]) == 2
    front.accept([("stuck", "e", {"n": 1}), ("ok", "e", {"n": 1})])
    await asyncio.sleep(0.02)
    assert got == ["ok:0", "ok:1"] and front.queued == 2
    release.set()
    await asyncio.sleep(0.02)
    assert got[2:] == ["stuck:0", "stuck:1"] and front.queued == 0


async def test_an_unreachable_front_loses_the_batch_without_raising(caplog):
    async def send(route: str, items: list) -> None:
        raise TimeoutError("front gone")

    batcher = NotificationBatcher(send)
    await asyncio.wait_for(asyncio.gather(*(batcher.notify("f", f"s{i}", "e", {}) for i in range(5))), 2)
    assert batcher.calls == 0 and "5 notification(s) to f not delivered" in caplog.text


async def _record(got: list, sid: str, event: str, data: dict) -> None:
    await asyncio.sleep(0)
    got.append((sid, event, data))
