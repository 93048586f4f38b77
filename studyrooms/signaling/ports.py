"""What the signaling server needs from the room layer (it never imports ``studyrooms.rooms``).

Implemented in-process by ``studyrooms.rooms.local.LocalRoomsPort`` and over Ray by
``actors.signaling.RayRoomsPort``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class RoomsPort(Protocol):
    async def request(self, session: dict, method: str, data: dict | None) -> dict:
        """Serve one client request (``method`` = Socket.IO event name); returns the ack data or
        raises a ``studyrooms.errors.StudyRoomsError``. ``session`` = {sid, route, userId,
        displayName, rooms}."""
        ...

    async def disconnect(self, session: dict) -> None:
        """The socket is gone: leave its room, never leaving objects behind."""
        ...

    async def list_rooms(self) -> list[dict]:
        """``[{roomId, participantCount, ...}]`` for GET /api/rooms."""
        ...

    async def stats(self) -> dict:
        """``{"rooms": [room stats], "workers": [worker stats]}`` for GET /api/stats."""
        ...

    async def ready(self) -> bool:
        """Whether requests can be served (GET /healthz)."""
        ...
