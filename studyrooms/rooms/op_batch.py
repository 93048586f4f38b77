"""OpBatch: a room's independent operations run side by side under one hold of its lock.

Everyone in a 50-person room consuming everyone is ~2,450 ``consume`` and as many
``resume-consumer`` requests, all waiting for the room's lock; run one at a time, each waits for
its own media-worker call. Operations that only touch the requesting participant's own objects
(consume, resume / pause of one's consumer) do not depend on each other across participants, so
the room takes what is queued when the lock comes free and runs it at once:

- **per participant, in arrival order** (ARCHITECTURE habit 7); different participants concurrently;
- **each request gets its own result or error** (one bad consume never fails another);
- **bounded**: at most ``max_batch`` operations per hold of the lock; the rest in the next one;
- **no added latency when idle**: a lone request runs as soon as the lock is free.

Their worker calls then leave in the same loop turn, which a batching WorkerPort carries to each
media worker in one call (actors/call_batch.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncContextManager, Awaitable, Callable

Op = Callable[[], Awaitable[Any]]


class OpBatch:
    def __init__(self, lock: AsyncContextManager, max_batch: int = 128) -> None:
        self._lock = lock
        self.max_batch = max_batch
        self._queue: list[tuple[Any, Op, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None
        self.holds = 0  # lock holds used (tests, stats)
        self.ops = 0  # operations they ran
        self.largest = 0

    async def run(self, key: Any, op: Op) -> Any:
        """Run ``op`` (a coroutine function) under the lock, batched with the others queued."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((key, op, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                async with self._lock:
                    batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
                    batch = [entry for entry in batch if not entry[2].done()]  # callers that gave up
                    groups: dict[Any, list[tuple[Op, asyncio.Future]]] = {}
                    for key, op, future in batch:
                        groups.setdefault(key, []).append((op, future))
                    self.holds += 1
                    self.ops += len(batch)
                    self.largest = max(self.largest, len(batch))
                    await asyncio.gather(*(self._in_order(items) for items in groups.values()))
        except asyncio.CancelledError:  # the room's loop is going away: nobody waits forever
            for _, _, future in self._queue:
                future.cancel()
            self._queue.clear()
            raise

    @staticmethod
    async def _in_order(items: list[tuple[Op, asyncio.Future]]) -> None:
        for op, future in items:
            if future.done():
                continue
            try:
                result = await op()
            except asyncio.CancelledError:
                if not future.done():
                    future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - that request's own error
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)
