"""Time, injected so tests can drive timeouts (consent, keyframe throttling, empty rooms).

The media plane reads ``clock.now()`` (monotonic seconds as float) and schedules with
``clock.call_later``. ``SystemClock`` uses the running asyncio loop; ``FakeClock`` is advanced by
tests.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Callable, Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def wall(self) -> float: ...

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle: ...


class SystemClock:
    """Monotonic time plus the running loop's timers."""

    # the builtin itself, not a Python method around it: ``clock.now()`` runs for every packet
    # sent (the transport-wide seq's send record) and a Python frame costs ~0.03 us more
    now = staticmethod(time.monotonic)

    def wall(self) -> float:
        return time.time()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay_s, callback)


class _FakeHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock tests advance by hand; timers fire inside :meth:`advance`."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._timers: list[tuple[float, int, _FakeHandle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> _FakeHandle:
        handle = _FakeHandle()
        heapq.heappush(self._timers, (self._now + max(0.0, delay_s), next(self._seq), handle, callback))
        return handle

    def advance(self, seconds: float) -> None:
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, handle, callback = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not handle.cancelled:
                callback()
        self._now = target
