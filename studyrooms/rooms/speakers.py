"""Who speaks in a room, merged over its media workers: pure, clock-free decisions.

Every router of a room reports, about three times a second, the mean ssrc-audio-level (RFC 6464:
0 loudest .. 127 silence, -dBov) of each audio producer it receives directly (worker event
``audio-levels``). The room feeds every report into one :class:`SpeakerTracker`, so the decisions
below are the room's, whichever worker a producer lives on:

- :class:`SpeakerTracker` smooths the levels per producer and names the dominant speaker, with a
  hysteresis so two similar voices do not make it flap.
- :class:`AudioSelection` keeps at most K audio streams forwarded (speaker-selected audio): the
  loudest, a newcomer displacing the quietest selected stream only when louder by a margin, and a
  selected stream staying selected for a hang-over after it was last loud (words are not clipped).
- :class:`SpeakerHistory` orders participants by when they last *held* the floor (dominant for a
  dwell time): the order of the last-N video selection, which does not shuffle on interjections.
"""

from __future__ import annotations

from typing import Hashable, Iterable

#: volume (dBov) at and above which a stream counts as speech
SPEECH_THRESHOLD_DBOV = -70.0


class SpeakerTracker:
    """Smoothed volume per audio producer (fast attack so speech onsets count at once, slower
    release); ``dominant(now)`` with hysteresis."""

    def __init__(self, *, threshold_dbov: float = SPEECH_THRESHOLD_DBOV, hysteresis_db: float = 3.0,
                 stale_s: float = 1.0, smoothing: float = 0.4, attack: float = 0.9) -> None:
        self.threshold_dbov = threshold_dbov
        self.hysteresis_db = hysteresis_db
        self.stale_s = stale_s
        self.alpha = smoothing
        self.attack = max(attack, smoothing)
        self._state: dict[Hashable, list[float]] = {}  # key -> [smoothed dBov, last report time]
        self._current: Hashable | None = None
        self.reported: set[Hashable] = set()  # keys that ever reported a level

    def add(self, key: Hashable, level: int, now: float) -> None:
        """One report: ``level`` as on the wire (0..127, lower is louder)."""
        if not isinstance(level, int) or isinstance(level, bool) or level < 0:
            return
        volume = -float(min(level, 127))
        self.reported.add(key)
        st = self._state.get(key)
        if st is None or now - st[1] > self.stale_s:
            self._state[key] = [volume, now]
        else:
            st[0] += (self.attack if volume > st[0] else self.alpha) * (volume - st[0])
            st[1] = now

    def remove(self, key: Hashable) -> None:
        self._state.pop(key, None)
        self.reported.discard(key)
        if self._current == key:
            self._current = None

    def volumes(self, now: float) -> dict[Hashable, float]:
        """Smoothed volume of every producer reported within ``stale_s``."""
        stale = now - self.stale_s
        return {k: v for k, (v, at) in self._state.items() if at >= stale}

    def dominant(self, now: float) -> tuple[Hashable | None, float]:
        vols = self.volumes(now)
        best = max(vols, key=vols.__getitem__, default=None)
        if best is None or vols[best] < self.threshold_dbov:
            self._current = None
            return None, -127.0
        cur = self._current
        if cur is not None and cur != best:
            cur_vol = vols.get(cur)
            if cur_vol is not None and cur_vol >= self.threshold_dbov and vols[best] < cur_vol + self.hysteresis_db:
                return cur, cur_vol
        self._current = best
        return best, vols[best]


class AudioSelection:
    """At most ``max_streams`` selected keys (``max_streams`` < 0: no limit)."""

    def __init__(self, max_streams: int, *, hangover_s: float = 1.0, hysteresis_db: float = 6.0,
                 threshold_dbov: float = SPEECH_THRESHOLD_DBOV) -> None:
        self.max_streams = max_streams
        self.hangover_s = hangover_s
        self.hysteresis_db = hysteresis_db
        self.threshold_dbov = threshold_dbov
        self.selected: dict[Hashable, float] = {}  # key -> last time it was loud

    def remove(self, key: Hashable) -> None:
        self.selected.pop(key, None)

    def update(self, volumes: dict[Hashable, float], now: float) -> frozenset:
        """One decision from the current smoothed volumes; returns the selected keys."""
        loud = {k: v for k, v in volumes.items() if v >= self.threshold_dbov}
        for key in self.selected:
            if key in loud:
                self.selected[key] = now
        for key, last_loud in list(self.selected.items()):
            if now - last_loud > self.hangover_s:
                del self.selected[key]  # silent for longer than the hang-over
        if self.max_streams < 0:
            for key in loud:
                self.selected[key] = now
            return frozenset(self.selected)
        for key in sorted((k for k in loud if k not in self.selected), key=lambda k: -loud[k]):
            if len(self.selected) < self.max_streams:
                self.selected[key] = now
                continue
            victim = min(self.selected, key=lambda k: volumes.get(k, -127.0))
            if loud[key] > volumes.get(victim, -127.0) + self.hysteresis_db:
                del self.selected[victim]
                self.selected[key] = now
        return frozenset(self.selected)


class SpeakerHistory:
    """Participants by when they last held the floor, most recent first."""

    def __init__(self, dwell_s: float = 1.0) -> None:
        self.dwell_s = dwell_s
        self.order: list[Hashable] = []
        self._pending: Hashable | None = None
        self._since = 0.0

    def update(self, dominant: Hashable | None, now: float) -> bool:
        """Feed the current dominant speaker; True when the order changed."""
        if dominant != self._pending:
            self._pending, self._since = dominant, now
        if dominant is None or now - self._since < self.dwell_s:
            return False
        if self.order and self.order[0] == dominant:
            return False
        if dominant in self.order:
            self.order.remove(dominant)
        self.order.insert(0, dominant)
        return True

    def remove(self, key: Hashable) -> None:
        if key in self.order:
            self.order.remove(key)
        if self._pending == key:
            self._pending = None


def rank_videos(receiver: Hashable, with_video: Iterable[Hashable], *, screen: Iterable[Hashable] = (),
                on_stage: Iterable[Hashable] = (), history: Iterable[Hashable] = ()) -> list[Hashable]:
    """The order in which ``receiver`` gets the others' videos: screen sharers, its on-stage
    participants, then by speaker recency, then the rest in ``with_video``'s order (join order)."""
    present = [k for k in with_video if k != receiver]
    allowed = set(present)
    out: list[Hashable] = []
    seen: set[Hashable] = set()
    for group in (screen, on_stage, history, present):
        for key in group:
            if key in allowed and key not in seen:
                seen.add(key)
                out.append(key)
    return out
