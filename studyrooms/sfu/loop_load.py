"""LoopLoad: how busy a media worker's event loop is, measured (admission control reads it).

Every ``interval_s`` a timer on the worker's own loop reads the loop thread's CPU time
(``time.thread_time``: the packet path, not Ray's or gRPC's threads) and how late the timer fired
(loop lag). ``cpu`` is the fraction of one core the loop used, smoothed (EWMA, ``alpha`` per
sample: a step shows within ~2 samples); ``lag_ms`` likewise. The same samples give
``process_cpu``: the whole worker process (every thread), what ``/api/stats`` and the
``studyrooms_worker_cpu_utilization`` gauge report. One sampler, so the figure operators see and
the one admission control compares with its limit come from the same intervals. Consumer counts say how much work a
worker *has*; these say how much it can still *take* (the same consumer count costs more with
video, simulcast or a loaded machine).
"""

from __future__ import annotations

import time

from ..clock import Clock, TimerHandle


class LoopLoad:
    def __init__(self, clock: Clock, interval_s: float = 0.5, alpha: float = 0.5) -> None:
        self.clock = clock
        self.interval_s = interval_s
        self.alpha = alpha
        self.cpu = 0.0  # fraction of one core used by the loop's thread, smoothed
        self.lag_ms = 0.0  # how late the sampling timer fired, smoothed
        self.process_cpu = 0.0  # fraction of one core used by the whole process, smoothed
        self.peak_cpu = 0.0
        self.samples = 0
        self._mark: tuple[float, float, float] | None = None
        self._timer: TimerHandle | None = None

    def start(self) -> None:
        """Call on the loop to measure (the sampling timer runs there)."""
        if self._timer is None:
            self._mark = (self.clock.now(), time.thread_time(), time.process_time())
            self._timer = self.clock.call_later(self.interval_s, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now, cpu, proc = self.clock.now(), time.thread_time(), time.process_time()
        wall0, cpu0, proc0 = self._mark or (now, cpu, proc)
        self._mark = (now, cpu, proc)
        wall = now - wall0
        if wall > 0:
            used = min(1.0, max(0.0, (cpu - cpu0) / wall))
            process = max(0.0, (proc - proc0) / wall)  # may exceed 1 (threads besides the loop)
            lag_ms = max(0.0, wall - self.interval_s) * 1000.0
            if self.samples == 0:
                self.cpu, self.lag_ms, self.process_cpu = used, lag_ms, process
            else:
                self.cpu += self.alpha * (used - self.cpu)
                self.lag_ms += self.alpha * (lag_ms - self.lag_ms)
                self.process_cpu += self.alpha * (process - self.process_cpu)
            self.peak_cpu = max(self.peak_cpu, used)
            self.samples += 1
        self._timer = self.clock.call_later(self.interval_s, self._tick)

    def snapshot(self) -> dict:
        return {"loopCpu": round(self.cpu, 4), "loopLagMs": round(self.lag_ms, 2),
                "loopCpuPeak": round(self.peak_cpu, 4)}
