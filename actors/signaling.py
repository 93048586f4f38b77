"""SignalingActor: hosts the Socket.IO server (aiohttp + python-socketio) on the actor's loop.

The server is started with ``AppRunner`` + ``TCPSite`` from an async method (design/ray.md §3:
``web.run_app`` and signal handlers do not work inside actors). Its RoomsPort is
:class:`RayRoomsPort`: it asks the Directory which RoomHost serves a room (assigned on first join),
remembers it per socket, and calls that host. RoomHosts push notifications with :meth:`deliver`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable

import ray

from .hop import call
from .media_worker import node_name, resolve

logger = logging.getLogger("studyrooms.actors.signaling")

DEFAULT_SERVER_FACTORY = "actors.signaling:create_signaling_server"
JOIN_METHODS = frozenset({"join-room", "join_room", "join"})
LEAVE_METHODS = frozenset({"leave-room", "leave_room", "leave"})


def create_signaling_server(settings: Any, rooms: Any, route: str, dev_secret: str | None = None) -> Any:
    from studyrooms.signaling.server import SignalingServer

    return SignalingServer(settings, rooms, route, dev_secret=dev_secret)


def _sid(session: dict) -> str | None:
    for key in ("sid", "socketId", "id"):
        value = session.get(key)
        if isinstance(value, str):
            return value
    return None


class RayRoomsPort:
    """studyrooms.signaling.ports.RoomsPort over the Directory and RoomHost actors."""

    def __init__(self, directory: Any, timeout_s: float = 30.0) -> None:
        self.directory = directory
        self.timeout_s = timeout_s
        self.by_sid: dict[str, tuple[str, Any]] = {}  # sid -> (hostId, handle) of the joined room
        # sid -> every host the socket's requests reached (each keeps per-socket state, e.g. the
        # rate limiter, until it hears of the disconnect; a leave-room forgets by_sid, not these)
        self.seen: dict[str, dict[str, Any]] = {}

    async def _host_for_join(self, room_id: str) -> tuple[str, Any]:
        return await call(self.directory.host_for_room.remote(room_id, True, True), what="directory")

    async def _join_finished(self, room_id: str) -> None:
        try:
            await call(self.directory.join_finished.remote(room_id), what="directory", timeout_s=5.0)
        except Exception:  # noqa: BLE001 - bookkeeping only; the join's own outcome stands
            logger.warning("directory join_finished(%s) failed", room_id, exc_info=True)

    async def request(self, session: dict, method: str, data: dict) -> Any:
        sid = _sid(session)
        data = data if data is not None else {}
        host = self.by_sid.get(sid) if sid else None
        routed: str | None = None  # a join routed by the Directory: tell it when the join is over
        if host is None and method in JOIN_METHODS and isinstance(data, dict) and data.get("roomId"):
            routed = str(data["roomId"])
            host = await self._host_for_join(routed)
        elif host is None:
            # not in a room: any host answers (invalid-state, or a harmless leave-room)
            host = await call(self.directory.any_host.remote(), what="directory")
        # (a socket already in a room goes to its host, which refuses a second join-room)
        joining = sid is not None and method in JOIN_METHODS and sid not in self.by_sid
        if sid is not None:
            self.seen.setdefault(sid, {})[host[0]] = host[1]
        if joining:
            self.by_sid[sid] = host  # before the call: a disconnect racing the join finds the host
        try:
            result, new_session = await call(host[1].request.remote(session, method, data),
                                             what=f"room host {host[0]}", timeout_s=self.timeout_s)
        except BaseException:
            if joining and self.by_sid.get(sid) is host:
                del self.by_sid[sid]
            raise
        finally:
            if routed is not None:
                await self._join_finished(routed)
        _merge(session, new_session)
        if sid and method in LEAVE_METHODS:
            self.by_sid.pop(sid, None)
        return result

    async def disconnect(self, session: dict) -> None:
        """Tell the socket's room host, and every other host its requests reached, that it is gone."""
        sid = _sid(session)
        if not sid:
            return
        host = self.by_sid.pop(sid, None)
        others = self.seen.pop(sid, {})
        if host is not None:
            others.pop(host[0], None)
            new_session = await call(host[1].disconnect.remote(session), what=f"room host {host[0]}",
                                     timeout_s=self.timeout_s)
            _merge(session, new_session)
        for host_id, handle in others.items():  # not in a room there: only its per-socket state goes
            try:
                await call(handle.disconnect.remote(session), what=f"room host {host_id}", timeout_s=self.timeout_s)
            except Exception:  # noqa: BLE001 - the others are told all the same
                logger.warning("disconnect of %s not delivered to room host %s", sid, host_id, exc_info=True)

    async def _hosts(self) -> dict[str, Any]:
        return await call(self.directory.host_handles.remote(), what="directory")

    async def list_rooms(self) -> list:
        hosts = await self._hosts()
        parts = await asyncio.gather(*(call(h.list_rooms.remote(), what=f"room host {hid}")
                                       for hid, h in hosts.items()))
        rooms: list = []
        for part in parts:
            if isinstance(part, dict):
                part = part.get("rooms", [])
            rooms.extend(part or [])
        return rooms

    async def stats(self) -> dict:
        hosts = await self._hosts()
        parts = await asyncio.gather(*(call(h.stats.remote(), what=f"room host {hid}") for hid, h in hosts.items()))
        rooms: list = []
        for part in parts:
            if isinstance(part, dict):
                rooms.extend(part.get("rooms", []))
            elif isinstance(part, list):
                rooms.extend(part)
        workers = await call(self.directory.live_loads.remote(), what="directory")
        return {"rooms": rooms, "workers": workers}

    async def ready(self) -> bool:
        try:
            return bool(await call(self.directory.ready.remote(), what="directory", timeout_s=5.0))
        except Exception:  # noqa: BLE001
            return False


