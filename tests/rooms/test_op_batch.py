"""A room's batched operations (studyrooms/rooms/op_batch.py): queued ops of different participants
run side by side under one hold of the lock, each participant's in order, each with its own outcome,
bounded per hold; a lone op runs at once."""

from __future__ import annotations

import asyncio

import pytest

from studyrooms.errors import NotFoundError
from studyrooms.rooms.op_batch import OpBatch


async def test_queued_ops_share_one_hold_in_order_per_participant_with_their_own_errors():
    lock = asyncio.Lock()
    batch = OpBatch(lock, max_batch=5)
    log: list[str] = []
    inside: list[int] = []

    def op(name: str, fail: bool = False):
        async def run() -> str:
            assert lock.locked()
            log.append(f"start {name}")
            inside.append(len(log))
            await asyncio.sleep(0.01)  # a worker call
            log.append(f"end {name}")
            if fail:
                raise NotFoundError(f"{name} not found")
            return name
        return run

    async with lock:  # the room is busy: everything below queues
        futures = [asyncio.ensure_future(batch.run(key, op(name, fail=name == "a2")))
                   for key, name in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1"), ("a", "a3"), ("d", "d1")]]
        await asyncio.sleep(0.01)
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[:2] == ["a1", "b1"] and isinstance(results[2], NotFoundError)
    assert results[3:] == ["c1", "a3", "d1"]  # a3 ran although a2 failed
    assert (batch.holds, batch.ops, batch.largest) == (2, 6, 5)  # bounded: 5 in the first hold
    # one participant's ops in order; different participants' interleaved (they ran side by side)
    assert log.index("end a1") < log.index("start a2") < log.index("end a2") < log.index("start a3")
    assert log.index("start b1") < log.index("end a1")


async def test_a_lone_op_runs_at_once_and_a_cancelled_caller_is_skipped():
    lock = asyncio.Lock()
    batch = OpBatch(lock)
    assert await asyncio.wait_for(batch.run("a", _value(1)), 1) == 1
    ran: list[str] = []

    async def record() -> None:
        ran.append("x")

    async with lock:
        gone = asyncio.ensure_future(batch.run("a", record))
        kept = asyncio.ensure_future(batch.run("b", _value(2)))
        await asyncio.sleep(0)
        gone.cancel()
    assert await kept == 2 and ran == []
    with pytest.raises(asyncio.CancelledError):
        await gone


def _value(x: int):
    async def run() -> int:
        return x
    return run
