"""In-process adapters: the signaling server's RoomsPort over a local RoomService, and a
NotifierPort that calls registered delivery functions (e.g. ``SignalingServer.deliver``) by route.

``actors/`` provides the same shapes over Ray; these are for one-process runs and tests.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from .service import RoomService

logger = logging.getLogger("studyrooms.room")

Deliver = Callable[[str, str, dict], Awaitable[None]]  # (sid, event, data)


class LocalRoomsPort:
    """Implements ``studyrooms.signaling.ports.RoomsPort`` over a RoomService in this process."""

    def __init__(self, service: RoomService) -> None:
        self.service = service

    async def request(self, session: dict, method: str, data: dict | None) -> dict:
        return await self.service.request(session, method, data)

    async def disconnect(self, session: dict) -> None:
        await self.service.disconnect(session)

    async def list_rooms(self) -> list[dict]:
        return self.service.list_rooms()

    async def stats(self) -> dict:
        """``{"rooms": [room stats], "workers": [worker stats]}`` (protocol.md /api/stats)."""
        stats = self.service.stats()
        directory = self.service.directory
        workers: list[dict] = []
        worker_stats = getattr(directory, "worker_stats", None)
        if callable(worker_stats):
            workers = list(await worker_stats())
        else:
            for worker_id in stats["workers"]:
                try:
                    workers.append(await directory.worker(worker_id).request("get_stats", {}))
                except Exception as exc:  # noqa: BLE001 - stats are best effort
                    logger.warning("get_stats of worker %s failed: %r", worker_id, exc)
                    workers.append({"workerId": worker_id, "error": str(exc)})
        return {"rooms": stats["rooms"], "workers": workers}

    async def ready(self) -> bool:
        return not self.service.closed


class LocalNotifier:
    """NotifierPort calling, per route, a delivery coroutine ``deliver(sid, event, data)``."""

    def __init__(self) -> None:
        self._routes: dict[str, Deliver] = {}

    def register(self, route: str, deliver: Deliver) -> None:
        self._routes[route] = deliver

    def unregister(self, route: str) -> None:
        self._routes.pop(route, None)

    async def notify(self, route: str, sid: str, event: str, data: dict) -> None:
        deliver = self._routes.get(route)
        if deliver is None:
            logger.debug("no route %r for %s to %s", route, event, sid)
            return
        await deliver(sid, event, data)
