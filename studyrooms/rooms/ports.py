"""What the room layer needs from the outside world (implemented locally in tests, over Ray in
``actors/``). The room layer never imports the SFU: it speaks the flat control API of
docs/worker-api.md through :class:`WorkerPort`."""

from __future__ import annotations

from typing import Collection, Protocol, runtime_checkable


@runtime_checkable
class WorkerPort(Protocol):
    """One media worker's control channel (``studyrooms.sfu.WorkerChannel`` semantics)."""

    worker_id: str
    # Optional ``node`` attribute: the node the worker runs on. Pipes between workers whose nodes
    # differ (or are unknown on one side) carry SRTP; ports without it are one process, one node.

    async def request(self, method: str, data: dict) -> dict:
        """Call a WorkerChannel method (create_router, create_webrtc_transport, produce, ...).

        Raises ``studyrooms.errors.StudyRoomsError`` subclasses (kind kept across Ray)."""
        ...


@runtime_checkable
class DirectoryPort(Protocol):
    """Worker registry and placement."""

    async def place_router(self, room_id: str, exclude: Collection[str] = ()) -> str:
        """Pick the worker for a new router of ``room_id``: least loaded, round robin on ties,
        never one of ``exclude``. Raises ResourceExhaustedError when there is none."""
        ...

    def worker(self, worker_id: str) -> WorkerPort:
        """The control channel of a worker returned by :meth:`place_router`."""
        ...

    async def release_router(self, room_id: str, worker_id: str) -> None:
        """The room's router on ``worker_id`` is gone (load bookkeeping)."""
        ...


@runtime_checkable
class NotifierPort(Protocol):
    """Pushes a notification to a client socket held by some signaling server."""

    async def notify(self, route: str, sid: str, event: str, data: dict) -> None:
        """``route`` names the signaling server holding socket ``sid`` (from the session)."""
        ...
