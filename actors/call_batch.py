"""Control calls to one actor, batched: what is asked in the same event-loop turn goes in one Ray call.

A consume storm (everyone in a 50-person room consuming everyone: ~2,450 ``consume`` plus as many
``resume-consumer`` per room) spent most of its server CPU on Ray's per-call cost, twice per request
(signaling front -> room host -> media worker, benchmarks/results/cluster). :class:`CallBatcher`
carries every request made to one actor within one turn of the event loop in **one**
``<method>_many`` call, which answers each item on its own:

- **Per-item outcome.** The callee returns ``[("ok", value) | ("err", exception), ...]`` in order;
  each caller gets its own value or its own exception (a bad consume fails alone). A failure of
  the batch call itself (actor died, timed out) fails every item with that error.
- **No added latency when idle.** The flush is scheduled with ``loop.call_soon``: a lone request
  leaves in the next loop turn, as the plain call it would have been (one item: the plain method).
- **Bounded.** At most ``max_batch`` items per call; more queued leave in further calls at once.
  Calls are not held back while others are in flight (a slow batch never stalls the next one).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from studyrooms.errors import InternalError, StudyRoomsError

logger = logging.getLogger("studyrooms.actors.batch")

#: ``[("ok", value) | ("err", exception)]``, one per item, in order
Outcomes = list[tuple[str, Any]]


class CallBatcher:
    def __init__(self, send_one: Callable[[Any], Awaitable[Any]], send_many: Callable[[list], Awaitable[Outcomes]],
                 max_batch: int = 64) -> None:
        self._send_one = send_one  # (item) -> value; raises
        self._send_many = send_many  # (items) -> outcomes; raises when the whole call failed
        self.max_batch = max_batch
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0  # Ray calls made (benchmarks, tests)
        self.items = 0  # requests they carried
        self.largest = 0
        self.handle: Any = None  # what the owner bound this batcher to (e.g. the actor handle)

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        queued, self._queue = self._queue, []
        queued = [(item, fut) for item, fut in queued if not fut.done()]  # callers that gave up
        for start in range(0, len(queued), self.max_batch):
            task = asyncio.ensure_future(self._send(queued[start:start + self.max_batch]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        self.calls += 1
        self.items += len(batch)
        self.largest = max(self.largest, len(batch))
        if len(batch) == 1:
            item, future = batch[0]
            try:
                outcomes: Outcomes = [("ok", await self._send_one(item))]
            except Exception as exc:  # handed to its caller
                outcomes = [("err", exc)]
        else:
            try:
                outcomes = await self._send_many([item for item, _ in batch])
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} answered with {len(outcomes)} outcomes")
            except Exception as exc:  # the whole call failed: so did every item
                outcomes = [("err", exc)] * len(batch)
        for (_, future), (kind, value) in zip(batch, outcomes):
            if future.done():
                continue
            if kind == "ok":
                future.set_result(value)
            else:
                future.set_exception(value if isinstance(value, BaseException) else RuntimeError(str(value)))

    def stats(self) -> dict:
        return {"calls": self.calls, "items": self.items, "largest": self.largest}


async def answer_each(items: list, handle: Callable[[Any], Awaitable[Any]], *, concurrent: bool) -> Outcomes:
    """The callee's side of a batch: ``handle`` every item, each outcome on its own (in order).
    ``concurrent``: items run side by side (independent requests of different clients); else one
    after the other (a media worker's control calls, in the order they were made)."""
    async def one(item: Any) -> tuple[str, Any]:
        try:
            return ("ok", await handle(item))
        except asyncio.CancelledError:
            raise
        except StudyRoomsError as exc:  # goes back to that item's caller (pickles with its code)
            return ("err", exc)
        except Exception as exc:  # as the plain call would: an internal error
            logger.warning("batched request failed", exc_info=True)
            return ("err", InternalError(f"{type(exc).__name__}: {exc}"))

    if concurrent:
        return list(await asyncio.gather(*(one(item) for item in items)))
    return [await one(item) for item in items]
