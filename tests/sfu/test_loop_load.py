"""LoopLoad measures the CPU of the loop's own thread: busy work on the loop shows, idle does not."""

from __future__ import annotations

import asyncio
import time

from studyrooms.clock import SystemClock
from studyrooms.sfu.loop_load import LoopLoad


async def test_loop_cpu_follows_the_work_done_on_the_loop():
    load = LoopLoad(SystemClock(), interval_s=0.1, alpha=1.0)
    load.start()
    try:
        end = time.monotonic() + 0.35
        while time.monotonic() < end:  # ~70 % busy: 7 ms of work per 10 ms
            t = time.thread_time() + 0.007
            while time.thread_time() < t:
                pass
            await asyncio.sleep(0.003)
        busy = load.cpu
        await asyncio.sleep(0.35)
        idle = load.cpu
    finally:
        load.stop()
    assert busy > 0.25 and idle < 0.15, (busy, idle)
    assert load.snapshot()["loopCpuPeak"] >= round(busy, 4) and load.samples >= 5  # the snapshot rounds
