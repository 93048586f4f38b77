"""Room notifications between a room host and a signaling front, batched.

A join storm is O(N^2) notifications (every joiner's ``participant-joined`` and ``new-producer`` go to
everyone already in the room: ~5,000 per 50-person room). Sent one Ray call each, 500 participants
joining at once put ~50,000 actor calls on the fronts at once and the calls timed out
(benchmarks/results/cluster, README "Running on a Ray cluster"). So:

- :class:`NotificationBatcher` (room host side): ``notify`` queues ``(sid, event, data)`` per front;
  one flusher per front sends everything queued so far in **one** ``deliver_many`` call, then the
  next batch, and so on (at most one call in flight per front, so batches stay in order). ``notify``
  returns when the front accepted the batch (back-pressure); a front that cannot be reached loses
  that batch with a warning, never an exception into the room operation (as before).
- :class:`SocketOutboxes` (front side): ``deliver_many`` only appends to one queue per socket and
  returns; one drain task per socket with something queued emits in order. A slow socket delays
  only its own notifications, never another socket's or the next batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable

logger = logging.getLogger("studyrooms.actors.notify")

#: ``(sid, event, data)``
Item = tuple[str, str, dict]


class NotificationBatcher:
    def __init__(self, send: Callable[[str, list[Item]], Awaitable[Any]], max_batch: int = 2000) -> None:
        self._send = send  # (route, items) -> awaitable; raises when the front is unreachable
        self.max_batch = max_batch
        self._pending: dict[str, list[tuple[Item, asyncio.Future]]] = {}
        self._flushing: set[str] = set()
        self.calls = 0  # deliver_many calls made (tests, benchmarks)
        self.sent = 0  # notifications carried by them

    async def notify(self, route: str, sid: str, event: str, data: dict) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.setdefault(route, []).append(((sid, event, data), future))
        if route not in self._flushing:
            self._flushing.add(route)
            asyncio.ensure_future(self._flush(route))
        await future

    async def _flush(self, route: str) -> None:
        try:
            while self._pending.get(route):
                queued = self._pending[route]
                batch, self._pending[route] = queued[: self.max_batch], queued[self.max_batch:]
                try:
                    await self._send(route, [item for item, _ in batch])
                    self.calls += 1
                    self.sent += len(batch)
                except Exception:  # noqa: BLE001 - lost notifications must not fail the room operation
                    logger.warning("%d notification(s) to %s not delivered", len(batch), route, exc_info=True)
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:  # the loop ends with nothing queued (no await between the check and here)
            self._flushing.discard(route)
            for _, future in self._pending.pop(route, []):  # only when cancelled (shutdown)
                if not future.done():
                    future.cancel()


class SocketOutboxes:
    def __init__(self, deliver: Callable[[str, str, dict], Awaitable[None]]) -> None:
        self._deliver = deliver  # (sid, event, data): emit to one socket
        self._queues: dict[str, deque] = {}

    def accept(self, items: list[Item]) -> int:
        """Queue ``items`` (in order per socket) and start a drain per newly busy socket."""
        for sid, event, data in items:
            queue = self._queues.get(sid)
            if queue is None:
                queue = self._queues[sid] = deque()
                asyncio.ensure_future(self._drain(sid, queue))
            queue.append((event, data))
        return len(items)

    async def _drain(self, sid: str, queue: deque) -> None:
        try:
            while queue:
                event, data = queue[0]
                try:
                    await self._deliver(sid, event, data)
                except Exception:  # noqa: BLE001 - one socket's failure never stops the others
                    logger.warning("notification %s to %s failed", event, sid, exc_info=True)
                queue.popleft()
        finally:
            if self._queues.get(sid) is queue:
                del self._queues[sid]

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())
