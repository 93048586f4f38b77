"""Sliding-window bitrate that costs one float comparison per packet.

The stream keeps a running byte total; about every ``interval_s`` it hands the total to
:meth:`RateMeter.sample` (the per-packet check is ``if now >= next_sample``), and the rate is
the byte growth since the oldest snapshot inside the window.
"""

from __future__ import annotations

import math


class RateMeter:
    """Bits per second over the last ``window_s`` seconds from periodic byte-total snapshots."""

    __slots__ = ("_times", "_totals", "_i", "_n", "interval_s", "window_s")

    def __init__(self, window_s: float = 1.0, interval_s: float = 0.1) -> None:
        self._n = int(math.ceil(window_s / interval_s)) + 2
        self._times = [-math.inf] * self._n
        self._totals = [0] * self._n
        self._i = 0
        self.interval_s = interval_s
        self.window_s = window_s

    def sample(self, total_bytes: int, now: float) -> float:
        """Record a snapshot (byte total BEFORE the current packet); returns the next sample time."""
        i = self._i + 1
        if i == self._n:
            i = 0
        self._i = i
        self._times[i] = now
        self._totals[i] = total_bytes
        return now + self.interval_s

    def rate_bps(self, total_bytes: int, now: float) -> int:
        start = now - self.window_s
        best_t = math.inf
        best_b = 0
        for t, b in zip(self._times, self._totals):
            if start <= t < best_t:
                best_t, best_b = t, b
        if best_t == math.inf:
            return 0
        dt = now - best_t
        if dt < self.interval_s * 0.5:
            return 0
        return int((total_bytes - best_b) * 8 / dt)


class TemporalRates:
    """Per temporal layer (VP8 TID) bitrate of one encoding: one byte total and one
    :class:`RateMeter` per TID, fed with every media packet's size and TID (ingress only)."""

    __slots__ = ("_meters", "_totals", "_next")

    def __init__(self, layers: int) -> None:
        self._meters = [RateMeter() for _ in range(layers)]
        self._totals = [0] * layers
        self._next = [-math.inf] * layers

    def add(self, tid: int, size: int, now: float) -> None:
        if 0 <= tid < len(self._totals):
            if now >= self._next[tid]:
                self._next[tid] = self._meters[tid].sample(self._totals[tid], now)
            self._totals[tid] += size

    def cumulative_bps(self, now: float) -> list[int]:
        """Bitrate of TIDs 0..t for every t (what a receiver gets when layers above t are dropped)."""
        out, total = [], 0
        for meter, bytes_ in zip(self._meters, self._totals):
            total += meter.rate_bps(bytes_, now)
            out.append(total)
        return out
