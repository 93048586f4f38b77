"""RoomHost: hosts a RoomService (many rooms, plain objects) with its ports implemented over Ray.

* WorkerPort   -> :class:`RayWorkerPort`, a MediaWorkerActor handle (this host registers itself as
  the router's owner at ``create_router``, so worker events come back to :meth:`on_worker_event`);
* DirectoryPort -> :class:`RayDirectoryPort`, the Directory actor;
* NotifierPort -> :class:`RayNotifierPort`, the SignalingActor named by ``route``.

Every call across the hop goes through :func:`actors.hop.call`: studyrooms errors keep their class,
Ray failures become ``InternalError("... unavailable")``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any, Callable

import ray
from ray.exceptions import ActorDiedError

from studyrooms.errors import NotFoundError

from .call_batch import CallBatcher, answer_each
from .hop import call
from .media_worker import node_name, resolve
from .notify_batch import NotificationBatcher

logger = logging.getLogger("studyrooms.actors.rooms")

DEFAULT_SERVICE_FACTORY = "actors.room_host:create_room_service"


def create_room_service(settings: Any, directory: Any, notifier: Any, host_id: str) -> Any:
    from studyrooms.clock import SystemClock
    from studyrooms.rooms.service import RoomService

    return RoomService(settings, directory, notifier, SystemClock(), host_id)


#: worker calls a consume storm makes (one per client request): batched per worker (call_batch.py)
BATCHED_WORKER_METHODS = frozenset({"consume", "resume_consumer", "pause_consumer"})


class RayWorkerPort:
    """studyrooms.rooms.ports.WorkerPort over a MediaWorkerActor handle.

    The calls of :data:`BATCHED_WORKER_METHODS` made in one loop turn (e.g. a room's batch of
    consumes, studyrooms.rooms.op_batch) go to the worker in one ``request_many`` call."""

    def __init__(self, worker_id: str, handle: Any, owner: Any = None, timeout_s: float = 30.0,
                 node: str | None = None, on_died: Callable[[str, str], Any] | None = None) -> None:
        self.worker_id = worker_id
        self.handle = handle
        self.owner = owner
        self.timeout_s = timeout_s
        self.node = node  # Ray node id: pipes to a worker on another node carry SRTP
        self.on_died = on_died  # (worker id, reason): a call failed because the actor died
        self.batcher = CallBatcher(self._one, self._many)

    async def request(self, method: str, data: dict) -> dict:
        if method in BATCHED_WORKER_METHODS:
            return await self.batcher.submit((method, data))
        return await self._one((method, data))

    async def _one(self, item: tuple[str, dict]) -> dict:
        method, data = item
        owner = self.owner if method == "create_router" else None
        return await self._call(self.handle.request.remote(method, data, owner))

    async def _many(self, items: list) -> list:
        return await self._call(self.handle.request_many.remote(items))

    async def _call(self, ref: Any) -> Any:
        try:
            return await call(ref, what=f"media worker {self.worker_id}", timeout_s=self.timeout_s)
        except Exception as exc:
            if self.on_died is not None and isinstance(exc.__cause__, ActorDiedError):
                self.on_died(self.worker_id, str(exc))
            raise


class RayDirectoryPort:
    """studyrooms.rooms.ports.DirectoryPort over the Directory actor."""

    def __init__(self, directory: Any, host_id: str, owner: Any = None) -> None:
        self.directory = directory
        self.host_id = host_id
        self.owner = owner
        self.ports: dict[str, RayWorkerPort] = {}
        self._reports: set[asyncio.Task] = set()

    def _port(self, worker_id: str, handle: Any) -> RayWorkerPort:
        return RayWorkerPort(worker_id, handle, self.owner, on_died=self._worker_died)

    def _worker_died(self, worker_id: str, reason: str) -> None:
        """Tell the directory at once (placement skips the worker from then on), in the background."""
        async def report() -> None:
            try:
                await call(self.directory.worker_failed.remote(worker_id, reason), what="directory")
            except Exception:  # noqa: BLE001 - its health poll will notice anyway
                logger.warning("could not report dead media worker %s", worker_id, exc_info=True)

        task = asyncio.get_running_loop().create_task(report())
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def refresh(self) -> None:
        handles, nodes = await asyncio.gather(call(self.directory.worker_handles.remote(), what="directory"),
                                              call(self.directory.worker_nodes.remote(), what="directory"))
        for worker_id, handle in handles.items():
            port = self.ports.setdefault(worker_id, self._port(worker_id, handle))
            port.node = nodes.get(worker_id) or port.node

    async def place_router(self, room_id: str, exclude: Any = ()) -> str:
        worker_id = await call(self.directory.place_router.remote(room_id, tuple(exclude), self.host_id),
                               what="directory")
        if worker_id not in self.ports or self.ports[worker_id].node is None:
            await self.refresh()
        if worker_id not in self.ports:
            handle = await call(self.directory.worker_handle.remote(worker_id), what="directory")
            self.ports[worker_id] = self._port(worker_id, handle)
        return worker_id

    def worker(self, worker_id: str) -> RayWorkerPort:
        port = self.ports.get(worker_id)
        if port is None:
            raise NotFoundError(f"worker {worker_id} not known to room host {self.host_id}")
        return port

    async def release_router(self, room_id: str, worker_id: str) -> None:
        await call(self.directory.release_router.remote(room_id, worker_id), what="directory")

    async def reserve_room(self, room_id: str) -> None:
        """Cluster-wide ``max_rooms``: the Directory counts every host's rooms."""
        await call(self.directory.reserve_room.remote(room_id, self.host_id), what="directory")

    async def release_room(self, room_id: str) -> None:
        await call(self.directory.release_room.remote(room_id, self.host_id), what="directory")


