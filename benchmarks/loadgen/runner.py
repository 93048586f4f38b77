"""Run a set of synthetic participants (one shard) against a server URL.

``run_shard(spec)`` is what one process does (in-process runs and each Ray load-generator actor):
participants join room by room (rooms concurrently, participants of a room one after the other, so
every joiner but the first finds media to receive: the join time is measured on those), all send
and receive until the common wall-clock end, then leave. Returns plain dicts (picklable).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from dataclasses import asdict
from typing import Any, Callable

from .participant import CONSENT_INTERVAL_S, Participant, Profile

logger = logging.getLogger("benchmarks.loadgen")


def plan(rooms: int, participants: int, *, screen_share: int = 1, simulcast: bool = False,
         audio: bool = True, video: bool = True, room_prefix: str = "load") -> list[dict]:
    """Every participant of the run: ``{room, name, index, profile}``; the first ``screen_share``
    participants of each room also share a screen."""
    out = []
    for r in range(rooms):
        for p in range(participants):
            out.append({"room": f"{room_prefix}-{r}", "name": f"p{r}-{p}", "index": p,
                        "profile": {"audio": audio, "video": video, "simulcast": simulcast,
                                    "screen": p < screen_share, "consume": True}})
    return out


def shard(entries: list[dict], count: int) -> list[list[dict]]:
    """Split participants over ``count`` shards, keeping each room's order (round robin by room)."""
    by_room: dict[str, list[dict]] = {}
    for e in entries:
        by_room.setdefault(e["room"], []).append(e)
    shards: list[list[dict]] = [[] for _ in range(max(1, count))]
    for i, members in enumerate(by_room.values()):
        shards[i % len(shards)].extend(members)
    return [s for s in shards if s]


async def run_shard(url: str, entries: list[dict], *, duration_s: float, start_at: float | None = None,
                    join_gap_s: float = 0.3, join_timeout_s: float = 60.0,
                    progress: Callable[[str, int], None] | None = None, stop: asyncio.Event | None = None,
                    room_concurrency: int = 1, consent_interval_s: float = CONSENT_INTERVAL_S,
                    stop_bound_s: float = 0.0) -> dict:
    """Join ``entries``, exchange media for ``duration_s`` after the last join (or until ``stop`` is
    set, when given: the driver then owns the measured window), leave.

    ``start_at`` (wall clock) aligns shards on several machines. Returns ``{"participants": [...],
    "loadgen": {pid, cpu_s, host}}``. An entry's own ``url`` (a signaling front) overrides ``url``;
    ``room_concurrency`` participants of a room join at once (1: one after the other)."""
    if start_at is not None and start_at > time.time():
        await asyncio.sleep(start_at - time.time())
    cpu0 = _cpu()
    people: list[Participant] = [Participant(e.get("url") or url, e["room"], e["name"], Profile(**e["profile"]),
                                             consent_interval_s=consent_interval_s) for e in entries]
    by_room: dict[str, list[Participant]] = {}
    for p in people:
        by_room.setdefault(p.room, []).append(p)
        if progress:
            p.on_consumed = lambda: progress("consumed", 1)

    async def join_one(p: Participant) -> None:
        try:
            await asyncio.wait_for(p.join(), join_timeout_s)
        except Exception as exc:  # noqa: BLE001 - recorded per participant
            p.result.error = f"{type(exc).__name__}: {exc}"[:300]
            logger.warning("%s: join failed: %s", p.name, p.result.error)
        if progress:
            progress("joined", 1)

    async def join_room(members: list[Participant]) -> None:
        step = max(1, room_concurrency)
        for i in range(0, len(members), step):
            await asyncio.gather(*(join_one(p) for p in members[i:i + step]))
            await asyncio.sleep(join_gap_s)

    t_join = time.monotonic()
    await asyncio.gather(*(join_room(m) for m in by_room.values()))
    joined_s = time.monotonic() - t_join
    t_media = time.time()
    t0 = time.monotonic()
    # with ``stop``: a bound if the driver dies (``stop_bound_s``: the driver may wait that much longer)
    end = t0 + (duration_s if stop is None else 3 * duration_s + 120 + stop_bound_s)
    while time.monotonic() < end and not (stop is not None and stop.is_set()):
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), min(1.0, max(0.0, end - time.monotonic())))
            except asyncio.TimeoutError:
                pass
        else:
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
        if progress:
            progress("second", 1)
    duration_s = time.monotonic() - t0
    for p in people:
        p.stop_measuring()
    results = []
    for p in people:
        r = p.finish()
        if r.error:
            r.ok = False
        results.append(asdict(r))
    await asyncio.gather(*(p.close() for p in people), return_exceptions=True)
    return {"participants": results,
            "loadgen": {"pid": os.getpid(), "host": os.uname().nodename, "cpu_s": _cpu() - cpu0,
                        "join_phase_s": joined_s, "media_start": t_media, "media_s": duration_s}}


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


