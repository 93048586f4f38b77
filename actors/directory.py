"""Directory: the named singleton that knows where things are.

* room -> the RoomHost that serves it (assigned on first join, least rooms first, round robin);
* the registry of media workers and their load (polled with ``load()``), dead ones dropped;
* router placement: the least-loaded worker (consumers, then routers), round robin on ties.

Plain class first; :data:`DirectoryActor` is the Ray actor (``get_if_exists`` makes it a named
singleton per application prefix).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import ActorDiedError

from studyrooms.errors import NotFoundError, ResourceExhaustedError

from .hop import call
from .placement import home_node, spread_candidates
from .supervision import DirectorySupervision, actor_id_of, gcs_states

logger = logging.getLogger("studyrooms.actors.directory")


@dataclass
class WorkerEntry:
    worker_id: str
    handle: Any
    order: int  # registration order (round robin on ties)
    node: str = ""
    router_count: int = 0
    transport_count: int = 0
    consumer_count: int = 0
    load: dict = field(default_factory=dict)
    failures: int = 0
    placed_since_poll: int = 0  # routers placed since the last load report (optimistic)
    actor_id: str | None = None
    pid: int | None = None
    down: bool = False  # dead or restarting: no placement until it answers load() again
    down_since: float = 0.0
    incarnation_lost: int = 0  # the highest restart count already handled

    @property
    def loop_cpu(self) -> float:
        """Measured load of the worker's event loop (fraction of a core, from its last report)."""
        return float(self.load.get("loopCpu") or 0.0)

    def key(self) -> tuple[int, int, int]:
        # measured loop CPU first, in 25 % steps (so that round robin still breaks ties, and an idle
        # worker's momentary 10-20 % on a busy machine, e.g. a start-up or a memory trim, does not
        # send the next room to a worker that already has one), then counts
        return (int(self.loop_cpu * 4), self.consumer_count, self.router_count)


@dataclass
class HostEntry:
    host_id: str
    handle: Any
    order: int
    node: str = ""
    rooms: set = field(default_factory=set)
    actor_id: str | None = None
    down: bool = False
    restarts_handled: int = 0


@dataclass
class FrontEntry:
    """A signaling front (SignalingActor): health-pinged with the workers, and watched in the GCS
    for restarts (actors/supervision.py). The one registry of signaling actors."""

    route: str
    handle: Any
    info: dict = field(default_factory=dict)
    failures: int = 0
    actor_id: str | None = None


