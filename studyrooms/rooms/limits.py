"""Request rate limiting: a token bucket driven by the injected clock."""

from __future__ import annotations

from ..clock import Clock


class TokenBucket:
    """``rate_per_s`` tokens per second, at most ``burst`` saved; :meth:`take` spends one."""

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_at")

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock.now()

    def take(self, tokens: float = 1.0) -> bool:
        now = self._clock.now()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False
