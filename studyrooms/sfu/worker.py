"""Worker: one media worker (mediasoup's Worker), one per CPU core.

Owns its DTLS certificate, its UDP socket (shared mode: one WebRtcServer port for every
transport) and many Routers. Everything per packet happens inside this process's event loop.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from typing import Any

from ..clock import Clock, SystemClock
from ..errors import InvalidStateError, NotFoundError
from ..events import EventEmitter
from ..ids import new_id
from ..media import fastpath
from ..net.dtls import make_certificate
from .counters import WorkerCounters
from .loop_load import LoopLoad
from .memory import MemoryTrimmer
from .options import WorkerOptions
from .router import Router

logger = logging.getLogger("studyrooms.worker")


class Worker:
    def __init__(self, worker_id: str, options: WorkerOptions, *, index: int = 0, clock: Clock | None = None):
        self.id = worker_id
        self.index = index
        self.options = options
        self.clock: Clock = clock or SystemClock()
        self.pid = os.getpid()
        self.closed = False
        self.certificate = make_certificate(options.certificate_validity_days)
        self.webrtc_server = None
        self.routers: dict[str, Router] = {}
        self.transports: dict[str, Any] = {}
        self.producers: dict[str, Any] = {}
        self.consumers: dict[str, Any] = {}
        self.observer = EventEmitter()  # "event" (name, data), "close"
        self.counters = WorkerCounters()  # closed entities' final counters (studyrooms/sfu/counters.py)
        #: transports that closed themselves, by reason (ice-timeout, dtls-failed, dtls-closed)
        self.transport_failures: dict[str, int] = {}
        self.started_at = time.monotonic()
        self._cpu_start = time.process_time()
        self.loop_load = LoopLoad(self.clock)  # started in create(), on the worker's loop
        self.memory = MemoryTrimmer(self.clock, options.memory_trim_delay_s)  # freed pages back after closes

    @classmethod
    async def create(
        cls, worker_id: str | None = None, options: WorkerOptions | None = None, *, index: int = 0,
        clock: Clock | None = None, measure_load: bool = True,
    ) -> "Worker":
        """``measure_load``: sample this loop's CPU and lag (``loopCpu`` in the stats, read by
        admission control); off where the loop is not the worker's own (in-process tests)."""
        # STUDYROOMS_MEDIA_FAST_PATH: 'on' without the compiled core refuses to start (raises here)
        if options is not None and options.fast_path is not None:
            fastpath.configure(options.fast_path)
        else:
            fastpath.active()
        worker = cls(worker_id or new_id(), options or WorkerOptions(), index=index, clock=clock)
        if worker.options.port_mode == "shared":
            from .webrtc_server import WebRtcServer

            opts = worker.options
            worker.webrtc_server = await WebRtcServer.create(
                listen_ip=opts.listen_ip,
                announced_ip=opts.announced_ip,
                port_range=(opts.rtc_min_port, opts.rtc_max_port),
                buffer_bytes=opts.socket_buffer_bytes,
                enable_tcp=opts.enable_tcp,
            )
        if measure_load:
            worker.loop_load.start()
        logger.info("worker %s started (pid %s, port mode %s, forwarding %s)", worker.id, worker.pid,
                    worker.options.port_mode, "compiled" if fastpath.active() else "python")
        return worker

    # ------------------------------------------------------------------ routers
    def create_router(self, router_id: str | None = None, media_codecs: list[dict] | None = None) -> Router:
        if self.closed:
            raise InvalidStateError("worker is closed")
        router_id = router_id or new_id()
        if router_id in self.routers:
            raise InvalidStateError(f"router {router_id} already exists")
        router = Router(self, router_id, media_codecs)
        self.routers[router_id] = router
        return router

    def router(self, router_id: str) -> Router:
        router = self.routers.get(router_id)
        if router is None:
            raise NotFoundError(f"router {router_id} not found")
        return router

    def _router_closed(self, router: Router) -> None:
        self.routers.pop(router.id, None)
        self.memory.closed_something()

    # ------------------------------------------------------------------ registries (for the channel)
    def _register(self, kind: str, entity: Any) -> None:
        getattr(self, kind + "s")[entity.id] = entity

    def _unregister(self, kind: str, entity: Any) -> None:
        registry = getattr(self, kind + "s")
        if registry.get(entity.id) is entity:
            del registry[entity.id]
            self.counters.retire(kind, entity)
            if kind == "transport":
                self.memory.closed_something()

    def traffic_totals(self) -> dict[str, int]:
        """Every packet and byte this worker ever handled (live entities + closed ones), per counter."""
        return self.counters.totals(list(self.transports.values()), list(self.producers.values()),
                                    list(self.consumers.values()))

    def _emit(self, name: str, data: dict) -> None:
        self.observer.emit("event", name, data)

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop_load.stop()
        self.memory.stop()
        for router in list(self.routers.values()):
            router.close()
        if self.webrtc_server is not None:
            self.webrtc_server.close()
        self.observer.emit("close")
        logger.info("worker %s closed", self.id)

    # ------------------------------------------------------------------ introspection
    def dump(self) -> dict[str, Any]:
        return {
            "workerId": self.id,
            "pid": self.pid,
            "closed": self.closed,
            "routers": [r.dump() for r in self.routers.values()],
            "transportIds": list(self.transports),
            "producerIds": list(self.producers),
            "consumerIds": list(self.consumers),
            "webRtcServer": self.webrtc_server.dump() if self.webrtc_server is not None else None,
        }

    def cpu_utilization(self) -> float:
        """The worker process's CPU as a fraction of one core (1.0 = one core busy), from the same
        sampler admission control reads (LoopLoad, ~1 s smoothing): the unit of ``/api/stats``
        ``cpu`` and of ``studyrooms_worker_cpu_utilization``. Without sampling (a worker on a
        shared loop, in-process tests): the average since the worker started."""
        if self.loop_load.samples:
            return round(self.loop_load.process_cpu, 4)
        elapsed = time.monotonic() - self.started_at
        return round((time.process_time() - self._cpu_start) / elapsed, 4) if elapsed > 0 else 0.0

    def get_stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        tx = rx = core = rx_core = 0
        for transport in self.transports.values():
            tx += transport.tx_rtp
            rx += transport.rx_rtp
            if transport.fast_cell is not None:
                core += transport.fast_cell.c.tx_rtp
            if transport.fast_rx is not None:
                rx_core += transport.fast_rx.c.rx_rtp
        return {
            "workerId": self.id,
            "pid": self.pid,
            "routerCount": len(self.routers),
            "transportCount": len(self.transports),
            "producerCount": len(self.producers),
            "consumerCount": len(self.consumers),
            "forwardingPath": "compiled" if fastpath.active() else "python",
            "rtpPacketsReceived": rx,
            "rtpPacketsSent": tx,
            "rtpPacketsSentByCore": core,  # of those, sent by the compiled core (live transports)
            "rtpPacketsReceivedByCore": rx_core,  # of rtpPacketsReceived, taken by the compiled receive step
            "cpu": self.cpu_utilization(),  # fraction of one core (the LoopLoad sampler's)
            "cpuSeconds": round(usage.ru_utime + usage.ru_stime, 3),  # user + system, since start
            **self.loop_load.snapshot(),  # loopCpu (fraction of a core), loopLagMs, loopCpuPeak
            "maxRssKb": usage.ru_maxrss,
            "memory": self.memory.stats(),  # rssBytes now, trims, releasedBytes
            "udp": self.webrtc_server.get_stats() if self.webrtc_server is not None else None,
            "transportsClosedByReason": dict(self.transport_failures),
        }
