"""OutboxLock: a room's lock that never stays held while clients are notified (ARCHITECTURE habit 15).

A room decides under its lock and notifies after it: notifications posted while the lock is held go
to an outbox, and the holder sends them right after releasing the lock (``async with`` exit), so a
notification that takes long (a socket past its ping timeout, whose disconnect handler runs inline
in the send and leaves the room, which needs the lock) cannot stall the room's other operations or
deadlock with that disconnect.

Order: the outbox is taken and handed to ``send`` in the same step that releases the lock, so
batches start in lock order; within a batch every recipient gets its notifications one after the
other, in the order they were posted, and recipients are served concurrently.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

#: (recipients, event, data): recipients are whatever ``send`` understands (participants)
Notification = tuple[list[Any], str, dict]


class OutboxLock:
    def __init__(self, send: Callable[[list[Notification]], Awaitable[None]]) -> None:
        self._lock = asyncio.Lock()
        self._send = send
        self._outbox: list[Notification] = []

    def locked(self) -> bool:
        return self._lock.locked()

    def post(self, recipients: list[Any], event: str, data: dict) -> bool:
        """Queue a notification for after the lock; False when the lock is free (send it now)."""
        if not self._lock.locked():
            return False
        self._outbox.append((recipients, event, data))
        return True

    async def __aenter__(self) -> "OutboxLock":
        await self._lock.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        batch, self._outbox = self._outbox, []
        self._lock.release()
        if batch:
            await self._send(batch)

    @property
    def pending(self) -> int:
        """Notifications queued by the current holder (tests)."""
        return len(self._outbox)


async def send_in_order(
    batch: list[Notification], deliver: Callable[[Any, str, dict], Awaitable[None]], key: Callable[[Any], Any]
) -> list[tuple[Any, str, BaseException]]:
    """Deliver ``batch``: per recipient (by ``key``) sequentially in posting order, recipients
    concurrently. Returns the failures ``(recipient, event, exception)``; never raises them."""
    queues: dict[Any, list[tuple[Any, str, dict]]] = {}
    for recipients, event, data in batch:
        for r in recipients:
            queues.setdefault(key(r), []).append((r, event, data))
    failures: list[tuple[Any, str, BaseException]] = []

    async def one(items: list[tuple[Any, str, dict]]) -> None:
        for recipient, event, data in items:
            try:
                await deliver(recipient, event, data)
            except Exception as exc:  # noqa: BLE001 - one lost notification must not stop the others
                failures.append((recipient, event, exc))

    if len(queues) == 1:
        await one(next(iter(queues.values())))
    else:
        await asyncio.gather(*(one(items) for items in queues.values()))
    return failures
