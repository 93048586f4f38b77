"""SignalingActor: hosts the Socket.IO server (aiohttp + python-socketio) on the actor's loop.

The server is started with ``AppRunner`` + ``TCPSite`` from an async method (design/ray.md §3:
``web.run_app`` and signal handlers do not work inside actors). Its RoomsPort is
:class:`RayRoomsPort`: it asks the Directory which RoomHost serves a room (assigned on first join),
remembers it per socket, and calls that host. RoomHosts push notifications with :meth:`deliver`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from typing import Any, Callable

import ray

from .call_batch import CallBatcher
from .fdlimit import raise_nofile_limit
from .hop import call, call_restarting
from .media_worker import node_name, resolve
from .notify_batch import SocketOutboxes

logger = logging.getLogger("studyrooms.actors.signaling")

DEFAULT_SERVER_FACTORY = "actors.signaling:create_signaling_server"
JOIN_METHODS = frozenset({"join-room", "join_room", "join"})
LEAVE_METHODS = frozenset({"leave-room", "leave_room", "leave"})
#: the requests of a consume storm: those of sockets in a room go to its host batched (call_batch.py)
BATCHED_METHODS = frozenset({"consume", "resume-consumer", "pause-consumer"})


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
        self.batchers: dict[str, CallBatcher] = {}  # hostId -> its batched requests

    def _batcher(self, host: tuple[str, Any]) -> CallBatcher:
        from .supervision import actor_id_of

        batcher = self.batchers.get(host[0])
        # every join's answer carries its own copy of the host's handle: one batcher per actor
        if batcher is None or (batcher.handle is not host[1] and actor_id_of(batcher.handle) != actor_id_of(host[1])):
            what, handle = f"room host {host[0]}", host[1]
            batcher = CallBatcher(
                lambda item: call(handle.request.remote(*item), what=what, timeout_s=self.timeout_s),
                lambda items: call(handle.request_many.remote(items), what=what, timeout_s=self.timeout_s))
            batcher.handle = handle
            self.batchers[host[0]] = batcher
        return batcher

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
        if host is not None and method in BATCHED_METHODS:
            result, new_session = await self._batcher(host).submit((session, method, data))
            _merge(session, new_session)
            return result
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
            result, new_session = await call_restarting(lambda: host[1].request.remote(session, method, data),
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

    async def health(self) -> dict:
        """``{"status": "ok" | "degraded", "reasons": [...]}`` for ``/healthz``."""
        try:
            return await call(self.directory.health.remote(), what="directory", timeout_s=3.0)
        except Exception as exc:  # noqa: BLE001
            return {"status": "degraded", "reasons": [f"directory unavailable ({getattr(exc, 'message', exc)})"]}

    def sids_on_host(self, host_id: str) -> list[str]:
        """Forget (and return) the sockets whose room was on ``host_id``."""
        sids = [sid for sid, (hid, _) in self.by_sid.items() if hid == host_id]
        for sid in sids:
            del self.by_sid[sid]
        return sids


def _merge(session: dict, new_session: Any) -> None:
    """Keep annotations the room layer made on its (pickled) copy of the session."""
    if isinstance(new_session, dict) and new_session is not session:
        session.update(new_session)


class Signaling:
    def __init__(self, settings: Any, route: str, directory_name: str, *,
                 factory: str | Callable = DEFAULT_SERVER_FACTORY, dev_secret: str | None = None) -> None:
        from .logs import ensure_configured

        ensure_configured()  # lines with their level even when the job configured no logging
        raise_nofile_limit()  # a WebSocket per participant (actors/fdlimit.py)
        self.settings = settings
        self.dev_secret = dev_secret  # development mode with several fronts: one secret for all
        self.route = route
        self.directory_name = directory_name
        self.factory = factory
        self.server: Any = None
        self.rooms: RayRoomsPort | None = None
        self.port: int | None = None
        self.node = node_name()
        self.room_resets = 0
        self._outboxes: SocketOutboxes | None = None  # room hosts' batched notifications
        self._restarting: asyncio.Task | None = None  # restart(): one listen-again at a time
        self._forget_task: asyncio.Task | None = None
        self.incarnation = uuid.uuid4().hex[:16]  # this process's tag in every session (forget_route)
        from .supervision import call_self_later, was_restarted

        #: Ray re-created this actor after its process died: every socket is gone; it listens again
        #: on the same address by itself (clients reconnect and join again)
        self.restarted = was_restarted()
        if self.restarted:
            logger.warning("signaling %s restarted: listening again", route)
            call_self_later("restart")

    def _kv_key(self) -> bytes:
        return f"studyrooms-listen:{self.route}".encode()

    async def restart(self) -> int | None:
        """After a restart: the participants of the old sockets leave their rooms, then listen on
        the address the previous process had (kept in Ray's GCS key-value store)."""
        # idempotent: the constructor queues it and the directory calls it too when it sees the
        # restart (whichever comes first listens; the other waits for it and gets the port)
        if self.server is not None and self.port:
            return self.port
        if self._restarting is None:
            self._restarting = asyncio.get_running_loop().create_task(self._listen_again())
        task = self._restarting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and (task.cancelled() or task.exception() is not None) and self._restarting is task:
                self._restarting = None  # a failed attempt: the next call tries again

    async def _listen_again(self) -> int | None:
        from ray.experimental import internal_kv

        raw = await asyncio.to_thread(internal_kv._internal_kv_get, self._kv_key())
        if not raw:
            logger.error("signaling %s restarted but its listen address is unknown", self.route)
            return None
        where = json.loads(raw)
        self._dev_secret = where.get("devSecret")  # tokens issued before the restart stay valid
        # listen first: clients reconnect (and resume) at once, whatever the room hosts are busy with;
        # the old sockets' participants are cleared meanwhile (a socket that already resumed has a
        # new sid, which clearing the old ones never touches)
        if self._forget_task is None:
            self._forget_task = asyncio.get_running_loop().create_task(
                self._forget_old_sockets(time.time(), self.incarnation))
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                return await self.start(where["host"], where["port"])
            except OSError as exc:  # the old socket may linger for a moment
                if asyncio.get_running_loop().time() > deadline:
                    logger.error("signaling %s cannot listen on %s:%s again: %s", self.route, where["host"],
                                 where["port"], exc)
                    raise
                self.server = None
                await asyncio.sleep(0.2)

    async def _forget_old_sockets(self, before: float, keep: str) -> None:
        """The participants of the previous process's sockets (sessions not tagged ``keep``, this
        process's incarnation; untagged ones: bound before ``before``, wall clock) leave their rooms
        (or, resumable, are detached until their clients resume)."""
        try:
            directory = await asyncio.to_thread(ray.get_actor, self.directory_name)
            hosts = await call(directory.host_handles.remote(), what="directory", timeout_s=15)
            left = await asyncio.gather(*(call(h.forget_route.remote(self.route, before, keep), what=f"room host {hid}", timeout_s=15)
                                          for hid, h in hosts.items()), return_exceptions=True)
            logger.warning("signaling %s: %d participant(s) of the old sockets left their rooms or wait "
                           "for their clients to resume", self.route,
                           sum(n for n in left if isinstance(n, int)))
        except Exception:  # noqa: BLE001 - clients can come back anyway
            logger.exception("signaling %s: old participants not cleared", self.route)

    async def host_reset(self, host_id: str, reason: str) -> int:
        """From the directory: room host ``host_id`` restarted and lost its rooms; the sockets that
        were in them get ``room-reset`` (they join again)."""
        if self.rooms is None or self.server is None:
            return 0
        sids = self.rooms.sids_on_host(host_id)
        for sid in sids:
            await self.server.room_reset(sid, reason)
        if sids:
            self.room_resets += len(sids)
            logger.warning("signaling %s: room-reset to %d socket(s) (%s)", self.route, len(sids), reason)
            try:
                await call(self.rooms.directory.record.remote("roomResets", len(sids)), what="directory")
            except Exception:  # noqa: BLE001 - a counter
                logger.debug("roomResets not recorded", exc_info=True)
        return len(sids)

    async def start(self, host: str, port: int) -> int:
        """Bind the HTTP/Socket.IO server; returns the bound port (``port=0``: any free one)."""
        if self.server is None:
            directory = await asyncio.to_thread(ray.get_actor, self.directory_name)
            self.rooms = RayRoomsPort(directory)
            # the fronts' shared development secret; after a restart the one the previous incarnation
            # used (tokens issued before the restart stay valid)
            secret = getattr(self, "_dev_secret", None) or self.dev_secret
            extra = {"dev_secret": secret} if secret else {}
            self.server = resolve(self.factory)(self.settings, self.rooms, self.route, **extra)
            self.server.incarnation = self.incarnation  # (before any socket: every session has it)
            from .telemetry import MetricsHub, ray_source, setup_actor_telemetry

            if setup_actor_telemetry("signaling", prometheus=True):  # GET /metrics on this server's port
                MetricsHub.get().add_source(self.route, ray_source(directory))
                self.server.metrics_provider = MetricsHub.get().render
            self.port = await self.server.start(host, port)
            self.host = host
            await self._remember(host, directory)
        return self.port

    async def _remember(self, host: str, directory: Any) -> None:
        """Keep the bound address (a restarted process listens there again) and register with the
        directory (it watches this actor)."""
        from ray.experimental import internal_kv

        try:
            where: dict = {"host": host, "port": self.port}
            if getattr(self.server, "dev_mode", False):  # loopback-only development mode
                where["devSecret"] = self.server._secret
            await asyncio.to_thread(internal_kv._internal_kv_put, self._kv_key(), json.dumps(where).encode(), True)
            me = ray.get_runtime_context().current_actor
            from .supervision import front_info

            info = front_info({"host": host, "port": self.port, "node": self.node})
            await call(directory.register_front.remote(self.route, me, info, keep_info=True), what="directory",
                       timeout_s=10)
        except Exception:  # noqa: BLE001 - outside an actor (tests) or no directory: no healing
            logger.warning("signaling %s: restart data not kept", self.route, exc_info=True)

    async def deliver(self, sid: str, event: str, data: dict) -> None:
        if self.server is not None:
            await self.server.deliver(sid, event, data)

    async def deliver_many(self, items: list) -> int:
        """A room host's batch of ``(sid, event, data)`` (actors/notify_batch.py): queued per socket,
        emitted in order by one drain per socket; returns at once."""
        if self._outboxes is None:
            self._outboxes = SocketOutboxes(self.deliver)
        return self._outboxes.accept(items)

    async def ping(self) -> str:
        return self.route

    async def batch_stats(self) -> dict:
        """Calls and requests of the batched path to each room host (benchmarks)."""
        return {hid: b.stats() for hid, b in (self.rooms.batchers.items() if self.rooms else ())}

    async def info(self) -> dict:
        return {"route": self.route, "node": self.node, "host": getattr(self, "host", None), "port": self.port,
                "pid": os.getpid()}

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()


#: ``max_restarts`` is set by start_app (``server.actor_max_restarts``)
SIGNALING_OPTIONS = dict(num_cpus=0, max_restarts=0, max_concurrency=1000)
SignalingActor = ray.remote(**SIGNALING_OPTIONS)(Signaling)
