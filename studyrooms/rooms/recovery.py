"""Healing a room whose media worker died (mixed into :class:`~studyrooms.rooms.room.Room`).

Everything the room had on the dead worker is gone with its process: the router, the transports of
the participants placed there, their producers and consumers, and the pipe ends. The room

1. forgets all of it (no call goes to the dead worker),
2. closes what referred to it on the live workers (pipe transports, the pipe producers of lost
   producers and the consumers of those on other participants' transports),
3. gets a home router on a live worker when its home was there (placement skips dead workers),
4. moves the affected participants to a live router of the room, and
5. after the lock: ``media-reset {reason, producers}`` to each affected participant (membership and
   participantId stay; the client creates new transports, produces again and consumes
   ``producers``), ``consumer-closed`` / ``producer-closed`` to the others for the lost producers.
   Their new producers reach the others as ``new-producer`` the usual way; pipes to other workers
   are created again on demand when someone consumes across workers.

Decisions are made under the room's lock, notifications are sent after it (habit 15).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import ResourceExhaustedError
from ..protocol import messages as m

logger = logging.getLogger("studyrooms.room")

#: how long a room waits for a live worker to re-create its router on (the dead one may be the only
#: one: Ray restarts it in ~0.5 s)
PLACEMENT_WAIT_S = 8.0


class RoomRecovery:
    media_resets: int = 0

    async def recover_worker(self: Any, worker_id: str, reason: str) -> int:
        """The media worker ``worker_id`` died: heal the room. Returns the number of participants
        sent ``media-reset`` (0 when the room had nothing there)."""
        notes: list[tuple[list, str, dict]] = []
        async with self._lock:
            if self.closed or worker_id not in self.routers:
                return 0
            del self.routers[worker_id]
            affected = [p for p in self.participants.values() if p.worker_id == worker_id]
            others = [p for p in self.participants.values() if p.worker_id != worker_id]
            await self._drop_pipes_of(worker_id)
            for p in affected:
                for producer_id in list(p.producers):
                    notes.extend(await self._lose_producer(p, producer_id, others))
                for consumer_id in list(p.consumers):
                    self._forget_consumer(p, consumer_id)
                for transport_id in list(p.transports):
                    self._transport_owner.pop(transport_id, None)
                    self._object_worker.pop(transport_id, None)
                    self._byte_marks.pop(transport_id, None)
                p.transports.clear()
                p.connected.clear()
            try:
                if self.worker_id == worker_id:
                    self.worker_id = self._worker = self.router_id = None
                    if self.routers:  # promote a surviving router to home
                        self.worker_id, router = next(iter(self.routers.items()))
                        self._worker, self.router_id = router["port"], router["routerId"]
                    elif self.participants:
                        await self._reopen_home(worker_id)
                target = await self._worker_for_joiner() if affected else None
            except Exception:  # noqa: BLE001 - no live worker: requests answer clear errors meanwhile
                logger.exception("room %s: no live media worker to move to after losing %s", self.id, worker_id)
                target = self.worker_id
            for p in affected:
                p.worker_id = target
            producers = [
                m.ProducerInfo(producer_id=pid, participant_id=o.id, kind=v["kind"], source=v["source"])
                for o in others for pid, v in o.producers.items()
            ]
            data = m.MediaReset(reason=reason, producers=producers).wire()
            for p in affected:
                notes.append(([p], "media-reset", data))
            self.media_resets += len(affected)
            logger.warning("room %s: media worker %s lost (%s): %d participant(s) reset, home now %s",
                           self.id, worker_id, reason, len(affected), self.worker_id)
        for targets, event, payload in notes:
            await self._notify(targets, event, payload)
        return len(affected)

    async def _reopen_home(self: Any, dead: str) -> None:
        """A new home router on a live worker (waits a little when none is live yet)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PLACEMENT_WAIT_S
        while True:
            try:
                await self._open_router(exclude=())  # the directory never places on a dead worker
                return
            except ResourceExhaustedError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.25)

    async def _drop_pipes_of(self: Any, dead: str) -> None:
        for (producer_id, target), consumer_id in list(self._piped.items()):
            home = self._object_worker.get(producer_id)
            if dead not in (home, target):
                continue
            del self._piped[(producer_id, target)]
            self._pipe_consumers.pop(consumer_id, None)
            if target == dead and home is not None:  # the pipe's origin side lives on: close it
                await self._quiet_call(home, "close_consumer", {"consumerId": consumer_id})
            elif home == dead:  # the pipe producer lives on: closing it closes its consumers
                await self._quiet_call(target, "close_producer", {"producerId": producer_id})
        for (a, b), (ta, tb) in list(self._pipe_links.items()):
            if dead in (a, b):
                del self._pipe_links[(a, b)]
                survivor, transport_id = (b, tb) if a == dead else (a, ta)
                await self._quiet_call(survivor, "close_transport", {"transportId": transport_id})

    async def _lose_producer(self: Any, p: Any, producer_id: str, others: list) -> list[tuple[list, str, dict]]:
        """Forget a producer that died with its worker; close its consumers on live workers."""
        notes: list[tuple[list, str, dict]] = []
        p.producers.pop(producer_id, None)
        self._producer_owner.pop(producer_id, None)
        self._object_worker.pop(producer_id, None)
        self._over_budget.discard(producer_id)
        for other in others:
            for consumer_id, c in list(other.consumers.items()):
                if c["producerId"] != producer_id:
                    continue
                where = self._object_worker.get(consumer_id)
                self._forget_consumer(other, consumer_id)
                if where is not None:
                    await self._quiet_call(where, "close_consumer", {"consumerId": consumer_id})
                notes.append(([other], "consumer-closed",
                              m.ConsumerClosed(consumer_id=consumer_id, producer_id=producer_id).wire()))
        if others:
            notes.append((list(others), "producer-closed",
                          m.ProducerClosed(producer_id=producer_id, participant_id=p.id).wire()))
        return notes

    async def _quiet_call(self: Any, worker_id: str, method: str, data: dict) -> None:
        router = self.routers.get(worker_id)
        if router is None:
            return
        try:
            await router["port"].request(method, data)
        except Exception as exc:  # noqa: BLE001 - already gone
            logger.debug("room %s: %s on %s: %r", self.id, method, worker_id, exc)