def _merge(session: dict, new_session: Any) -> None:
    """Keep annotations the room layer made on its (pickled) copy of the session."""
    if isinstance(new_session, dict) and new_session is not session:
        session.update(new_session)


class Signaling:
    def __init__(self, settings: Any, route: str, directory_name: str, *,
                 factory: str | Callable = DEFAULT_SERVER_FACTORY, dev_secret: str | None = None) -> None:
        self.settings = settings
        self.dev_secret = dev_secret  # development mode with several fronts: one secret for all
        self.route = route
        self.directory_name = directory_name
        self.factory = factory
        self.server: Any = None
        self.rooms: RayRoomsPort | None = None
        self.port: int | None = None
        self.node = node_name()

    async def start(self, host: str, port: int) -> int:
        """Bind the HTTP/Socket.IO server; returns the bound port (``port=0``: any free one)."""
        if self.server is None:
            directory = await asyncio.to_thread(ray.get_actor, self.directory_name)
            self.rooms = RayRoomsPort(directory)
            extra = {"dev_secret": self.dev_secret} if self.dev_secret else {}
            self.server = resolve(self.factory)(self.settings, self.rooms, self.route, **extra)
            from .telemetry import MetricsHub, ray_source, setup_actor_telemetry

            if setup_actor_telemetry("signaling", prometheus=True):  # GET /metrics on this server's port
                MetricsHub.get().add_source(self.route, ray_source(directory))
                self.server.metrics_provider = MetricsHub.get().render
            self.port = await self.server.start(host, port)
        return self.port

    async def deliver(self, sid: str, event: str, data: dict) -> None:
        if self.server is not None:
            await self.server.deliver(sid, event, data)

    async def ping(self) -> str:
        return self.route

    async def info(self) -> dict:
        return {"route": self.route, "node": self.node, "port": self.port, "pid": os.getpid()}

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()


SIGNALING_OPTIONS = dict(num_cpus=0, max_restarts=0, max_concurrency=1000)
SignalingActor = ray.remote(**SIGNALING_OPTIONS)(Signaling)
