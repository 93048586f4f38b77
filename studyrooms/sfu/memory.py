"""Giving memory back to the system after a load episode.

Packet buffers of a media worker (RTP bytes above pymalloc's 512-byte limit, retransmission
histories, SRTP contexts) come from glibc's malloc. When the objects go, glibc keeps the freed
pages in its heaps and arenas (one arena per thread that allocated: Ray adds several), so a worker
stayed near its peak RSS after a busy call ended. ``malloc_trim(0)`` hands the free pages of every
arena back to the kernel. It walks the heaps, so it is called rarely: once things were closed and
the worker has been quiet about it for a moment (:class:`MemoryTrimmer`).

Before trimming it runs a full garbage collection: objects in reference cycles (a closed transport's
or consumer's listeners, its streams, with their SRTP sessions and DTLS contexts underneath) are
freed only by the collector, and a worker that went quiet after an episode allocates too little to
trigger the oldest generation's collection by itself: they, and the native memory they hold, stayed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import resource
import sys
import time
from typing import Callable

from ..clock import Clock, TimerHandle

logger = logging.getLogger("studyrooms.worker")


def _load_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim with
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; else the peak from getrusage)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def trim() -> bool:
    """Return free heap pages to the kernel; False where that is not possible."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


class MemoryTrimmer:
    """Trims ``delay_s`` after the last of a series of closes (debounced: a burst of leaves costs one
    trim); counts what it gave back (``released_bytes``)."""

    def __init__(self, clock: Clock, delay_s: float = 2.0) -> None:
        self.clock = clock
        self.delay_s = delay_s
        self.trims = 0
        self.released_bytes = 0
        self.collected = 0  # objects in reference cycles the collections before the trims freed
        self.collect_ms = 0.0  # how long the last collection + trim held the loop
        self._timer: TimerHandle | None = None

    def closed_something(self) -> None:
        if self.delay_s <= 0:  # off
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.clock.call_later(self.delay_s, self._run)

    def _run(self) -> None:
        self._timer = None
        before = rss_bytes()
        t0 = time.perf_counter()
        found = gc.collect()
        self.collected += found
        trimmed = trim()
        self.collect_ms = (time.perf_counter() - t0) * 1000
        released = max(0, before - rss_bytes())
        if trimmed:
            self.trims += 1
            self.released_bytes += released
        logger.debug("memory trimmed: %d KiB given back, %d objects in cycles freed (%.1f ms)",
                     released // 1024, found, self.collect_ms)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stats(self) -> dict:
        return {"rssBytes": rss_bytes(), "trims": self.trims, "releasedBytes": self.released_bytes,
                "collected": self.collected, "lastTrimMs": round(self.collect_ms, 1)}