class RayNotifierPort:
    """studyrooms.rooms.ports.NotifierPort: ``route`` is the name of a SignalingActor."""

    def __init__(self, routes: dict[str, Any] | None = None, timeout_s: float = 5.0) -> None:
        self.routes: dict[str, Any] = dict(routes or {})
        self.timeout_s = timeout_s
        self.batcher = NotificationBatcher(self._deliver_many)  # one call per front per batch (notify_batch.py)

    async def _handle(self, route: str) -> Any:
        handle = self.routes.get(route)
        if handle is None:
            handle = await asyncio.to_thread(ray.get_actor, route)  # a GCS lookup: off the loop
            self.routes[route] = handle
        return handle

    async def notify(self, route: str, sid: str, event: str, data: dict) -> None:
        await self.batcher.notify(route, sid, event, data)  # never raises: a lost batch is logged

    async def _deliver_many(self, route: str, items: list) -> None:
        try:
            handle = await self._handle(route)
            await call(handle.deliver_many.remote(items), what=f"signaling {route}", timeout_s=self.timeout_s)
        except Exception:
            self.routes.pop(route, None)  # looked up again next time (the front may have restarted)
            raise


class RoomHost:
    def __init__(
        self,
        settings: Any,
        host_id: str,
        directory_name: str,
        *,
        routes: dict[str, Any] | None = None,
        factory: str | Callable = DEFAULT_SERVICE_FACTORY,
    ) -> None:
        from .logs import ensure_configured

        ensure_configured()  # lines with their level even when the job configured no logging
        self.settings = settings
        self.host_id = host_id
        self.directory_name = directory_name
        self.routes = dict(routes or {})
        self.factory = factory
        self.service: Any = None
        self.directory_port: RayDirectoryPort | None = None
        self.node = node_name()
        self.media_resets = 0
        self._starting: asyncio.Lock | None = None
        self._memory: Any = None  # MemoryTrimmer, made on the actor's loop (_after_leaves)
        from .supervision import call_self_later, was_restarted

        #: Ray re-created this host after its process died: its rooms are gone (the directory tells
        #: the signaling actors, which send room-reset); it starts again by itself
        self.restarted = was_restarted()
        if self.restarted:
            logger.warning("room host %s restarted: starting again", host_id)
            call_self_later("start")

    async def start(self) -> dict:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.service is None:
                await self._start()
        return {"hostId": self.host_id, "node": self.node}

    async def _ensure_started(self) -> None:
        if self.service is None and self.restarted:
            await self.start()

    async def _start(self) -> None:
        directory = await asyncio.to_thread(ray.get_actor, self.directory_name)
        try:
            me = ray.get_runtime_context().current_actor
        except Exception:  # noqa: BLE001 - used outside an actor (tests)
            me = None
        self.directory_port = RayDirectoryPort(directory, self.host_id, owner=me)
        await self.directory_port.refresh()
        self.notifier = RayNotifierPort(self.routes)
        self.service = resolve(self.factory)(self.settings, self.directory_port, self.notifier, self.host_id)
        if me is not None:
            # an actor's process: its start-up objects out of the collector's way, so the full
            # collections of the memory trims walk only what requests created (as media_worker.py)
            gc.collect()
            gc.freeze()
        if self.restarted and me is not None:  # the routers of the previous process have no room now
            await asyncio.gather(*(self._close_stale_routers(port, me)
                                   for port in self.directory_port.ports.values()))

    async def _close_stale_routers(self, port: "RayWorkerPort", me: Any) -> None:
        try:
            await call(port.handle.close_routers_of.remote(me), what=f"media worker {port.worker_id}", timeout_s=10)
        except Exception as exc:  # noqa: BLE001 - a dead worker lost them anyway
            logger.warning("room host %s: stale routers on %s not closed: %r", self.host_id, port.worker_id, exc)

    async def add_route(self, route: str, handle: Any) -> None:
        self.routes[route] = handle
        if self.service is not None:
            self.notifier.routes[route] = handle

    async def ping(self) -> str:
        return self.host_id

    async def request(self, session: dict, method: str, data: dict) -> tuple[Any, dict]:
        """Returns ``(result, session)``: the session as the service left it (it may annotate it)."""
        await self._ensure_started()
        try:
            result = await self.service.request(session, method, data)
        finally:
            if method == "leave-room":
                self._after_leaves()
        return result, session

    async def request_many(self, items: list) -> list:
        """A front's batch of ``(session, method, data)`` (actors/call_batch.py): served side by side
        (they are different clients' requests), each answered on its own with ``(result, session)``."""
        await self._ensure_started()
        return await answer_each(items, lambda it: self.request(*it), concurrent=True)

    async def batch_stats(self) -> dict:
        """Calls and requests of the batched paths to each media worker (benchmarks)."""
        ports = self.directory_port.ports if self.directory_port is not None else {}
        return {wid: port.batcher.stats() for wid, port in ports.items()}

    async def disconnect(self, session: dict) -> dict:
        await self._ensure_started()
        try:
            await self.service.disconnect(session)
        finally:
            self._after_leaves()
        return session

    async def drop_route(self, route: str) -> int:
        """The signaling front ``route`` died: its participants leave (their sockets are gone)."""
        try:
            return await self.service.drop_route(route) if self.service is not None else 0
        finally:
            self._after_leaves()

    def _after_leaves(self) -> None:
        """A burst of leaves allocates and frees a lot at once (the notifications to everyone left,
        the media workers' close calls: Ray's and gRPC's buffers, in the arenas of their threads);
        glibc keeps those pages. Once leaves have settled (``media.memory_trim_delay_s``) the host
        hands them back (``malloc_trim``, studyrooms/sfu/memory.py), as media workers do."""
        if self._memory is None:
            from studyrooms.clock import SystemClock
            from studyrooms.sfu.memory import MemoryTrimmer

            self._memory = MemoryTrimmer(SystemClock(), self.settings.media.memory_trim_delay_s)
        self._memory.closed_something()

    async def memory(self) -> dict:
        """``{rssBytes, trims, releasedBytes}`` of this host's process (the trims after leaves)."""
        from studyrooms.sfu.memory import rss_bytes

        return self._memory.stats() if self._memory is not None else {"rssBytes": rss_bytes(), "trims": 0,
                                                                       "releasedBytes": 0}

    async def on_worker_event(self, name: str, data: dict) -> None:
        if self.service is not None:
            await self.service.on_worker_event(name, data)

    # ------------------------------------------------------------------ healing
    async def worker_lost(self, worker_id: str, reason: str) -> int:
        """From the directory: a media worker died; the rooms with a router there heal."""
        await self._ensure_started()
        if self.service is None:
            return 0
        reset = await self.service.worker_lost(worker_id, reason)
        if reset:
            self.media_resets += reset
            try:
                await call(self.directory_port.directory.record.remote("mediaResets", reset), what="directory")
            except Exception:  # noqa: BLE001 - a counter
                logger.debug("mediaResets not recorded", exc_info=True)
        return reset

    async def forget_route(self, route: str, before: float | None = None, keep: str | None = None) -> int:
        """From a restarted signaling actor: its old sockets' participants (sessions of another
        incarnation than ``keep``; untagged ones bound before ``before``, wall clock) leave or are
        detached."""
        await self._ensure_started()
        return await self.service.forget_route(route, before, keep) if self.service is not None else 0

    async def rooms_held(self) -> dict:
        await self._ensure_started()
        rooms = self.service.rooms_held() if self.service is not None else {}
        return {"hostId": self.host_id, "node": self.node, "rooms": rooms}

    async def list_rooms(self) -> Any:
        return await _value(self.service.list_rooms()) if self.service else []

    async def stats(self) -> Any:
        return await _value(self.service.stats()) if self.service else {}

    async def dump(self) -> Any:
        """The service's bookkeeping (tests: no room, socket or rate-limiter entry left behind)."""
        return await _value(self.service.dump()) if self.service else {}

    async def memory_census(self, top: int = 0, trim: bool = False, collect: bool = True) -> dict:
        """Diagnostics: live objects by type, tasks, smaps and glibc's view (actors/memprobe.py)."""
        from .memprobe import census

        return census(top, trim, collect)

    async def close(self) -> None:
        if self._memory is not None:
            self._memory.stop()
        if self.service is not None:
            await self.service.close()


async def _value(value: Any) -> Any:
    """The service's introspection may be sync or async."""
    return await value if asyncio.iscoroutine(value) else value


#: ``max_restarts`` is set by start_app (``server.actor_max_restarts``)
ROOM_HOST_OPTIONS = dict(num_cpus=0, max_restarts=0, max_concurrency=1000)
RoomHostActor = ray.remote(**ROOM_HOST_OPTIONS)(RoomHost)