class Directory(DirectorySupervision):
    def __init__(self, *, health_interval_s: float = 2.0, max_failures: int = 2, call_timeout_s: float = 5.0,
                 max_rooms: int | None = None, cpu_limit: float = 1.0, watch_interval_s: float = 0.25,
                 consumer_limit: int | None = None):
        from .logs import ensure_configured

        ensure_configured()  # lines with their level even when the job configured no logging
        self.consumer_limit = consumer_limit  # rooms.max_consumers_per_worker: a worker this full is skipped by spreads
        self.max_rooms = max_rooms  # cluster-wide (``rooms.max_rooms``); None: each host counts its own
        self.reserved: dict[str, str] = {}  # roomId -> hostId: the rooms that exist, cluster-wide
        self.fronts: dict[str, FrontEntry] = {}  # route -> signaling front
        self.joining: dict[str, int] = {}  # roomId -> joins routed by host_for_room and not finished
        self.health_interval_s = health_interval_s
        self.cpu_limit = cpu_limit  # admission control: no placement on a worker whose loop is busier
        self.max_failures = max_failures
        self.call_timeout_s = call_timeout_s
        self.workers: dict[str, WorkerEntry] = {}
        self.hosts: dict[str, HostEntry] = {}
        self.room_host: dict[str, str] = {}  # roomId -> hostId
        self.room_routers: dict[str, dict[str, int]] = {}  # roomId -> {workerId: routers}
        self._order = 0
        self._last_worker_order = -1
        self._last_host_order = -1
        self._health_task: asyncio.Task | None = None
        self.dropped: list[str] = []
        self._init_supervision(watch_interval_s)

    # ------------------------------------------------------------------ registry
    async def register_worker(self, worker_id: str, handle: Any, info: dict | None = None) -> None:
        info = info or {}
        self._order += 1
        self.workers[worker_id] = WorkerEntry(worker_id, handle, self._order, node=info.get("node", ""),
                                              load={"workerId": worker_id, "pid": info.get("pid"),
                                                    "node": info.get("node", ""), "cpu": 0.0},
                                              actor_id=actor_id_of(handle), pid=info.get("pid"))
        self._start_health()

    async def unregister_worker(self, worker_id: str) -> None:
        self.workers.pop(worker_id, None)

    async def register_host(self, host_id: str, handle: Any, info: dict | None = None) -> None:
        self._order += 1
        self.hosts[host_id] = HostEntry(host_id, handle, self._order, node=(info or {}).get("node", ""),
                                        actor_id=actor_id_of(handle))
        self._start_watch()

    async def unregister_host(self, host_id: str) -> None:
        entry = self.hosts.pop(host_id, None)
        if entry:
            for room_id in entry.rooms:
                self.room_host.pop(room_id, None)
        for room_id in [r for r, h in self.reserved.items() if h == host_id]:
            del self.reserved[room_id]

    # ------------------------------------------------------------------ signaling fronts
    async def register_front(self, route: str, handle: Any, info: dict | None = None, *,
                             keep_info: bool = False) -> None:
        """A signaling front (its route is its actor name): health-checked like workers and watched
        for restarts. A front registers itself when it listens (``keep_info``: what the application
        registered for it stays) and the application registers it with its address info."""
        entry = self.fronts.get(route)
        if entry is None:
            entry = self.fronts[route] = FrontEntry(route, handle, dict(info or {}))
        else:
            entry.handle, entry.failures = handle, 0
            if info is not None and not (keep_info and entry.info):
                entry.info = dict(info)
        entry.actor_id = actor_id_of(handle)
        self._start_health()
        self._start_watch()

    async def unregister_front(self, route: str) -> None:
        self.fronts.pop(route, None)

    async def front_infos(self) -> list[dict]:
        return [dict(e.info, route=r) for r, e in self.fronts.items()]

    async def _front_restarting(self, front: FrontEntry) -> bool:
        """True while Ray restarts (or has restarted) the front's actor; False when it is dead for
        good or not a Ray actor."""
        if not front.actor_id:
            return False
        try:
            states = await asyncio.to_thread(gcs_states, [front.actor_id])
        except Exception:  # noqa: BLE001 - no GCS answer: judge by the pings
            return False
        state = states.get(front.actor_id, ("DEAD", 0))[0]
        return state in ("RESTARTING", "ALIVE", "PENDING_CREATION", "DEPENDENCIES_UNREADY")

    async def _front_gone(self, route: str) -> None:
        """A front died: its sockets are gone, so every room host drops the participants it held."""
        self.fronts.pop(route, None)

        async def tell(host: HostEntry) -> None:
            try:
                await call(host.handle.drop_route.remote(route), what=f"room host {host.host_id}",
                           timeout_s=self.call_timeout_s)
            except Exception as exc:  # noqa: BLE001
                logger.warning("room host %s: drop_route(%s) failed: %s", host.host_id, route, exc)

        await asyncio.gather(*(tell(h) for h in list(self.hosts.values())))

    # ------------------------------------------------------------------ cluster-wide room limit
    async def reserve_room(self, room_id: str, host_id: str) -> None:
        """A host creates ``room_id``: refused with ResourceExhaustedError when ``max_rooms`` rooms
        already exist anywhere in the cluster (idempotent for a room that exists)."""
        if room_id in self.reserved:
            return
        if self.max_rooms is not None and len(self.reserved) >= self.max_rooms:
            raise ResourceExhaustedError(f"room limit reached ({self.max_rooms} rooms); try again later")
        self.reserved[room_id] = host_id

    async def release_room(self, room_id: str, host_id: str) -> None:
        """The host forgot ``room_id`` (empty, closed): it no longer counts."""
        if self.reserved.get(room_id) == host_id:
            del self.reserved[room_id]
        await self.room_closed(room_id, host_id)

    async def worker_handle(self, worker_id: str) -> Any:
        entry = self.workers.get(worker_id)
        if entry is None:
            raise NotFoundError(f"worker {worker_id} not found")
        return entry.handle

    async def worker_handles(self) -> dict[str, Any]:
        await self._wait_rebuilt()
        return {wid: e.handle for wid, e in self.workers.items()}

    async def worker_nodes(self) -> dict[str, str]:
        """workerId -> Ray node id (room hosts use it: pipes between nodes carry SRTP)."""
        return {wid: e.node for wid, e in self.workers.items()}

    async def host_handles(self) -> dict[str, Any]:
        await self._wait_rebuilt()
        return {hid: e.handle for hid, e in self.hosts.items()}

    async def ready(self) -> bool:
        await self._wait_rebuilt()
        return any(not w.down for w in self.workers.values()) and bool(self.hosts)

    # ------------------------------------------------------------------ rooms -> hosts
    async def host_for_room(self, room_id: str, create: bool = True, join: bool = False) -> tuple[str, Any] | None:
        """The (hostId, handle) serving ``room_id``; assign the least busy host on first use.

        ``join``: a join is routed there; the caller calls :meth:`join_finished` when it is over."""
        await self._wait_rebuilt()
        host_id = self.room_host.get(room_id)
        if host_id is not None and host_id in self.hosts:
            if create and join:
                self.joining[room_id] = self.joining.get(room_id, 0) + 1
            return host_id, self.hosts[host_id].handle
        if not create:
            return None
        if not self.hosts:
            raise ResourceExhaustedError("no room host available")
        if self.max_rooms is not None and room_id not in self.reserved and len(self.reserved) >= self.max_rooms:
            # refused here, before a host is assigned: a refused room id leaves nothing behind
            raise ResourceExhaustedError(f"room limit reached ({self.max_rooms} rooms); try again later")
        entry = self._pick(list(self.hosts.values()), lambda h: len(h.rooms), "_last_host_order")
        entry.rooms.add(room_id)
        self.room_host[room_id] = entry.host_id
        if join:
            self.joining[room_id] = self.joining.get(room_id, 0) + 1
        return entry.host_id, entry.handle

    async def join_finished(self, room_id: str) -> None:
        """A join that :meth:`host_for_room` routed is over (either way). When no join is on its way
        and the room does not exist on its host (never reserved, no router: e.g. the token did not
        allow it), the assignment is dropped, so refused room ids do not pile up."""
        pending = self.joining.get(room_id, 0) - 1
        if pending > 0:
            self.joining[room_id] = pending
            return
        self.joining.pop(room_id, None)
        if room_id not in self.reserved and room_id not in self.room_routers:
            await self.room_closed(room_id)

    async def any_host(self) -> tuple[str, Any]:
        await self._wait_rebuilt()
        if not self.hosts:
            raise ResourceExhaustedError("no room host available")
        entry = min(self.hosts.values(), key=lambda h: h.order)
        return entry.host_id, entry.handle

    async def room_closed(self, room_id: str, host_id: str | None = None) -> None:
        if self.joining.get(room_id):  # a join is on its way to that host: it keeps the room there
            return
        current = self.room_host.get(room_id)
        if current is None or (host_id is not None and current != host_id):
            return
        self.room_host.pop(room_id, None)
        if current in self.hosts:
            self.hosts[current].rooms.discard(room_id)

    # ------------------------------------------------------------------ placement
    async def place_router(self, room_id: str, exclude: tuple | list = (), host_id: str | None = None) -> str:
        """Pick the least-loaded live worker (measured loop CPU, consumers, routers); round robin on
        ties; never one whose loop is busier than ``cpu_limit`` (admission control). A room that
        already has a router spreads to its own node first (actors/placement.py)."""
        await self._wait_rebuilt()
        candidates = [w for w in self.workers.values() if w.worker_id not in set(exclude) and not w.down]
        if not candidates:
            raise ResourceExhaustedError("no media worker available")
        candidates = [w for w in candidates if w.loop_cpu < self.cpu_limit]
        if not candidates:
            raise ResourceExhaustedError(f"every media worker is at capacity (load over {self.cpu_limit:.0%}); "
                                         "try again later")
        node = home_node(self.room_routers.get(room_id, {}), self.workers)
        candidates = spread_candidates(candidates, node, self.consumer_limit)
        entry = self._pick(candidates, WorkerEntry.key, "_last_worker_order")
        entry.router_count += 1
        entry.placed_since_poll += 1
        routers = self.room_routers.setdefault(room_id, {})
        routers[entry.worker_id] = routers.get(entry.worker_id, 0) + 1
        if host_id is not None and room_id not in self.room_host and host_id in self.hosts:
            self.room_host[room_id] = host_id
            self.hosts[host_id].rooms.add(room_id)
        return entry.worker_id

    async def release_router(self, room_id: str, worker_id: str) -> None:
        entry = self.workers.get(worker_id)
        if entry is not None and entry.router_count > 0:
            entry.router_count -= 1
        routers = self.room_routers.get(room_id)
        if routers is not None and worker_id in routers:
            routers[worker_id] -= 1
            if routers[worker_id] <= 0:
                del routers[worker_id]
            if not routers:  # the room's last router is gone: the room is closed on its host
                del self.room_routers[room_id]
                await self.room_closed(room_id)

    def _pick(self, entries: list, key: Callable[[Any], Any], last_attr: str) -> Any:
        best = min(key(e) for e in entries)
        tied = sorted((e for e in entries if key(e) == best), key=lambda e: e.order)
        last = getattr(self, last_attr)
        chosen = next((e for e in tied if e.order > last), tied[0])  # next after the last pick, cyclic
        setattr(self, last_attr, chosen.order)
        return chosen

    # ------------------------------------------------------------------ load and health
    async def report_load(self, worker_id: str, load: dict) -> None:
        entry = self.workers.get(worker_id)
        if entry is None:
            return
        entry.load = dict(load)
        entry.router_count = int(load.get("routerCount", 0))
        entry.transport_count = int(load.get("transportCount", 0))
        entry.consumer_count = int(load.get("consumerCount", 0))
        entry.node = load.get("node", entry.node)
        entry.placed_since_poll = 0
        entry.failures = 0

    async def worker_failed(self, worker_id: str, reason: str) -> bool:
        """A call to the worker failed because its actor died (the room hosts report it at once; the
        GCS watch and the health poll would notice a moment later): no placement on it until Ray's
        restart answers again (``worker_lost``). Returns whether it was still placeable."""
        entry = self.workers.get(worker_id)
        if entry is None or entry.down:
            return False
        await self.worker_lost(worker_id, f"media worker {worker_id} died: {reason}")
        return True

    async def check_health(self) -> list[str]:
        """Poll every worker's ``load()``; drop the ones that died or failed ``max_failures`` times."""
        dropped: list[str] = []

        async def poll(entry: WorkerEntry) -> None:
            started_placed = entry.placed_since_poll
            try:
                load = await call(entry.handle.load.remote(), what=f"worker {entry.worker_id}",
                                  timeout_s=self.call_timeout_s)
            except Exception as exc:  # noqa: BLE001
                if entry.down:
                    return  # still restarting
                entry.failures += 1
                died = isinstance(exc.__cause__, ActorDiedError)
                if died or entry.failures >= self.max_failures:
                    logger.warning("media worker %s does not answer: %s", entry.worker_id, exc)
                    dropped.append(entry.worker_id)
                    if died:
                        await self.give_up_worker(entry.worker_id, f"{type(exc.__cause__).__name__}")
                    else:
                        await self.worker_lost(entry.worker_id, f"media worker {entry.worker_id} stopped answering")
                return
            if entry.pid is not None and load.get("pid") not in (None, entry.pid) and not entry.down:
                # restarted between two watches (or without a GCS answer): its objects are gone
                await self.worker_lost(entry.worker_id, f"media worker {entry.worker_id} restarted "
                                       f"(pid {entry.pid} -> {load.get('pid')})")
            if entry.down:
                if load.get("started") is False:
                    return
                await self.worker_back(entry.worker_id, load)
            entry.pid = load.get("pid", entry.pid)
            if entry.worker_id in self.workers:
                placed = entry.placed_since_poll - started_placed  # placed while the poll was in flight
                await self.report_load(entry.worker_id, load)
                entry.router_count += placed
                entry.placed_since_poll = placed

        await asyncio.gather(*(poll(e) for e in list(self.workers.values())))
        for front in list(self.fronts.values()):
            try:
                await call(front.handle.ping.remote(), what=f"signaling {front.route}", timeout_s=self.call_timeout_s)
                front.failures = 0
            except Exception as exc:  # noqa: BLE001
                front.failures += 1
                if isinstance(exc.__cause__, ActorDiedError) or front.failures >= self.max_failures:
                    if await self._front_restarting(front):
                        # Ray brings it back under the same route: the restarted process clears its
                        # old sockets itself (forget_route) before it listens. Dropping the route
                        # here could hit the sockets of the new process (same route name).
                        front.failures = 0
                        continue
                    logger.warning("dropping signaling front %s: %s", front.route, exc)
                    await self._front_gone(front.route)
                    dropped.append(front.route)
        for host in list(self.hosts.values()):
            try:
                await call(host.handle.ping.remote(), what=f"room host {host.host_id}", timeout_s=self.call_timeout_s)
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc.__cause__, ActorDiedError):
                    logger.warning("dropping room host %s: %s", host.host_id, exc)
                    await self._host_reset(host.host_id, f"room host {host.host_id} died")
                    await self.unregister_host(host.host_id)
                    dropped.append(host.host_id)
        self.dropped.extend(dropped)
        return dropped

    def _start_health(self) -> None:
        self._start_watch()
        if self._health_task is None and self.health_interval_s > 0:
            try:
                self._health_task = asyncio.get_running_loop().create_task(self._health_loop())
            except RuntimeError:  # no loop (plain unit test): polled by hand
                pass

    async def _health_loop(self) -> None:
        await asyncio.sleep(0.05)  # let the other registrations of a start-up arrive first
        while True:
            try:
                await self.check_health()
            except Exception:  # noqa: BLE001 - the loop must go on
                logger.exception("health check failed")
            await asyncio.sleep(self.health_interval_s)

    # ------------------------------------------------------------------ introspection
    async def loads(self) -> list[dict]:
        await self._wait_rebuilt()
        out = []
        for entry in sorted(self.workers.values(), key=lambda e: e.order):
            load = dict(entry.load) or {"workerId": entry.worker_id, "node": entry.node}
            load.update(routerCount=entry.router_count, consumerCount=entry.consumer_count,
                        transportCount=entry.transport_count)
            out.append(load)
        return out

    async def live_loads(self) -> list[dict]:
        """Poll every worker now (for /api/stats), then :meth:`loads`."""
        await self.check_health()
        return await self.loads()

    async def dump(self) -> dict:
        await self._wait_rebuilt()
        return {
            "workers": {wid: {"node": e.node, "routers": e.router_count, "consumers": e.consumer_count}
                        for wid, e in self.workers.items()},
            "hosts": {hid: sorted(e.rooms) for hid, e in self.hosts.items()},
            "rooms": dict(self.room_host),
            "roomRouters": {r: dict(w) for r, w in self.room_routers.items()},
            "dropped": list(self.dropped),
            "reserved": dict(self.reserved),
            "fronts": sorted(self.fronts),
            "down": sorted(w for w, e in self.workers.items() if e.down),
            "givenUp": list(self.given_up),
        }

    async def ping(self) -> float:
        return time.time()

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            self._health_task = None
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None


#: ``max_restarts`` is set by start_app (``server.actor_max_restarts``)
DIRECTORY_OPTIONS = dict(num_cpus=0, max_restarts=0, max_concurrency=1000)
DirectoryActor = ray.remote(**DIRECTORY_OPTIONS)(Directory)

__all__ = ["Directory", "DirectoryActor", "DIRECTORY_OPTIONS"]
