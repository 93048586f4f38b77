"""The supervisor: start and stop the whole actor system.

``await start_app(settings)`` starts, in this order (creation is concurrent, start-up is ordered):

1. the Directory (named singleton ``<prefix>:directory``) on the signaling node;
2. one MediaWorkerActor per media slot (``media_slots`` resource, else one per CPU), pinned to its
   node (NodeAffinity, hard), interleaved over nodes: ``<prefix>:media-<i>``;
3. ``settings.server.room_hosts`` RoomHostActor(s) per media node (hard node affinity):
   ``<prefix>:room-host-<j>``;
4. the signaling fronts: one SignalingActor per node advertising ``signaling`` (or
   ``settings.server.signaling_fronts`` of them, round robin over those nodes; the head when none
   advertises it), ``<prefix>:signaling-<i>`` (also each front's notification ``route``), each bound
   to ``settings.server.host:port`` on its node (the k-th front on one node: ``port + k``). Every
   room host can notify every front; the Directory health-checks them, and when one dies the room
   hosts drop the participants whose sockets it held (their clients reconnect to another front).

:meth:`AppHandle.stop` closes them in reverse (signaling stops accepting, rooms close, workers
close) and kills every actor. Requires an initialised Ray (see :func:`actors.runtime.init_ray`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from studyrooms.config import Settings

from .directory import DirectoryActor
from .hop import call
from .media_worker import DEFAULT_WORKER_FACTORY, MediaWorkerActor
from .room_host import RoomHostActor
from .runtime import MEDIA_SLOTS, alive_nodes, plan_fronts, plan_media_slots, signaling_node
from .signaling import DEFAULT_SERVER_FACTORY, SignalingActor
from .telemetry import TRACED_SERVICE_FACTORY, actor_options

logger = logging.getLogger("studyrooms.actors.app")


@dataclass
class AppHandle:
    prefix: str
    host: str
    port: int
    directory: Any
    signaling: Any
    workers: dict[str, Any] = field(default_factory=dict)
    hosts: dict[str, Any] = field(default_factory=dict)
    worker_nodes: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    stopped: bool = False
    #: every signaling front by route (``signaling`` is the first): {route: handle}, and their
    #: {route: {"node", "port", "url"}}
    fronts: dict[str, Any] = field(default_factory=dict)
    front_info: dict[str, dict] = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def urls(self) -> list[str]:
        """One URL per signaling front (``url`` is the first)."""
        return [info["url"] for info in self.front_info.values()] or [self.url]

    @property
    def route(self) -> str:
        return f"{self.prefix}:signaling-0"

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Close everything (idempotent): signaling, rooms, workers, directory; then kill the actors."""
        if self.stopped:
            return
        self.stopped = True
        fronts = list(self.fronts.values()) or [self.signaling]
        await _close_all(fronts, "stop", timeout_s)
        await _close_all(list(self.hosts.values()), "close", timeout_s)
        await _close_all(list(self.workers.values()), "close", timeout_s)
        await _close_all([self.directory], "close", timeout_s)
        for handle in [*fronts, *self.hosts.values(), *self.workers.values(), self.directory]:
            _kill(handle)


