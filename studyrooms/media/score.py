"""Stream score 0..10 from delivery ratio, averaged over recent intervals (mediasoup RtpStream)."""

from __future__ import annotations

SCORE_HISTORY = 24


def interval_score(expected: int, lost: int) -> int:
    """Score of one reporting interval: ``round(delivered_ratio ** 4 * 10)`` as mediasoup's
    RtpStream; 10 when nothing was expected."""
    if expected <= 0:
        return 10
    if lost <= 0:
        return 10
    if lost >= expected:
        return 0
    ratio = (expected - lost) / expected
    return int(round(ratio**4 * 10))


class ScoreHistory:
    """Weighted average of the last 24 interval scores (recent intervals weigh more)."""

    __slots__ = ("scores", "score")

    def __init__(self, initial: int = 10) -> None:
        self.scores: list[int] = []
        self.score = initial

    def add(self, value: int) -> int:
        s = self.scores
        s.append(value)
        if len(s) > SCORE_HISTORY:
            del s[0]
        total = weights = 0
        for i, v in enumerate(s, 1):
            total += i * v
            weights += i
        self.score = int(round(total / weights))
        return self.score
