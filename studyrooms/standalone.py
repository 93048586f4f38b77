"""The whole server in one process, without Ray: media workers, rooms and signaling wired
directly. The product runs on Ray (actors/); this composition root is for fast full-stack tests
(protocol fuzzing, churn) and for a single-process development run. Same classes, same wiring
shapes as the actors, only the hops are plain calls.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from .clock import Clock, SystemClock
from .config import Settings
from .rooms.local import LocalNotifier, LocalRoomsPort
from .rooms.service import RoomService
from .sfu.channel import WorkerChannel
from .sfu.options import WorkerOptions
from .sfu.worker import Worker
from .signaling.server import SignalingServer

logger = logging.getLogger("studyrooms.standalone")


class LocalWorkerPort:
    """WorkerPort over a Worker in this process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.worker_id = worker.id
        self.channel = WorkerChannel(worker)

    async def request(self, method: str, data: dict) -> dict:
        return await self.channel.request(method, data)


class LocalDirectory:
    """DirectoryPort over local workers: least loaded (consumers, then routers), round robin on ties."""

    def __init__(self, workers: list[Worker], cpu_limit: float = 1.0) -> None:
        self.cpu_limit = cpu_limit  # admission control: no router on a worker whose loop is busier
        self.ports = {w.id: LocalWorkerPort(w) for w in workers}
        self._order = [w.id for w in workers]
        self._next = 0

    async def place_router(self, room_id: str, exclude=()) -> str:
        candidates = [wid for wid in self._order if wid not in set(exclude) and not self.ports[wid].worker.closed]
        if not candidates:
            from .errors import ResourceExhaustedError

            raise ResourceExhaustedError("no media worker available")
        candidates = [wid for wid in candidates if self.ports[wid].worker.loop_load.cpu < self.cpu_limit]
        if not candidates:
            from .errors import ResourceExhaustedError

            raise ResourceExhaustedError(f"every media worker is at capacity (load over {self.cpu_limit:.0%}); "
                                         "try again later")

        def load(wid: str) -> tuple[int, int]:
            w = self.ports[wid].worker
            return (len(w.consumers), len(w.routers))

        best = min(load(wid) for wid in candidates)
        tied = [wid for wid in candidates if load(wid) == best]
        choice = tied[self._next % len(tied)]
        self._next += 1
        return choice

    def worker(self, worker_id: str) -> LocalWorkerPort:
        port = self.ports.get(worker_id)
        if port is None:
            from .errors import NotFoundError

            raise NotFoundError(f"worker {worker_id} not found")
        return port

    async def release_router(self, room_id: str, worker_id: str) -> None:
        return None

    async def worker_stats(self) -> list[dict]:
        return [port.worker.get_stats() for port in self.ports.values()]


@dataclass
class Standalone:
    settings: Settings
    workers: list[Worker]
    service: RoomService
    signaling: SignalingServer
    port: int
    _tasks: set = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.settings.server.host}:{self.port}"

    async def stop(self) -> None:
        await self.signaling.stop()
        await self.service.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers:
            await worker.close()


async def start_standalone(
    settings: Settings | None = None, *, num_workers: int = 1, port: int | None = None,
    clock: Clock | None = None, route: str = "local", admission: bool = False,
) -> Standalone:
    """``admission``: admission control on the measured loop load (``rooms.worker_cpu_limit``). Off
    by default: here signaling, rooms, every worker and often the test's own clients share one loop,
    so its load is not the media plane's (``studyrooms serve`` runs each worker in its own process)."""
    settings = settings or Settings()
    options = WorkerOptions.from_settings(settings.media)
    workers = [await Worker.create(f"worker-{i}", options, index=i, measure_load=admission)
               for i in range(num_workers)]
    directory = LocalDirectory(workers, settings.rooms.worker_cpu_limit if admission else float("inf"))
    notifier = LocalNotifier()
    service = RoomService(settings, directory, notifier, clock or SystemClock(), "local")
    tasks: set = set()

    def forward(name: str, data: dict) -> None:  # worker events reach the rooms as their own tasks
        task = asyncio.get_running_loop().create_task(service.on_worker_event(name, data))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for worker in workers:
        worker.observer.on("event", forward)
    signaling = SignalingServer(settings, LocalRoomsPort(service), route)
    notifier.register(route, signaling.deliver)
    bound = await signaling.start(settings.server.host, settings.server.port if port is None else port)
    return Standalone(settings, workers, service, signaling, bound, tasks)