class LoadShard:
    """Plain class for a Ray actor (actors/loadtest.py wraps it with ``ray.remote``)."""

    def __init__(self, shard_id: int = 0) -> None:
        self.shard_id = shard_id
        self.events: dict[str, int] = {"joined": 0, "second": 0}
        self._stop: asyncio.Event | None = None

    async def stop(self) -> None:
        """End the media phase now (the driver's measured window is over)."""
        if self._stop is None:
            self._stop = asyncio.Event()
        self._stop.set()

    def _progress(self, what: str, n: int) -> None:
        self.events[what] = self.events.get(what, 0) + n

    async def progress(self) -> dict:
        return dict(self.events)

    async def run(self, url: str, entries: list[dict], duration_s: float, start_at: float | None = None,
                  join_gap_s: float = 0.3, room_concurrency: int = 1, join_timeout_s: float = 60.0,
                  stop_bound_s: float = 0.0) -> dict:
        if self._stop is None:
            self._stop = asyncio.Event()
        out = await run_shard(url, entries, duration_s=duration_s, start_at=start_at, join_gap_s=join_gap_s,
                              progress=self._progress, stop=self._stop, room_concurrency=room_concurrency,
                              join_timeout_s=join_timeout_s, stop_bound_s=stop_bound_s)
        out["loadgen"]["shard"] = self.shard_id
        return out


async def drive(url: str, total: int, duration_s: float, *, start: Callable[[], Any],
                progress: Callable[[], Any], stop: Callable[[], Any], bar: Any = None,
                poll_s: float = 0.25, settled: Callable[[dict], bool] | None = None,
                settle_timeout_s: float = 0.0) -> dict:
    """The measured window, driver side: scrape ``/metrics`` (idle), ``start()`` the shards (returns
    an awaitable of their results), wait until ``total`` participants joined, scrape, let media flow
    for ``duration_s``, scrape, ``stop()`` the shards and collect them.

    ``progress()`` -> awaitable ``{"joined": n, ...}``; ``bar`` (tqdm-like, optional) advances by
    participants joined then by seconds. ``settled(progress)``, when given, is waited for (at most
    ``settle_timeout_s``) after the joins and before the window. Returns ``{shards, idle, start,
    end, window_s, settle_s}`` (``settle_s``: None when not given or not reached)."""
    from .results import scrape

    idle = await scrape(url)
    pending = asyncio.ensure_future(start())
    joined = 0
    while not pending.done():
        events = await progress()
        if bar is not None and events.get("joined", 0) > joined:
            bar.update(events["joined"] - joined)
        joined = events.get("joined", 0)
        if joined >= total:
            break
        await asyncio.sleep(poll_s)
    settle_s = None
    if settled is not None and not pending.done():  # e.g. every consumer created: media flows as planned
        t_settle, deadline = time.monotonic(), time.monotonic() + settle_timeout_s
        while not pending.done() and time.monotonic() < deadline:
            if settled(await progress()):
                settle_s = time.monotonic() - t_settle
                break
            await asyncio.sleep(poll_s)
    first = await scrape(url)
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration_s and not pending.done():
        await asyncio.sleep(min(1.0, duration_s - (time.monotonic() - t0)))
        if bar is not None:
            bar.update(1)
    last = await scrape(url)
    window = time.monotonic() - t0
    await stop()
    shards = await pending
    return {"shards": shards, "idle": idle, "start": first, "end": last, "window_s": window, "settle_s": settle_s}
