"""Active-speaker detection over ssrc-audio-level samples (RFC 6464), pure and clock-free.

Levels are as on the wire: 0 (loudest) .. 127 (silence) -dBov. The detector keeps a smoothed
volume (negative dBov) per producer and picks the loudest recent one above a threshold, with a
small hysteresis so the dominant speaker does not flap between two similar voices.
"""

from __future__ import annotations

from typing import Hashable


class ActiveSpeakerDetector:
    """``add(key, level, now)`` per audio packet (or sampled), ``dominant(now)`` on a timer."""

    __slots__ = ("threshold_dbov", "hysteresis_db", "stale_s", "alpha", "_state", "_current")

    def __init__(
        self,
        *,
        threshold_dbov: float = -80.0,
        hysteresis_db: float = 3.0,
        stale_s: float = 1.0,
        smoothing: float = 0.2,
    ) -> None:
        self.threshold_dbov = threshold_dbov
        self.hysteresis_db = hysteresis_db
        self.stale_s = stale_s
        self.alpha = smoothing
        self._state: dict[Hashable, list[float]] = {}  # key -> [smoothed volume, last sample time]
        self._current: Hashable | None = None

    def add(self, producer_key: Hashable, level: int, now: float) -> None:
        if level < 0:
            return
        volume = -float(level if level <= 127 else 127)
        st = self._state.get(producer_key)
        if st is None or now - st[1] > self.stale_s:
            self._state[producer_key] = [volume, now]
            return
        st[0] += self.alpha * (volume - st[0])
        st[1] = now

    def remove(self, producer_key: Hashable) -> None:
        self._state.pop(producer_key, None)
        if self._current == producer_key:
            self._current = None

    def volume(self, producer_key: Hashable, now: float) -> float | None:
        st = self._state.get(producer_key)
        if st is None or now - st[1] > self.stale_s:
            return None
        return st[0]

    def dominant(self, now: float) -> tuple[Hashable | None, int]:
        """``(key, volume_dbov)`` of the dominant speaker, or ``(None, -127)`` if nobody speaks."""
        best = None
        best_vol = -1000.0
        stale = now - self.stale_s
        for key, (vol, at) in self._state.items():
            if at >= stale and vol > best_vol:
                best, best_vol = key, vol
        if best is None or best_vol < self.threshold_dbov:
            self._current = None
            return None, -127
        cur = self._current
        if cur is not None and cur != best:
            cur_vol = self.volume(cur, now)
            holds = cur_vol is not None and cur_vol >= self.threshold_dbov
            if holds and best_vol < cur_vol + self.hysteresis_db:
                return cur, int(round(cur_vol))
        self._current = best
        return best, int(round(best_vol))