async def _close_all(handles: list, method: str, timeout_s: float) -> None:
    async def one(handle: Any) -> None:
        if handle is None:
            return
        try:
            await call(getattr(handle, method).remote(), what=method, timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - closing must always finish
            logger.warning("%s failed: %s", method, exc)

    await asyncio.gather(*(one(h) for h in handles))


def _kill(handle: Any) -> None:
    if handle is None:
        return
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # noqa: BLE001
        pass


async def start_app(
    settings: Settings,
    *,
    prefix: str = "studyrooms",
    worker_factory: str | Callable = DEFAULT_WORKER_FACTORY,
    service_factory: str | Callable = TRACED_SERVICE_FACTORY,  # DEFAULT_SERVICE_FACTORY + telemetry SDK
    server_factory: str | Callable = DEFAULT_SERVER_FACTORY,
    health_interval_s: float = 2.0,
    timeout_s: float = 60.0,
) -> AppHandle:
    """Start the actor system on the current Ray cluster; returns once ``/healthz`` would say ok."""
    if not ray.is_initialized():
        raise RuntimeError("start_app needs Ray: call actors.runtime.init_ray() first")
    t0 = time.monotonic()
    nodes = await asyncio.to_thread(alive_nodes)
    head = signaling_node(nodes)
    slots = plan_media_slots(nodes, settings.server.num_workers)
    media = settings.media.model_dump()
    created: list[Any] = []
    telemetry = actor_options()  # OTEL_* / STUDYROOMS_SPANS_DIR of the driver reach every actor
    # Ray restarts a killed actor (handles stay valid; actors/supervision.py heals the rest)
    restarts = dict(max_restarts=settings.server.actor_max_restarts)
    worker_restarts = dict(max_restarts=settings.server.worker_max_restarts)
    try:
        directory = DirectoryActor.options(
            name=f"{prefix}:directory", get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(head.node_id, soft=True), **restarts,
        ).remote(health_interval_s=health_interval_s, max_rooms=settings.rooms.max_rooms,
                 cpu_limit=settings.rooms.worker_cpu_limit,
                 consumer_limit=settings.rooms.max_consumers_per_worker)
        created.append(directory)
        plan = plan_fronts(nodes, settings.server.signaling_fronts, settings.server.port)
        # development mode (no auth secret) with several fronts: one random secret, so a token
        # issued by one front is accepted by every other
        shared_secret = secrets.token_urlsafe(32) if len(plan) > 1 and not settings.server.auth_secret else None
        fronts: dict[str, Any] = {}
        for i, (node_id, _port) in enumerate(plan):
            fronts[f"{prefix}:signaling-{i}"] = SignalingActor.options(
                name=f"{prefix}:signaling-{i}",
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False), **telemetry, **restarts,
            ).remote(settings, f"{prefix}:signaling-{i}", f"{prefix}:directory", factory=server_factory,
                     dev_secret=shared_secret)
            created.append(fronts[f"{prefix}:signaling-{i}"])
        route = f"{prefix}:signaling-0"
        signaling = fronts[route]
        workers: dict[str, Any] = {}
        worker_nodes: dict[str, str] = {}
        for slot in slots:
            worker_id = f"worker-{slot.index}"
            options: dict = dict(
                name=f"{prefix}:media-{slot.index}",
                scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node_id, soft=False), **telemetry,
                **worker_restarts,
            )
            if slot.use_resource:
                options["resources"] = {MEDIA_SLOTS: 1}
            workers[worker_id] = MediaWorkerActor.options(**options).remote(
                worker_id, media, slot.index, factory=worker_factory)
            worker_nodes[worker_id] = slot.node_id
            created.append(workers[worker_id])
        media_nodes = list(dict.fromkeys(slot.node_id for slot in slots)) or [head.node_id]
        hosts: dict[str, Any] = {}
        for j in range(len(media_nodes) * settings.server.room_hosts):
            host_id = f"room-host-{j}"
            hosts[host_id] = RoomHostActor.options(
                name=f"{prefix}:{host_id}",
                scheduling_strategy=NodeAffinitySchedulingStrategy(media_nodes[j % len(media_nodes)], soft=False),
                **telemetry, **restarts,
            ).remote(settings, host_id, f"{prefix}:directory", factory=service_factory)  # fronts: looked up by name
            created.append(hosts[host_id])
        handle = AppHandle(prefix, settings.server.host, settings.server.port, directory, signaling,
                           workers, hosts, worker_nodes, fronts=fronts)

        async def bounded(ref: Any, what: str) -> Any:
            return await call(ref, what=what, timeout_s=timeout_s)

        await bounded(directory.ping.remote(), "directory")
        infos = await asyncio.gather(*(bounded(w.start.remote(), f"media worker {wid}") for wid, w in workers.items()))
        handle.timings["workers_s"] = time.monotonic() - t0
        await asyncio.gather(*(bounded(directory.register_worker.remote(info["workerId"], workers[info["workerId"]], info),
                                       "directory") for info in infos))
        for info in infos:
            handle.worker_nodes[info["workerId"]] = info.get("node", handle.worker_nodes[info["workerId"]])
        host_infos = await asyncio.gather(*(bounded(h.start.remote(), f"room host {hid}") for hid, h in hosts.items()))
        await asyncio.gather(*(bounded(directory.register_host.remote(info["hostId"], hosts[info["hostId"]], info),
                                       "directory") for info in host_infos))
        handle.timings["hosts_s"] = time.monotonic() - t0
        ports = await asyncio.gather(*(bounded(front.start.remote(settings.server.host, port), f"signaling {r}")
                                       for (r, front), (_, port) in zip(fronts.items(), plan)))
        host = f"[{settings.server.host}]" if ":" in settings.server.host else settings.server.host
        for (r, front), (node_id, _), bound in zip(fronts.items(), plan, ports):
            handle.front_info[r] = {"node": node_id, "port": bound, "url": f"http://{host}:{bound}/"}
            await bounded(directory.register_front.remote(r, front, handle.front_info[r]), "directory")
        handle.port = ports[0]
        handle.timings["total_s"] = time.monotonic() - t0
        logger.info("studyrooms up in %.2f s: %d media workers on %d node(s), %d room host(s), %d signaling "
                    "front(s): %s", handle.timings["total_s"], len(workers), len(media_nodes), len(hosts),
                    len(fronts), " ".join(handle.urls))
        return handle
    except BaseException:
        for actor in created:
            _kill(actor)
        raise
