"""MediaWorker: one studyrooms media Worker (mediasoup's Worker) per actor, one actor per core.

The Worker is created in :meth:`MediaWorker.start`, on the actor's own event loop (uvloop when it
is installed), so its UDP sockets and timers live in that loop. Control calls arrive through
:meth:`request`, the flat JSON API of docs/worker-api.md (``WorkerChannel``). Worker events are
forwarded to the RoomHost that owns the router (registered with ``create_router``).

Packets never cross this actor's boundary: only control calls do.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import socket
from typing import Any, Callable

import ray

from studyrooms import observability as obs
from studyrooms.errors import InvalidStateError

from .fdlimit import raise_nofile_limit

logger = logging.getLogger("studyrooms.actors.media")

DEFAULT_WORKER_FACTORY = "actors.media_worker:create_worker"
#: Set on a media node (e.g. by cluster.yaml's start commands): they override the driver's settings.
NODE_ENV = {"listen_ip": "STUDYROOMS_NODE_LISTEN_IP", "announced_ip": "STUDYROOMS_NODE_ANNOUNCED_IP"}


async def create_worker(worker_id: str, media_settings: dict, index: int) -> tuple[Any, Any]:
    """The product's factory: ``(Worker, WorkerChannel)`` from studyrooms.sfu."""
    from studyrooms.config import MediaSettings
    from studyrooms.sfu.channel import WorkerChannel
    from studyrooms.sfu.options import WorkerOptions
    from studyrooms.sfu.worker import Worker

    options = WorkerOptions.from_settings(MediaSettings(**media_settings))
    worker = await Worker.create(worker_id, options, index=index)
    return worker, WorkerChannel(worker)


def resolve(factory: str | Callable) -> Callable:
    """A callable, or a ``"module:attr"`` path to one."""
    if callable(factory):
        return factory
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)


def node_name() -> str:
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (unit tests)
        return socket.gethostname()


