"""Batched control calls (actors/call_batch.py) as plain objects: what is asked in one loop turn
goes in one call, bounded; a lone request is the plain call; each item keeps its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from actors.call_batch import CallBatcher, answer_each
from studyrooms.errors import InternalError, NotFoundError


class Callee:
    """The far side: ``ok:<x>`` answers x, anything else is not found; counts its calls."""

    def __init__(self) -> None:
        self.ones: list = []
        self.manys: list[list] = []

    async def handle(self, item: str) -> str:
        await asyncio.sleep(0)
        if not item.startswith("ok:"):
            raise NotFoundError(f"{item} not found")
        return item[3:]

    async def one(self, item: str) -> str:
        self.ones.append(item)
        return await self.handle(item)

    async def many(self, items: list) -> list:
        self.manys.append(list(items))
        return await answer_each(items, self.handle, concurrent=False)


async def test_one_turn_is_one_call_and_every_item_keeps_its_own_outcome():
    far = Callee()
    batcher = CallBatcher(far.one, far.many, max_batch=4)
    items = ["ok:a", "bad", "ok:b", "ok:c", "nope", "ok:d"]
    results = await asyncio.gather(*(batcher.submit(i) for i in items), return_exceptions=True)
    assert results[0] == "a" and results[2] == "b" and results[3] == "c" and results[5] == "d"
    assert isinstance(results[1], NotFoundError) and "bad" in results[1].message
    assert isinstance(results[4], NotFoundError)
    assert [len(m) for m in far.manys] == [4, 2] and far.ones == []  # bounded: 4 per call
    assert batcher.stats() == {"calls": 2, "items": 6, "largest": 4}


async def test_a_lone_request_is_the_plain_call_at_once():
    far = Callee()
    batcher = CallBatcher(far.one, far.many)
    assert await asyncio.wait_for(batcher.submit("ok:x"), 1) == "x"
    with pytest.raises(NotFoundError):
        await batcher.submit("missing")
    assert far.ones == ["ok:x", "missing"] and far.manys == []


async def test_a_failed_batch_call_fails_each_of_its_items_and_nothing_else():
    async def many(items: list) -> list:
        raise InternalError("media worker w1 unavailable: ActorDiedError")

    far = Callee()
    batcher = CallBatcher(far.one, many)
    results = await asyncio.gather(batcher.submit("ok:a"), batcher.submit("ok:b"), return_exceptions=True)
    assert all(isinstance(r, InternalError) and "unavailable" in r.message for r in results)
    assert await batcher.submit("ok:c") == "c"  # the next call is a new one


async def test_answer_each_turns_unexpected_exceptions_into_internal_errors():
    async def handle(item: int) -> int:
        if item == 2:
            raise KeyError("boom")
        return item * 10

    out = await answer_each([1, 2, 3], handle, concurrent=True)
    assert out[0] == ("ok", 10) and out[2] == ("ok", 30)
    assert out[1][0] == "err" and isinstance(out[1][1], InternalError) and "KeyError" in out[1][1].message