class MediaWorker:
    def __init__(
        self,
        worker_id: str,
        media_settings: dict,
        index: int = 0,
        *,
        factory: str | Callable = DEFAULT_WORKER_FACTORY,
        pin_cpu: bool = False,
    ) -> None:
        raise_nofile_limit()  # a socket per transport (actors/fdlimit.py)
        self.worker_id = worker_id
        self.media_settings = dict(media_settings)
        self.index = index
        self.factory = factory
        self.pin_cpu = pin_cpu
        self.worker: Any = None
        self.channel: Any = None
        self.owners: dict[str, Any] = {}  # routerId -> owner (RoomHost actor handle, or a local object)
        self.node = node_name()
        self.closed = False
        self._pending_events: set[asyncio.Task] = set()
        self._starting: asyncio.Lock | None = None
        from .supervision import call_self_later, was_restarted

        #: Ray re-created this actor after its process died: every router, transport, producer and
        #: consumer of the previous process is gone; the Worker starts again by itself
        self.restarted = was_restarted()
        if self.restarted:
            logger.warning("media worker %s restarted (pid %d): starting a fresh Worker", worker_id, os.getpid())
            call_self_later("start")

    async def start(self) -> dict:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.worker is None and not self.closed:
                await self._start()
        return await self.info()

    async def _ensure_started(self) -> None:
        if self.worker is None and self.restarted and not self.closed:
            await self.start()

    async def _start(self) -> None:
        if self.pin_cpu and hasattr(os, "sched_setaffinity"):
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpus[self.index % len(cpus)]})
        settings = dict(self.media_settings)
        for key, env in NODE_ENV.items():  # per-node values (a cluster's media nodes differ)
            if os.environ.get(env):
                settings[key] = os.environ[env]
        from .telemetry import setup_actor_telemetry

        setup_actor_telemetry("media-worker")  # spans (and OTLP metrics when configured)
        self.worker, self.channel = await resolve(self.factory)(self.worker_id, settings, self.index)
        self.worker.observer.on("event", self._on_event)
        # What exists now (modules, Ray's and the worker's own objects: ~80k) lives as long as the
        # process: out of the collector's way, a full collection (the memory trim's, or Python's
        # own) walks only what calls created: under 1 ms in an idle worker instead of ~30 ms of stalled
        # packet loop.
        gc.collect()
        gc.freeze()

    async def info(self) -> dict:
        loop = type(asyncio.get_running_loop())
        return {"workerId": self.worker_id, "pid": os.getpid(), "node": self.node, "index": self.index,
                "loop": f"{loop.__module__}.{loop.__name__}", "restarted": self.restarted,
                "started": self.worker is not None}

    async def ping(self) -> str:
        return self.worker_id

    # ------------------------------------------------------------------ control API
    async def request(self, method: str, data: dict | None = None, owner: Any = None) -> dict:
        await self._ensure_started()
        if self.closed or self.channel is None:
            raise InvalidStateError(f"media worker {self.worker_id} is {'closed' if self.closed else 'not started'}")
        data = dict(data or {})
        carrier = data.pop(obs.TRACE_KEY, None)  # the room host's span (studyrooms.observability)
        with obs.tracer().start_as_current_span(f"media_worker {method}", context=obs.extract(carrier),
                                                kind=obs.trace.SpanKind.SERVER,
                                                attributes={obs.WORKER_ID: self.worker_id, "rpc.method": method,
                                                            **obs.ids_from(data)}):
            result = await self.channel.request(method, data)
        if method == "create_router" and owner is not None:
            router_id = (result or {}).get("routerId") or data.get("routerId")
            if router_id:
                self.owners[router_id] = owner
        elif method == "close_router":
            self.owners.pop(data.get("routerId"), None)
        return result

    async def request_many(self, calls: list) -> list:
        """``[(method, data), ...]`` from a room host's batch (actors/call_batch.py): run one after
        the other, in order; each answered on its own (``("ok", result)`` or ``("err", error)``)."""
        from .call_batch import answer_each

        return await answer_each(calls, lambda c: self.request(c[0], c[1]), concurrent=False)

    def _on_event(self, name: str, data: dict) -> None:
        """Worker observer callback (sync, on this actor's loop): forward to the router's owner."""
        router_id = (data or {}).get("routerId")
        owner = self.owners.get(router_id)
        if name == "router-closed" and router_id:
            self.owners.pop(router_id, None)
        if owner is None:
            return
        payload = dict(data)
        payload.setdefault("workerId", self.worker_id)
        task = asyncio.get_running_loop().create_task(self._deliver(owner, name, payload))
        self._pending_events.add(task)
        task.add_done_callback(self._pending_events.discard)

    async def _deliver(self, owner: Any, name: str, data: dict) -> None:
        try:
            if hasattr(owner, "on_worker_event") and hasattr(owner.on_worker_event, "remote"):
                await owner.on_worker_event.remote(name, data)
            else:
                await owner.on_worker_event(name, data)
        except Exception:  # noqa: BLE001 - an owner that went away must not break the worker
            logger.warning("media worker %s: event %s not delivered", self.worker_id, name, exc_info=True)

    # ------------------------------------------------------------------ load and lifecycle
    async def load(self) -> dict:
        await self._ensure_started()
        stats: dict = {}
        if self.worker is not None:
            try:
                stats = dict(self.worker.get_stats())
            except Exception:  # noqa: BLE001
                logger.exception("get_stats failed")
        cpu = stats.get("cpu")  # fraction of one core, the sampler admission reads (Worker.cpu_utilization)
        if not isinstance(cpu, (int, float)):
            cpu = 0.0
        return {
            "workerId": self.worker_id,
            "pid": os.getpid(),
            "node": self.node,
            "routerCount": int(stats.get("routerCount", 0)),
            "transportCount": int(stats.get("transportCount", 0)),
            "producerCount": int(stats.get("producerCount", 0)),
            "consumerCount": int(stats.get("consumerCount", 0)),
            "cpu": cpu,
            "loopCpu": float(stats.get("loopCpu", 0.0)),  # admission control (studyrooms.sfu.loop_load)
            "loopLagMs": float(stats.get("loopLagMs", 0.0)),
            # which forwarding path serves this worker's consumers (issue 13), and its share of the sends
            "forwardingPath": stats.get("forwardingPath"),
            "rtpPacketsSent": int(stats.get("rtpPacketsSent", 0)),
            "rtpPacketsSentByCore": int(stats.get("rtpPacketsSentByCore", 0)),
            "rtpPacketsReceived": int(stats.get("rtpPacketsReceived", 0)),
            "rtpPacketsReceivedByCore": int(stats.get("rtpPacketsReceivedByCore", 0)),
            "closed": self.closed,
            "started": self.worker is not None,
        }

    async def trace_memory(self, action: str, limit: int = 20) -> dict:
        """Diagnostics (benchmarks.memory_episode): ``start`` tracemalloc and keep a first snapshot;
        ``diff``: the ``limit`` allocation sites that grew most since it (what an episode left);
        ``stop``."""
        import gc
        import tracemalloc

        if action == "start":
            tracemalloc.start(8)
            gc.collect()
            self._trace_base = tracemalloc.take_snapshot()
            return {"tracing": True}
        if action == "diff":
            base = getattr(self, "_trace_base", None)
            if base is None or not tracemalloc.is_tracing():
                return {"tracing": False}
            gc.collect()
            now = tracemalloc.take_snapshot()
            stats = now.compare_to(base, "traceback")
            top = [{"sizeDiffKiB": round(st.size_diff / 1024, 1), "countDiff": st.count_diff,
                    "where": [f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno}" for f in st.traceback][-4:]}
                   for st in stats[:limit]]
            traced, peak = tracemalloc.get_traced_memory()
            return {"tracing": True, "tracedMiB": round(traced / (1 << 20), 2), "peakMiB": round(peak / (1 << 20), 2),
                    "grownKiB": round(sum(st.size_diff for st in stats) / 1024, 1), "top": top}
        if action == "stop":
            tracemalloc.stop()
            self._trace_base = None
            return {"tracing": False}
        raise ValueError(f"trace_memory: unknown action {action!r}")

    async def memory_census(self, top: int = 0, trim: bool = False, collect: bool = True) -> dict:
        """Diagnostics: live objects by type, tasks, smaps and glibc's view (actors/memprobe.py)."""
        from .memprobe import census

        return census(top, trim, collect)

    async def close_routers_of(self, owner: Any) -> int:
        """Close every router registered by ``owner`` (a room host that restarted: the routers of
        its previous process have no room any more). Returns how many were closed."""
        from .supervision import actor_id_of

        if self.channel is None:
            return 0
        wanted = actor_id_of(owner)
        stale = [rid for rid, o in list(self.owners.items()) if wanted is not None and actor_id_of(o) == wanted]
        for router_id in stale:
            self.owners.pop(router_id, None)
            try:
                await self.channel.request("close_router", {"routerId": router_id})
            except Exception as exc:  # noqa: BLE001 - already closed
                logger.debug("close_router %s: %r", router_id, exc)
        if stale:
            logger.warning("media worker %s: closed %d router(s) of a restarted room host", self.worker_id, len(stale))
        return len(stale)

    async def telemetry(self) -> dict:
        """Counters for the metrics endpoint (actors/telemetry.py: summed per scrape, not per packet)."""
        from .telemetry import worker_telemetry

        if self.worker is None:
            return {"workerId": self.worker_id, "pid": os.getpid()}
        return {**worker_telemetry(self.worker), "node": self.node}

    async def get_stats(self) -> dict:
        if self.worker is None:
            return await self.load()
        out = dict(self.worker.get_stats())
        out.setdefault("node", self.node)
        return out

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.worker is not None:
            await self.worker.close()
        if self._pending_events:
            await asyncio.wait(list(self._pending_events), timeout=2.0)
        self.owners.clear()


#: ``num_cpus=0`` + one ``media_slots`` (design/ray.md P7: a custom resource alone reserves a CPU).
#: ``max_restarts`` is set by start_app (``server.worker_max_restarts``; then Ray gives up: crash loop)
MEDIA_WORKER_OPTIONS = dict(num_cpus=0, max_restarts=0, max_concurrency=1000)
MediaWorkerActor = ray.remote(**MEDIA_WORKER_OPTIONS)(MediaWorker)
